"""Signed Clerk deliveries per second through gunicorn on PostgreSQL: a bare receiver and the dashboard's.

    .venv/bin/python benchmarks/webhooks.py [--users 1000] [--workers 4] [--threads 8] [--rounds 1] [--floor]

The same deliveries go to each receiver in turn, each on a scratch database of its own made on
BENCH_ADMIN_URL's server (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and
migrated with `flask db upgrade`, each served by gunicorn on 127.0.0.1 with the same workers and a
known signing secret:

- bare: benchmarks/bare_receiver.py, a WSGI app on psycopg alone (verify, insert the delivery's
  row once, an ordered upsert with the tombstone rule, one transaction): the floor;
- with --floor, bare-flask (the same as a tiny Flask app of its own) and floor (the same
  statements inside the dashboard's own Flask app: its hooks, session and pool settings), to tell
  the framework's cost from the receiver's;
- dashboard: the dashboard's POST /webhooks/clerk, with all its rules.

The deliveries: a user.created for each of --users users, a user.updated for half of them, and a
second copy of one delivery in ten (duplicates), shuffled, so updates often arrive before their
creation; client threads (httpx, keep-alive) sign each just before sending it. Each run is bounded
by --max-seconds. --rounds N measures every receiver N times, alternating the order.

For each receiver it prints deliveries/s, client-side p50/p95 latency, the server's own p50/p95
(gunicorn's access log, %(D)s), and the CPU gunicorn's workers and their PostgreSQL backends spent
per delivery; then the ratio dashboard / bare. It checks every answer (200, exactly the duplicates
sent) and that each database holds exactly the expected users with their newest names and one
webhook_events row per message. Last, the dashboard's statements per delivery, counted in-process
(Flask's test client, a listener on the engine) on fresh users of the same mix.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.clerk_payloads import BASE_MS, SECRET, clerk_user, sign, user_created, user_updated  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def plan_deliveries(n_users: int, seed: int, prefix: str = "bench") -> tuple[list[tuple[str, dict]], dict[str, str]]:
    """(msg_id, payload) pairs to send, shuffled, and each user's expected final first name."""
    rng = random.Random(seed)
    deliveries: list[tuple[str, dict]] = []
    expected: dict[str, str] = {}
    for i in range(n_users):
        data = clerk_user(email=f"{prefix}{i:06d}@example.com", first_name=f"Created{i}", updated_at=BASE_MS + i)
        deliveries.append((f"msg_{uuid.uuid4().hex}", user_created(data)))
        expected[data["id"]] = f"Created{i}"
        if i % 2 == 0:
            deliveries.append((f"msg_{uuid.uuid4().hex}", user_updated(data, first_name=f"Updated{i}")))
            expected[data["id"]] = f"Updated{i}"
    duplicates = rng.sample(deliveries, len(deliveries) // 10)
    deliveries += duplicates
    rng.shuffle(deliveries)
    return deliveries, expected


ACCESS_FORMAT = "%(m)s %(U)s %(s)s %(D)s"  # the time each request took in the server, in microseconds


def run_gunicorn(
    env: dict[str, str],
    app_spec: str,
    port: int,
    workers: int,
    log: Path,
    access_log: Path,
    access_format: str = ACCESS_FORMAT,
) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "--access-logfile",
        str(access_log),
        "--access-logformat",
        access_format,
        app_spec,
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)  # any answer: the bare one has no /healthz
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"gunicorn did not come up; see {log}:\n{log.read_text()[-2000:]}")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def server_processes(gunicorn: subprocess.Popen, admin: sa.Engine, database: str) -> tuple[list[int], list[int]]:
    """gunicorn's workers, and the PostgreSQL backends connected to the scratch database."""
    children = Path(f"/proc/{gunicorn.pid}/task/{gunicorn.pid}/children").read_text().split()
    with admin.connect() as connection:
        backends = connection.scalars(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": database}
        ).all()
    return [int(pid) for pid in children], list(backends)


def warm_up(url: str, workers: int) -> None:
    """Refused deliveries (a wrong signature, nothing written), a few per worker: first requests done."""
    payload = user_created(clerk_user(email="warm-up@example.com"))
    with httpx.Client(timeout=30) as http:
        for _ in range(workers * 4):
            signed = sign(payload, secret=SECRET)
            http.post(url, content=signed.body, headers={**signed.headers, "svix-signature": "v1,bm90IGl0"})


def server_times(access_log: Path, url_path: str) -> list[float]:
    """Seconds each answered delivery took inside gunicorn (%(D)s)."""
    times = []
    for line in access_log.read_text().splitlines():
        method, path, status, micros = line.split()
        if method == "POST" and path == url_path and status == "200":
            times.append(int(micros) / 1e6)
    return times


