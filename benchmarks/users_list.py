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
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.audit.services import Actor  # noqa: E402
from app.auth.services import issue_sign_in_link  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import User, UserRole, UserStatus  # noqa: E402
from app.users.queries import SORTS, keyset  # noqa: E402

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

    from app.demo.load import seed_demo

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
        # The demo's invited people have user_ ids; people invited from the dashboard hold their
        # invitation's id (inv_...) until they accept, so give 200 of them one.
        db.session.execute(
            sa.text(
                "UPDATE users SET clerk_id = 'inv_' || substr(md5(id), 1, 27) WHERE id IN"
                " (SELECT id FROM users WHERE status = 'invited' AND clerk_id NOT LIKE 'inv\\_%'"
                "  ORDER BY id LIMIT 200 - (SELECT count(*) FROM users WHERE clerk_id LIKE 'inv\\_%'))"
            )
        )
        db.session.commit()
        db.session.execute(sa.text("ANALYZE users"))
        db.session.commit()
        total = db.session.scalar(sa.select(sa.func.count()).select_from(User))

        rng = random.Random(7)
        sample = db.session.execute(
            sa.select(User.id, User.email, User.last_name)
            .where(User.deleted_at.is_(None))
            .order_by(sa.func.md5(User.id))
            .limit(200)
        ).all()

        def values_of(column, limit: int = 40) -> list[str]:
            return list(
                db.session.scalars(
                    sa.select(column)
                    .where(column.is_not(None), User.deleted_at.is_(None))
                    .order_by(sa.func.md5(User.id))
                    .limit(limit)
                )
            )

        whole = {
            "Clerk id": values_of(User.clerk_id),
            "invitation id": values_of(sa.case((User.clerk_id.like("inv\\_%"), User.clerk_id))),
            "username": values_of(User.username),
            "external id": values_of(User.external_id),
        }
        names = [name.lower() for row in sample for name in (row.last_name,) if name and len(name) >= 4]
        terms = sorted({name[:4] for name in names})
        # 3-letter pieces from anywhere in a name, and 1-2 letter starts (the prefix path).
        terms3 = sorted({name[i : i + 3] for name in names for i in (0, 1) if name[i : i + 3].isalpha()})
        short = sorted({name[:n] for name in names for n in (1, 2)})
        # Terms of 1-2 letter pieces split by punctuation or a space: "o'n", "a b" (initials).
        people = db.session.execute(
            sa.select(User.first_name, User.last_name)
            .where(User.first_name.is_not(None), User.last_name.is_not(None))
            .order_by(sa.func.md5(User.id))
            .limit(40)
        ).all()
        pieces = sorted(
            {f"{p.first_name[:1]} {p.last_name[:1]}".lower() for p in people[:20]}
            | {f"{p.last_name[:1]}'{p.last_name[1:2]}".lower() for p in people[20:]}
            | {f"{p.first_name[:2]} {p.last_name[:2]}".lower() for p in people[:10]}
        )
        # Cursors around page 1000 (rank 999 * rows per page) of the default and the email order.
        cursors = {}
        for sort_name, per_page in (("-created_at", 25), ("email", 25), ("-created_at", 100)):
            sort = SORTS[sort_name]
            order = (sort.key.desc(), User.id.desc()) if sort.descending else (sort.key.asc(), User.id.asc())
            rows = db.session.execute(
                sa.select(User, sort.key)
                .where(User.deleted_at.is_(None))
                .order_by(*order)
                .offset(999 * per_page - 10)
                .limit(20)
            ).all()
            cursors[sort_name, per_page] = [keyset(sort).cursor((key, user.id)) for user, key in rows]

        admin = db.session.scalars(sa.select(User).where(User.email == "bench-admin@example.com")).first()
        if admin is None:
            from app.users.services import create_admin

            admin = create_admin("bench-admin@example.com", actor=Actor.cli())
        token = issue_sign_in_link(admin, secret_key=SECRET, max_age=3600, actor=Actor.cli())
        floor_token = issue_sign_in_link(admin, secret_key=SECRET, max_age=3600, actor=Actor.cli())
        db.session.commit()
        db.engine.dispose()
    rng.shuffle(sample)
    return {
        "total": total,
        "terms": terms,
        "terms3": terms3,
        "short": short,
        "pieces": pieces,
        "whole": whole,
        "emails": [r.email for r in sample],
        "ids": [r.id for r in sample],
        "cursors": cursors,
        "token": token,
        "floor_token": floor_token,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(
    url: str,
    workers: int,
    target: str = "app:create_app()",
    access_log: Path | None = None,
    extra_env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> tuple[subprocess.Popen, str]:
    """gunicorn serving `target` from `cwd` (the project; another checkout for a before/after)."""
    port = free_port()
    # Gunicorn's access log gives each request's time on the server (%(D)s, microseconds).
    logging = ["--access-logfile", str(access_log), "--access-logformat", "%(s)s %(D)s"] if access_log else []
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET,
        "APP_ENV": "production",
        "SESSION_COOKIE_SECURE": "0",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--timeout",
            "300",
            *logging,
            target,
        ],
        cwd=cwd,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code in {200, 404}:
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


def percentiles(times: list[float]) -> tuple[float, float]:
    times = sorted(times)
    return statistics.median(times), times[max(0, round(0.95 * len(times)) - 1)]


def server_times(access_log: Path, last: int) -> list[float]:
    """The server-side times (ms) of the last `last` requests, from gunicorn's access log."""
    time.sleep(0.2)  # gunicorn writes its log line after the response
    lines = access_log.read_text().splitlines()[-last:]
    return [int(line.split()[1]) / 1000 for line in lines]


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
    return percentiles(times)


def time_plan(client: httpx.Client, plan, repeat: int, access_log: Path) -> tuple[dict, dict]:
    """Warm every worker on every scenario, then time each: ({name: client p50/p95}, {name: server p50/p95})."""
    for _name, urls, headers in plan:  # both workers compile templates and fill caches first
        for url in urls[:4]:
            client.get(url, headers=headers)
    results, server = {}, {}
    for name, urls, headers in plan:
        results[name] = measure(client, urls, repeat, headers)
        server[name] = percentiles(server_times(access_log, repeat))
    return results, server


class SqlFloor:
    """The bare SQL of each request: the statements the app ran for it, replayed on one connection.

    Each URL is requested once in-process (Flask test client) to record its statements and
    parameters; timing then runs only those statements, back to back, with no Python around them
    but the driver: the database's share of the request, the floor the HTTP time stands on.
    """

    def __init__(self, url: str, token: str):
        self.app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url,
                "SECRET_KEY": SECRET,
                "APP_ENV": "production",
                "SESSION_COOKIE_SECURE": False,
            }
        )
        self.client = self.app.test_client()
        self.recorded: list[tuple[str, object]] = []
        with self.app.app_context():
            sa.event.listen(db.engine, "before_cursor_execute", self._record)
        assert self.client.get(f"/auth/link/{token}").status_code == 302
        self.engine = sa.create_engine(
            url, connect_args={"options": "-c timezone=utc -c plan_cache_mode=force_custom_plan"}
        )

    def _record(self, _connection, _cursor, statement, parameters, _context, _executemany):
        self.recorded.append((statement, parameters))

    def statements(self, url: str, headers) -> list[tuple[str, object]]:
        self.recorded = []
        response = self.client.get(url, headers=headers or {})
        response.get_data()  # streamed bodies run their queries as they are read
        return list(self.recorded)

    def measure(self, urls: list[str], repeat: int, headers=None) -> tuple[float, float, int]:
        order = urls[:3] + [urls[i % len(urls)] for i in range(repeat)]  # warm-up first, as over HTTP
        recorded = {url: self.statements(url, headers) for url in dict.fromkeys(order)}
        times = []
        with self.engine.connect() as connection:
            for i, url in enumerate(order):
                statements = recorded[url]
                started = time.perf_counter()
                for statement, parameters in statements:
                    connection.exec_driver_sql(statement, parameters).fetchall() if "SELECT" in statement[
                        :200
                    ] else connection.exec_driver_sql(statement, parameters)
                elapsed = (time.perf_counter() - started) * 1000
                connection.rollback()
                if i >= len(order) - repeat:
                    times.append(elapsed)
        return (*percentiles(times), max(len(v) for v in recorded.values()))


