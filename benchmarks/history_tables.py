"""Time the pages over the tables that only grow (audit_events, webhook_events) at ten million rows
each, and `flask maintenance prune` on them, through gunicorn on PostgreSQL.

    .venv/bin/python benchmarks/history_tables.py [--repeat 40] [--keep] [--reuse]

The database is BENCH_HISTORY_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/bench_history),
a database of its own: made afresh (dropped first when it exists) unless `--reuse`, and dropped at
the end unless `--keep`. It is migrated with the project's migrations and seeded:

- `seed_demo(--users)`: a million demo users, plus 60 staff members (the actors);
- --audit-events audit events over 90 days, in time order as a live table grows: 60% from Clerk's
  webhook, 35% from the dashboard (staff skewed: a few do most of the work), 5% from the command
  line, across about 30 actions; targets spread over every user, 2% of events on 20 users (about 10,000
  each) and 1% on the next 1,000 (about 100 each);
- --deliveries webhook deliveries over 90 days, in time order, Svix-like time-ordered ids, across 12
  types (a tenth of them types the dashboard ignores), mostly applied, 4% stale, 0.3% failed, each
  with a Clerk-shaped JSON payload of 1.5 to 2 KB.

Both are written by INSERT ... SELECT from generate_series on two connections side by side, with
the tables' indexes dropped first and built again after (as a restore would); then VACUUM ANALYZE.

Then gunicorn serves the app (2 workers), a staff member signs in with a one-time link, and each
request is timed --repeat times after a warm-up: the audit trail's first page, filtered by action
(common, uncommon, and one that occurred once), by actor (Clerk's webhook, the busiest and the
quietest staff member, part of an email, an id, nobody), by source, by target (a user's id, a
busy and a quiet user's email, part of one, nobody), its 20th page (reached by following the pager's "next" links), and the 20th page of an action; the webhooks
page, by outcome, by type, both, the last 24 hours, its 20th page, one delivery; the page of a user
with about 10,000 events and of one with a few. For each: the server's time (gunicorn's access
log) and the client's over HTTP, p50 and p95, and the bare SQL replayed alone. Every statement is
EXPLAIN ANALYZEd: a sequential scan of a big table is reported, and the plans of statements slower
than --explain-over-ms are printed.

Last, `flask maintenance prune` runs as a subprocess on the oldest two days of each table
(deliveries, payloads, audit events) while a client asks for the audit trail, the webhooks page and
a busy user's page in turn: its rows per second, and those pages' p50 and p95 during the prune;
then VACUUM (ANALYZE) of both tables, autovacuum's work (timed too). A run prunes what it measured,
so a `--reuse` run measures slightly smaller tables.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from users_list import (  # noqa: E402
    HX,
    SECRET,
    SqlFloor,
    ensure_database,
    percentiles,
    start_gunicorn,
    time_plan,
)

from app import create_app  # noqa: E402
from app.audit.services import Actor  # noqa: E402
from app.auth.services import issue_sign_in_link  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import User, UserRole  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_history"
TARGET_P95_MS = 50.0
SPAN = timedelta(days=90)
STAFF = 60
HOT_USERS = 20  # about 2% of the audit events: ~10,000 each at ten million
WARM_USERS = 1000  # about 1%: ~100 each
BIG_TABLES = ("users", "audit_events", "webhook_events")
NEXT_LINK = re.compile(r'<a href="([^"]+)"[^>]*rel="next"')
CHUNK = 500_000

# Weighted choices, as arrays a random index picks from (weights in parts of 100).
WEBHOOK_ACTIONS = {
    "user.update": 52,
    "user.sign_in": 30,
    "user.create": 9,
    "user.delete": 2,
    "user.claimed": 1,
    "membership.create": 3,
    "membership.update": 1,
    "membership.delete": 1,
    "organization_invitation.create": 1,
}
DASHBOARD_ACTIONS = {
    "user.update": 24,
    "user_data.add": 10,
    "user_data.update": 9,
    "user_data.delete": 4,
    "user.suspend": 8,
    "user.reactivate": 6,
    "user.deactivate": 3,
    "user.metadata": 8,
    "user.invite": 5,
    "user.invitation_resend": 2,
    "user.unlock": 2,
    "user.sessions_revoke": 3,
    "auth.signed_in": 10,
    "auth.signed_out": 4,
    "clerk.retry": 1,
    "clerk.take_value": 1,
}
CLI_ACTIONS = {"auth.sign_in_link_issued": 70, "user.create_admin": 10, "clerk.retry": 15, "stats.rebuild": 5}
DELIVERY_TYPES = {
    "user.updated": 44,
    "session.created": 30,
    "user.created": 8,
    "user.deleted": 1,
    "organizationMembership.created": 3,
    "organizationMembership.updated": 1,
    "organization.updated": 1,
    "organization.created": 1,
    # Types the dashboard does not handle: recorded as ignored.
    "email.created": 5,
    "sms.created": 2,
    "session.ended": 2,
    "role.created": 2,
}
IGNORED_TYPES = ("email.created", "sms.created", "session.ended", "role.created")


def _array(weights: dict[str, int]) -> str:
    """An SQL array literal of 100 entries, each value repeated by its weight."""
    assert sum(weights.values()) == 100, weights
    values = [value for value, weight in weights.items() for _ in range(weight)]
    return "ARRAY[" + ",".join(f"'{v}'" for v in values) + "]"


# --- seeding ----------------------------------------------------------------------------------

PEOPLE = """
CREATE TEMP TABLE people AS
SELECT row_number() OVER (ORDER BY md5(id)) AS n, id, email, clerk_id FROM users
WHERE role = 'user' AND deleted_at IS NULL AND email NOT LIKE '%@bench.example';
CREATE UNIQUE INDEX ON people (n);
CREATE TEMP TABLE staff AS
SELECT row_number() OVER (ORDER BY email) - 1 AS k, id, email FROM users WHERE email LIKE 'staff-%@bench.example';
CREATE UNIQUE INDEX ON staff (k);
ANALYZE people; ANALYZE staff;
"""

# Which person an event is about: 2% the hot 20, 1% the next 1,000, the rest anyone.
PERSON = f"""CASE WHEN g.r4 < 0.02 THEN 1 + floor(g.r5 * {HOT_USERS})
     WHEN g.r4 < 0.03 THEN {HOT_USERS + 1} + floor(g.r5 * {WARM_USERS})
     ELSE {HOT_USERS + WARM_USERS + 1} + floor(g.r5 * (%(people)s - {HOT_USERS + WARM_USERS})) END"""

AUDIT_INSERT = f"""
INSERT INTO audit_events (id, occurred_at, source, actor_id, actor_label, action, target_id, target_label,
                          changes, remote_addr)
