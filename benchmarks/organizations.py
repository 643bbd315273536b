"""Time the organizations pages over HTTP through gunicorn on PostgreSQL at 100,000 organizations.

    .venv/bin/python benchmarks/organizations.py [--users 1000000] [--repeat 40] [--workers 2]

The database is BENCH_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/bench_list,
the one benchmarks/users_list.py uses). It is created if missing, migrated, and topped up with
`seed_demo(--users, organizations=True)`: a million demo users, about 100,000 organizations and
1,500,000 memberships (one organization of 10,000 members), kept between runs; the seed's time is
printed when it runs. Then gunicorn serves the app, a staff member signs in with a one-time link,
and each request is timed --repeat times after a warm-up, with varying terms and cursors: the
organizations list's first page, a name search (3-4 letter pieces and 1-2 letter starts of real
names), page 1000 (reached by following the pager's "next" links from the first page), the
10,000-member organization's page, a search among its members, and the pages of users who belong
to organizations. For each it prints the server's time (gunicorn's access log), the client's,
and the bare SQL of the request replayed alone (as benchmarks/users_list.py does). Last, every
statement of every request is EXPLAINed: any sequential scan of a big table is reported, as are
the sequential scans PostgreSQL counted on those tables during the run (pg_stat_user_tables).
"""

from __future__ import annotations

import argparse
import html
import os
import random
import re
import sys
import tempfile
import time
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
    start_gunicorn,
    time_plan,
)

from app import create_app  # noqa: E402
from app.audit.services import Actor  # noqa: E402
from app.auth.services import issue_sign_in_link  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import Membership, Organization, User  # noqa: E402

BIG_TABLES = ("users", "user_data", "organizations", "memberships", "organization_invitations", "audit_events")
TARGET_P95_MS = 50.0
LARGEST = "org_demo_big_00"  # the demo's organization of 10,000 members (from 100,000 users on)
NEXT_LINK = re.compile(r'<a href="([^"]+)"[^>]*rel="next"')


def prepare(url: str, n_users: int) -> dict:
    """Migrate, seed (users and organizations), analyse; return what the scenarios need."""
    from flask_migrate import upgrade

    from app.demo.load import seed_demo
    from app.demo.organizations import demo_organization_count

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production"})
    seeded = None
    with app.app_context():
        upgrade()
        users = db.session.scalar(sa.select(sa.func.count()).select_from(User))
        demo_organizations = db.session.scalar(
            sa.select(sa.func.count()).where(Organization.clerk_id.like("org\\_demo\\_%", escape="\\"))
        )
        if users < n_users or demo_organizations < demo_organization_count(n_users):
            print(f"seeding to {n_users:,} users and their organizations (have {users:,} users) ...", flush=True)
            started = time.perf_counter()
            made = seed_demo(n_users, actor=Actor.cli(), organizations=True)
            db.session.commit()
            seeded = (time.perf_counter() - started, made)
            print(f"  seeded in {seeded[0]:.0f} s: {made}", flush=True)
        for table in ("users", "organizations", "memberships", "organization_invitations"):
            db.session.execute(sa.text(f"ANALYZE {table}"))
        db.session.commit()

        totals = {
            "organizations": db.session.scalar(
                sa.select(sa.func.count()).where(Organization.deleted_at.is_(None)).select_from(Organization)
            ),
            "memberships": db.session.scalar(
                sa.select(sa.func.count()).where(Membership.deleted_at.is_(None)).select_from(Membership)
            ),
            "users": db.session.scalar(sa.select(sa.func.count()).select_from(User)),
        }
        largest = db.session.execute(
            sa.select(Organization.id, Organization.members_count).where(Organization.clerk_id == LARGEST)
        ).one()

        # Search terms: 3- and 4-letter pieces of real organization names, and 1-2 letter starts.
        names = db.session.scalars(
            sa.select(Organization.name)
            .where(Organization.deleted_at.is_(None))
            .order_by(sa.func.md5(Organization.id))
            .limit(200)
        ).all()
        words = [w.lower() for name in names for w in re.findall(r"[A-Za-z]{4,}", name)]
        terms = sorted({w[i : i + n] for w in words for n in (3, 4) for i in (0, 1)})
        short = sorted({w[:n] for w in words for n in (1, 2)})
        # Members search: pieces of the largest organization's members' last names and emails.
        members = db.session.execute(
            sa.select(User.last_name, User.email)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.organization_id == largest.id, Membership.deleted_at.is_(None))
            .order_by(sa.func.md5(Membership.id))
            .limit(100)
        ).all()
        member_terms = sorted({m.last_name.lower()[:4] for m in members if m.last_name and len(m.last_name) >= 4})
        member_emails = [m.email for m in members[:40]]
        # Users who belong to organizations (the early demo users are in several large ones).
        rng = random.Random(7)
        member_ids = db.session.scalars(
            sa.select(Membership.user_id)
            .where(Membership.deleted_at.is_(None), Membership.user_id.is_not(None))
            .order_by(sa.func.md5(Membership.id))
            .limit(60)
        ).all()
        busiest = db.session.execute(
            sa.select(Membership.user_id, sa.func.count().label("n"))
            .where(Membership.deleted_at.is_(None), Membership.clerk_user_id < "user_demo_0000200")
            .group_by(Membership.user_id)
            .order_by(sa.text("n DESC"))
            .limit(10)
        ).all()

        admin = db.session.scalars(sa.select(User).where(User.email == "bench-admin@example.com")).first()
        if admin is None:
            from app.users.services import create_admin

            admin = create_admin("bench-admin@example.com", actor=Actor.cli())
        tokens = [issue_sign_in_link(admin, secret_key=SECRET, max_age=3600, actor=Actor.cli()) for _ in range(3)]
        db.session.commit()
        db.engine.dispose()
    user_ids = list(dict.fromkeys([*member_ids, *(row.user_id for row in busiest)]))
    rng.shuffle(user_ids)
    return {
        **totals,
        "seeded": seeded,
        "largest": largest.id,
        "largest_members": largest.members_count,
        "terms": terms,
        "short": short,
        "member_terms": member_terms,
        "member_emails": member_emails,
        "user_ids": user_ids,
        "most_organizations": busiest[0].n if busiest else 0,
        "token": tokens[0],
        "floor_token": tokens[1],
        "walk_token": tokens[2],
    }


