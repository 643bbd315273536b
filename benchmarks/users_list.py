"""Time the users list over HTTP through gunicorn on PostgreSQL with a million users.

    .venv/bin/python benchmarks/users_list.py [--users 1000000] [--repeat 40] [--workers 2]

The database is BENCH_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/bench_list).
It is created if missing, migrated with the project's migrations, and topped up to --users demo
users with `seed_demo` (kept between runs: seeding a million takes about a minute and a half).
Then gunicorn serves the app on 127.0.0.1, a staff member signs in with a one-time link, and each
scenario is requested --repeat times (after a warm-up), with varying terms and cursors. The script
prints median and p95 wall time per request, as seen by the client on loopback, and the number of
sequential scans PostgreSQL made on `users` meanwhile (pg_stat_user_tables), which must be 0.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.audit.services import Actor  # noqa: E402
from app.auth.services import issue_sign_in_link  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import User  # noqa: E402
from app.users.queries import SORTS, encode_cursor  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_list"
SECRET = "bench-secret"
HX = {"HX-Request": "true"}


def ensure_database(url: sa.URL) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if not connection.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}):
            connection.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


def prepare(url: str, n_users: int) -> dict:
    """Migrate, seed, analyse; return what the scenarios need (terms, emails, cursors, ids)."""
    from flask_migrate import upgrade

    from app.demo import seed_demo

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "APP_ENV": "production"})
    with app.app_context():
        upgrade()
        have = db.session.scalar(sa.select(sa.func.count()).select_from(User))
        if have < n_users:
            print(f"seeding {n_users - have:,} users (have {have:,}) ...", flush=True)
            started = time.perf_counter()
            seed_demo(n_users, actor=Actor.cli())
            db.session.commit()
            print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
        db.session.execute(sa.text("ANALYZE users"))
        db.session.commit()
        total = db.session.scalar(sa.select(sa.func.count()).select_from(User))

        rng = random.Random(7)
        sample = db.session.execute(
            sa.select(User.id, User.email, User.last_name).where(User.deleted_at.is_(None))
            .order_by(sa.func.md5(User.id)).limit(200)
        ).all()
        terms = sorted({(row.last_name or "xxxx")[:4].lower() for row in sample if row.last_name and len(row.last_name) >= 4})
        # Cursors around page 1000 (rank 999 * rows per page) of the default and the email order.
        cursors = {}
        for sort_name, per_page in (("-created_at", 25), ("email", 25), ("-created_at", 100)):
            sort = SORTS[sort_name]
            order = (sort.key.desc(), User.id.desc()) if sort.descending else (sort.key.asc(), User.id.asc())
            rows = db.session.execute(
                sa.select(User, sort.key).where(User.deleted_at.is_(None)).order_by(*order)
                .offset(999 * per_page - 10).limit(20)
            ).all()
            cursors[sort_name, per_page] = [encode_cursor(sort, row) for row in rows]

        admin = db.session.scalars(sa.select(User).where(User.email == "bench-admin@example.com")).first()
        if admin is None:
            from app.users.services import create_admin

            admin = create_admin("bench-admin@example.com", actor=Actor.cli())
        token = issue_sign_in_link(admin, secret_key=SECRET, max_age=3600, actor=Actor.cli())
        db.session.commit()
        db.engine.dispose()
    rng.shuffle(sample)
    return {
        "total": total, "terms": terms, "emails": [r.email for r in sample], "ids": [r.id for r in sample],
        "cursors": cursors, "token": token,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(url: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": SECRET, "APP_ENV": "production",
           "SESSION_COOKIE_SECURE": "0"}
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "app:create_app()"],
        cwd=ROOT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.terminate()
    raise SystemExit("gunicorn did not start")


def seq_scans(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        n = connection.scalar(sa.text("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'users'"))
    engine.dispose()
    return n


def measure(client: httpx.Client, urls: list[str], repeat: int, headers=None) -> tuple[float, float]:
    for url in urls[:3]:  # warm-up
        client.get(url, headers=headers)
    times = []
    for i in range(repeat):
        url = urls[i % len(urls)]
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
    times.sort()
    return statistics.median(times), times[max(0, int(round(0.95 * len(times))) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    url = sa.make_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    ensure_database(url)
    url_text = url.render_as_string(hide_password=False)
    data = prepare(url_text, args.users)
    process, base = start_gunicorn(url_text, args.workers)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get(f"/auth/link/{data['token']}").status_code == 302
            terms, emails, cursors = data["terms"], data["emails"], data["cursors"]
            scenarios = [
                ("first page (whole page)", ["/users"], None),
                ("first page (htmx fragment)", ["/users"], HX),
                ("4-letter search", [f"/users?q={t}" for t in terms], HX),
                ("exact email", [f"/users?q={e}" for e in emails], HX),
                ("page 1000 (keyset cursor)", [f"/users?after={c}" for c in cursors["-created_at", 25]], HX),
                ("page 1000 sorted by email", [f"/users?sort=email&after={c}" for c in cursors["email", 25]], HX),
                ("first page, 100 rows", ["/users?per_page=100"], HX),
                ("page 1000, 100 rows", [f"/users?per_page=100&after={c}" for c in cursors["-created_at", 100]], HX),
                ("filter: status=suspended", ["/users?status=suspended"], HX),
                ("filter: role=admin&status=active", ["/users?role=admin&status=active"], HX),
                ("filter + search", [f"/users?status=active&q={t}" for t in terms], HX),
                ("sort by name", ["/users?sort=name", "/users?sort=-name"], HX),
                ("sort by last sign-in", ["/users?sort=-last_sign_in_at", "/users?sort=last_sign_in_at"], HX),
                ("count, capped (lazy)", ["/users/count"], HX),
                ("count of a search (lazy)", [f"/users/count?q={t}" for t in terms], HX),
                ("user detail page", [f"/users/{i}" for i in data["ids"]], None),
            ]
            before = seq_scans(url_text)
            results = [(name, *measure(client, urls, args.repeat, headers)) for name, urls, headers in scenarios]
            after = seq_scans(url_text)
    finally:
        process.terminate()
        process.wait(timeout=20)

    print(f"\n{data['total']:,} users, PostgreSQL, gunicorn {args.workers} workers, {args.repeat} requests each,"
          f" 25 rows a page unless said\n")
    print("| request | median ms | p95 ms |")
    print("|---|---:|---:|")
    for name, median, p95 in results:
        print(f"| {name} | {median:.1f} | {p95:.1f} |")
    print(f"\nsequential scans on users during the run: {after - before}")


if __name__ == "__main__":
    main()
