"""Demo records, made without a database: user i is the same whatever N is and however it is chunked.

Faker is slow per call, so it fills small pools once; a `random.Random` seeded per block of users
combines them. Rows are plain tuples in USER_COLUMNS and DATA_COLUMNS order; `app.demo.load` stores them.
"""

from __future__ import annotations

import hashlib
import json
import random
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from faker import Faker

SEED = 20261126
CLERK_ID_PREFIX = "user_demo_"
MAX_DEMO_USERS = 9_999_999  # clerk ids have seven digits, so they sort (and range-scan) in order
BLOCK_SIZE = 100  # users per seeded random stream: the unit of determinism

ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/clerk-user-admin/demo")

DAY = 86_400.0
YEAR = 365 * DAY
EPOCH = datetime(1970, 1, 1)  # naive UTC, the form the timestamp columns store

USER_COLUMNS = (
    "id", "clerk_id", "email", "first_name", "last_name", "role", "status", "image_url",
    "username", "external_id", "public_metadata", "private_metadata", "unsafe_metadata",
    "last_sign_in_at", "created_at", "updated_at", "version", "locked",
)  # fmt: skip
USER_TIMESTAMPS = ("last_sign_in_at", "created_at", "updated_at")
DATA_COLUMNS = ("id", "user_id", "key", "value", "created_at", "updated_at")
DATA_TIMESTAMPS = ("created_at", "updated_at")

UserRow = tuple  # values in USER_COLUMNS order, timestamps naive UTC
DataRow = tuple  # values in DATA_COLUMNS order, timestamps naive UTC
Chunk = tuple[list[UserRow], list[DataRow]]

# The first users are cast so that every role and status shows up even in a tiny demo.
CAST: tuple[tuple[str, str], ...] = (
    ("super_admin", "active"),
    ("admin", "active"),
    ("user", "invited"),
    ("user", "inactive"),
    ("user", "suspended"),
    ("admin", "suspended"),
    ("admin", "invited"),
    ("super_admin", "inactive"),
)

# Name locales, weighted; names from other scripts would need transliteration for emails.
LOCALES = (("en_US", 55), ("en_GB", 12), ("de_DE", 9), ("fr_FR", 8), ("es_ES", 8), ("it_IT", 4),
           ("nl_NL", 4))  # fmt: skip
# Reserved (RFC 2606) domains: realistic enough, and no stranger is ever emailed by a demo.
EMAIL_DOMAINS = (("example.com", 50), ("example.org", 15), ("example.net", 15),
                 ("acme.example", 8), ("globex.example", 7), ("initech.example", 5))  # fmt: skip
ROLES = (("user", 970), ("admin", 25), ("super_admin", 5))
STATUSES = (("active", 80), ("inactive", 9), ("invited", 7), ("suspended", 4))

PLANS = ("free", "starter", "pro", "team", "enterprise")
DATA_LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL", "pt-BR", "ja-JP")
REFERRAL_SOURCES = ("google", "twitter", "linkedin", "friend", "blog", "conference",
                    "product_hunt", "newsletter", "partner")  # fmt: skip
DATA_KEYS = ("plan", "company", "timezone", "locale", "newsletter", "referral_source", "seats",
             "job_title", "country", "onboarding_step")  # fmt: skip


@dataclass(frozen=True)
class Pools:
    """Everything Faker contributes, made once per process."""

    names: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]]]]  # locale: firsts, lasts
    locales: list[str]
    domains: list[str]
    roles: list[str]
    statuses: list[str]
    companies: list[str]
    jobs: list[str]
    timezones: list[str]
    countries: list[str]
    words: list[str]
    public_metadata: list[str]
    private_metadata: list[str]
    unsafe_metadata: list[str]


# --- Ids --------------------------------------------------------------------------------------


def demo_clerk_id(index: int) -> str:
    return f"{CLERK_ID_PREFIX}{index:07d}"


def demo_user_id(clerk_id: str) -> str:
    return uuid5(clerk_id)