def page_1000_urls(url: str, token: str, pages: int = 1000, spread: int = 10) -> list[str]:
    """The URLs of pages pages-spread/2 .. pages+spread/2, reached by following the list's "next"
    links from the first page, as a person paging through would (in-process, once)."""
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production", "SESSION_COOKIE_SECURE": False}
    )
    client = app.test_client()
    assert client.get(f"/auth/link/{token}").status_code == 302
    found, link = [], "/organizations"
    for page in range(1, pages + spread // 2 + 1):
        if page > pages - spread // 2:
            found.append(link)
        body = client.get(link, headers=HX).get_data(as_text=True)
        match = NEXT_LINK.search(body)
        if match is None:
            raise SystemExit(f"page {page} of the organizations list has no next link")
        link = html.unescape(match.group(1))
    with app.app_context():
        db.engine.dispose()
    return found


def scenarios(data: dict, deep: list[str]) -> list[tuple[str, list[str], dict | None]]:
    largest = f"/organizations/{data['largest']}"
    return [
        ("organizations, first page (whole page)", ["/organizations"], None),
        ("organizations, first page (htmx fragment)", ["/organizations"], HX),
        ("name search, 3-4 letters", [f"/organizations?q={t}" for t in data["terms"]], HX),
        ("name search, 1-2 letters (prefix)", [f"/organizations?q={t}" for t in data["short"]], HX),
        ("page 1000 (following next links)", deep, HX),
        (f"organization of {data['largest_members']:,} members (whole page)", [largest], None),
        ("its members search, 4 letters", [f"{largest}?mq={t}" for t in data["member_terms"]], HX),
        ("its members search, exact email", [f"{largest}?mq={e}" for e in data["member_emails"]], HX),
        ("a member's user page (their organizations)", [f"/users/{i}" for i in data["user_ids"]], None),
    ]


def explain_seq_scans(floor: SqlFloor, plan) -> dict[str, set[str]]:
    """{request: big tables some plan of its statements reads by sequential scan}."""
    found: dict[str, set[str]] = {}
    with floor.engine.connect() as connection:
        for name, urls, headers in plan:
            for url in urls[:10]:
                for statement, parameters in floor.statements(url, headers):
                    if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                        continue
                    lines = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars().all()
                    for line in lines:
                        scanned = re.search(r"Seq Scan on (\w+)", line)
                        if scanned and scanned.group(1) in BIG_TABLES:
                            found.setdefault(name, set()).add(scanned.group(1))
            connection.rollback()
    return found


def seq_scans(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname = ANY(:t)"),
            {"t": list(BIG_TABLES)},
        ).all()
    engine.dispose()
    return dict(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--prepare-only", action="store_true", help="migrate and seed, then stop")
    args = parser.parse_args()

    url = sa.make_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    ensure_database(url)
    url_text = url.render_as_string(hide_password=False)
    data = prepare(url_text, args.users)
    if args.prepare_only:
        return
    started = time.perf_counter()
    deep = page_1000_urls(url_text, data["walk_token"])
    walked = time.perf_counter() - started
    plan = scenarios(data, deep)
    access_log = Path(tempfile.mkdtemp()) / "access.log"
    process, base = start_gunicorn(url_text, args.workers, access_log=access_log)
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            assert client.get(f"/auth/link/{data['token']}").status_code == 302
            before = seq_scans(url_text)
            results, server = time_plan(client, plan, args.repeat, access_log)
            after = seq_scans(url_text)
    finally:
        process.terminate()
        process.wait(timeout=20)
    floor = SqlFloor(url_text, data["floor_token"])
    floors = {name: floor.measure(urls, args.repeat, headers) for name, urls, headers in plan}
    scanned = explain_seq_scans(floor, plan)

    print(
        f"\n{data['organizations']:,} live organizations, {data['memberships']:,} live memberships,"
        f" {data['users']:,} users; PostgreSQL, gunicorn {args.workers} workers, {args.repeat} requests each"
        f" (50 organizations, 25 members a page)\n"
    )
    if data["seeded"]:
        seconds, made = data["seeded"]
        print(f"Seeded this run in {seconds:.0f} s: {made}\n")
    print(f"Page 1000 reached by following 1,000 next links in-process: {walked:.1f} s in all.\n")
    print("| request | server median / p95 ms | client median / p95 ms | bare SQL median / p95 ms (statements) |")
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
    counted = {t: after.get(t, 0) - before.get(t, 0) for t in BIG_TABLES}
    print(f"\nsequential scans PostgreSQL counted during the HTTP run: {counted}")
    print(f"sequential scans of big tables in the EXPLAINed plans: {scanned or 'none'}")
    print(f"the busiest demo user belongs to {data['most_organizations']} organizations")
    if over:
        print(f"p95 over {TARGET_P95_MS:.0f} ms (server): {over}")
    if over or scanned or any(counted.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
