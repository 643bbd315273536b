"""Mixed load for 60 s: 20 admins browsing and editing, bursts of signed webhooks; optionally a
PostgreSQL restart in the middle. Every acknowledged write is then looked for in the database.

    .venv/bin/python benchmarks/mixed_load.py [--users 100000] [--seconds 60] [--workers 4] [--restart]

The database is a throwaway cluster of its own (benchmarks/pg_cluster.py: initdb in a temporary
directory, pg_ctl on 127.0.0.1:5433 or the next free port), so the shared server is never
disturbed and --restart can stop and start it. The script migrates it, seeds --users demo users
(app.demo.load.seed_demo), makes --admins super admins, starts gunicorn (--workers) with a known
signing secret, and signs each admin in with a one-time link.

For --seconds, each admin thread loops over: the list (page, htmx fragment, next page), searches,
filters, a user's page, and writes on its own 25 users (the edit form with its CSRF token and
version field, a new key-value pair, an edit of one, suspend or reactivate). Two webhook threads
send bursts of Svix-signed deliveries (user.created, user.updated, session.created, user.deleted,
each with a unique svix id) for their own Clerk users, re-send one in ten at once on purpose
(a duplicate), and re-send any delivery answered 5xx or not at all after 5 s, as Svix does.

With --restart, the cluster is stopped (-m fast) at --restart-at s, left down --down-seconds,
and started again; gunicorn keeps running. The script reports the requests made while it was
down (all must be 503), the time from its return to the first success of each kind of request,
and any 5xx after it came back (stale pooled connections would show there).

Every write is recorded with its answer: acknowledged (2xx/3xx), refused (4xx), failed (5xx, not
acknowledged; it may or may not have landed) or unknown (no answer within --timeout). The check
afterwards: each acknowledged write is in the database, and nothing is there twice (each
dashboard write carries a unique value whose audit event must appear once at most; each svix id
has one row, each Clerk user one row and one creation, each applied update one audit event).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pg_cluster import ThrowawayCluster  # noqa: E402
from benchmarks.users_list import SECRET, ensure_database  # noqa: E402
from benchmarks.webhooks import free_port, run_gunicorn  # noqa: E402
from tests.clerk_payloads import (  # noqa: E402
    BASE_MS,
    clerk_user,
    session_created,
    sign,
    user_created,
    user_deleted,
    user_updated,
)
from tests.clerk_payloads import SECRET as WEBHOOK_SECRET  # noqa: E402

HX = {"HX-Request": "true"}
TARGETS_PER_ADMIN = 25
ACKED, REFUSED, FAILED, UNKNOWN = "acknowledged", "refused (4xx)", "failed (5xx)", "unknown (no answer)"
WRITE_KINDS = ("edit save", "key-value add", "key-value edit", "key-value delete", "status change", "bulk status")


# --- What was sent and what came back ---------------------------------------------------------


@dataclass(slots=True)
class Sample:
    kind: str
    started: float  # time.monotonic()
    ended: float
    status: int | None  # None: no answer (timeout, connection error)
    error: str | None = None
    retry_after: str | None = None  # a 5xx's Retry-After header

    @property
    def ms(self) -> float:
        return (self.ended - self.started) * 1000


@dataclass
class Write:
    """One state-changing request and what it should leave behind."""

    kind: str
    slot: tuple  # what it changes: ("first_name", user_id), ("kv", user_id, key), ("status", user_id), ...
    value: object
    token: str | None  # a unique value its audit event carries, to count it
    answer: str = UNKNOWN
    status: int | None = None
    said_saved: bool = False  # a 503 whose page says the change was saved before the database went


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples: list[Sample] = []
        self.writes: list[Write] = []

    def request(self, client: httpx.Client, kind: str, method: str, url: str, **kwargs) -> httpx.Response | None:
        # The kind rides along in a header, for the server-side times in gunicorn's access log.
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-Load-Kind": kind}
        started = time.monotonic()
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            sample = Sample(kind, started, time.monotonic(), None, type(error).__name__)
            response = None
        else:
            retry_after = response.headers.get("Retry-After") if response.status_code >= 500 else None
            sample = Sample(kind, started, time.monotonic(), response.status_code, retry_after=retry_after)
        with self.lock:
            self.samples.append(sample)
        return response

    def write(self, write: Write, response: httpx.Response | None) -> Write:
        if response is None:
            write.answer = UNKNOWN
        else:
            write.status = response.status_code
            write.answer = ACKED if response.status_code < 400 else REFUSED if response.status_code < 500 else FAILED
            write.said_saved = response.status_code == 503 and "Your change was saved" in response.text
        with self.lock:
            self.writes.append(write)
        return write


class FormFields(HTMLParser):
    """The fields a browser would submit from the form whose action ends with `action`."""

    def __init__(self, action: str):
        super().__init__(convert_charrefs=True)
        self.action, self.inside, self.values = action, False, {}
        self._select = self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = (a.get("action") or "").endswith(self.action)
        elif not self.inside or "name" not in a:
            if tag == "option" and self.inside and self._select and "selected" in a:
                self.values[self._select] = a.get("value", "")
            return
        elif tag == "input" and a.get("type") not in ("checkbox", "radio", "submit"):
            self.values[a["name"]] = a.get("value") or ""
        elif tag == "select":
            self._select = a["name"]
        elif tag == "textarea":
            self._textarea = a["name"]
            self.values[a["name"]] = ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data


def form_fields(page: str, action: str) -> dict:
    parser = FormFields(action)
    parser.feed(page)
    fields = parser.values
    for name, value in fields.items():  # a browser drops the newline right after <textarea>
        if value.startswith("\n"):
            fields[name] = value[1:]
    return fields


CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
NEXT_CURSOR = re.compile(r"after=([A-Za-z0-9_\-=.%]+)")


# --- Preparation ------------------------------------------------------------------------------


def prepare(url: str, n_users: int, n_admins: int) -> dict:
    from flask_migrate import upgrade

    from app import create_app
    from app.audit.services import Actor
    from app.auth.services import issue_sign_in_link
    from app.demo.load import seed_demo
    from app.extensions import db
    from app.models import User, UserRole, UserStatus
    from app.users.services import create_admin

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production"})
    with app.app_context():
        upgrade()
        started = time.perf_counter()
        seed_demo(n_users, actor=Actor.cli())
        db.session.commit()
        seeded = time.perf_counter() - started
        db.session.execute(sa.text("ANALYZE"))
        admins = [create_admin(f"load-admin-{i:02d}@staff.example", actor=Actor.cli()) for i in range(n_admins)]
        db.session.flush()
        targets = db.session.scalars(
            sa.select(User.id)
            .where(User.role == UserRole.USER, User.status == UserStatus.ACTIVE, User.deleted_at.is_(None))
            .order_by(sa.func.md5(User.id))
            .limit(n_admins * TARGETS_PER_ADMIN)
        ).all()
        browse = db.session.scalars(sa.select(User.id).order_by(sa.func.md5(User.id + "b")).limit(300)).all()
        names = db.session.scalars(sa.select(User.last_name).where(User.last_name.is_not(None)).limit(300)).all()
        tokens = [issue_sign_in_link(a, secret_key=SECRET, max_age=3600, actor=Actor.cli()) for a in admins]
        db.session.commit()
        total = db.session.scalar(sa.select(sa.func.count()).select_from(User))
        db.engine.dispose()
    terms = sorted({n[:k].lower() for n in names for k in (3, 4) if len(n) >= k})
    return {
        "total": total,
        "seeded_s": seeded,
        "tokens": tokens,
        "browse": list(browse),
        "terms": terms,
        "targets": [list(targets[i::n_admins]) for i in range(n_admins)],
    }


# --- The admins -------------------------------------------------------------------------------


class Admin(threading.Thread):
    keep_pairs: int | None = None  # delete one of its pairs of a user before adding more than this

    def __init__(
        self,
        n: int,
        base: str,
        token: str,
        targets: list[str],
        data: dict,
        recorder: Recorder,
        deadline: float,
        timeout: float,
        seed: int,
    ):
        super().__init__(name=f"admin-{n:02d}", daemon=True)
        self.n, self.base, self.token, self.targets, self.data = n, base, token, targets, data
        self.rec, self.deadline, self.timeout = recorder, deadline, timeout
        self.rng = random.Random(seed)
        self.counter = 0
        self.status = dict.fromkeys(targets, "active")  # as last acknowledged
        self.items: dict[str, list[tuple[str, str]]] = defaultdict(list)  # user id: [(data id, key)]
        self.csrf = ""
        self.signed_in = False

    def unique(self, what: str) -> str:
        self.counter += 1
        return f"Ld{self.n:02d}{what}{self.counter:05d}"

    def sign_in(self, client: httpx.Client) -> None:
        response = self.rec.request(client, "sign-in link", "GET", f"/auth/link/{self.token}")
        self.signed_in = response is not None and response.status_code == 302
        page = self.rec.request(client, "user page", "GET", f"/users/{self.targets[0]}")
        if page is not None and page.status_code == 200:
            self.csrf = CSRF.search(page.text).group(1)

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=self.timeout) as client:
            self.sign_in(client)
            if not self.signed_in:
                return
            functions, weights = zip(*self.actions(), strict=False)
            while time.monotonic() < self.deadline:
                self.rng.choices(functions, weights)[0](client)
                time.sleep(self.rng.uniform(0, 0.05))

    def actions(self) -> list[tuple]:
        """(method, weight): what the admin does, and how often (benchmarks/soak.py adds to it)."""
        return [
            (self.browse_list, 18),
            (self.search, 14),
            (self.filter, 8),
            (self.next_page, 6),
            (self.detail, 14),
            (self.edit, 8),
            (self.add_data, 10),
            (self.edit_data, 8),
            (self.change_status, 8),
        ]

    # browsing
    def browse_list(self, client):
        if self.rng.random() < 0.5:
            self.rec.request(client, "list page", "GET", "/users")
        else:
            self.rec.request(client, "list (htmx)", "GET", "/users", headers=HX)

    def search(self, client):
        self.rec.request(
            client, "search (htmx)", "GET", "/users", params={"q": self.rng.choice(self.data["terms"])}, headers=HX
        )

    def filter(self, client):
        params = self.rng.choice(
            [
                {"status": "suspended"},
                {"role": "admin"},
                {"status": ["active", "invited"]},
                {"sort": "email"},
                {"sort": "-last_sign_in_at"},
                {"role": "user", "status": "inactive"},
            ]
        )
        self.rec.request(client, "filter (htmx)", "GET", "/users", params=params, headers=HX)

    def next_page(self, client):
        first = self.rec.request(client, "list (htmx)", "GET", "/users", headers=HX)
        if first is None or first.status_code != 200:
            return
        found = NEXT_CURSOR.search(first.text)
        if found:
            self.rec.request(
                client, "next page (htmx)", "GET", f"/users?after={html.unescape(found.group(1))}", headers=HX
            )

    def detail(self, client):
        pool = self.data["browse"] if self.rng.random() < 0.7 else self.targets
        self.rec.request(client, "user page", "GET", f"/users/{self.rng.choice(pool)}")

    # editing
    def edit(self, client):
        user_id = self.rng.choice(self.targets)
        form = self.rec.request(client, "edit form", "GET", f"/users/{user_id}/edit")
        if form is None or form.status_code != 200:
            return
        fields = form_fields(form.text, f"/users/{user_id}/edit")
        name = self.unique("e")
        fields["first_name"] = name
        write = Write("edit save", ("first_name", user_id), name, name)
        response = self.rec.request(client, "edit save", "POST", f"/users/{user_id}/edit", data=fields)
        self.rec.write(write, response)
        if response is not None and response.status_code < 400:
            self.status[user_id] = fields.get("status", self.status[user_id])

    def add_data(self, client):
        user_id = self.rng.choice(self.targets)
        if self.keep_pairs is not None and len(self.items[user_id]) >= self.keep_pairs:
            return self.delete_data(client, user_id)  # the user's pairs stay as many, not more each minute
        key, value = self.unique("k").lower(), self.unique("v")
        write, response = self.data_write(client, "key-value add", user_id, key, value, f"/users/{user_id}/data")
        if write.answer == ACKED:
            found = re.search(r'<tr id="data-([^"]+)">\s*<td[^>]*><code>' + re.escape(key) + "</code>", response.text)
            if found:
                self.items[user_id].append((found.group(1), key))

    def edit_data(self, client):
        owned = [u for u in self.targets if self.items[u]]
        if not owned:
            return self.add_data(client)
        user_id = self.rng.choice(owned)
        data_id, key = self.rng.choice(self.items[user_id])
        self.data_write(client, "key-value edit", user_id, key, self.unique("u"), f"/users/{user_id}/data/{data_id}")

    def delete_data(self, client, user_id: str) -> None:
        """Delete the oldest pair this admin added to the user (its row is gone whatever the answer)."""
        data_id, key = self.items[user_id].pop(0)
        self.data_write(client, "key-value delete", user_id, key, None, f"/users/{user_id}/data/{data_id}/delete")

    def data_write(self, client, kind: str, user_id: str, key: str, value: str | None, url: str):
        """POST a pair's add, edit (`value`) or deletion (None) as htmx does; (write, response)."""
        write = Write(kind, ("kv", user_id, key), value, value)
        form = {"csrf_token": self.csrf} if value is None else {"csrf_token": self.csrf, "key": key, "value": value}
        response = self.rec.request(client, kind, "POST", url, data=form, headers=HX)
        return self.rec.write(write, response), response

    def change_status(self, client):
        user_id = self.rng.choice(self.targets)
        to = "active" if self.status[user_id] == "suspended" else "suspended"
        write = Write("status change", ("status", user_id), to, None)
        htmx = self.rng.random() < 0.5
        response = self.rec.request(
            client,
            "status change",
            "POST",
            f"/users/{user_id}/status",
            data={"csrf_token": self.csrf, "status": to, "view": "row" if htmx else "detail"},
            headers=HX if htmx else None,
        )
        self.rec.write(write, response)
        if write.answer == ACKED:
            self.status[user_id] = to