def gunicorn_workers(master: subprocess.Popen) -> list[int]:
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure_export(client: httpx.Client, master: subprocess.Popen) -> dict:
    """Stream the whole CSV; sample every worker's resident memory while it runs."""
    workers = gunicorn_workers(master)
    before = {pid: rss_mib(pid) for pid in workers}
    peak = dict(before)
    done = threading.Event()

    def sample():
        while not done.is_set():
            for pid in workers:
                peak[pid] = max(peak[pid], rss_mib(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started, size, lines = time.perf_counter(), 0, 0
    with client.stream("GET", "/users/export.csv") as response:
        assert response.status_code == 200, response.status_code
        first_byte = None
        for chunk in response.iter_bytes():
            first_byte = first_byte or time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    busiest = max(workers, key=lambda pid: peak[pid] - before[pid])
    return {
        "seconds": elapsed,
        "first_byte_ms": first_byte * 1000,
        "mib": size / 2**20,
        "rows": lines - 1,
        "rss_before": before[busiest],
        "rss_peak": peak[busiest],
    }


def side_by_side(client: httpx.Client, access_log: Path, url: str, data: dict, repeat: int) -> dict:
    """The same requests against a stock Flask-Admin view (benchmarks/flask_admin_view.py), served
    by gunicorn beside the dashboard's and asked alternately, one of ours then one of theirs, so
    that both meet the same machine: {name: (ours median, ours p95, theirs median, theirs p95)}."""
    try:
        import flask_admin  # noqa: F401
    except ImportError:
        raise SystemExit("--flask-admin needs Flask-Admin: .venv/bin/pip install -e '.[bench]'") from None
    their_log = Path(tempfile.mkdtemp()) / "access.log"
    process, base = start_gunicorn(url, 1, "benchmarks.flask_admin_view:create_app()", access_log=their_log)
    cursors = data["cursors"]["-created_at", 25]
    pairs = {  # name: ((our url, headers), their url) for each request
        "first page (whole page)": [(("/users", None), "/admin/users/")],
        "4-letter search": [((f"/users?q={t}", HX), f"/admin/users/?search={t}") for t in data["terms"]],
        "exact email": [
            ((f"/users?{urlencode({'q': e})}", HX), f"/admin/users/?{urlencode({'search': e})}") for e in data["emails"]
        ],
        "page 1000 (keyset cursor)": [((f"/users?after={c}", HX), "/admin/users/?page=999") for c in cursors],
        "filter: status=suspended": [(("/users?status=suspended", HX), "/admin/users/?flt0_5=SUSPENDED")],
    }
    try:
        with httpx.Client(base_url=base, timeout=300) as theirs:
            figures = {}
            for name, requests in pairs.items():
                for (ours, headers), their_url in requests[:2]:  # warm-up
                    client.get(ours, headers=headers)
                    theirs.get(their_url)
                for i in range(repeat):
                    (ours, headers), their_url = requests[i % len(requests)]
                    assert client.get(ours, headers=headers).status_code == 200
                    assert theirs.get(their_url).status_code == 200
                figures[name] = (
                    *percentiles(server_times(access_log, repeat)),
                    *percentiles(server_times(their_log, repeat)),
                )
            return figures
    finally:
        process.terminate()
        process.wait(timeout=20)


def scenarios(data: dict) -> list[tuple[str, list[str], dict | None]]:
    terms, emails, cursors = data["terms"], data["emails"], data["cursors"]
    return [
        ("first page (whole page)", ["/users"], None),
        ("first page (htmx fragment)", ["/users"], HX),
        ("4-letter search", [f"/users?q={t}" for t in terms], HX),
        ("3-letter search", [f"/users?q={t}" for t in data["terms3"]], HX),
        ("1-2 letter search (prefix)", [f"/users?q={t}" for t in data["short"]], HX),
        ("short pieces (o'n, a b)", [f"/users?{urlencode({'q': t})}" for t in data["pieces"]], HX),
        ("exact email", [f"/users?{urlencode({'q': e})}" for e in emails], HX),
        *(
            (f"exact {kind}", [f"/users?{urlencode({'q': v})}" for v in values], HX)
            for kind, values in data["whole"].items()
        ),
        ("page 1000 (keyset cursor)", [f"/users?after={c}" for c in cursors["-created_at", 25]], HX),
        ("page 1000 sorted by email", [f"/users?sort=email&after={c}" for c in cursors["email", 25]], HX),
        ("first page, 100 rows", ["/users?per_page=100"], HX),
        ("page 1000, 100 rows", [f"/users?per_page=100&after={c}" for c in cursors["-created_at", 100]], HX),
        *((f"filter: status={s.value}", [f"/users?status={s.value}"], HX) for s in UserStatus),
        *((f"filter: role={r.value}", [f"/users?role={r.value}"], HX) for r in UserRole),
        ("filter: role=admin&status=active", ["/users?role=admin&status=active"], HX),
        ("filter: deleted included", ["/users?deleted=1"], HX),
        ("filter + search", [f"/users?status=active&q={t}" for t in terms], HX),
        *((f"sort: {name}", [f"/users?sort={name}"], HX) for name in SORTS if name != "-created_at"),
        ("count, capped (lazy)", ["/users/count"], HX),
        ("count of a search (lazy)", [f"/users/count?q={t}" for t in terms], HX),
        ("user detail page", [f"/users/{i}" for i in data["ids"]], None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-export", action="store_true", help="skip the CSV export of every user")
    parser.add_argument(
        "--flask-admin",
        action="store_true",
        help="also time a stock Flask-Admin view of the same table (pip install -e '.[bench]')",
    )
    parser.add_argument("--flask-admin-repeat", type=int, default=10)
    args = parser.parse_args()

    url = sa.make_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    ensure_database(url)
    url_text = url.render_as_string(hide_password=False)
    data = prepare(url_text, args.users)
    plan = scenarios(data)
    access_log = Path(tempfile.mkdtemp()) / "access.log"
    process, base = start_gunicorn(url_text, args.workers, access_log=access_log)
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            assert client.get(f"/auth/link/{data['token']}").status_code == 302
            before = seq_scans(url_text)
            results, server = time_plan(client, plan, args.repeat, access_log)
            after = seq_scans(url_text)
            exported = None if args.no_export else measure_export(client, process)
            admin = (
                side_by_side(client, access_log, url_text, data, args.flask_admin_repeat) if args.flask_admin else {}
            )
    finally:
        process.terminate()
        process.wait(timeout=20)
    floor = SqlFloor(url_text, data["floor_token"])
    floors = {name: floor.measure(urls, args.repeat, headers) for name, urls, headers in plan}

    print(
        f"\n{data['total']:,} users, PostgreSQL, gunicorn {args.workers} workers, {args.repeat} requests each,"
        f" 25 rows a page unless said\n"
    )
    print(
        "Server: time in gunicorn (its access log); client: wall time over loopback, HTTP included;"
        " bare SQL: the request's statements replayed alone (the floor).\n"
    )
    print("| request | server median / p95 ms | client median / p95 ms | bare SQL median / p95 ms (statements) |")
    print("|---|---:|---:|---:|")
    for name, _urls, _headers in plan:
        median, p95 = server[name]
        client_median, client_p95 = results[name]
        sql_median, sql_p95, statements = floors[name]
        print(
            f"| {name} | {median:.1f} / {p95:.1f} | {client_median:.1f} / {client_p95:.1f} |"
            f" {sql_median:.1f} / {sql_p95:.1f} ({statements}) |"
        )
    if admin:
        print(
            f"\nSide by side with a stock Flask-Admin view, requests alternating ({args.flask_admin_repeat} each),"
            " server times:\n"
        )
        print("| request | dashboard median / p95 ms | Flask-Admin median / p95 ms | faster (medians) |")
        print("|---|---:|---:|---:|")
        for name, (ours, ours_p95, theirs, theirs_p95) in admin.items():
            print(f"| {name} | {ours:.1f} / {ours_p95:.1f} | {theirs:.0f} / {theirs_p95:.0f} | {theirs / ours:.0f}× |")
    print(f"\nsequential scans on users during the run: {after - before}")
    if exported:
        print(
            f"\nCSV export of every user: {exported['rows']:,} rows, {exported['mib']:.0f} MiB in"
            f" {exported['seconds']:.1f} s (first byte after {exported['first_byte_ms']:.0f} ms);"
            f" the serving worker's resident memory {exported['rss_before']:.0f} MiB before,"
            f" {exported['rss_peak']:.0f} MiB at its peak"
        )


if __name__ == "__main__":
    main()