def uuid5(name: str) -> str:
    """str(uuid.uuid5(ID_NAMESPACE, name)), without building a UUID object (3x faster)."""
    digest = bytearray(hashlib.sha1(ID_NAMESPACE.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --- Making users -----------------------------------------------------------------------------


def make_chunk(start: int, stop: int, pools: Pools, now_ts: float, skip: set[int]) -> Chunk:
    """The rows for demo users start..stop-1 that are not in `skip`: users, then their data."""
    users: list[UserRow] = []
    data: list[DataRow] = []
    for user, rows in generate_users(start, stop, pools, now_ts, skip):
        users.append(user)
        data.extend(rows)
    return users, data


def generate_users(
    start: int, stop: int, pools: Pools, now_ts: float, skip: set[int] | frozenset[int] = frozenset()
) -> Iterator[tuple[UserRow, list[DataRow]]]:
    """Demo users start..stop-1 (minus `skip`), each with its key-value rows."""
    first_block, last_block = start // BLOCK_SIZE, (stop - 1) // BLOCK_SIZE
    for block in range(first_block, last_block + 1):
        lo, hi = max(start, block * BLOCK_SIZE), min(stop, (block + 1) * BLOCK_SIZE)
        if all(i in skip for i in range(lo, hi)):
            continue
        # A string seed is hashed with SHA-512: the same stream in every process.
        rng = random.Random(f"demo:{SEED}:{block}")
        for index in range(block * BLOCK_SIZE, hi):
            user, rows = make_user(index, rng, pools, now_ts)
            if index >= lo and index not in skip:
                yield user, rows


def make_user(index: int, rng: random.Random, pools: Pools, now_ts: float) -> tuple[UserRow, list[DataRow]]:
    """One demo user and its key-value rows, drawn from `rng` (always the same draws, in order)."""
    locale = rng.choice(pools.locales)
    firsts, lasts = pools.names[locale]
    first, first_slug = rng.choice(firsts)
    last, last_slug = rng.choice(lasts)
    role, status = rng.choice(pools.roles), rng.choice(pools.statuses)
    if index < len(CAST):
        role, status = CAST[index]
    has_name = rng.random() < 0.97  # some people sign up with an email address only

    clerk_id = demo_clerk_id(index)
    user_id = demo_user_id(clerk_id)
    email = f"{_email_local_part(rng, first_slug, last_slug, index)}@{rng.choice(pools.domains)}"
    username = _username(rng, pools, first_slug, last_slug, index) if rng.random() < 0.6 else None
    image_url = None
    if rng.random() < 0.4:
        image_url = f"https://avatars.example.com/{user_id[:8]}{user_id[9:13]}.jpg"
    external_id = f"crm-{100000 + index}" if rng.random() < 0.05 else None
    public_metadata = rng.choice(pools.public_metadata) if rng.random() < 0.35 else None
    private_metadata = rng.choice(pools.private_metadata) if rng.random() < 0.15 else None
    unsafe_metadata = rng.choice(pools.unsafe_metadata) if rng.random() < 0.1 else None

    created_ts, last_sign_in_ts = _timeline(rng, status, now_ts)
    updated_ts = max(created_ts, last_sign_in_ts or created_ts) + rng.random() * 60
    updated_ts = min(updated_ts, now_ts)
    created_at, updated_at = _datetime(created_ts), _datetime(updated_ts)
    last_sign_in_at = _datetime(last_sign_in_ts) if last_sign_in_ts is not None else None

    user: UserRow = (
        user_id, clerk_id, email, first if has_name else None, last if has_name else None, role,
        status, image_url, username, external_id, public_metadata, private_metadata,
        unsafe_metadata, last_sign_in_at, created_at, updated_at, 1, _locked(index, status),
    )  # fmt: skip
    rows = _user_data(rng, pools, clerk_id, user_id, created_ts, now_ts) if rng.random() < 0.3 else []
    return user, rows


def _locked(index: int, status: str) -> bool:
    """One active user in fifty is locked out by Clerk (too many failed sign-ins); no draw, so the
    rest of the demo stays the same."""
    return status == "active" and index % 50 == 9


def _email_local_part(rng: random.Random, first: str, last: str, index: int) -> str:
    # The demo index makes every address unique, on every run.
    pattern = rng.randrange(6)
    if pattern == 0:
        return f"{first}.{last}{index}"
    if pattern == 1:
        return f"{first}{last}{index}"
    if pattern == 2:
        return f"{first[0]}{last}{index}"
    if pattern == 3:
        return f"{first}_{last}{index}"
    if pattern == 4:
        return f"{last}.{first}{index}"
    return f"{first}{index}"


def _username(rng: random.Random, pools: Pools, first: str, last: str, index: int) -> str:
    pattern = rng.randrange(3)
    if pattern == 0:
        return f"{first}{last[:1]}{index}"
    if pattern == 1:
        return f"{first}_{last}{index}"
    return f"{rng.choice(pools.words)}_{last}{index}"


def _timeline(rng: random.Random, status: str, now_ts: float) -> tuple[float, float | None]:
    """created_at over the last three years (more of them recent) and a last sign-in after it."""
    if status == "invited":
        # An invitation is recent and has never been used.
        return now_ts - rng.random() * 60 * DAY, None
    created_ts = now_ts - (rng.random() ** 1.5) * 3 * YEAR
    if rng.random() < 0.08:
        return created_ts, None  # signed up, never came back through a sign-in
    window_start = max(created_ts, now_ts - YEAR)
    recency = rng.random() ** 3 if status == "active" else rng.random()  # active: recent sign-ins
    return created_ts, now_ts - recency * (now_ts - window_start)


def _user_data(
    rng: random.Random, pools: Pools, clerk_id: str, user_id: str, created_ts: float, now_ts: float
) -> list[DataRow]:
    rows = []
    for key in rng.sample(DATA_KEYS, rng.randint(1, 4)):
        added_ts = created_ts + rng.random() * (now_ts - created_ts)
        added_at = _datetime(added_ts)
        data_id = uuid5(f"{clerk_id}/{key}")
        rows.append((data_id, user_id, key, _data_value(rng, pools, key), added_at, added_at))
    return rows


def _data_value(rng: random.Random, pools: Pools, key: str) -> str:
    match key:
        case "plan":
            return rng.choice(PLANS)
        case "company":
            return rng.choice(pools.companies)
        case "timezone":
            return rng.choice(pools.timezones)
        case "locale":
            return rng.choice(DATA_LOCALES)
        case "newsletter":
            return "true" if rng.random() < 0.4 else "false"
        case "referral_source":
            return rng.choice(REFERRAL_SOURCES)
        case "seats":
            return str(int(1 + rng.random() ** 4 * 250))
        case "job_title":
            return rng.choice(pools.jobs)
        case "country":
            return rng.choice(pools.countries)
        case _:
            return rng.choice(("signed_up", "profile", "invite_team", "connect_data", "done"))


def _datetime(ts: float) -> datetime:
    return EPOCH + timedelta(seconds=round(ts, 3))  # milliseconds, like Clerk's timestamps


# --- Pools ------------------------------------------------------------------------------------


def _weighted(choices: Sequence[tuple[str, int]]) -> list[str]:
    """A list where each choice appears `weight` times: rng.choice on it is a weighted draw."""
    return [value for value, weight in choices for _ in range(weight)]


def _slug(name: str) -> str:
    """ASCII letters and digits only, lower case: 'Müller-Lüdenscheidt' -> 'mullerludenscheidt'."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_name.lower() if c.isalnum()) or "user"


@cache
def build_pools() -> Pools:
    """Faker's contribution, drawn once with a fixed seed."""
    names = {}
    for locale, _weight in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(SEED)
        firsts = [(n, _slug(n)) for n in {fake.first_name(): None for _ in range(1500)}]
        lasts = [(n, _slug(n)) for n in {fake.last_name(): None for _ in range(1500)}]
        names[locale] = (firsts, lasts)

    fake = Faker("en_US")
    fake.seed_instance(SEED)
    rng = random.Random(f"demo-pools:{SEED}")
    return Pools(
        names=names,
        locales=_weighted(LOCALES),
        domains=_weighted(EMAIL_DOMAINS),
        roles=_weighted(ROLES),
        statuses=_weighted(STATUSES),
        companies=[fake.company() for _ in range(400)],
        jobs=[fake.job() for _ in range(300)],
        timezones=[fake.timezone() for _ in range(200)],
        countries=[fake.country_code() for _ in range(200)],
        words=[fake.word() for _ in range(500)],
        public_metadata=[_public_metadata(rng) for _ in range(200)],
        private_metadata=[_private_metadata(rng, fake) for _ in range(500)],
        unsafe_metadata=[_unsafe_metadata(rng) for _ in range(100)],
    )


def _public_metadata(rng: random.Random) -> str:
    metadata: dict[str, object] = {"plan": rng.choice(PLANS), "onboarded": rng.random() < 0.8}
    if rng.random() < 0.3:
        metadata["beta"] = True
    if rng.random() < 0.2:
        metadata["team_size"] = rng.choice((1, 3, 5, 10, 25, 50, 100))
    return json.dumps(metadata)


def _private_metadata(rng: random.Random, fake: Faker) -> str:
    customer = "cus_" + fake.pystr(min_chars=14, max_chars=14)
    metadata: dict[str, object] = {"stripe_customer_id": customer}
    if rng.random() < 0.4:
        metadata["crm_owner"] = fake.first_name().lower()
    if rng.random() < 0.2:
        metadata["notes"] = rng.choice(("VIP", "churn risk", "annual contract", "pilot"))
    return json.dumps(metadata)


def _unsafe_metadata(rng: random.Random) -> str:
    metadata: dict[str, object] = {"theme": rng.choice(("light", "dark", "system"))}
    if rng.random() < 0.5:
        metadata["sidebar_collapsed"] = rng.random() < 0.5
    return json.dumps(metadata)