# --- The webhooks -----------------------------------------------------------------------------


@dataclass
class Delivery:
    msg_id: str
    payload: dict
    clerk_id: str
    type: str
    value: object  # first name for user.*, sign-in ms for session.created
    answers: list = field(default_factory=list)  # (status or None, outcome)
    due: float = 0.0

    @property
    def done(self) -> bool:
        return any(status is not None and status < 300 for status, _ in self.answers)


class WebhookSender(threading.Thread):
    """Bursts of signed deliveries for its own Clerk users; Svix's retry for those not taken."""

    def __init__(
        self, n: int, url: str, recorder: Recorder, deadline: float, timeout: float, seed: int, burst: int, every: float
    ):
        super().__init__(name=f"webhooks-{n}", daemon=True)
        self.n, self.url, self.rec, self.deadline, self.timeout = n, url, recorder, deadline, timeout
        self.rng = random.Random(seed)
        self.burst, self.every = burst, every
        self.users: list[dict] = []  # Clerk user objects as last sent
        self.deleted: set[str] = set()
        self.deliveries: list[Delivery] = []
        self.open: list[Delivery] = []  # sent, not taken yet: what Svix retries
        self.counter = 0

    def next_event(self) -> Delivery:
        self.counter += 1
        live = [u for u in self.users if u["id"] not in self.deleted]
        roll = self.rng.random()
        if not live or roll < 0.35:
            user = clerk_user(
                email=f"hook{self.n}-{self.counter:06d}@example.com",
                first_name=f"Wh{self.n}c{self.counter}",
                updated_at=BASE_MS + self.counter * 1000,
            )
            self.users.append(user)
            return Delivery(
                f"msg_{uuid.uuid4().hex}", user_created(user), user["id"], "user.created", user["first_name"]
            )
        user = self.rng.choice(live)
        if roll < 0.75:
            name = f"Wh{self.n}u{self.counter}"
            payload = user_updated(user, first_name=name)
            self.users[self.users.index(user)] = payload["data"]
            return Delivery(f"msg_{uuid.uuid4().hex}", payload, user["id"], "user.updated", name)
        if roll < 0.95:
            at = BASE_MS + 10_000_000 + self.counter * 1000
            return Delivery(
                f"msg_{uuid.uuid4().hex}", session_created(user["id"], at=at), user["id"], "session.created", at
            )
        self.deleted.add(user["id"])
        return Delivery(f"msg_{uuid.uuid4().hex}", user_deleted(user["id"]), user["id"], "user.deleted", None)

    def send(self, client: httpx.Client, delivery: Delivery, kind: str) -> None:
        signed = sign(delivery.payload, msg_id=delivery.msg_id, secret=WEBHOOK_SECRET)  # signed at each attempt
        response = self.rec.request(client, kind, "POST", self.url, content=signed.body, headers=signed.headers)
        status = response.status_code if response is not None else None
        outcome = "?"
        if response is not None:
            try:
                outcome = response.json().get("outcome", "?")
            except ValueError:
                outcome = "not json"
        delivery.answers.append((status, outcome))
        if not delivery.done:
            delivery.due = time.monotonic() + 5.0  # Svix's second attempt comes 5 s after the first
            if delivery not in self.open:
                self.open.append(delivery)

    def retry_due(self, client: httpx.Client, final: bool = False) -> None:
        now = time.monotonic()
        for delivery in list(self.open):
            if not delivery.done and (final or delivery.due <= now):
                self.send(client, delivery, "webhook retry")
        self.open = [d for d in self.open if not d.done]

    def run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while time.monotonic() < self.deadline:
                started = time.monotonic()
                for _ in range(self.burst):
                    delivery = self.next_event()
                    self.deliveries.append(delivery)
                    self.send(client, delivery, "webhook")
                    if self.rng.random() < 0.1:
                        self.send(client, delivery, "webhook duplicate")
                self.retry_due(client)
                time.sleep(max(0.0, self.every - (time.monotonic() - started)))
            for _ in range(30):  # after the run, Svix keeps retrying what was not taken
                if not self.open:
                    break
                self.retry_due(client, final=True)
                time.sleep(1)