def send_all(url: str, deliveries: list[tuple[str, dict]], threads: int, max_seconds: float):
    work: queue.Queue[tuple[str, dict]] = queue.Queue()
    for item in deliveries:
        work.put(item)
    latencies: list[float] = []
    answers: Counter[tuple[int, str]] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < deadline:
                try:
                    msg_id, payload = work.get_nowait()
                except queue.Empty:
                    return
                signed = sign(payload, msg_id=msg_id, secret=SECRET)
                started = time.perf_counter()
                response = http.post(url, content=signed.body, headers=signed.headers)
                elapsed = time.perf_counter() - started
                outcome = response.json().get("outcome", "?") if response.status_code < 500 else "?"
                with lock:
                    latencies.append(elapsed)
                    answers[(response.status_code, outcome)] += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started, latencies, answers


def check_database(url: str, expected: dict[str, str], unique_messages: int) -> list[str]:
    engine = sa.create_engine(url)
    problems = []
    try:
        with engine.connect() as connection:
            rows = dict(connection.execute(sa.text("SELECT clerk_id, first_name FROM users")).all())
            events = connection.scalar(sa.text("SELECT count(*) FROM webhook_events"))
            outcomes = dict(
                connection.execute(sa.text("SELECT outcome, count(*) FROM webhook_events GROUP BY outcome")).all()
            )
    finally:
        engine.dispose()
    if rows != expected:
        wrong = [k for k in expected if rows.get(k) != expected[k]]
        problems.append(f"users differ: {len(rows)} rows for {len(expected)} expected, {len(wrong)} wrong")
    if events != unique_messages:
        problems.append(f"{events} webhook_events rows for {unique_messages} distinct messages")
    if set(outcomes) - {"applied", "stale"}:
        problems.append(f"unexpected outcomes {outcomes}")
    return problems


def count_statements(url: str, n_users: int, seed: int) -> dict[str, float]:
    """Statements per delivery in the dashboard's receiver, in-process (Flask's test client), by answer.

    A listener on the engine sees every statement sent (not BEGIN and COMMIT, two more round trips
    per delivery). Fresh users, the same mix as the run; on the run's database after its check.
    """
    from app import create_app
    from app.extensions import db

    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-webhooks", "CLERK_WEBHOOK_SIGNING_SECRET": SECRET}
    )
    deliveries, _ = plan_deliveries(n_users, seed, prefix="count")
    seen: list[str] = []
    statements: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", lambda _c, _k, statement, *_: seen.append(statement))
        client = app.test_client()
        started = time.perf_counter()
        for msg_id, payload in deliveries:
            signed = sign(payload, msg_id=msg_id, secret=SECRET)
            before = len(seen)
            response = client.post("/webhooks/clerk", data=signed.body, headers=signed.headers)
            kind = f"{payload['type']} {response.json['outcome']}"
            statements[kind] += len(seen) - before
            answers[kind] += 1
        elapsed = time.perf_counter() - started
        db.engine.dispose()
    figures = {kind: statements[kind] / answers[kind] for kind in sorted(answers)}
    figures["all"] = sum(statements.values()) / sum(answers.values())
    figures["in-process ms"] = elapsed / len(deliveries) * 1000
    return figures


@dataclass
class Run:
    receiver: str
    sent: int
    elapsed: float
    latencies: list[float]
    server: list[float]
    answers: Counter
    problems: list[str]
    server_cpu: tuple[float, float]  # seconds of CPU: gunicorn's workers, their PostgreSQL backends
    statements: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed

    def line(self) -> str:
        client = statistics.quantiles(self.latencies, n=100)
        text = (
            f"{self.receiver:>9}: {self.rate:5.0f} deliveries/s in {self.elapsed:5.2f} s; "
            f"client p50 {client[49] * 1000:5.1f} ms, p95 {client[94] * 1000:5.1f} ms"
        )
        if len(self.server) >= 2:
            server = statistics.quantiles(self.server, n=100)
            text += f"; server p50 {server[49] * 1000:5.1f} ms, p95 {server[94] * 1000:5.1f} ms"
        workers, backends = (seconds / self.sent * 1000 for seconds in self.server_cpu)
        return text + f"; CPU a delivery: gunicorn {workers:.2f} ms + PostgreSQL {backends:.2f} ms"


@dataclass(frozen=True)
class Receiver:
    app: str  # gunicorn's app spec
    path: str


RECEIVERS = {
    "bare": Receiver("benchmarks.bare_receiver:app", "/webhooks/clerk"),  # it answers any path
    "bare-flask": Receiver("benchmarks.bare_receiver:bare_flask()", "/webhooks/clerk"),
    "floor": Receiver("benchmarks.bare_receiver:flask_floor()", "/webhooks/floor"),
    # BENCH_DASHBOARD_APP: another spec of the dashboard (a wrapped factory, to try a setting).
    "dashboard": Receiver(os.environ.get("BENCH_DASHBOARD_APP", "app:create_app()"), "/webhooks/clerk"),
}


