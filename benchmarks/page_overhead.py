"""What a page of the users list spends outside its SQL, in-process and over HTTP.

    .venv/bin/python benchmarks/page_overhead.py [--users 26000] [--repeat 300] [--http-repeat 60]
                                                 [--role super_admin|admin] [--profile] [--app-root DIR]

It creates a scratch PostgreSQL database (`bench_overhead_<random>` next to BENCH_DATABASE_URL,
default postgresql+psycopg://postgres@127.0.0.1:5432/), migrates it, seeds --users demo users
(rendering costs the same at any table size; 26,000 give a page 1000), signs a staff member in with
a one-time link and, with the Flask test client, requests the first page (whole page and htmx
fragment) and page 1000 (htmx fragment, keyset cursor) --repeat times each. For each it prints:

- **total**: the request's wall time in-process (test client to response body);
- **SQL**: the sum of the cursor executions (SQLAlchemy's before/after_cursor_execute), and the
  number of statements;
- the rest, by phase (each timed by a thin wrapper, SQL inside a phase left out of it): the session
  cookie, the before_request hooks (the signed-in user and the area check, the input guard, CSRF),
  the view without its templates, template rendering (with url_for and CSRF tokens inside it shown
  apart), the after_request hooks (security headers), and what is left (routing, the test client,
  Werkzeug).

Then gunicorn (2 workers, access log with `%(D)s`) serves the same database, and the same three
requests are timed over HTTP: the server's median and p95 from its log, next to the SQL time.
`--profile` also prints the top of a cProfile of the fragment. `--app-root DIR` measures another
copy of the project (e.g. `git archive HEAD | tar -x -C DIR`), for a before/after in one run.
The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa

HX = {"HX-Request": "true"}
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/"


def _root(argv: list[str]) -> Path:
    for i, arg in enumerate(argv):
        if arg == "--app-root" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--app-root="):
            return Path(arg.split("=", 1)[1]).resolve()
    return Path(__file__).resolve().parent.parent


ROOT = _root(sys.argv)
sys.path.insert(0, str(ROOT))

from app import create_app  # noqa: E402
from app.audit.services import Actor  # noqa: E402
from app.auth.services import issue_sign_in_link  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import User, UserRole  # noqa: E402
from app.users.queries import SORTS, keyset  # noqa: E402

# Its gunicorn and timing helpers; `app` is imported above, from ROOT, so it keeps that copy.
sys.path.insert(1, str(Path(__file__).resolve().parent))
import users_list  # noqa: E402

SECRET = users_list.SECRET  # its gunicorn signs sessions with it

# --- the scratch database -------------------------------------------------------------------


def create_database(server: sa.URL) -> sa.URL:
    name = f"bench_overhead_{secrets.token_hex(4)}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.set(database=name)


def drop_database(url: sa.URL) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def config(url: str) -> dict:
    return {
        "SQLALCHEMY_DATABASE_URI": url,
        "SECRET_KEY": SECRET,
        "APP_ENV": "production",
        "SESSION_COOKIE_SECURE": False,
    }


def prepare(url: str, n_users: int, role: UserRole) -> dict:
    """Migrate, seed, make the staff member; return sign-in tokens and cursors for page 1000."""
    from flask_migrate import upgrade

    from app.demo.load import seed_demo
    from app.users.services import create_admin

    app = create_app(config(url))
    with app.app_context():
        upgrade()
        seed_demo(n_users, actor=Actor.cli())
        db.session.commit()
        db.session.execute(sa.text("ANALYZE"))
        db.session.commit()
        sort = SORTS["-created_at"]
        per_page = app.config["USERS_PER_PAGE"]
        rows = db.session.execute(
            sa.select(User.id, sort.key)
            .where(User.deleted_at.is_(None))
            .order_by(sort.key.desc(), User.id.desc())
            .offset(999 * per_page - 3)
            .limit(6)
        ).all()
        cursors = [keyset(sort).cursor((key, user_id)) for user_id, key in rows]
        staff = create_admin("bench-overhead@example.com", role=role, actor=Actor.cli())
        tokens = [issue_sign_in_link(staff, secret_key=SECRET, max_age=3600, actor=Actor.cli()) for _ in range(2)]
        db.session.commit()
        db.engine.dispose()
    if not cursors:
        raise SystemExit(f"--users {n_users} gives no page 1000; page 1000 needs 25,000 users")
    return {"cursors": cursors, "tokens": tokens}


def scenarios(data: dict) -> list[tuple[str, list[str], dict | None]]:
    return [
        ("first page (whole page)", ["/users"], None),
        ("first page (htmx fragment)", ["/users"], HX),
        ("page 1000 (htmx fragment)", [f"/users?after={c}" for c in data["cursors"]], HX),
    ]


# --- in-process, by phase -------------------------------------------------------------------


class Phases:
    """Wall time by phase of each request, with the SQL run inside a phase kept out of it."""

    def __init__(self) -> None:
        self.stack: list[list] = []  # [name, started, sql seconds inside, child seconds]
        self.times: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.sql = 0.0
        self.statements = 0
        self._sql_started = 0.0

    def reset(self) -> None:
        self.times.clear()
        self.calls.clear()
        self.sql = 0.0
        self.statements = 0

    def wrap(self, name: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            frame = [name, time.perf_counter(), 0.0, 0.0]
            self.stack.append(frame)
            try:
                return function(*args, **kwargs)
            finally:
                self.stack.pop()
                elapsed = time.perf_counter() - frame[1]
                own = elapsed - frame[2] - frame[3]  # its SQL and its timed children are counted apart
                self.times[name] += own
                self.calls[name] += 1
                if self.stack:
                    self.stack[-1][3] += elapsed - frame[2]
                    self.stack[-1][2] += frame[2]

        return timed

    def before_execute(self, *_args) -> None:
        self._sql_started = time.perf_counter()

    def after_execute(self, *_args) -> None:
        elapsed = time.perf_counter() - self._sql_started
        self.sql += elapsed
        self.statements += 1
        if self.stack:
            self.stack[-1][2] += elapsed


PHASES = (
    ("session", "session cookie (open, save)"),
    ("user", "signed-in user, area check (before_request)"),
    ("guards", "other before_request (input guard, CSRF check)"),
    ("view", "view, without its templates"),
    ("render", "templates (Jinja), without what follows"),
    ("url_for", "url_for"),
    ("csrf", "CSRF tokens"),
    ("may", "may() in templates"),
    ("after", "after_request (headers)"),
)


def instrument(app, phases: Phases) -> None:
    """Wrap the phases of a request in `app` with timers (the same functions, only timed)."""
    import flask.templating
    import flask_wtf.csrf

    interface = app.session_interface
    interface.open_session = phases.wrap("session", interface.open_session)
    interface.save_session = phases.wrap("session", interface.save_session)
    user_hooks = {"_guard", "_load_current_user", "_require_staff", "_require_area_permission"}
    for hooks in app.before_request_funcs.values():
        hooks[:] = [phases.wrap("user" if f.__name__ in user_hooks else "guards", f) for f in hooks]
    for hooks in app.after_request_funcs.values():
        hooks[:] = [phases.wrap("after", f) for f in hooks]
    for endpoint, view in list(app.view_functions.items()):
        if endpoint != "static":
            app.view_functions[endpoint] = phases.wrap("view", view)
    flask.templating._render = phases.wrap("render", flask.templating._render)
    app.url_for = phases.wrap("url_for", app.url_for)
    app.jinja_env.globals["url_for"] = app.url_for
    timed_csrf = phases.wrap("csrf", flask_wtf.csrf.generate_csrf)
    flask_wtf.csrf.generate_csrf = timed_csrf
    if "csrf_token" in app.jinja_env.globals:
        app.jinja_env.globals["csrf_token"] = timed_csrf
    if "may" in app.jinja_env.globals:
        app.jinja_env.globals["may"] = phases.wrap("may", app.jinja_env.globals["may"])
    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", phases.before_execute)
        sa.event.listen(db.engine, "after_cursor_execute", phases.after_execute)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def in_process(url: str, token: str, plan, repeat: int, profile: bool) -> dict:
    app = create_app(config(url))
    phases = Phases()
    instrument(app, phases)
    client = app.test_client()
    assert client.get(f"/auth/link/{token}").status_code == 302, "sign-in link refused"
    results = {}
    for name, urls, headers in plan:
        for url in urls * 3:  # warm-up: templates compiled, caches filled
            client.get(url, headers=headers or {})
        totals, sqls, statements = [], [], []
        by_phase: dict[str, list[float]] = defaultdict(list)
        calls: dict[str, list[int]] = defaultdict(list)
        for i in range(repeat):
            url = urls[i % len(urls)]
            phases.reset()
            started = time.perf_counter()
            response = client.get(url, headers=headers or {})
            response.get_data()
            totals.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.status_code)
            sqls.append(phases.sql)
            statements.append(phases.statements)
            for key, _label in PHASES:
                by_phase[key].append(phases.times.get(key, 0.0))
                calls[key].append(phases.calls.get(key, 0))
        results[name] = {
            "total": median(totals) * 1000,
            "sql": median(sqls) * 1000,
            "statements": max(statements),
            "phases": {key: median(values) * 1000 for key, values in by_phase.items()},
            "calls": {key: max(values) for key, values in calls.items()},
            "bytes": len(response.get_data()),
        }
    if profile:
        name, urls, headers = plan[-1]
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(repeat):
            client.get(urls[i % len(urls)], headers=headers or {})
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        results["_profile"] = f"cProfile of {name}, {repeat} requests, by own time:\n" + out.getvalue()
    with app.app_context():
        db.engine.dispose()
    return results


def print_in_process(results: dict, plan, repeat: int) -> None:
    names = [name for name, _urls, _headers in plan]
    print(f"\nIn-process (Flask test client), median of {repeat} requests, ms:\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))

    def row(label: str, values: list[str]) -> None:
        print(f"| {label} | " + " | ".join(values) + " |")

    row("**total**", [f"**{results[n]['total']:.2f}**" for n in names])
    row("SQL (statements)", [f"{results[n]['sql']:.2f} ({results[n]['statements']})" for n in names])
    row("**outside SQL**", [f"**{results[n]['total'] - results[n]['sql']:.2f}**" for n in names])
    for key, label in PHASES:
        cells = []
        for n in names:
            calls = results[n]["calls"].get(key, 0)
            count = f" ×{calls}" if key in {"url_for", "csrf", "may"} else ""
            cells.append(f"{results[n]['phases'].get(key, 0.0):.2f}{count}")
        row(label, cells)
    row(
        "the rest (routing, Werkzeug, test client)",
        [f"{results[n]['total'] - results[n]['sql'] - sum(results[n]['phases'].values()):.2f}" for n in names],
    )
    row("response size, bytes", [str(results[n]["bytes"]) for n in names])
    if "_profile" in results:
        print("\n" + results["_profile"])


# --- over HTTP --------------------------------------------------------------------------------


def over_http(url: str, token: str, plan, repeat: int, workers: int) -> dict:
    """The plan through gunicorn serving ROOT: server time from its access log, client's wait."""
    import httpx

    access_log = Path(tempfile.mkdtemp()) / "access.log"
    process, base = users_list.start_gunicorn(url, workers, access_log=access_log, cwd=ROOT)
    try:
        figures = {}
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.get(f"/auth/link/{token}").status_code == 302, "sign-in link refused"
            for _name, urls, headers in plan:  # every worker compiles the templates first
                for url in urls * 4:
                    client.get(url, headers=headers)
            for name, urls, headers in plan:
                client_median, _ = users_list.measure(client, urls, repeat, headers)
                figures[name] = {
                    "server": users_list.percentiles(users_list.server_times(access_log, repeat)),
                    "client": client_median,
                }
        return figures
    finally:
        process.terminate()
        process.wait(timeout=20)


