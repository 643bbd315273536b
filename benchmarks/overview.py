"""Time the overview (`/`) at a million users, next to the users list, and check its figures.

    .venv/bin/python benchmarks/overview.py [--users 1000000] [--repeat 40] [--workers 2] [--burst 300]

It uses the database of benchmarks/users_list.py (BENCH_DATABASE_URL, default `bench_list`:
migrated, seeded to --users demo users, analysed), starts gunicorn with 2 workers, and first
changes users the ways the app does while it runs: a burst of --burst Svix-signed Clerk webhooks
through HTTP (new users, updates with sign-in times, deletions) and bulk suspensions and
reactivations through the same service the dashboard uses. Then it requests the overview at each
range, the range switch (htmx), and the list's first page, --repeat times each, and prints the
server-side median and p95 (gunicorn's access log), the client's, and the bare SQL of each request
replayed alone. Last, it recounts every figure from the users table (full scans, seconds) and
says whether the overview's counters equal the recount.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from users_list import (  # noqa: E402
    DEFAULT_URL,
    HX,
    SECRET,
    SqlFloor,
    ensure_database,
    prepare,
    start_gunicorn,
    time_plan,
)

from app import create_app  # noqa: E402
from app.audit.services import Actor  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import User, UserStatus  # noqa: E402
from app.records import counts  # noqa: E402
from tests.clerk_payloads import clerk_user, sign, user_created, user_deleted, user_updated  # noqa: E402

WEBHOOK_SECRET = "whsec_" + "YmVuY2gtb3ZlcnZpZXctc2lnbmluZy1zZWNyZXQ="


def ms(days_ago: float) -> int:
    return int((datetime.now(UTC) - timedelta(days=days_ago)).timestamp() * 1000)


def webhook_burst(base: str, n: int, rng: random.Random) -> dict[int, int]:
    """n signed deliveries: creations, then updates and deletions of some of them; status codes."""
    made, codes = [], {}
    with httpx.Client(base_url=base, timeout=60) as http:
        for i in range(n):
            if made and i % 3 == 1:
                payload = user_updated(rng.choice(made), last_sign_in_at=ms(rng.uniform(0, 60)))
            elif made and i % 10 == 9:
                payload = user_deleted(made.pop(rng.randrange(len(made)))["id"])
            else:
                user = clerk_user(
                    email=f"burst-{rng.getrandbits(48):x}@example.com", last_sign_in_at=ms(rng.uniform(0, 60))
                )
                made.append(user)
                payload = user_created(user)
            signed = sign(payload, secret=WEBHOOK_SECRET)
            status = http.post("/webhooks/clerk", content=signed.body, headers=signed.headers).status_code
            codes[status] = codes.get(status, 0) + 1
    return codes


def bulk_changes(url: str, rng: random.Random) -> int:
    """Suspend, reactivate and deactivate a few hundred users through the dashboard's service."""
    from app.users.services import bulk_set_status

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production"})
    changed = 0
    with app.app_context():
        ids = db.session.scalars(
            sa.select(User.id)
            .where(User.deleted_at.is_(None), User.role == "user")
            .order_by(User.created_at.desc())
            .limit(600)
        ).all()
        for status in (UserStatus.SUSPENDED, UserStatus.ACTIVE, UserStatus.INACTIVE, UserStatus.SUSPENDED):
            changed += len(bulk_set_status(rng.sample(ids, 100), status, actor=Actor.cli()).changed)
            db.session.commit()
        db.engine.dispose()
    return changed


def check_counters(url: str) -> tuple[dict, float]:
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production"})
    with app.app_context():
        started = time.perf_counter()
        counts.snapshot_isolation()
        found = counts.differences(counts.read_counts(), counts.recount())
        elapsed = time.perf_counter() - started
        db.session.rollback()
        db.engine.dispose()
    return found, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--burst", type=int, default=300)
    args = parser.parse_args()

    url = sa.make_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    ensure_database(url)
    url_text = url.render_as_string(hide_password=False)
    data = prepare(url_text, args.users)
    rng = random.Random(11)
    access_log = Path(tempfile.mkdtemp()) / "access.log"
    process, base = start_gunicorn(
        url_text, args.workers, access_log=access_log, extra_env={"CLERK_WEBHOOK_SIGNING_SECRET": WEBHOOK_SECRET}
    )
    plan = [
        ("overview, 30 days (whole page)", ["/"], None),
        ("overview, 7 days (whole page)", ["/?days=7"], None),
        ("overview, 90 days (whole page)", ["/?days=90"], None),
        ("range switch, 90 days (htmx)", ["/?days=90"], HX),
        ("users list, first page (whole page)", ["/users"], None),
    ]
    try:
        codes = webhook_burst(base, args.burst, rng)
        changed = bulk_changes(url_text, rng)
        with httpx.Client(base_url=base, timeout=300) as client:
            assert client.get(f"/auth/link/{data['token']}").status_code == 302
            results, server = time_plan(client, plan, args.repeat, access_log)
    finally:
        process.terminate()
        process.wait(timeout=20)
    floor = SqlFloor(url_text, data["floor_token"])
    floors = {name: floor.measure(urls, args.repeat, headers) for name, urls, headers in plan}
    differences, recount_seconds = check_counters(url_text)

    print(
        f"\n{data['total']:,} users before the burst; {args.burst} signed webhooks (answers: {codes}),"
        f" {changed} users changed by bulk actions; gunicorn {args.workers} workers, {args.repeat} requests each\n"
    )
    print("| request | server median / p95 ms | client median / p95 ms | bare SQL median / p95 ms (statements) |")
    print("|---|---:|---:|---:|")
    for name, _urls, _headers in plan:
        (median, p95), (c_median, c_p95) = server[name], results[name]
        sql_median, sql_p95, statements = floors[name]
        print(
            f"| {name} | {median:.1f} / {p95:.1f} | {c_median:.1f} / {c_p95:.1f} |"
            f" {sql_median:.1f} / {sql_p95:.1f} ({statements}) |"
        )
    verdict = (
        "every counter equals the recount" if not differences else f"{len(differences)} counters differ: {differences}"
    )
    print(f"\nRecount of every figure from the users table ({recount_seconds:.1f} s of full scans): {verdict}")
    if differences:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
