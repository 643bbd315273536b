"""Demo organizations, memberships and organization invitations, made without a database.

Which organizations exist depends on N (the number of demo users) only, and organization i is the
same whatever N is: its members are drawn from a window of demo users that all exist as soon as
the organization does, so a larger N adds organizations and never touches those already there.
Most organizations are small; a ladder of large ones appears as N grows (at a million users one
has 10,000 members). What the members look like (their email, their sign-up time, whether they
are still live) comes from the users table, passed in as `Member` facts: the organizations are
then the same for the same users. Rows are plain tuples in the *_COLUMNS orders; `app.demo.load`
stores them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from app.demo.generate import DAY, EPOCH, SEED, Pools, _datetime, _slug, uuid5

ORGANIZATION_CLERK_ID_PREFIX = "org_demo_"
LARGE_SUFFIX = "big_"  # large organizations: org_demo_big_00 ... (they sort after the numbered ones)

# Regular organizations: one for every ten demo users, and one more for each ten of the first 300,
# so that the default demo of 200 users has 40 of them.
USERS_PER_ORGANIZATION = 10
EXTRA_FROM_FIRST_USERS = 300
# A regular organization's members come from the WINDOW demo users before its first need.
WINDOW = 2_000
# Members of a regular organization: log-normal, about 14.8 on average, capped.
SIZE_MU, SIZE_SIGMA, MAX_REGULAR_SIZE = 2.29, 0.9, 400

# (name, slug, members, from how many demo users on); members are drawn from those first users.
LARGE_ORGANIZATIONS: tuple[tuple[str, str, int, int], ...] = (
    ("Acme Corporation", "acme", 10_000, 100_000),
    ("Globex Corporation", "globex", 5_000, 50_000),
    ("Initech", "initech", 2_000, 20_000),
    ("Vandelay Industries", "vandelay-industries", 1_000, 10_000),
    ("Wonka Industries", "wonka-industries", 1_000, 8_000),
    ("Cyberdyne Systems", "cyberdyne", 500, 5_000),
    ("Massive Dynamic", "massive-dynamic", 200, 2_000),
    ("Tyrell Corporation", "tyrell", 100, 1_000),
    ("Prestige Worldwide", "prestige-worldwide", 60, 400),
    ("Dunder Mifflin", "dunder-mifflin", 40, 200),
    ("Soylent", "soylent", 25, 100),
)

ADMIN, MEMBER = "org:admin", "org:member"
# What Clerk sends with each default role (system permissions).
PERMISSIONS = {
    ADMIN: json.dumps(
        sorted(
            (
                "org:sys_domains:manage",
                "org:sys_domains:read",
                "org:sys_memberships:manage",
                "org:sys_memberships:read",
                "org:sys_profile:delete",
                "org:sys_profile:manage",
            )
        )
    ),
    MEMBER: json.dumps(["org:sys_memberships:read"]),
}

DELETED_ORGANIZATIONS = 0.01  # deleted in Clerk: kept as tombstones, their memberships ended
LEFT_MEMBERS = 0.03  # members who left: ended memberships
INVITING_ORGANIZATIONS = 0.25
INVITATION_DAYS = 30

ORGANIZATION_COLUMNS = (
    "id", "clerk_id", "name", "slug", "image_url", "max_allowed_memberships", "public_metadata",
    "private_metadata", "created_by", "members_count", "created_at", "updated_at", "deleted_at", "version",
)  # fmt: skip
ORGANIZATION_TIMESTAMPS = ("created_at", "updated_at", "deleted_at")
MEMBERSHIP_COLUMNS = (
    "id", "clerk_id", "organization_id", "user_id", "clerk_user_id", "identifier", "first_name", "last_name",
    "role", "permissions", "public_metadata", "created_at", "updated_at", "deleted_at", "version",
)  # fmt: skip
MEMBERSHIP_TIMESTAMPS = ("created_at", "updated_at", "deleted_at")
INVITATION_COLUMNS = ("id", "clerk_id", "organization_id", "email", "role", "status", "created_at", "updated_at",
                      "expires_at")  # fmt: skip
INVITATION_TIMESTAMPS = ("created_at", "updated_at", "expires_at")

NOUNS = ("Labs", "Studio", "Works", "Collective", "Partners", "Analytics", "Systems", "Ventures", "Health",
         "Logistics", "Robotics", "Foods", "Media", "Energy", "Capital", "Design", "Cloud", "Security",
         "Learning", "Games", "Consulting", "Group", "Digital", "Bio")  # fmt: skip
PLANS = ("free", "starter", "pro", "business", "enterprise")
DEPARTMENTS = ("engineering", "sales", "support", "marketing", "finance", "operations")


@dataclass(frozen=True)
class Member:
    """What a demo organization needs of a live demo user (read from the users table)."""

    user_id: str
    clerk_id: str
    email: str
    first_name: str | None
    last_name: str | None
    created_ts: float  # seconds since the epoch, UTC


@dataclass(frozen=True)
class Spec:
    """One demo organization before it is made: who may be in it, and how many."""

    clerk_id: str
    key: str  # the part after the prefix, in its members' and invitations' ids
    lo: int  # members come from demo users lo..hi-1
    hi: int
    large: int | None = None  # the index in LARGE_ORGANIZATIONS


OrganizationRow = tuple
MembershipRow = tuple
InvitationRow = tuple
Made = tuple[list[OrganizationRow], list[MembershipRow], list[InvitationRow]]


# --- Which organizations there are ------------------------------------------------------------------


def regular_organization_count(n_users: int) -> int:
    return n_users // USERS_PER_ORGANIZATION + min(n_users, EXTRA_FROM_FIRST_USERS) // USERS_PER_ORGANIZATION


def first_need(index: int) -> int:
    """The smallest N at which regular organization `index` exists (the count grows with N)."""
    lo, hi = 0, USERS_PER_ORGANIZATION * (index + 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if regular_organization_count(mid) > index:
            hi = mid
        else:
            lo = mid + 1
    return lo


def regular_clerk_id(index: int) -> str:
    return f"{ORGANIZATION_CLERK_ID_PREFIX}{index:07d}"


def regular_spec(index: int) -> Spec:
    need = first_need(index)
    return Spec(regular_clerk_id(index), f"{index:07d}", max(0, need - WINDOW), need)


def large_specs(n_users: int) -> list[Spec]:
    return [
        Spec(f"{ORGANIZATION_CLERK_ID_PREFIX}{LARGE_SUFFIX}{k:02d}", f"{LARGE_SUFFIX}{k:02d}", 0, need, k)
        for k, (_name, _slug, _size, need) in enumerate(LARGE_ORGANIZATIONS)
        if n_users >= need
    ]


def demo_organization_count(n_users: int) -> int:
    return regular_organization_count(n_users) + len(large_specs(n_users))


# --- Making them --------------------------------------------------------------------------------------


def make_organizations(specs: Sequence[Spec], members: Mapping[int, Member], pools: Pools, now_ts: float) -> Made:
    """The rows of these organizations; `members` holds the live demo users of their windows by index."""
    organizations: list[OrganizationRow] = []
    memberships: list[MembershipRow] = []
    invitations: list[InvitationRow] = []
    for spec in specs:
        made = make_organization(spec, members, pools, now_ts)
        if made is None:
            continue
        organization, rows, invited = made
        organizations.append(organization)
        memberships.extend(rows)
        invitations.extend(invited)
    return organizations, memberships, invitations


def make_organization(
    spec: Spec, members: Mapping[int, Member], pools: Pools, now_ts: float
) -> tuple[OrganizationRow, list[MembershipRow], list[InvitationRow]] | None:
    """One organization, its memberships and invitations; None when none of its members is live."""
    rng = random.Random(f"demo-org:{SEED}:{spec.clerk_id}")
    if spec.large is None:
        size = min(MAX_REGULAR_SIZE, max(1, round(rng.lognormvariate(SIZE_MU, SIZE_SIGMA))))
        name, slug_base = _organization_name(rng, pools), None
        deleted = rng.random() < DELETED_ORGANIZATIONS
    else:
        name, slug_base, size, _need = LARGE_ORGANIZATIONS[spec.large]
        deleted = False
    # A large organization has exactly `size` live members (while its users are live): those who
    # left come on top. A regular one loses some of its `size` members.
    leavers = round(size * LEFT_MEMBERS) if spec.large is not None else 0
    drawn = rng.sample(range(spec.lo, spec.hi), min(size + leavers, spec.hi - spec.lo))
    chosen = [(index, members[index]) for index in drawn if index in members]  # deleted users are left out
    if not chosen:
        return None

    organization_id = uuid5(spec.clerk_id)
    _creator_index, creator = chosen[0]
    age = rng.random() ** (0.3 if spec.large is not None else 1.0)  # large ones are older
    created_ts = creator.created_ts + (1 - age) * max(0.0, now_ts - creator.created_ts)
    end_ts = created_ts + rng.random() * (now_ts - created_ts) if deleted else now_ts
    slug = slug_base or f"{_slug_words(name)}-{int(spec.key)}"

    rows: list[MembershipRow] = []
    admins = 2 if spec.large is not None or (len(chosen) >= 3 and rng.random() < 0.4) else 1
    live = 0
    for position, (index, member) in enumerate(chosen):
        role = ADMIN if position < admins else MEMBER
        joined_ts = created_ts if position == 0 else max(created_ts, member.created_ts)
        joined_ts += rng.random() ** 1.5 * max(0.0, end_ts - joined_ts) if position else 0.0
        left_ts = None
        if deleted:
            left_ts = end_ts
        elif position >= size or (spec.large is None and role == MEMBER and rng.random() < LEFT_MEMBERS):
            left_ts = joined_ts + rng.random() * (now_ts - joined_ts)
        else:
            live += 1
        metadata = json.dumps({"department": rng.choice(DEPARTMENTS)}) if rng.random() < 0.1 else None
        clerk_id = f"orgmem_demo_{spec.key}_{index:07d}"
        rows.append(
            (
                uuid5(clerk_id), clerk_id, organization_id, member.user_id, member.clerk_id, member.email,
                member.first_name, member.last_name, role,
                PERMISSIONS[role], metadata, _datetime(joined_ts), _datetime(max(joined_ts, left_ts or joined_ts)),
                _datetime(left_ts) if left_ts is not None else None, 1,
            )
        )  # fmt: skip

    limit = 0
    if spec.large is None and rng.random() < 0.2:
        limit = next(n for n in (5, 10, 20, 50, 100, 500) if n >= len(chosen))
    public_metadata = None
    if rng.random() < 0.4:
        public_metadata = json.dumps({"plan": rng.choice(PLANS), "seats": max(len(chosen), rng.choice((5, 10, 25)))})
    private_metadata = None
    if rng.random() < 0.2:
        private_metadata = json.dumps({"billing_id": f"cus_{rng.getrandbits(56):014x}"})
    image_url = f"https://img.example.com/orgs/{organization_id[:8]}.png" if rng.random() < 0.4 else None
    updated_ts = min(end_ts, created_ts + rng.random() * (end_ts - created_ts) * 0.3)
    organization: OrganizationRow = (
        organization_id, spec.clerk_id, name, slug, image_url, limit, public_metadata, private_metadata,
        creator.clerk_id, live, _datetime(created_ts), _datetime(max(updated_ts, end_ts if deleted else created_ts)),
        _datetime(end_ts) if deleted else None, 1,
    )  # fmt: skip
    invitations = [] if deleted else _invitations(rng, pools, spec, organization_id, created_ts, now_ts)
    return organization, rows, invitations


def _invitations(
    rng: random.Random, pools: Pools, spec: Spec, organization_id: str, created_ts: float, now_ts: float
) -> list[InvitationRow]:
    """A quarter of organizations have invited people (large ones always): mostly pending, some
    past their expiry (no event tells us: still `pending` here), some revoked."""
    if spec.large is not None:
        n = rng.randint(3, 12)
    elif rng.random() < INVITING_ORGANIZATIONS:
        n = rng.randint(1, 3)
    else:
        return []
    rows = []
    for k in range(n):
        locale = rng.choice(pools.locales)
        firsts, lasts = pools.names[locale]
        (_first, first_slug), (_last, last_slug) = rng.choice(firsts), rng.choice(lasts)
        email = f"{first_slug}.{last_slug}.{spec.key.removeprefix(LARGE_SUFFIX)}{k}@{rng.choice(pools.domains)}"
        sent_ts = max(created_ts, now_ts - rng.random() ** 2 * 60 * DAY)
        status = "revoked" if rng.random() < 0.08 else "pending"
        updated_ts = sent_ts + rng.random() * (now_ts - sent_ts) if status == "revoked" else sent_ts
        role = ADMIN if rng.random() < 0.1 else MEMBER
        clerk_id = f"orginv_demo_{spec.key}_{k:02d}"
        rows.append(
            (
                uuid5(clerk_id), clerk_id, organization_id, email, role, status, _datetime(sent_ts),
                _datetime(updated_ts), _datetime(sent_ts + INVITATION_DAYS * DAY),
            )
        )  # fmt: skip
    return rows


def _organization_name(rng: random.Random, pools: Pools) -> str:
    pattern = rng.random()
    firsts, lasts = pools.names[rng.choice(pools.locales)]
    if pattern < 0.3:
        return f"{rng.choice(lasts)[0]} {rng.choice(NOUNS)}"
    if pattern < 0.5:
        return rng.choice(pools.companies)
    if pattern < 0.75:
        return f"{rng.choice(pools.words).capitalize()} {rng.choice(NOUNS)}"
    if pattern < 0.9:
        return f"{rng.choice(lasts)[0]} & {rng.choice(lasts)[0]}"
    return f"{rng.choice(firsts)[0]}'s team"


def _slug_words(name: str) -> str:
    """'Müller & Söhne' -> 'muller-sohne': Clerk's slug alphabet (lower-case letters, digits, hyphens)."""
    words = [_slug(word) for word in name.replace("'", "").split()]
    return "-".join(w for w in words if w != "user")[:40].strip("-") or "org"


def timestamp(value: datetime) -> float:
    """Seconds since the epoch of a naive or aware UTC datetime (a member's sign-up)."""
    return (value.replace(tzinfo=None) - EPOCH).total_seconds()