# --- The restart ------------------------------------------------------------------------------


@dataclass
class Outage:
    stop_issued: float = 0.0
    stopped: float = 0.0
    start_issued: float = 0.0
    up: float = 0.0


def restart_midway(cluster: ThrowawayCluster, at: float, down: float, outage: Outage) -> threading.Thread:
    def run():
        time.sleep(at)
        outage.stop_issued = time.monotonic()
        cluster.stop("fast")
        outage.stopped = time.monotonic()
        time.sleep(down)
        outage.start_issued = time.monotonic()
        cluster.start()  # pg_ctl -w: returns once the server accepts connections
        outage.up = time.monotonic()

    thread = threading.Thread(target=run, name="restart", daemon=True)
    thread.start()
    return thread


# --- Checking the database against what was acknowledged -------------------------------------


def allowed_final(writes: list[Write], initial) -> tuple[set, bool]:
    """Values the slot may hold now: the last acknowledged one, or any unacknowledged one after it."""
    last_ack = max((i for i, w in enumerate(writes) if w.answer == ACKED), default=None)
    allowed = set() if last_ack is not None else {initial}
    if last_ack is not None:
        allowed.add(writes[last_ack].value)
    start = 0 if last_ack is None else last_ack + 1
    allowed |= {w.value for w in writes[start:] if w.answer in (FAILED, UNKNOWN)}
    return allowed, last_ack is not None