SELECT md5('audit' || e.i)::uuid::text, e.at, e.source, e.actor_id, e.actor_label, e.action, p.id, p.email,
       CASE e.action
         WHEN 'user.update' THEN '{{"first_name": ["Name' || mod(e.i, 97) || '", "Name' || mod(e.i, 89) || '"]}}'
         WHEN 'user.suspend' THEN '{{"status": ["active", "suspended"]}}'
         WHEN 'user.reactivate' THEN '{{"status": ["suspended", "active"]}}'
         WHEN 'user.deactivate' THEN '{{"status": ["active", "inactive"]}}'
         WHEN 'user.sign_in' THEN '{{"last_sign_in_at": ["2026-01-01T00:00:00", "2026-01-02T00:00:00"]}}'
         WHEN 'user.metadata' THEN '{{"public_metadata": ["{{}}", "{{\\"plan\\": \\"pro\\"}}"]}}'
         WHEN 'user_data.add' THEN '{{"key": [null, "plan"], "value": [null, "pro"]}}'
         WHEN 'user_data.update' THEN '{{"value": ["basic", "pro"]}}'
         WHEN 'user.create' THEN '{{"email": [null, "' || p.email || '"]}}'
       END,
       e.remote_addr
FROM (
  SELECT g.i, g.r5, g.r4,
         %(t0)s + (g.i * %(span)s / %(total)s) * interval '1 second' AS at,
         CASE WHEN g.r1 < 0.60 THEN 'webhook' WHEN g.r1 < 0.95 THEN 'dashboard' ELSE 'cli' END AS source,
         CASE WHEN g.r1 >= 0.60 AND g.r1 < 0.95 THEN s.id END AS actor_id,
         CASE WHEN g.r1 < 0.60 THEN 'Clerk webhook' WHEN g.r1 < 0.95 THEN s.email ELSE 'command line' END AS actor_label,
         CASE WHEN g.r1 < 0.60 THEN ({_array(WEBHOOK_ACTIONS)})[1 + floor(g.r2 * 100)::int]
              WHEN g.r1 < 0.95 THEN ({_array(DASHBOARD_ACTIONS)})[1 + floor(g.r2 * 100)::int]
              ELSE ({_array(CLI_ACTIONS)})[1 + floor(g.r2 * 100)::int] END AS action,
         CASE WHEN g.r1 >= 0.60 AND g.r1 < 0.95 THEN '10.0.' || s.k || '.' || mod(g.i, 250) END AS remote_addr
  FROM (SELECT i, random() r1, random() r2, random() r3, random() r4, random() r5
        FROM generate_series(%(lo)s, %(hi)s) i) g
  JOIN staff s ON s.k = floor(g.r3 * g.r3 * {STAFF})
) e
JOIN people p ON p.n = {PERSON.replace("g.r", "e.r")}
"""

# A Clerk-shaped event; public_metadata's notes make the size vary (1.5 to 2 KB in all).
PAYLOAD = """'{"data":{"backup_code_enabled":false,"banned":false,"create_organization_enabled":true,"created_at":'
 || d.ms - 86400000 || ',"delete_self_enabled":true,"email_addresses":[{"created_at":' || d.ms - 86400000
 || ',"email_address":"' || p.email || '","id":"idn_' || substr(d.h, 1, 27) || '","linked_to":[],"object":"email_address",'
 || '"reserved":false,"updated_at":' || d.ms || ',"verification":{"attempts":null,"expire_at":null,"status":"verified",'
 || '"strategy":"email_code"}}],"external_accounts":[],"external_id":null,"first_name":"Name' || mod(d.i, 97)
 || '","has_image":false,"id":"' || p.clerk_id || '","image_url":"https://img.clerk.com/' || d.h || '","last_active_at":'
 || d.ms || ',"last_name":"Family' || mod(d.i, 89) || '","last_sign_in_at":' || d.ms || ',"locked":false,'
 || '"lockout_expires_in_seconds":null,"object":"user","passkeys":[],"password_enabled":true,"phone_numbers":[],'
 || '"primary_email_address_id":"idn_' || substr(d.h, 1, 27) || '","primary_phone_number_id":null,'
 || '"primary_web3_wallet_id":null,"private_metadata":{},"profile_image_url":"https://www.gravatar.com/avatar?d=mp",'
 || '"public_metadata":{"plan":"pro","notes":"' || repeat(d.h, d.notes) || '"},"saml_accounts":[],"totp_enabled":false,'
 || '"two_factor_enabled":false,"unsafe_metadata":{},"updated_at":' || d.ms || ',"username":null,'
 || '"verification_attempts_remaining":100,"web3_wallets":[]},"event_attributes":{"http_request":{"client_ip":"203.0.113.'
 || mod(d.i, 250) || '","user_agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko)'
 || ' Chrome/120.0.0.0 Safari/537.36"}},"instance_id":"ins_2abcdefghijklmnopqrstuvwxyz","object":"event","timestamp":'
 || d.ms || ',"type":"' || d.type || '"}'"""

DELIVERY_INSERT = f"""
INSERT INTO webhook_events (id, type, clerk_user_id, received_at, processed_at, outcome, error, attempts, payload)
SELECT d.id, d.type, p.clerk_id, d.at, d.at + interval '4 milliseconds', d.outcome,
       CASE d.outcome WHEN 'stale' THEN 'older than the version already applied'
                      WHEN 'failed' THEN 'OperationalError: could not serialize access due to concurrent update' END,
       CASE d.outcome WHEN 'failed' THEN 1 + mod(d.i, 4) ELSE 1 END,
       {PAYLOAD}