def measure(receiver: str, args, admin: sa.Engine, deliveries, expected) -> Run:
    """One receiver on a fresh scratch database, migrated with `flask db upgrade`, then dropped."""
    name = f"bench_webhooks_{receiver}_{uuid.uuid4().hex[:8]}"
    db_url = admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CLERK_WEBHOOK_SIGNING_SECRET": SECRET,
        "SECRET_KEY": "bench-webhooks",
        "APP_ENV": "production",
        "FLASK_APP": "app",
    }
    unique = len({msg_id for msg_id, _ in deliveries})
    log = Path(tempfile.gettempdir()) / f"{name}-gunicorn.log"
    access_log = Path(tempfile.gettempdir()) / f"{name}-access.log"
    gunicorn = None
    try:
        subprocess.run(
            [str(ROOT / ".venv/bin/flask"), "--app", "app", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        port = free_port()
        spec = RECEIVERS[receiver]
        url = f"http://127.0.0.1:{port}{spec.path}"
        gunicorn = run_gunicorn(env, spec.app, port, args.workers, log, access_log)
        warm_up(url, args.workers)
        workers, backends = server_processes(gunicorn, admin, name)
        before = cpu_seconds(workers), cpu_seconds(backends)
        elapsed, latencies, answers = send_all(url, deliveries, args.threads, args.max_seconds)
        # Backends that connected during the run count from 0 (connecting is part of the cost).
        backends = sorted(set(backends) | set(server_processes(gunicorn, admin, name)[1]))
        server_cpu = (cpu_seconds(workers) - before[0], cpu_seconds(backends) - before[1])
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=30)
        gunicorn = None
        sent = len(latencies)
        problems = []
        if sent < len(deliveries):
            problems.append(f"only {sent} of {len(deliveries)} sent within {args.max_seconds} s")
        if any(status != 200 for status, _ in answers):
            problems.append(f"some answers were not 200: {dict(answers)}")
        if sum(n for (_, outcome), n in answers.items() if outcome == "duplicate") != len(deliveries) - unique:
            problems.append("the number of duplicate answers differs from the duplicates sent")
        if sent == len(deliveries):
            problems += check_database(db_url, expected, unique)
        run = Run(
            receiver, sent, elapsed, latencies, server_times(access_log, spec.path), answers, problems, server_cpu
        )
        if receiver == "dashboard" and args.count_users:
            run.statements = count_statements(db_url, args.count_users, args.seed)
        if not problems:
            log.unlink()
        access_log.unlink(missing_ok=True)
        return run
    finally:
        if gunicorn is not None:
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(timeout=30)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1, help="measure each receiver this many times, alternating")
    parser.add_argument(
        "--floor", action="store_true", help="also the bare receiver as a Flask app, and inside the dashboard's app"
    )
    parser.add_argument(
        "--count-users", type=int, default=200, help="users for the in-process statement count (0: skip it)"
    )
    args = parser.parse_args()

    admin = sa.create_engine(
        sa.make_url(os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL)), isolation_level="AUTOCOMMIT"
    )
    deliveries, expected = plan_deliveries(args.users, args.seed)
    unique = len({msg_id for msg_id, _ in deliveries})
    print(
        f"{len(deliveries)} signed deliveries ({args.users} users: {unique} messages + {len(deliveries) - unique} "
        f"duplicates) to each receiver, gunicorn -w {args.workers}, {args.threads} client threads"
    )
    receivers = ["bare", *(["bare-flask", "floor"] if args.floor else []), "dashboard"]
    runs: dict[str, list[Run]] = {receiver: [] for receiver in receivers}
    try:
        for round_ in range(args.rounds):
            for receiver in receivers if round_ % 2 == 0 else reversed(receivers):
                run = measure(receiver, args, admin, deliveries, expected)
                runs[receiver].append(run)
                print(run.line())
                if run.problems:
                    raise SystemExit(f"{receiver} failed: " + "; ".join(run.problems))
    finally:
        admin.dispose()

    rate = {receiver: sum(r.sent for r in done) / sum(r.elapsed for r in done) for receiver, done in runs.items()}
    ratios = ", ".join(f"{receiver} / bare: {rate[receiver] / rate['bare']:.2f}" for receiver in receivers[1:])
    print(f"  {ratios} ({', '.join(f'{receiver} {rate[receiver]:.0f}/s' for receiver in receivers)})")
    print(f"  dashboard's answers: {dict(sorted(runs['dashboard'][-1].answers.items()))}")
    print("  each: every answer 200, the duplicates sent, exactly the expected users, one row per message")
    statements = runs["dashboard"][-1].statements
    if statements:
        figures = ", ".join(f"{kind} {n:.1f}" for kind, n in statements.items() if kind not in ("all", "in-process ms"))
        print(
            f"  dashboard statements per delivery (+ BEGIN and COMMIT): {statements['all']:.2f} on average; "
            f"{figures}; {statements['in-process ms']:.1f} ms each in-process, one at a time"
        )


if __name__ == "__main__":
    main()