def check_database(url: str, writes: list[Write], senders: list[WebhookSender], run_started_at) -> dict:
    engine = sa.create_engine(url)
    report = {kind: Counter() for kind in (*WRITE_KINDS, "webhook delivery")}
    problems: list[str] = []
    with engine.connect() as db:
        audits = db.execute(
            sa.text("SELECT action, target_id, changes, source FROM audit_events WHERE occurred_at >= :t"),
            {"t": run_started_at},
        ).all()
        token_count: Counter = Counter()  # each unique value written, by the audit events that wrote it
        status_audits: Counter = Counter()
        webhook_audits: Counter = Counter()
        for action, target_id, changes, source in audits:
            for before_after in (json.loads(changes) if changes else {}).values():
                after = before_after[-1] if isinstance(before_after, list) and before_after else None
                if isinstance(after, str) and after.startswith(("Ld", "Wh")):
                    token_count[after] += 1
            if action in ("user.suspend", "user.reactivate"):
                status_audits[target_id] += 1
            if source == "webhook":
                webhook_audits[action, target_id] += 1

        # Dashboard writes, slot by slot, in the order each admin made them.
        by_slot: dict[tuple, list[Write]] = defaultdict(list)
        for write in writes:
            if write.kind in WRITE_KINDS:
                by_slot[write.slot].append(write)
        for slot, slot_writes in by_slot.items():
            if slot[0] == "first_name":
                now = db.scalar(sa.text("SELECT first_name FROM users WHERE id = :id"), {"id": slot[1]})
                initial = None
            elif slot[0] == "kv":
                rows = db.execute(
                    sa.text("SELECT value FROM user_data WHERE user_id = :u AND key = :k"), {"u": slot[1], "k": slot[2]}
                ).all()
                if len(rows) > 1:
                    problems.append(f"key {slot[2]} of {slot[1]} is there {len(rows)} times")
                now, initial = (rows[0][0] if rows else None), None
            else:
                now = db.scalar(sa.text("SELECT status::text FROM users WHERE id = :id"), {"id": slot[1]})
                initial = "active"
            allowed, any_acked = allowed_final(slot_writes, initial)
            # A never-saved name keeps its demo value.
            holds = not ((slot[0] != "first_name" or any_acked) and now not in allowed)
            if not holds:
                problems.append(f"{slot}: holds {now!r}, expected one of {sorted(map(str, allowed))}")
                for w in slot_writes:
                    if w.answer == ACKED:
                        report[w.kind]["lost"] += 1
            for w in slot_writes:
                report[w.kind][w.answer] += 1
                # A deletion leaves no value to count: its key is gone, as the slot's check just saw.
                report[w.kind]["verified"] += w.kind == "key-value delete" and w.answer == ACKED and holds
                if w.token is not None:
                    seen = token_count[w.token]
                    if seen > 1:
                        report[w.kind]["doubled"] += 1
                        problems.append(f"{w.kind} {w.token} audited {seen} times")
                    elif w.answer == ACKED and seen == 1:
                        report[w.kind]["verified"] += 1
                    elif w.answer == ACKED:
                        report[w.kind]["lost"] += 1
                        problems.append(f"{w.kind} {w.token} was acknowledged but is not in the audit trail")
                    elif seen == 1:
                        report[w.kind]["unacknowledged but landed"] += 1
                        report[w.kind]["of which the 503 said 'saved'"] += w.said_saved
            # A status change (one user) or a bulk one (each user it changes) is one audit event.
            status_writes = [w for w in slot_writes if w.kind in ("status change", "bulk status")]
            if status_writes:
                acked = sum(w.answer == ACKED for w in status_writes)
                maybe = sum(w.answer in (FAILED, UNKNOWN) for w in status_writes)
                audited = status_audits[slot[1]]
                if not acked <= audited <= acked + maybe:
                    problems.append(f"{slot}: {acked} status changes acknowledged, {audited} audited")
                    report[status_writes[-1].kind]["doubled" if audited > acked + maybe else "lost"] += 1
                else:
                    for w in status_writes:
                        report[w.kind]["verified"] += w.answer == ACKED

        # Webhooks: every delivery was eventually taken (Svix retries); one row per svix id.
        deliveries = [d for s in senders for d in s.deliveries]
        rows = dict(db.execute(sa.text("SELECT id, outcome FROM webhook_events")).all())
        users = {
            r.clerk_id: r
            for r in db.execute(
                sa.text(
                    "SELECT id, clerk_id, first_name, last_sign_in_at, deleted_at, clerk_updated_at FROM users "
                    "WHERE clerk_id LIKE 'user_%' AND clerk_id NOT LIKE 'user_demo_%'"
                )
            ).all()
        }
        counts = Counter(
            r[0] for r in db.execute(sa.text("SELECT clerk_id FROM users WHERE clerk_id NOT LIKE 'user_demo_%'")).all()
        )
        report_w = report["webhook delivery"]
        for d in deliveries:
            answers = {status for status, _ in d.answers}
            report_w[ACKED if d.done else FAILED if any(s is not None for s in answers) else UNKNOWN] += 1
            outcome = rows.get(d.msg_id)
            if d.done and outcome in ("applied", "stale", "ignored"):
                report_w["verified"] += 1
            elif d.done:
                report_w["lost"] += 1
                problems.append(f"delivery {d.msg_id} ({d.type}) acknowledged but its row is {outcome!r}")
            applied = sum(1 for _, o in d.answers if o == "applied")
            if applied > 1:
                report_w["doubled"] += 1
                problems.append(f"delivery {d.msg_id} answered 'applied' {applied} times")
        by_user: dict[str, list[Delivery]] = defaultdict(list)
        for d in deliveries:
            by_user[d.clerk_id].append(d)
        for clerk_id, ds in by_user.items():
            if counts[clerk_id] != 1:
                problems.append(f"Clerk user {clerk_id}: {counts[clerk_id]} rows")
                continue
            user = users[clerk_id]
            if webhook_audits["user.create", user.id] > 1:
                problems.append(f"Clerk user {clerk_id}: created {webhook_audits['user.create', user.id]} times")
            named = [d for d in ds if d.type in ("user.created", "user.updated") and d.done]
            newest = max(named, key=lambda d: d.payload["data"]["updated_at"], default=None)
            deleted = any(d.type == "user.deleted" and d.done for d in ds)
            if deleted and user.deleted_at is None:
                problems.append(f"Clerk user {clerk_id}: deleted in Clerk but not here")
            if not deleted and newest is not None and user.first_name != newest.value:
                problems.append(f"Clerk user {clerk_id}: first name {user.first_name!r}, newest sent {newest.value!r}")
            for d in named:  # each name is applied (and audited) once, or never when stale
                seen = token_count[d.value]
                if seen > 1 or (rows.get(d.msg_id) == "applied" and seen != 1):
                    problems.append(
                        f"delivery {d.msg_id} ({d.type}, {rows.get(d.msg_id)}): its name audited {seen} times"
                    )
                    report_w["doubled" if seen > 1 else "lost"] += 1
        report["webhook users"] = Counter({"users": len(by_user), "rows": sum(counts[c] for c in by_user)})
    engine.dispose()
    return {"report": report, "problems": problems}