FROM (
  SELECT t.*, CASE WHEN t.type IN ({",".join(f"'{t}'" for t in IGNORED_TYPES)}) THEN 'ignored'
                   WHEN t.r3 < 0.955 THEN 'applied' WHEN t.r3 < 0.997 THEN 'stale' ELSE 'failed' END AS outcome
  FROM (
    SELECT g.i, g.r3, g.r4, g.r5,
           'msg_2' || lpad(to_hex(g.i), 8, '0') || substr(md5('svix' || g.i), 1, 18) AS id,
           ({_array(DELIVERY_TYPES)})[1 + floor(g.r1 * 100)::int] AS type,
           %(t0)s + (g.i * %(span)s / %(total)s) * interval '1 second' AS at,
           (extract(epoch FROM %(t0)s + (g.i * %(span)s / %(total)s) * interval '1 second') * 1000)::bigint AS ms,
           md5(g.i::text) AS h,
           floor(g.r2 * g.r2 * 16)::int AS notes
    FROM (SELECT i, random() r1, random() r2, random() r3, random() r4, random() r5
          FROM generate_series(%(lo)s, %(hi)s) i) g
  ) t
) d
JOIN people p ON p.n = {PERSON.replace("g.r", "d.r")}
"""


def engine_for(url: str) -> sa.Engine:
    return sa.create_engine(url, connect_args={"options": "-c timezone=utc"})


def _indexes(connection, table: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The table's (name, definition) of its plain indexes and of its primary key constraint."""
    keys = connection.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = CAST(:t AS regclass) AND contype IN ('p', 'u')"
        ),
        {"t": table},
    ).all()
    indexes = connection.execute(
        sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = :t"),
        {"t": table},
    ).all()
    owned = {name for name, _ in keys}
    return [(n, d) for n, d in indexes if n not in owned], [tuple(k) for k in keys]


