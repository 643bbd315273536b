"""Signed Clerk deliveries per second through gunicorn (several workers) on PostgreSQL.

    .venv/bin/python benchmarks/webhooks.py [--users 1000] [--workers 4] [--threads 8] [--max-seconds 120]

It creates a scratch database on BENCH_ADMIN_URL's server (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres), migrates it with `flask db upgrade`, and
starts gunicorn on 127.0.0.1 with a known signing secret. Then a few client threads (httpx) send
the deliveries, each signed just before it is sent: a user.created for each of --users users, a
user.updated for half of them, and a second copy of one delivery in ten (duplicates), shuffled,
so updates often arrive before their creation. The run is bounded by --max-seconds.

It prints deliveries/s and client-side p50/p95/p99 latency, checks every answer (200, and the
right number of duplicates), checks that the database holds exactly the expected users with
their newest names, then stops gunicorn and drops the database.
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


def plan_deliveries(n_users: int, seed: int) -> tuple[list[tuple[str, dict]], dict[str, str]]:
    """(msg_id, payload) pairs to send, shuffled, and each user's expected final first name."""
    rng = random.Random(seed)
    deliveries: list[tuple[str, dict]] = []
    expected: dict[str, str] = {}
    for i in range(n_users):
        data = clerk_user(email=f"bench{i:06d}@example.com", first_name=f"Created{i}", updated_at=BASE_MS + i)
        deliveries.append((f"msg_{uuid.uuid4().hex}", user_created(data)))
        expected[data["id"]] = f"Created{i}"
        if i % 2 == 0:
            deliveries.append((f"msg_{uuid.uuid4().hex}", user_updated(data, first_name=f"Updated{i}")))
            expected[data["id"]] = f"Updated{i}"
    duplicates = rng.sample(deliveries, len(deliveries) // 10)
    deliveries += duplicates
    rng.shuffle(deliveries)
    return deliveries, expected


def run_gunicorn(env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "app:create_app()",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"gunicorn did not come up; see {log}:\n{log.read_text()[-2000:]}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    admin_url = sa.make_url(os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    name = f"bench_webhooks_{uuid.uuid4().hex[:8]}"
    db_url = admin_url.set(database=name).render_as_string(hide_password=False)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
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
    gunicorn = None
    try:
        subprocess.run(
            [str(ROOT / ".venv/bin/flask"), "--app", "app", "db", "upgrade"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        deliveries, expected = plan_deliveries(args.users, args.seed)
        unique = len({msg_id for msg_id, _ in deliveries})
        port = free_port()
        log = Path(tempfile.gettempdir()) / f"{name}-gunicorn.log"
        gunicorn = run_gunicorn(env, port, args.workers, log)

        elapsed, latencies, answers = send_all(
            f"http://127.0.0.1:{port}/webhooks/clerk", deliveries, args.threads, args.max_seconds
        )

        sent = len(latencies)
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"{sent} signed deliveries ({args.users} users: {unique} messages + {len(deliveries) - unique} "
            f"duplicates) in {elapsed:.2f} s through gunicorn -w {args.workers}, {args.threads} client threads"
        )
        print(
            f"  {sent / elapsed:.0f} deliveries/s; latency p50 {cuts[49] * 1000:.1f} ms, "
            f"p95 {cuts[94] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms"
        )
        print(f"  answers: {dict(sorted(answers.items()))}")
        problems = []
        if sent < len(deliveries):
            problems.append(f"only {sent} of {len(deliveries)} sent within {args.max_seconds} s")
        if any(status != 200 for status, _ in answers):
            problems.append("some answers were not 200")
        if sum(n for (_, outcome), n in answers.items() if outcome == "duplicate") != len(deliveries) - unique:
            problems.append("the number of duplicate answers differs from the duplicates sent")
        if sent == len(deliveries):
            problems += check_database(db_url, expected, unique)
        print(
            "  database: "
            + ("exactly the expected users, newest names, one row per message" if not problems else "; ".join(problems))
        )
        if problems:
            raise SystemExit(f"failed; gunicorn's log is {log}")
        log.unlink()
    finally:
        if gunicorn is not None:
            gunicorn.send_signal(signal.SIGTERM)
            gunicorn.wait(timeout=30)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