# --- Output -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(q * len(values)) - 1))]


def status_text(counter: Counter) -> str:
    return ", ".join(
        f"{'no answer' if k is None else k}: {v}"
        for k, v in sorted(counter.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    )


def print_requests(samples: list[Sample], title: str) -> None:
    print(f"\n{title}\n")
    print("| request | count | p50 ms | p95 ms | status codes |")
    print("|---|---:|---:|---:|---|")
    kinds = sorted({s.kind for s in samples}, key=lambda k: (k.startswith("webhook"), k))
    for kind in kinds:
        these = [s for s in samples if s.kind == kind]
        times = [s.ms for s in these]
        print(
            f"| {kind} | {len(these)} | {statistics.median(times):.1f} | {pct(times, 0.95):.1f} | "
            f"{status_text(Counter(s.status for s in these))} |"
        )
    times = [s.ms for s in samples]
    print(
        f"| **all** | {len(samples)} | {statistics.median(times):.1f} | {pct(times, 0.95):.1f} | "
        f"{status_text(Counter(s.status for s in samples))} |"
    )


def print_writes(check: dict) -> None:
    print("\nWrites, and what the database holds afterwards\n")
    columns = (
        ACKED,
        "verified",
        "lost",
        "doubled",
        REFUSED,
        FAILED,
        UNKNOWN,
        "unacknowledged but landed",
        "of which the 503 said 'saved'",
    )
    print("| write | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for kind, counter in check["report"].items():
        if kind == "webhook users" or not any(counter.values()):
            continue
        print(f"| {kind} | " + " | ".join(str(counter.get(c, 0)) for c in columns) + " |")
    users = check["report"]["webhook users"]
    print(f"\nClerk users made by webhooks: {users['users']}, rows for them: {users['rows']}")


def print_outage(samples: list[Sample], outage: Outage, t0: float) -> dict:
    down = [s for s in samples if outage.stopped <= s.started and s.ended <= outage.start_issued]
    during_stop = [s for s in samples if outage.stop_issued <= s.started < outage.stopped]
    starting = [s for s in samples if outage.start_issued <= s.started < outage.up]
    after = [s for s in samples if s.started >= outage.up]
    print(
        f"\nRestart: stop issued at {outage.stop_issued - t0:.1f} s, stopped {1000 * (outage.stopped - outage.stop_issued):.0f} ms"
        f" later; down {outage.start_issued - outage.stopped:.1f} s; pg_ctl start took "
        f"{1000 * (outage.up - outage.start_issued):.0f} ms (back at {outage.up - t0:.1f} s)\n"
    )
    print("| window | requests | status codes | slowest ms |")
    print("|---|---:|---|---:|")
    for name, these in (
        ("while stopping", during_stop),
        ("while down", down),
        ("while starting", starting),
        ("after it was back", after),
    ):
        slowest = max((s.ms for s in these), default=0)
        print(f"| {name} | {len(these)} | {status_text(Counter(s.status for s in these))} | {slowest:.0f} |")
    print("\nRecovery: from the database accepting connections to the first success of each kind\n")
    print("| request | first success sent after | answered after | failures after it was back |")
    print("|---|---:|---:|---:|")
    recovery = {}
    for kind in sorted({s.kind for s in after}):
        these = sorted((s for s in after if s.kind == kind), key=lambda s: s.started)
        ok = next((s for s in these if s.status is not None and s.status < 400), None)
        bad = sum(1 for s in these if s.status is None or s.status >= 500)
        if ok:
            recovery[kind] = ok.ended - outage.up
            print(
                f"| {kind} | {1000 * (ok.started - outage.up):.0f} ms | {1000 * (ok.ended - outage.up):.0f} ms | {bad} |"
            )
        else:
            print(f"| {kind} | none | none | {bad} |")
    return {"down": down, "after": after, "recovery": recovery}


# --- The server -------------------------------------------------------------------------------


def server_env(url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: production, the throwaway database, a known signing secret; no
    Clerk unless `extra` says so."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET,
        "APP_ENV": "production",
        "SESSION_COOKIE_SECURE": "0",
        "CLERK_WEBHOOK_SIGNING_SECRET": WEBHOOK_SECRET,
        "FLASK_APP": "app",
    }
    for key in ("CLERK_SECRET_KEY", "CLERK_JWT_KEY", "CLERK_API_URL"):
        env.pop(key, None)
    env.update(extra or {})
    return env


# Each access-log line: method, path, status, server microseconds, then the load's kind of request.
KIND_ACCESS_FORMAT = "%(m)s %(U)s %(s)s %(D)s %({x-load-kind}i)s"


def start_server(
    env: dict[str, str], workers: int, log: Path, access_log: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """gunicorn with `workers` sync workers on a free port; (process, base URL)."""
    port = free_port()
    process = run_gunicorn(
        env, "app:create_app()", port, workers, log, access_log or Path(os.devnull), KIND_ACCESS_FORMAT
    )
    return process, f"http://127.0.0.1:{port}"


# --- Main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--admins", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--webhook-threads", type=int, default=2)
    parser.add_argument("--burst", type=int, default=10, help="deliveries per burst and thread")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between bursts")
    parser.add_argument("--timeout", type=float, default=15.0, help="client timeout: no answer by then is 'unknown'")
    parser.add_argument("--restart", action="store_true", help="restart PostgreSQL in the middle of the load")
    parser.add_argument("--restart-at", type=float, default=25.0)
    parser.add_argument("--down-seconds", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=None, help="the throwaway cluster's port (default 5433 or free)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    cluster = ThrowawayCluster(args.port, prefix="mixed-load-pg-")
    gunicorn = None
    log = Path(tempfile.gettempdir()) / f"mixed-load-gunicorn-{os.getpid()}.log"
    try:
        cluster.init()
        cluster.start()
        url = sa.make_url(cluster.url).set(database="mixed_load")
        ensure_database(url)
        url_text = url.render_as_string(hide_password=False)
        print(
            f"throwaway PostgreSQL {cluster.bindir.parent.name} on 127.0.0.1:{cluster.port} ({cluster.root});"
            f" seeding {args.users:,} demo users ...",
            flush=True,
        )
        data = prepare(url_text, args.users, args.admins)
        print(f"  {data['total']:,} users in the table (seeded in {data['seeded_s']:.0f} s)", flush=True)

        gunicorn, base = start_server(server_env(url_text), args.workers, log)

        with sa.create_engine(url_text).connect() as connection:
            run_started_at = connection.scalar(sa.text("SELECT now() AT TIME ZONE 'utc'"))
        recorder = Recorder()
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        admins = [
            Admin(i, base, data["tokens"][i], data["targets"][i], data, recorder, deadline, args.timeout, args.seed + i)
            for i in range(args.admins)
        ]
        senders = [
            WebhookSender(
                i,
                f"{base}/webhooks/clerk",
                recorder,
                deadline,
                args.timeout,
                args.seed + 100 + i,
                args.burst,
                args.every,
            )
            for i in range(args.webhook_threads)
        ]
        outage = Outage()
        print(
            f"{args.admins} admins and {args.webhook_threads} webhook senders for {args.seconds:.0f} s against"
            f" gunicorn -w {args.workers}"
            + (f"; PostgreSQL restarts at {args.restart_at:.0f} s" if args.restart else ""),
            flush=True,
        )
        restarter = restart_midway(cluster, args.restart_at, args.down_seconds, outage) if args.restart else None
        for thread in (*admins, *senders):
            thread.start()
        for thread in admins:
            thread.join()
        ran = time.monotonic() - t0
        for thread in senders:
            thread.join()
        if restarter:
            restarter.join()

        samples = recorder.samples
        during = [s for s in samples if s.started < deadline]
        print(
            f"\n{data['total']:,} users; {args.admins} admins ({sum(a.signed_in for a in admins)} signed in),"
            f" {args.webhook_threads} webhook threads (bursts of {args.burst} every {args.every:g} s);"
            f" {len(during)} requests in {ran:.1f} s ({len(during) / ran:.0f}/s)"
        )
        print_requests(samples, "Requests (client-side wall time on loopback)")
        if args.restart:
            seen = print_outage(samples, outage, t0)
        check = check_database(url_text, recorder.writes, senders, run_started_at)
        print_writes(check)
        server_errors = [s for s in samples if s.status is not None and s.status >= 500]
        problems = list(check["problems"])
        if args.restart:
            bad_down = [s for s in seen["down"] if s.status != 503]
            if bad_down:
                problems.append(
                    f"{len(bad_down)} requests while the database was down were not answered 503: "
                    f"{status_text(Counter(s.status for s in bad_down))}"
                )
            late = [s for s in seen["after"] if s.status is None or s.status >= 500]
            if late:
                problems.append(f"{len(late)} requests failed after the database was back")
            if any(s.status == 500 for s in samples):
                problems.append("some requests were answered 500")
        elif server_errors:
            problems.append(
                f"{len(server_errors)} answers were 5xx: {status_text(Counter(s.status for s in server_errors))}"
            )
        if any(s.status is None for s in samples):
            problems.append(
                f"{sum(s.status is None for s in samples)} requests got no answer within {args.timeout:g} s"
            )
        logged = log.read_text(errors="replace") if log.exists() else ""
        print(
            f"\ngunicorn's log: {logged.count('database unreachable')} 'database unreachable' warnings,"
            f" {logged.count('Traceback')} tracebacks, {logged.count('[ERROR]') + logged.count('ERROR [')} errors"
        )
        print("5xx answers: " + (status_text(Counter(s.status for s in server_errors)) or "none"))
        print(
            "result: "
            + (
                "every acknowledged write is in the database exactly once"
                if not problems
                else "PROBLEMS:\n  " + "\n  ".join(problems[:40])
            )
        )
        if problems:
            raise SystemExit(f"failed; gunicorn's log is {log}, PostgreSQL's {cluster.log}")
        log.unlink(missing_ok=True)
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        cluster.destroy()


if __name__ == "__main__":
    main()