def print_http(figures: dict, results: dict, plan, repeat: int, workers: int) -> None:
    print(f"\nOver HTTP: gunicorn, {workers} workers, {repeat} requests each (server time from its access log), ms:\n")
    print("| request | server median / p95 | SQL (in-process median) | server − SQL | client median |")
    print("|---|---:|---:|---:|---:|")
    for name, _urls, _headers in plan:
        (server_median, server_p95), sql = figures[name]["server"], results[name]["sql"]
        print(
            f"| {name} | {server_median:.2f} / {server_p95:.2f} | {sql:.2f} | {server_median - sql:.2f} |"
            f" {figures[name]['client']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=26_000)
    parser.add_argument("--repeat", type=int, default=300, help="requests per view in-process")
    parser.add_argument("--http-repeat", type=int, default=60, help="requests per view over HTTP (0: skip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--role", choices=["super_admin", "admin"], default="super_admin", help="who signs in")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of page 1000")
    parser.add_argument("--app-root", help="measure the project at this path instead (same venv)")
    args = parser.parse_args()

    server = sa.make_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER))
    url = create_database(server)
    url_text = url.render_as_string(hide_password=False)
    print(f"project: {ROOT}; scratch database {url.database}; {args.users:,} users; signed in as {args.role}")
    try:
        data = prepare(url_text, args.users, UserRole(args.role))
        plan = scenarios(data)
        results = in_process(url_text, data["tokens"][0], plan, args.repeat, args.profile)
        print_in_process(results, plan, args.repeat)
        if args.http_repeat:
            figures = over_http(url_text, data["tokens"][1], plan, args.http_repeat, args.workers)
            print_http(figures, results, plan, args.http_repeat, args.workers)
    finally:
        drop_database(url)


if __name__ == "__main__":
    main()