def _bulk_load(url: str, table: str, insert: str, total: int, params: dict, report: dict) -> None:
    """Drop the table's indexes, INSERT ... SELECT in chunks, build the indexes again."""
    started = time.perf_counter()
    engine = engine_for(url)
    with engine.connect() as connection:
        connection.execute(sa.text("SET work_mem = '256MB'; SET maintenance_work_mem = '1GB'"))
        connection.execute(sa.text("SET session_replication_role = replica"))  # the rows refer to real users
        connection.execute(sa.text("SET synchronous_commit = off"))
        for statement in filter(str.strip, PEOPLE.split(";")):
            connection.execute(sa.text(statement))
        connection.commit()
        people = connection.scalar(sa.text("SELECT count(*) FROM people"))
        indexes, keys = _indexes(connection, table)
        for name, _definition in indexes:
            connection.execute(sa.text(f'DROP INDEX "{name}"'))
        for name, _definition in keys:
            connection.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        connection.commit()
        for lo in range(0, total, CHUNK):
            hi = min(lo + CHUNK, total) - 1
            connection.exec_driver_sql(insert, {**params, "lo": lo, "hi": hi, "total": total, "people": people})
            connection.commit()
            print(f"  {table}: {hi + 1:,} rows ({time.perf_counter() - started:.0f} s)", flush=True)
        loaded = time.perf_counter()
        for name, definition in keys:
            connection.execute(sa.text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
            connection.commit()
        for _name, definition in indexes:
            connection.execute(sa.text(definition))
            connection.commit()
        indexed = time.perf_counter()
        connection.execute(sa.text("SET session_replication_role = DEFAULT"))
        connection.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(sa.text(f"VACUUM ANALYZE {table}"))
    engine.dispose()
    report[table] = (loaded - started, indexed - loaded, time.perf_counter() - indexed)


def seed_history(url: str, audit_events: int, deliveries: int, now: datetime) -> dict:
    """Write both tables side by side (one connection each); {table: (load s, index s, vacuum s)}."""
    t0 = (now - SPAN).astimezone(UTC).replace(tzinfo=None)
    params = {"t0": t0, "span": SPAN.total_seconds()}
    report: dict = {}
    errors: list[BaseException] = []

    def run(*args):
        try:
            _bulk_load(*args)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(url, "audit_events", AUDIT_INSERT, audit_events, params, report)),
        threading.Thread(target=run, args=(url, "webhook_events", DELIVERY_INSERT, deliveries, params, report)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return report


def prepare(url: str, args: argparse.Namespace) -> dict:
    """Migrate, seed what is missing, sign-in links; return what the scenarios need."""
    from flask_migrate import upgrade

    from app.demo.load import seed_demo
    from app.users.services import create_admin

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production"})
    seeded: dict = {}
    with app.app_context():
        started = time.perf_counter()
        upgrade()
        seeded["migrations s"] = round(time.perf_counter() - started, 1)
        users = db.session.scalar(sa.select(sa.func.count()).select_from(User))
        if users < args.users:
            print(f"seeding {args.users:,} demo users ...", flush=True)
            started = time.perf_counter()
            seed_demo(args.users, actor=Actor.cli())
            db.session.commit()
            seeded["users s"] = round(time.perf_counter() - started, 1)
        for k in range(STAFF):
            email = f"staff-{k:02d}@bench.example"
            if db.session.scalar(sa.select(User.id).where(User.email == email)) is None:
                create_admin(email, role=UserRole.ADMIN if k % 4 else UserRole.SUPER_ADMIN, actor=Actor.cli())
        db.session.commit()
        # Autovacuum's ANALYZE (off on this machine's server): without statistics on the users'
        # expression indexes every look-up is guessed at 0.5% of a million and a LIMIT 1 scans the table.
        db.session.execute(sa.text("ANALYZE users"))
        db.session.commit()
        empty = db.session.scalar(sa.text("SELECT NOT EXISTS (SELECT FROM webhook_events)"))
        db.engine.dispose()
    if empty:
        print(f"seeding {args.audit_events:,} audit events and {args.deliveries:,} deliveries ...", flush=True)
        started = time.perf_counter()
        seeded["history"] = seed_history(url, args.audit_events, args.deliveries, datetime.now(UTC))
        seeded["history s"] = round(time.perf_counter() - started, 1)

    with app.app_context():
        totals = {
            table: db.session.scalar(sa.text(f"SELECT count(*) FROM {table}"))
            for table in ("users", "audit_events", "webhook_events")
        }
        staff = db.session.execute(
            sa.text("SELECT u.id, u.email FROM users u WHERE u.email LIKE 'staff-%@bench.example' ORDER BY u.email")
        ).all()
        # The seed's people in its order: the first 20 are the busiest targets, the rest have a few each.
        people = db.session.execute(
            sa.text(
                "SELECT id, email FROM users WHERE role = 'user' AND deleted_at IS NULL"
                " AND email NOT LIKE '%@bench.example' ORDER BY md5(id) LIMIT 20"
            )
        ).all()
        quiet = db.session.execute(
            sa.text(
                "SELECT id, email FROM users WHERE role = 'user' AND deleted_at IS NULL"
                " AND email NOT LIKE '%@bench.example' ORDER BY md5(id) OFFSET 500000 LIMIT 20"
            )
        ).all()
        history_sizes = {
            name: [
                db.session.scalar(sa.text("SELECT count(*) FROM audit_events WHERE target_id = :id"), {"id": row.id})
                for row in rows[:5]
            ]
            for name, rows in (("hot", people), ("quiet", quiet))
        }
        busy_staff_events = db.session.scalar(
            sa.text("SELECT count(*) FROM audit_events WHERE actor_id = :id"), {"id": staff[0].id}
        )
        quiet_staff_events = db.session.scalar(
            sa.text("SELECT count(*) FROM audit_events WHERE actor_id = :id"), {"id": staff[-1].id}
        )
        delivery_ids = db.session.scalars(
            sa.text("SELECT id FROM webhook_events WHERE received_at > now() - interval '2 days' LIMIT 20")
        ).all()
        admin = db.session.scalars(sa.select(User).where(User.email == "bench-admin@example.com")).first()
        if admin is None:
            admin = create_admin("bench-admin@example.com", actor=Actor.cli())
        tokens = [issue_sign_in_link(admin, secret_key=SECRET, max_age=3600, actor=Actor.cli()) for _ in range(4)]
        db.session.commit()
        db.engine.dispose()
    return {
        "seeded": seeded,
        "totals": totals,
        "staff": staff,
        "busy_staff_events": busy_staff_events,
        "quiet_staff_events": quiet_staff_events,
        "hot": people,
        "quiet": quiet,
        "history_sizes": history_sizes,
        "delivery_ids": delivery_ids,
        "token": tokens[0],
        "floor_token": tokens[1],
        "walk_token": tokens[2],
    }


def deep_urls(url: str, token: str, starts: dict[str, str], pages: int = 20, spread: int = 6) -> dict[str, list[str]]:
    """For each list, the URLs of the pages around page `pages`, reached by following its "next"
    links from its start, as a person paging back in time would (in-process, once)."""
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production", "SESSION_COOKIE_SECURE": False}
    )
    client = app.test_client()
    assert client.get(f"/auth/link/{token}").status_code == 302
    deep = {}
    for name, start in starts.items():
        found, link = [], start
        for page in range(1, pages + spread // 2 + 1):
            if page > pages - spread // 2:
                found.append(link)
            body = client.get(link, headers=HX).get_data(as_text=True)
            match = NEXT_LINK.search(body)
            if match is None:
                raise SystemExit(f"page {page} of {start} has no next link")
            link = html.unescape(match.group(1))
        deep[name] = found
    with app.app_context():
        db.engine.dispose()
    return deep


def scenarios(data: dict, deep: dict[str, list[str]]) -> list[tuple[str, list[str], dict | None]]:
    busy, quiet_staff = data["staff"][0], data["staff"][-1]
    hot, quiet = data["hot"], data["quiet"]
    return [
        ("audit: first page (whole page)", ["/audit"], None),
        ("audit: first page (htmx fragment)", ["/audit"], HX),
        ("audit: action, common (user.update)", ["/audit?action=user.update"], HX),
        ("audit: action, uncommon (user.unlock)", ["/audit?action=user.unlock"], HX),
        ("audit: action, rarest (demo.seed: 1 event)", ["/audit?action=demo.seed"], HX),
        ("audit: actor, Clerk's webhook", ["/audit?actor=Clerk+webhook"], HX),
        (f"audit: actor, busiest staff ({data['busy_staff_events']:,} events)", [f"/audit?actor={busy.email}"], HX),
        (
            f"audit: actor, quietest staff ({data['quiet_staff_events']:,} events)",
            [f"/audit?actor={quiet_staff.email}"],
            HX,
        ),
        ("audit: actor, part of an email (staff-5)", ["/audit?actor=staff-5"], HX),
        ("audit: actor, a staff id", [f"/audit?actor={busy.id}"], HX),
        ("audit: actor, nobody", ["/audit?actor=nobody%40example.com"], HX),
        ("audit: source, command line", ["/audit?source=cli"], HX),
        ("audit: target, a user id", [f"/audit?target={p.id}" for p in quiet], HX),
        ("audit: target, a busy user's email", [f"/audit?{urlencode({'target': p.email})}" for p in hot], HX),
        ("audit: target, a quiet user's email", [f"/audit?{urlencode({'target': p.email})}" for p in quiet], HX),
        (
            "audit: target, part of a quiet user's email",
            [f"/audit?{urlencode({'target': p.email.split('@')[0] + '@'})}" for p in quiet],
            HX,
        ),
        ("audit: target, nobody", ["/audit?target=nobody%40nowhere.example"], HX),
        ("audit: page 20 (following next links)", deep["audit"], HX),
        ("audit: page 20 of action=user.update", deep["audit_action"], HX),
        ("webhooks: first page (whole page)", ["/webhooks"], None),
        ("webhooks: first page (htmx fragment)", ["/webhooks"], HX),
        ("webhooks: outcome=failed (0.3%)", ["/webhooks?outcome=failed"], HX),
        ("webhooks: outcome=stale", ["/webhooks?outcome=stale"], HX),
        ("webhooks: type=user.created", ["/webhooks?type=user.created"], HX),
        ("webhooks: type=user.deleted (1%)", ["/webhooks?type=user.deleted"], HX),
        ("webhooks: failed user.deleted", ["/webhooks?outcome=failed&type=user.deleted"], HX),
        ("webhooks: last 24 hours", ["/webhooks?within=24h"], HX),
        ("webhooks: page 20 (following next links)", deep["webhooks"], HX),
        ("webhooks: one delivery", [f"/webhooks/{i}" for i in data["delivery_ids"]], None),
        (
            f"user page, {data['history_sizes']['hot'][0]:,}+ events",
            [f"/users/{p.id}" for p in hot],
            None,
        ),
        (
            f"user page, {min(data['history_sizes']['quiet'])}-{max(data['history_sizes']['quiet'])} events",
            [f"/users/{p.id}" for p in quiet],
            None,
        ),
    ]


def explain(floor: SqlFloor, plan, threshold_ms: float) -> tuple[dict[str, set[str]], list[str]]:
    """EXPLAIN ANALYZE every statement of each request's first URLs: ({request: big tables read by
    sequential scan}, the plans of statements slower than `threshold_ms`)."""
    scanned: dict[str, set[str]] = {}
    slow: list[str] = []
    with floor.engine.connect() as connection:
        for name, urls, headers in plan:
            for url in urls[:3]:
                for statement, parameters in floor.statements(url, headers):
                    if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                        continue
                    lines = (
                        connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
                        .scalars()
                        .all()
                    )
                    for line in lines:
                        table = re.search(r"Seq Scan on (\w+)", line)
                        if table and table.group(1) in BIG_TABLES:
                            scanned.setdefault(name, set()).add(table.group(1))
                    took = re.search(r"Execution Time: ([\d.]+) ms", lines[-1])
                    if took and float(took.group(1)) > threshold_ms:
                        slow.append(f"--- {name}: {url}\n{statement}\n{parameters}\n" + "\n".join(lines))
            connection.rollback()
    return scanned, slow


def prune_days(url: str) -> dict[str, int]:
    """Options that prune the oldest two days of each table (so each run has work to do)."""
    engine = engine_for(url)
    with engine.connect() as connection:
        ages = connection.execute(
            sa.text(
                "SELECT extract(epoch FROM now() - (SELECT min(received_at) FROM webhook_events)) / 86400,"
                " extract(epoch FROM now() - (SELECT min(received_at) FROM webhook_events"
                "   WHERE payload IS NOT NULL)) / 86400,"
                " extract(epoch FROM now() - (SELECT min(occurred_at) FROM audit_events)) / 86400"
            )
        ).one()
    engine.dispose()
    webhook_days = max(9, int(ages[0]) - 2)
    return {
        "webhook-days": webhook_days,
        "payload-days": min(webhook_days - 2, max(1, int(ages[1]) - 2)),
        "audit-days": max(1, int(ages[2]) - 2),
    }


def prune_while_serving(url: str, client: httpx.Client, access_log: Path, pages: list[str], args) -> dict:
    """`flask maintenance prune` in a subprocess while the client asks for `pages` in turn."""
    days = prune_days(url)
    command = [str(Path(sys.executable).parent / "flask"), "--app", "app", "maintenance", "prune"]
    command += [f"--{name}={value}" for name, value in days.items()]
    command += [f"--batch-size={args.batch_size}", f"--pause={args.pause}"]
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "APP_ENV": "production"}
    before = len(access_log.read_text().splitlines())
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    times: dict[str, list[float]] = {page: [] for page in pages}
    order: list[str] = []
    while process.poll() is None:
        for page in pages:
            began = time.perf_counter()
            response = client.get(page)
            times[page].append((time.perf_counter() - began) * 1000)
            order.append(page)
            if response.status_code != 200:
                raise SystemExit(f"{page} answered {response.status_code} during the prune")
    output = process.stdout.read()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"the prune failed ({process.returncode}):\n{output}")
    time.sleep(0.3)
    # What autovacuum does after it (this shared server runs with autovacuum off): the dead rows'
    # index entries go, so the next run's skip scans do not step over them.
    vacuumed = time.perf_counter()
    engine = engine_for(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("audit_events", "webhook_events"):
            connection.execute(sa.text(f"VACUUM (ANALYZE) {table}"))
    engine.dispose()
    vacuumed = time.perf_counter() - vacuumed
    lines = access_log.read_text().splitlines()[before:]
    server: dict[str, list[float]] = {page: [] for page in pages}
    for page, line in zip(order, lines, strict=False):
        server[page].append(int(line.split()[1]) / 1000)
    rate = re.search(r"Pruned in ([\d.]+) s, ([\d,]+) rows/s", output)
    return {
        "days": days,
        "output": output,
        "seconds": elapsed,
        "vacuum seconds": vacuumed,
        "rows per s": rate.group(2) if rate else "?",
        "pages": {page: (percentiles(server[page]), percentiles(times[page]), len(times[page])) for page in pages},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--audit-events", type=int, default=10_000_000)
    parser.add_argument("--deliveries", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="use the database as a previous --keep run left it")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--prepare-only", action="store_true", help="migrate and seed, then stop (implies --keep)")
    parser.add_argument("--no-prune", action="store_true", help="skip timing `flask maintenance prune`")
    parser.add_argument("--batch-size", type=int, default=1000, help="the prune's --batch-size")
    parser.add_argument("--pause", type=float, default=0.05, help="the prune's --pause")
    parser.add_argument("--explain-over-ms", type=float, default=20.0, help="print plans of statements slower")
    parser.add_argument(
        "--statement-timeout-ms", help="DATABASE_STATEMENT_TIMEOUT_MS for gunicorn (0 to see slow pages finish)"
    )
    args = parser.parse_args()

    url = sa.make_url(os.environ.get("BENCH_HISTORY_DATABASE_URL", DEFAULT_URL))
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    if not args.reuse:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    ensure_database(url)
    url_text = url.render_as_string(hide_password=False)
    try:
        data = prepare(url_text, args)
        print(f"prepared: {data['seeded']}", flush=True)
        if args.prepare_only:
            args.keep = True
            return
        run(url_text, data, args)
    finally:
        if not args.keep:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            print(f"dropped the database {url.database} (--keep keeps it)")
        admin.dispose()


def run(url: str, data: dict, args: argparse.Namespace) -> None:
    starts = {"audit": "/audit", "audit_action": "/audit?action=user.update", "webhooks": "/webhooks"}
    deep = deep_urls(url, data["walk_token"], starts)
    plan = scenarios(data, deep)
    extra = {"DATABASE_STATEMENT_TIMEOUT_MS": args.statement_timeout_ms} if args.statement_timeout_ms else None
    access_log = Path(tempfile.mkdtemp()) / "access.log"
    process, base = start_gunicorn(url, args.workers, access_log=access_log, extra_env=extra)
    pruned = None
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            assert client.get(f"/auth/link/{data['token']}").status_code == 302
            results, server = time_plan(client, plan, args.repeat, access_log)
            if not args.no_prune:
                during = ["/audit", "/webhooks", f"/users/{data['hot'][0].id}"]
                pruned = prune_while_serving(url, client, access_log, during, args)
    finally:
        process.terminate()
        process.wait(timeout=20)
    floor = SqlFloor(url, data["floor_token"])
    floors = {name: floor.measure(urls, args.repeat, headers) for name, urls, headers in plan}
    scanned, slow = explain(floor, plan, args.explain_over_ms)
    floor.engine.dispose()

    totals = data["totals"]
    print(
        f"\n{totals['audit_events']:,} audit events, {totals['webhook_events']:,} deliveries, {totals['users']:,} users;"
        f" PostgreSQL, gunicorn {args.workers} workers, {args.repeat} requests each (50 rows a page)\n"
    )
    print(f"seeded and migrated this run: {data['seeded']}")
    print(
        f"events of the first hot users {data['history_sizes']['hot']}, of quiet ones {data['history_sizes']['quiet']}\n"
    )
    print("| request | server p50 / p95 ms | client p50 / p95 ms | bare SQL p50 / p95 ms (statements) |")
    print("|---|---:|---:|---:|")
    over = []
    for name, _urls, _headers in plan:
        (median, p95), (c_median, c_p95) = server[name], results[name]
        sql_median, sql_p95, statements = floors[name]
        print(
            f"| {name} | {median:.1f} / {p95:.1f} | {c_median:.1f} / {c_p95:.1f} |"
            f" {sql_median:.1f} / {sql_p95:.1f} ({statements}) |"
        )
        if p95 > TARGET_P95_MS:
            over.append(name)
    print(f"\nsequential scans of big tables in the plans: {scanned or 'none'}")
    if over:
        print(f"server p95 over {TARGET_P95_MS:.0f} ms: {over}")
    if pruned:
        print(
            f"\n`flask maintenance prune {' '.join(f'--{k}={v}' for k, v in pruned['days'].items())}"
            f" --batch-size={args.batch_size} --pause={args.pause}` while serving: {pruned['seconds']:.1f} s,"
            f" {pruned['rows per s']} rows/s"
        )
        print(pruned["output"])
        print(f"VACUUM (ANALYZE) of both tables after it (autovacuum's work): {pruned['vacuum seconds']:.1f} s\n")
        print("| page during the prune | server p50 / p95 ms | client p50 / p95 ms | requests |")
        print("|---|---:|---:|---:|")
        for page, ((s50, s95), (c50, c95), n) in pruned["pages"].items():
            print(f"| {page} | {s50:.1f} / {s95:.1f} | {c50:.1f} / {c95:.1f} | {n} |")
    for plan_text in slow:
        print(plan_text)


if __name__ == "__main__":
    main()
