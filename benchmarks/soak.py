"""A soak with injected faults: an hour (or `--minutes 3`) of mixed load on gunicorn and PostgreSQL,
with the outbox delivering to a fake Clerk, and faults on a schedule, each with its own verdict.

    .venv/bin/python benchmarks/soak.py                 # 60 minutes, a report every 5 minutes
    .venv/bin/python benchmarks/soak.py --minutes 3     # the quick form: a report every minute

The load is benchmarks/mixed_load.py's (20 admins browsing, searching, editing, adding and editing
key-value pairs, changing statuses; Svix-signed webhook bursts re-sent as Svix does), plus bulk
status changes and CSV exports. The server is gunicorn (4 sync workers) on a throwaway PostgreSQL
cluster (benchmarks/pg_cluster.py) with 100,000 demo users; `CLERK_API_URL` points at
tests.fake_clerk.FakeClerk, started in this process and seeded with the Clerk users the admins
edit (and some thousands more for `flask clerk sync` to copy), and `flask clerk push --loop` runs
beside it as an operator would run it.

The faults, at fixed fractions of the run (the hour's minutes in brackets; the quick form keeps
the order and compresses the times, durations have floors so each fault still bites):

- a slow, flaky Clerk (6-10 min): each answer waits 0.2-1 s, about one call a second gets a 500;
- a gunicorn worker killed with SIGKILL (12 min) while requests and webhooks are in flight;
- max_connections taken by other clients (15 min, 30 s): connections opened from here until
  PostgreSQL refuses more; the app's own connections are terminated once, so it needs new ones;
- PostgreSQL restarted (20 min): pg_ctl stop -m fast, 5 s down, start (as mixed_load --restart);
- a statement timeout (25 min): a row lock held (SELECT ... FOR UPDATE in an open transaction)
  longer than DATABASE_STATEMENT_TIMEOUT_MS while an admin saves the user and changes its status;
- Clerk down (30-35 min: refused connections, then 503s) and then answering 429 with Retry-After
  (35-40 min); `flask clerk sync` starts just before, is interrupted by the outage, and is resumed
  with the offset it printed;
- a rolling restart of every worker (45 min): SIGHUP to the gunicorn master.

Every report (5 minutes; a minute in the quick form) gives requests and p50/p95 per kind, 4xx and
5xx by status and fault window, each worker's RSS, PostgreSQL's connections by state, the sizes of
users, audit_events, webhook_events and clerk_outbox, and the outbox's depth and oldest pending
call. At the end: mixed_load's exactness check (each acknowledged write exactly once), the
counters against a recount in SQL, the outbox drained and every delivered call received by the
fake exactly once in per-user order, a verdict per fault and the goals (zero 5xx outside the
faults' windows, p95 flat, worker RSS growth under 10%, nothing lost or doubled). The exit status
is 1 when any verdict fails.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.mixed_load import (  # noqa: E402
    HX,
    Admin,
    Outage,
    Recorder,
    Sample,
    WebhookSender,
    Write,
    check_database,
    form_fields,
    pct,
    prepare,
    print_requests,
    print_writes,
    server_env,
    start_server,
    status_text,
)
from benchmarks.pg_cluster import ThrowawayCluster  # noqa: E402
from benchmarks.users_list import ensure_database  # noqa: E402
from tests.clerk_payloads import BASE_MS  # noqa: E402
from tests.fake_clerk import SECRET_KEY as CLERK_SECRET_KEY  # noqa: E402
from tests.fake_clerk import FakeClerk, bapi_user  # noqa: E402

HOUR = 3600.0
TABLES = ("users", "audit_events", "webhook_events", "clerk_outbox")
# The kinds whose p95 must stay flat (and "all"); pages are every admin request but exports.
MAIN_KINDS = ("list page", "list (htmx)", "search (htmx)", "user page", "edit save", "webhook")
NOT_PAGES = ("webhook", "export (CSV)", "sign-in link", "probe")


# --- The schedule -----------------------------------------------------------------------------


@dataclass
class Plan:
    total: float
    report_every: float
    replacement_warmup: float  # a worker born during the run takes its RSS baseline this long after
    slow_at: float
    slow_for: float
    kill_at: float
    maxconn_at: float
    maxconn_hold: float
    restart_at: float
    restart_down: float
    lock_at: float
    sync_lead: float
    clerk_down_at: float
    clerk_down_for: float
    clerk_429_for: float
    retry_after: int
    hup_at: float
    margin: float  # a fault's window goes on this long after it ends (queues drain, retries land)
    grace: float  # after the load: how long the outbox may take to drain


def make_plan(total: float) -> Plan:
    scale = total / HOUR

    def lasting(hour_seconds: float, floor: float) -> float:
        return max(hour_seconds * scale, floor)

    report_every = 300.0 if total >= 1800 else max(total / 3, 20.0)
    return Plan(
        total=total,
        report_every=report_every,
        replacement_warmup=min(report_every, max(20.0, 0.1 * total)),
        slow_at=0.10 * total,
        slow_for=lasting(240, 15),
        kill_at=0.20 * total,
        maxconn_at=0.25 * total,
        maxconn_hold=lasting(30, 10),
        restart_at=total / 3,
        restart_down=5.0,
        lock_at=0.417 * total,
        sync_lead=lasting(20, 6),
        clerk_down_at=0.50 * total,
        clerk_down_for=lasting(300, 20),
        clerk_429_for=lasting(300, 15),
        retry_after=max(5, round(30 * scale)),
        hup_at=0.75 * total,
        margin=5.0,
        grace=lasting(300, 60),
    )


@dataclass
class Window:
    name: str
    start: float
    end: float | None = None  # None while the fault lasts
    calls: tuple[int, int] = (0, 1 << 62)  # the fake's calls made in it (+ margin): indexes into fake.calls


class Faults:
    """The faults' windows, to say which window a request fell in, and each fault's findings."""

    def __init__(self, margin: float, fake: FakeClerk):
        self.margin, self.fake = margin, fake
        self.windows: list[Window] = []
        self.findings: dict[str, dict] = {}
        self.lock = threading.Lock()

    def open(self, name: str, at: float | None = None) -> Window:
        window = Window(name, time.monotonic() if at is None else at)
        window.calls = (len(self.fake.calls), 1 << 62)
        with self.lock:
            self.windows.append(window)
        return window

    def close(self, window: Window) -> None:
        window.end = time.monotonic()

        def later():
            window.calls = (window.calls[0], len(self.fake.calls))

        timer = threading.Timer(self.margin, later)
        timer.daemon = True
        timer.start()

    def label(self, sample: Sample) -> str | None:
        for w in self.windows:
            end = (w.end if w.end is not None else time.monotonic()) + self.margin
            if sample.started <= end and sample.ended >= w.start:
                return w.name
        return None

    def inside(self, sample: Sample, window: Window, margin: float | None = None) -> bool:
        end = (window.end if window.end is not None else time.monotonic()) + (self.margin if margin is None else margin)
        return sample.started <= end and sample.ended >= window.start


# --- The admins, with bulk changes and exports -------------------------------------------------


class SoakAdmin(Admin):
    # Over an hour an admin adding a pair every few seconds to the same 25 users would leave each
    # with about 70 of them; real admins also delete, so each user keeps at most 4 of the load's.
    keep_pairs = 4

    def actions(self) -> list[tuple]:
        return [*super().actions(), (self.bulk_change, 3), (self.export, 1)]

    def bulk_change(self, client):
        """Select 2-5 of its users whose status differs, preview, confirm (half htmx, half full pages)."""
        to = self.rng.choice(["suspended", "active"])
        candidates = [u for u in self.targets if self.status[u] != to]
        if not candidates:
            return
        ids = self.rng.sample(candidates, min(len(candidates), self.rng.randint(2, 5)))
        headers = HX if self.rng.random() < 0.5 else None
        form = {"csrf_token": self.csrf, "action": to, "ids": ids}
        preview = self.rec.request(client, "bulk preview", "POST", "/users/bulk", data=form, headers=headers)
        if preview is None or preview.status_code != 200:
            return
        response = self.rec.request(
            client, "bulk apply", "POST", "/users/bulk", data={**form, "confirm": "y"}, headers=headers
        )
        for user_id in ids:
            self.rec.write(Write("bulk status", ("status", user_id), to, None), response)
        if response is not None and response.status_code < 400:
            for user_id in ids:
                self.status[user_id] = to

    def export(self, client):
        """The CSV export of a search (a few hundred rows) or, one time in five, of a filter."""
        if self.rng.random() < 0.8:
            params = {"q": self.rng.choice(self.data["terms"])}
        else:
            params = self.rng.choice([{"role": "admin"}, {"status": "suspended", "q": "a"}])
        self.rec.request(client, "export (CSV)", "GET", "/users/export.csv", params=params)


# --- Watching the server ----------------------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return []
    return [int(p) for p in children]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssWatch(threading.Thread):
    """Each gunicorn worker's VmRSS every few seconds, by pid, from its birth (first seen)."""

    def __init__(self, master: int, every: float, stop: threading.Event):
        super().__init__(name="rss", daemon=True)
        self.master, self.every, self.stop = master, every, stop
        self.first_seen: dict[int, float] = {}
        self.samples: dict[int, list[tuple[float, int]]] = defaultdict(list)

    def sample_once(self) -> None:
        now = time.monotonic()
        for pid in worker_pids(self.master):
            kib = rss_kib(pid)
            if kib is not None:
                self.first_seen.setdefault(pid, now)
                self.samples[pid].append((now, kib))

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample_once()
            self.stop.wait(self.every)

    def at(self, pid: int, moment: float) -> int | None:
        """The pid's first sample at or after `moment`."""
        return next((kib for t, kib in self.samples[pid] if t >= moment), None)


def pg_connect(dsn: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(dsn, connect_timeout=3, autocommit=True, **kwargs)


def database_figures(dsn: str) -> dict | None:
    """Connections by state, table and index sizes, the outbox's depth and oldest pending call."""
    try:
        with pg_connect(dsn, application_name="soak-report") as conn:
            states = dict(
                conn.execute(
                    "SELECT coalesce(state, backend_type), count(*) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 1"
                ).fetchall()
            )
            max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
            sizes = {
                t: conn.execute(
                    "SELECT pg_relation_size(%s), pg_indexes_size(%s), pg_total_relation_size(%s)", (t, t, t)
                ).fetchone()
                for t in TABLES
            }
            outbox = dict(conn.execute("SELECT state, count(*) FROM clerk_outbox GROUP BY state").fetchall())
            oldest = conn.execute(
                "SELECT extract(epoch FROM now() - min(created_at)) FROM clerk_outbox WHERE state = 'pending'"
            ).fetchone()[0]
            attempts = conn.execute("SELECT coalesce(sum(attempts), 0) FROM clerk_outbox").fetchone()[0]
    except psycopg.Error as error:
        return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"}
    return {
        "states": states,
        "max_connections": max_connections,
        "sizes": sizes,
        "outbox": outbox,
        "oldest_pending_s": float(oldest) if oldest is not None else None,
        "attempts": int(attempts),
    }


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


class AccessLog:
    """gunicorn's access log, read as it grows: (kind, status, server ms) of each request logged
    since the last read (mixed_load.KIND_ACCESS_FORMAT: the kind is the X-Load-Kind header)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read_new(self) -> list[tuple[str, int, float]]:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except FileNotFoundError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self.offset += len(complete)
        rows = []
        for line in complete.decode(errors="replace").splitlines():
            parts = line.split(" ", 4)
            if len(parts) == 5 and parts[2].isdigit() and parts[3].isdigit():
                rows.append((parts[4], int(parts[2]), int(parts[3]) / 1000))
        return rows


def server_table(windows: list[dict[str, list[float]]], kinds: tuple[str, ...], width: float) -> list[str]:
    """Markdown: server-side p50 / p95 per report window for `kinds` (from the access log)."""
    out = ["| window | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for i, times in enumerate(windows):
        cells = []
        for kind in kinds:
            these = [ms for k, values in times.items() if kind in ("all", k) for ms in values]
            cells.append(f"{statistics.median(these):.1f} / {pct(these, 0.95):.0f}" if these else "-")
        out.append(f"| {i * width:.0f}-{(i + 1) * width:.0f} s | " + " | ".join(cells) + " |")
    return out


def page_kind(kind: str) -> bool:
    return not kind.startswith(NOT_PAGES)


class Reporter(threading.Thread):
    """Every `every` seconds, what the last window saw."""

    def __init__(self, t0, every, end, recorder, faults, rss, dsn, fake, stop, access_log: AccessLog):
        super().__init__(name="reporter", daemon=True)
        self.t0, self.every, self.end = t0, every, end
        self.rec, self.faults, self.rss, self.dsn, self.fake, self.stop = recorder, faults, rss, dsn, fake, stop
        self.access_log = access_log
        self.server: list[dict[str, list[float]]] = []  # per report window: kind -> server ms (all statuses)
        self.reports: list[dict] = []
        self.fake_seen = 0

    def run(self) -> None:
        n = 1
        while True:
            due = self.t0 + n * self.every
            if due > self.end + 1:
                return
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return
            self.report(n, due - self.every, due)
            n += 1

    def report(self, n: int, start: float, end: float) -> None:
        with self.rec.lock:
            window = [s for s in self.rec.samples if start <= s.started < end]
        figures = database_figures(self.dsn)
        out = [f"\n### Report {n}: {start - self.t0:.0f}-{end - self.t0:.0f} s\n"]
        out.append(f"{len(window)} requests ({len(window) / (end - start):.0f}/s)\n")
        server: dict[str, list[float]] = defaultdict(list)
        for kind, _status, ms in self.access_log.read_new():
            server[kind].append(ms)
        self.server.append(server)
        out.append("| request | count | p50 ms | p95 ms | server p50 ms | server p95 ms |")
        out.append("|---|---:|---:|---:|---:|---:|")
        kinds = sorted({s.kind for s in window}, key=lambda k: (k.startswith("webhook"), k))
        for kind in [*kinds, "all"]:
            times = [s.ms for s in window if kind in ("all", s.kind)]
            on_server = [ms for k, values in server.items() if kind in ("all", k) for ms in values]
            if times:
                name = "**all**" if kind == "all" else kind
                side = f"{statistics.median(on_server):.1f} | {pct(on_server, 0.95):.1f}" if on_server else "- | -"
                out.append(
                    f"| {name} | {len(times)} | {statistics.median(times):.1f} | {pct(times, 0.95):.1f} | {side} |"
                )
        errors = Counter(
            (s.status, self.faults.label(s) or "outside faults") for s in window if s.status is None or s.status >= 400
        )
        out.append(
            "\n4xx/5xx/no answer by cause: "
            + (
                ", ".join(
                    f"{'no answer' if st is None else st} in {where}: {k}"
                    for (st, where), k in sorted(errors.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
                )
                or "none"
            )
        )
        now = time.monotonic()
        rss = []
        for pid in worker_pids(self.rss.master):
            kib = rss_kib(pid)
            if kib is not None:
                rss.append(f"{pid}: {kib / 1024:.1f} MiB (born {self.rss.first_seen.get(pid, now) - self.t0:.0f} s)")
        out.append("worker RSS: " + ("; ".join(rss) or "none"))
        if "error" in figures:
            out.append(f"database: unreachable for the report ({figures['error']})")
        else:
            states = figures["states"]
            out.append(
                f"PostgreSQL connections: {sum(states.values())} of {figures['max_connections']} ("
                + ", ".join(f"{k}: {v}" for k, v in states.items())
                + ")"
            )
            out.append(
                "sizes MiB (table + indexes = total): "
                + "; ".join(f"{t} {mib(r)} + {mib(i)} = {mib(tot)}" for t, (r, i, tot) in figures["sizes"].items())
            )
            oldest = figures["oldest_pending_s"]
            out.append(
                f"outbox: {figures['outbox'].get('pending', 0)} pending"
                + (f", oldest {oldest:.1f} s" if oldest is not None else "")
                + " ("
                + ", ".join(f"{k}: {v}" for k, v in sorted(figures["outbox"].items()))
                + f"; {figures['attempts']} attempts in all)"
            )
        with self.fake._lock:
            answered = self.fake.answered[self.fake_seen :]
            self.fake_seen = len(self.fake.answered)
        out.append(f"fake Clerk: {len(answered)} requests answered ({status_text(Counter(answered)) or 'none'})")
        print("\n".join(out), flush=True)
        self.reports.append({"n": n, "start": start, "end": end, "figures": figures})


# --- The faults -------------------------------------------------------------------------------


class Prober:
    """An admin of its own (not one of the 20) for the statement-timeout probe."""

    def __init__(self, base, token, targets, data, recorder, timeout):
        self.admin = SoakAdmin(99, base, token, targets, data, recorder, 0, timeout, 99)
        self.client = httpx.Client(base_url=base, timeout=timeout)
        self.admin.sign_in(self.client)
        self.n = 0


def visible_text(page: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return re.sub(r"\s+", " ", text).strip()


def answer_message(response: httpx.Response | None) -> str:
    if response is None:
        return ""
    if "json" in response.headers.get("content-type", ""):
        return response.text[:160]
    text = visible_text(response.text)
    found = re.search(r"[^.]*(?:again|moment|busy|unavailable|unreachable)[^.]*\.", text, flags=re.I)
    return (found.group(0).strip() if found else text[:160]).strip()


class FaultRunner:
    def __init__(
        self,
        *,
        plan,
        t0,
        cluster,
        dsn_admin,
        dsn_app,
        gunicorn,
        workers,
        fake,
        recorder,
        faults,
        prober,
        env,
        statement_timeout_s,
        logs,
    ):
        self.plan, self.t0, self.cluster = plan, t0, cluster
        self.dsn_admin, self.dsn_app = dsn_admin, dsn_app
        self.gunicorn, self.workers, self.fake, self.rec, self.faults = gunicorn, workers, fake, recorder, faults
        self.prober, self.env, self.timeout_s, self.logs = prober, env, statement_timeout_s, logs
        self.threads: list[threading.Thread] = []
        self.rng = random.Random(11)

    def run_all(self) -> None:
        """One fault at a time: each at its planned time, or `margin` after the one before ended."""
        p = self.plan
        schedule = [
            (p.slow_at, self.slow_clerk),
            (p.kill_at, self.kill_worker),
            (p.maxconn_at, self.max_connections),
            (p.restart_at, self.restart_postgres),
            (p.lock_at, self.lock_timeout),
            (p.clerk_down_at - p.sync_lead, self.clerk_outage),
            (p.hup_at, self.rolling_restart),
        ]
        for offset, function in schedule:
            time.sleep(max(0.0, self.t0 + offset - time.monotonic()))
            if time.monotonic() > self.t0 + p.total - 2 * p.margin:
                self.log(f"no time left for {function.__name__}")
                continue
            try:
                function()
            except Exception as error:  # noqa: BLE001 -- a fault that breaks is a finding, not a crash of the soak
                self.faults.findings.setdefault(function.__name__, {})["crashed"] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
            time.sleep(p.margin)

    def start(self) -> None:
        thread = threading.Thread(target=self.run_all, name="faults", daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        while self.threads:
            self.threads.pop(0).join()

    def log(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.t0:6.1f} s] {text}", flush=True)

    # A slow, flaky Clerk: 0.2-1 s for each answer, about one call a second answered 500.
    def slow_clerk(self) -> None:
        window = self.faults.open("slow Clerk")
        self.log(f"fault: Clerk slow (0.2-1 s) and flaky (500s) for {self.plan.slow_for:.0f} s")
        before = len(self.fake.answered)
        end = window.start + self.plan.slow_for
        while time.monotonic() < end:
            self.fake.delay = self.rng.uniform(0.2, 1.0)
            with self.fake._lock:
                self.fake.fail_next.append((500, {}))
            time.sleep(1.0)
        self.fake.delay = 0.0
        with self.fake._lock:
            self.fake.fail_next.clear()
            answered = Counter(self.fake.answered[before:])
        self.faults.close(window)
        self.faults.findings["slow Clerk"] = {"window": window, "answered": answered}
        self.log(f"Clerk fast again ({status_text(answered)})")

    # SIGKILL one worker while requests are in flight.
    def kill_worker(self) -> None:
        pids = worker_pids(self.gunicorn.pid)
        victim = self.rng.choice(pids)
        window = self.faults.open("worker SIGKILL")
        os.kill(victim, signal.SIGKILL)
        self.log(f"fault: SIGKILL to worker {victim}")
        replaced = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = worker_pids(self.gunicorn.pid)
            if victim not in now and len(now) >= self.workers:
                replaced = time.monotonic() - window.start
                break
            time.sleep(0.1)
        self.faults.close(window)
        self.faults.findings["worker SIGKILL"] = {"window": window, "pid": victim, "replaced_after": replaced}
        self.log(f"worker {victim} replaced after {replaced:.1f} s" if replaced else "worker not replaced in 30 s")

    # Other clients take every connection PostgreSQL allows.
    def max_connections(self) -> None:
        hog: list[psycopg.Connection] = []

        def grab() -> None:
            while len(hog) < 1000:
                try:
                    hog.append(pg_connect(self.dsn_admin, application_name="soak-hog"))
                except psycopg.OperationalError:
                    return

        window = self.faults.open("max_connections")
        grab()
        taken_first = len(hog)
        # The app's pools hold connections already, and would keep serving on them: close them, as a
        # pool's recycling or a new worker would, so that it needs new connections while none are left.
        terminated = 0
        if hog:
            terminated = (
                hog[0]
                .execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    " AND application_name NOT IN ('soak-hog') AND pid <> pg_backend_pid()"
                )
                .fetchone()[0]
            )
        self.log(f"fault: {taken_first} connections taken, {terminated} of the app's (and others') terminated")
        end = time.monotonic() + self.plan.maxconn_hold
        while time.monotonic() < end:
            grab()  # the slots the terminated backends free
            time.sleep(0.1)
        held = len(hog)
        for conn in hog:
            conn.close()
        self.faults.close(window)
        self.faults.findings["max_connections"] = {"window": window, "held": held, "terminated": terminated}
        self.log(f"{held} connections released after {self.plan.maxconn_hold:.0f} s")

    # PostgreSQL stopped (-m fast), down 5 s, started.
    def restart_postgres(self) -> None:
        outage = Outage()
        window = self.faults.open("PostgreSQL restart")
        outage.stop_issued = window.start
        self.log("fault: pg_ctl stop -m fast")
        self.cluster.stop("fast")
        outage.stopped = time.monotonic()
        time.sleep(self.plan.restart_down)
        outage.start_issued = time.monotonic()
        self.cluster.start()
        outage.up = time.monotonic()
        self.faults.close(window)
        self.faults.findings["PostgreSQL restart"] = {"window": window, "outage": outage}
        self.log(f"PostgreSQL back after {outage.up - outage.stop_issued:.1f} s")

    # A row lock held past the statement timeout while an admin saves that user.
    def lock_timeout(self) -> None:
        prober = self.prober
        admin, client = prober.admin, prober.client
        user_id = admin.targets[0]
        form = self.rec.request(client, "probe edit form", "GET", f"/users/{user_id}/edit")
        fields = (
            form_fields(form.text, f"/users/{user_id}/edit") if form is not None and form.status_code == 200 else {}
        )
        prober.n += 1
        name = f"LdP{prober.n:03d}"
        to = "active" if admin.status[user_id] == "suspended" else "suspended"
        hold = self.timeout_s + 3.0
        results: dict[str, dict] = {}

        def probe(kind: str, write: Write, method: str, url: str, **kwargs) -> None:
            started = time.monotonic()
            response = self.rec.request(client, kind, method, url, **kwargs)
            self.rec.write(write, response)
            results[kind] = {
                "status": None if response is None else response.status_code,
                "ms": (time.monotonic() - started) * 1000,
                "retry_after": None if response is None else response.headers.get("Retry-After"),
                "message": answer_message(response),
                "write": write,
            }

        conn = pg_connect(self.dsn_app, application_name="soak-lock")
        conn.autocommit = False
        window = self.faults.open("statement timeout")
        conn.execute("SELECT id FROM users WHERE id = %s FOR UPDATE", (user_id,))
        locked_at = time.monotonic()
        self.log(f"fault: user {user_id} locked FOR UPDATE for {hold:.1f} s (statement timeout {self.timeout_s:g} s)")
        probes = []
        if fields:
            fields["first_name"] = name
            probes.append(
                threading.Thread(
                    target=probe,
                    args=(
                        "probe edit save",
                        Write("edit save", ("first_name", user_id), name, name),
                        "POST",
                        f"/users/{user_id}/edit",
                    ),
                    kwargs={"data": fields},
                )
            )
        probes.append(
            threading.Thread(
                target=probe,
                args=(
                    "probe status change (htmx)",
                    Write("status change", ("status", user_id), to, None),
                    "POST",
                    f"/users/{user_id}/status",
                ),
                kwargs={"data": {"csrf_token": admin.csrf, "status": to, "view": "row"}, "headers": HX},
            )
        )
        for thread in probes:
            thread.start()
        time.sleep(max(0.0, locked_at + hold - time.monotonic()))
        conn.rollback()
        conn.close()
        released = time.monotonic()
        for thread in probes:
            thread.join()
        self.faults.close(window)
        if results.get("probe status change (htmx)", {}).get("status") in (200, 302):
            admin.status[user_id] = to
        row = None
        try:
            with pg_connect(self.dsn_app) as check:
                row = check.execute("SELECT first_name, status::text FROM users WHERE id = %s", (user_id,)).fetchone()
        except psycopg.Error:
            pass
        self.faults.findings["statement timeout"] = {
            "window": window,
            "results": results,
            "hold_s": released - locked_at,
            "row": row,
            "name": name,
            "to": to,
        }
        self.log("lock released; " + "; ".join(f"{k}: {v['status']} in {v['ms']:.0f} ms" for k, v in results.items()))

    # Clerk down (refused, then 503), then 429 with Retry-After; `flask clerk sync` across it.
    def clerk_outage(self) -> None:
        p = self.plan
        fake = self.fake
        sync_env = {**self.env, "CLERK_API_RETRY_MAX_MS": "1000"}
        runs: list[dict] = []
        finding = {"runs": runs}
        self.faults.findings["Clerk outage"] = finding

        def sync(offset: int | None) -> dict:
            command = [str(ROOT / ".venv/bin/flask"), "--app", "app", "clerk", "sync", "--page-size", "100"]
            if offset:
                command += ["--offset", str(offset)]
            started = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, env=sync_env, capture_output=True, text=True, timeout=3600)
            output = (done.stdout + done.stderr).replace("\r", "\n")
            resume = re.search(r"resume with: flask clerk sync(?: --from (\w+))? --offset (\d+)", output)
            summary = re.findall(r"(\d+) created", output)
            lines = [line for line in output.splitlines() if line.strip()]
            run = {
                "offset": offset or 0,
                "rc": done.returncode,
                "started": started - self.t0,
                "ended": time.monotonic() - self.t0,
                "resume_from": (resume.group(1) or "users") if resume else None,
                "resume_offset": int(resume.group(2)) if resume else None,
                "created": int(summary[0]) if summary else None,
                "last_line": (
                    [line for line in lines if line.startswith(("Clerk sync done", "Error"))] or lines or [""]
                )[-1:],
            }
            runs.append(run)
            self.log(f"clerk sync --offset {offset or 0}: exit {done.returncode}; {run['last_line'][0][:220]}")
            return run

        lists_before = sum(1 for r in fake.requests if r.startswith("GET /v1/users?"))
        first = {}
        first_thread = threading.Thread(target=lambda: first.update(sync(None)), name="sync-1")
        first_thread.start()
        self.log("flask clerk sync started (page size 100)")
        # The outage begins once the sync is under way (two pages read), at the planned time at the earliest.
        wait_until = time.monotonic() + 60
        while time.monotonic() < wait_until:
            pages = sum(1 for r in fake.requests if r.startswith("GET /v1/users?")) - lists_before
            if pages >= 2 and time.monotonic() >= self.t0 + p.clerk_down_at:
                break
            if not first_thread.is_alive():
                break
            time.sleep(0.05)
        attempts = {}
        db_attempts = lambda: _outbox_attempts(self.dsn_app)  # noqa: E731
        down = self.faults.open("Clerk down")
        attempts["down_start"] = db_attempts()
        calls_at = {"down_start": len(fake.answered)}
        # stop() refuses new connections but still answers on those already open (the sync's own
        # keep-alive connection finished its 3,000 users that way in the first hour's run): 503 on them.
        fake.fail_all = (503, {})
        fake.stop()
        self.log(f"fault: Clerk down (connections refused) for {p.clerk_down_for / 2:.0f} s, then 503s")
        time.sleep(p.clerk_down_for / 2)
        fake.start()
        calls_at["503_start"] = len(fake.answered)
        time.sleep(max(0.0, down.start + p.clerk_down_for - time.monotonic()))
        fake.fail_all = (429, {"Retry-After": str(p.retry_after)})
        self.faults.close(down)
        attempts["down_end"] = db_attempts()
        calls_at["429_start"] = len(fake.answered)
        limited = self.faults.open("Clerk 429")
        self.log(f"fault: Clerk answers 429 (Retry-After: {p.retry_after}) for {p.clerk_429_for:.0f} s")
        first_thread.join()
        resumes = threading.Thread(target=self._resume_sync, args=(first, sync), name="sync-resume")
        resumes.start()
        time.sleep(max(0.0, limited.start + p.clerk_429_for - time.monotonic()))
        fake.fail_all = None
        self.faults.close(limited)
        attempts["429_end"] = db_attempts()
        calls_at["429_end"] = len(fake.answered)
        self.log("Clerk answers normally again")
        finding.update(down=down, limited=limited, attempts=attempts, calls_at=calls_at)
        self.threads.append(resumes)  # joined after the load: the next fault need not wait for it

    def _resume_sync(self, first: dict, sync) -> None:
        run = first
        for _ in range(5):
            if run.get("rc") == 0 or run.get("resume_offset") is None:
                return
            run = sync(run["resume_offset"])

    # SIGHUP to the master: every worker replaced, gracefully.
    def rolling_restart(self) -> None:
        old = set(worker_pids(self.gunicorn.pid))
        window = self.faults.open("rolling restart")
        os.kill(self.gunicorn.pid, signal.SIGHUP)
        self.log(f"fault: SIGHUP to the gunicorn master (workers {sorted(old)})")
        done = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = set(worker_pids(self.gunicorn.pid))
            if not (now & old) and len(now) == self.workers:
                done = time.monotonic() - window.start
                break
            time.sleep(0.1)
        self.faults.close(window)
        self.faults.findings["rolling restart"] = {"window": window, "replaced_after": done, "old": old}
        self.log(f"every worker replaced after {done:.1f} s" if done else "workers not all replaced in 90 s")


def _outbox_attempts(dsn: str) -> dict[int, int] | None:
    try:
        with pg_connect(dsn, application_name="soak-report") as conn:
            return dict(conn.execute("SELECT id, attempts FROM clerk_outbox").fetchall())
    except psycopg.Error:
        return None


# --- The fake Clerk's users -------------------------------------------------------------------


def clerk_users_for(url: str, user_ids: list[str], n_sync: int) -> tuple[list[dict], list[str]]:
    """The users the admins edit, as Clerk holds them, and `n_sync` more for `flask clerk sync`."""
    engine = sa.create_engine(url)
    with engine.connect() as db:
        rows = db.execute(
            sa.text(
                "SELECT clerk_id, email, first_name, last_name, created_at, role::text, status::text FROM users"
                " WHERE id = ANY(:ids)"
            ),
            {"ids": list(user_ids)},
        ).all()
    engine.dispose()
    now_ms = int(time.time() * 1000)
    users = []
    for r in rows:
        created = r.created_at.replace(tzinfo=UTC) if r.created_at.tzinfo is None else r.created_at
        users.append(
            bapi_user(
                id=r.clerk_id,
                email=r.email,
                first_name=r.first_name,
                last_name=r.last_name,
                created_at=int(created.timestamp() * 1000),
                updated_at=now_ms,
                public_metadata={"role": r.role, "status": r.status},
            )
        )
    sync_ids = [f"user_soaksync{i:06d}" for i in range(n_sync)]
    for i, clerk_id in enumerate(sync_ids):
        users.append(
            bapi_user(
                id=clerk_id,
                email=f"soak-sync-{i:06d}@example.com",
                first_name=f"Sync{i}",
                last_name="Backfill",
                created_at=BASE_MS + i * 1000,
                updated_at=BASE_MS + i * 1000,
            )
        )
    return users, sync_ids


# --- The checks afterwards --------------------------------------------------------------------

RECOUNT_SQL = """
SELECT 'status', status::text, count(*) FROM users WHERE deleted_at IS NULL GROUP BY 2
UNION ALL SELECT 'role', role::text, count(*) FROM users WHERE deleted_at IS NULL GROUP BY 2
UNION ALL SELECT 'signup', to_char(created_at, 'YYYY-MM-DD'), count(*) FROM users WHERE deleted_at IS NULL GROUP BY 2
UNION ALL SELECT 'signin', to_char(last_sign_in_at, 'YYYY-MM-DD'), count(*) FROM users
    WHERE deleted_at IS NULL AND last_sign_in_at IS NOT NULL GROUP BY 2
UNION ALL SELECT 'deleted', 'all', count(*) FROM users WHERE deleted_at IS NOT NULL
UNION ALL SELECT 'organizations', 'live', count(*) FROM organizations WHERE deleted_at IS NULL
UNION ALL SELECT 'organizations', 'deleted', count(*) FROM organizations WHERE deleted_at IS NOT NULL
UNION ALL SELECT 'memberships', 'live', count(*) FROM memberships WHERE deleted_at IS NULL
"""


def check_counters(dsn: str) -> list[str]:
    """user_counts against a recount from the tables, in one snapshot."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SET LOCAL timezone = 'UTC'")
        stored = {(d, b): n for d, b, n in conn.execute("SELECT dimension, bucket, n FROM user_counts") if n}
        actual = {(d, b): n for d, b, n in conn.execute(RECOUNT_SQL) if n}
    return [
        f"counter {key}: stored {stored.get(key, 0)}, recount {actual.get(key, 0)}"
        for key in sorted(set(stored) | set(actual))
        if stored.get(key, 0) != actual.get(key, 0)
    ]


def expected_call(operation: str, payload: dict, clerk_id: str) -> tuple[str, str, dict | None]:
    """(method, path, what the body must hold) of a delivered call, as the fake sees it."""
    base = f"/v1/users/{clerk_id}"
    if operation == "update_user":
        return "PATCH", base, payload.get("fields") or {}
    if operation == "update_metadata":
        return "PATCH", f"{base}/metadata", {"public_metadata": payload.get("public_metadata")}
    if operation in ("ban", "unban", "lock", "unlock"):
        return "POST", f"{base}/{operation}", None
    if operation == "delete_user":
        return "DELETE", base, None
    return "?", operation, None


# Faults that can lose a call's outcome after Clerk took it (the commit that records it fails).
LOSSY = ("worker SIGKILL", "max_connections", "PostgreSQL restart", "statement timeout", "rolling restart")


def check_outbox(dsn: str, fake: FakeClerk, faults: Faults) -> dict:
    """Every delivered call reached the fake exactly once, in each user's order; what is left pending.

    A call may reach Clerk and its outcome be lost before the commit (a worker killed, the database
    gone): the row is then sent again (attempts > 1) or superseded. Those extra calls are counted as
    "re-sent after a lost outcome", not as doubles: Clerk's calls are idempotent. A second success for
    a row tried only once, or a success that matches no row, is a double."""
    with pg_connect(dsn) as conn:
        rows = conn.execute(
            "SELECT o.id, u.clerk_id, o.operation, o.payload, o.state, o.attempts FROM clerk_outbox o"
            " LEFT JOIN users u ON u.id = o.user_id ORDER BY o.id"
        ).fetchall()
    states = Counter(r[4] for r in rows)
    expected: dict[str, list] = defaultdict(list)
    for row_id, clerk_id, operation, payload, state, attempts in rows:
        if clerk_id:
            expected[clerk_id].append(
                (row_id, state, attempts, expected_call(operation, json.loads(payload), clerk_id))
            )
    with fake._lock:
        received = list(zip(fake.calls, fake.answered, strict=True))
    got: dict[str, list] = defaultdict(list)
    position: dict[int, int] = {}
    for n, (call, status) in enumerate(received):
        parts = call.path.split("/")
        if call.method != "GET" and status < 300 and len(parts) >= 4 and parts[2] == "users":
            got[parts[3]].append(call)
            position[id(call)] = n
    lossy = [w.calls for w in faults.windows if w.name in LOSSY]
    found = Counter()
    problems, notes = [], []

    def matches(row, call) -> bool:
        method, path, body = row[3]
        return (
            method == call.method
            and path == call.path
            and (not body or all((call.body or {}).get(k) == v for k, v in body.items()))
        )

    for clerk_id in sorted(set(expected) | set(got)):
        rows_of, calls = expected.get(clerk_id, []), got.get(clerk_id, [])
        delivered = [r for r in rows_of if r[1] == "delivered"]
        # In order: the delivered calls must be a subsequence of what Clerk received (greedy is exact).
        j, extra = 0, []
        for call in calls:
            if j < len(delivered) and matches(delivered[j], call):
                j += 1
            else:
                extra.append(call)
        found["matched"] += j
        if j < len(delivered):
            leftover = list(delivered[j:])
            for call in extra:  # received, but not in order?
                hit = next((r for r in leftover if matches(r, call)), None)
                if hit is not None:
                    leftover.remove(hit)
            if len(leftover) < len(delivered) - j:
                found["out_of_order_users"] += 1
                if len(problems) < 20:
                    problems.append(
                        f"{clerk_id}: delivered calls {[r[0] for r in delivered]} reached Clerk out of order:"
                        f" {[(c.method, c.path.rsplit('/', 1)[-1]) for c in calls]}"
                    )
            found["lost"] += len(leftover)
            for r in leftover[: max(0, 20 - len(problems))]:
                problems.append(f"{clerk_id}: delivered call #{r[0]} {r[3][:2]} never reached Clerk")
            continue
        # What else reached Clerk: a call whose outcome was lost before its commit (then superseded,
        # or sent again), or a double.
        spare = [r for r in rows_of if r[1] != "delivered"]
        resent = [r for r in delivered if r[2] > 1]
        for call in extra:
            hit = next((r for r in spare if matches(r, call)), None)
            if hit is not None:
                spare.remove(hit)
                found["reached Clerk, outcome lost, then " + hit[1]] += 1
                continue
            hit = next((r for r in resent if matches(r, call)), None)
            if hit is None and any(a <= position[id(call)] <= b for a, b in lossy):
                # Its first outcome was lost with the transaction that counted the attempt.
                hit = next((r for r in delivered if matches(r, call)), None)
            if hit is not None:
                if hit in resent:
                    resent.remove(hit)
                found["re-sent after a lost outcome"] += 1
                if len(notes) < 5:
                    notes.append(f"{clerk_id}: call #{hit[0]} reached Clerk twice, once during a fault")
                continue
            found["doubled"] += 1
            if len(problems) < 20:
                problems.append(
                    f"{clerk_id}: {call.method} {call.path} {call.body} reached Clerk with no row left for it"
                )
    delivered = states.get("delivered", 0)
    return {
        "states": states,
        "delivered": delivered,
        "matched": found["matched"],
        "doubled": found["doubled"],
        "lost": found["lost"],
        "out_of_order_users": found["out_of_order_users"],
        "lost_outcomes": {k: v for k, v in found.items() if k.startswith(("reached", "re-sent"))},
        "users": sum(1 for v in expected.values() if any(r[1] == "delivered" for r in v)),
        "problems": problems + notes,
    }


def check_half_written(dsn: str, writes: list[Write], run_started_at) -> list[str]:
    """Each edit's audit event and its outbox call, and each status change's event and its ban or
    unban call, are both there or both absent (a worker killed mid-request left no half)."""
    problems = []
    with pg_connect(dsn) as conn:
        audits = conn.execute(
            "SELECT action, target_id, changes FROM audit_events WHERE occurred_at >= %s "
            "AND action IN ('user.update', 'user.suspend', 'user.reactivate')",
            (run_started_at,),
        ).fetchall()
        calls = conn.execute(
            "SELECT user_id, operation, payload FROM clerk_outbox WHERE operation IN ('update_user', 'ban', 'unban')"
        ).fetchall()
    edit_tokens = {w.token for w in writes if w.kind == "edit save"}
    audited, status_audited = Counter(), Counter()
    for action, target_id, changes in audits:
        if action == "user.update":
            after = (json.loads(changes) if changes else {}).get("first_name")
            if isinstance(after, list) and after and after[-1] in edit_tokens:
                audited[after[-1]] += 1
        else:
            status_audited[target_id] += 1
    sent, status_sent = Counter(), Counter()
    for user_id, operation, payload in calls:
        if operation == "update_user":
            name = (json.loads(payload).get("fields") or {}).get("first_name")
            if name in edit_tokens:
                sent[name] += 1
        else:
            status_sent[user_id] += 1
    for token in sorted(set(audited) | set(sent)):
        if audited[token] != sent[token]:
            problems.append(f"edit {token}: {audited[token]} audit events, {sent[token]} outbox calls")
    targets = {w.slot[1] for w in writes if w.kind in ("status change", "bulk status")}
    for user_id in sorted(targets):
        if status_audited[user_id] != status_sent[user_id]:
            problems.append(
                f"user {user_id}: {status_audited[user_id]} status changes audited, {status_sent[user_id]} ban/unban calls"
            )
    return problems


# --- Verdicts ---------------------------------------------------------------------------------


class Verdicts:
    def __init__(self):
        self.lines: list[tuple[str, bool, str]] = []

    def add(self, name: str, ok: bool, why: str) -> None:
        self.lines.append((name, ok, why))
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {why}", flush=True)


def p95(samples: list[Sample]) -> float | None:
    return pct([s.ms for s in samples], 0.95) if samples else None


def describe_errors(samples: list[Sample]) -> str:
    bad = [s for s in samples if s.status is None or s.status >= 500]
    return status_text(Counter(s.status for s in bad)) or "none"


def judge_faults(
    v: Verdicts,
    faults: Faults,
    samples: list[Sample],
    senders,
    plan: Plan,
    fake,
    sync_ids,
    dsn,
    baseline_pages_p95: float | None,
) -> None:
    found = faults.findings

    def within(window: Window, margin: float | None = None) -> list[Sample]:
        return [s for s in samples if faults.inside(s, window, margin)]

    # Slow Clerk: informational but judged: no dashboard 5xx came of it.
    f = found.get("slow Clerk")
    if f:
        these = within(f["window"])
        fives = [s for s in these if s.status is not None and s.status >= 500 and faults.label(s) == "slow Clerk"]
        pages = [s for s in these if page_kind(s.kind)]
        v.add(
            "fault: Clerk slow (0.2-1 s) and flaky (500s)",
            not fives,
            f"{len(these)} requests in the window, 5xx: {describe_errors(fives)}; pages p95 {p95(pages) or 0:.0f} ms"
            f" (baseline {baseline_pages_p95 or 0:.0f} ms; a page waits for its own calls to Clerk); Clerk answered"
            f" {status_text(f['answered'])}",
        )

    # Worker killed.
    f = found.get("worker SIGKILL")
    if f:
        these = within(f["window"])
        lost = [s for s in these if s.status is None]
        hooks = [d for s in senders for d in s.deliveries]
        unanswered_hooks = [d for d in hooks if any(st is None for st, _ in d.answers)]  # the cut-off ones
        not_taken = [d for d in unanswered_hooks if not d.done]
        applied_twice = [d for d in unanswered_hooks if sum(o == "applied" for _, o in d.answers) > 1]
        ok = f["replaced_after"] is not None and not not_taken and not applied_twice
        v.add(
            "fault: worker SIGKILL",
            ok,
            f"worker {f['pid']} replaced after {f['replaced_after'] or float('nan'):.1f} s; requests cut off: "
            f"{len(lost)} ({', '.join(sorted({s.kind for s in lost})) or 'none'}); webhook deliveries without an answer"
            f" {len(unanswered_hooks)}, all re-sent and taken: {not not_taken}, none applied twice: {not applied_twice};"
            " half-written rows: see the final checks",
        )

    # max_connections.
    f = found.get("max_connections")
    if f:
        w = f["window"]
        these = within(w, 0.0)
        five00 = [s for s in these if s.status == 500]
        refused = [s for s in these if s.status == 503]
        no_retry_after = [s for s in refused if not s.retry_after]
        slowest = max((s.ms for s in these), default=0.0)
        after = sorted((s for s in samples if s.started >= w.end), key=lambda s: s.started)
        first_ok = next((s for s in after if s.status is not None and s.status < 400), None)
        late = [
            s
            for s in samples
            if w.end + plan.margin <= s.started < w.end + plan.margin + 30
            and (s.status is None or s.status >= 500)
            and faults.label(s) is None
        ]
        ok = not five00 and slowest <= 5000 and not no_retry_after and first_ok is not None and not late
        v.add(
            "fault: max_connections reached",
            ok,
            f"{f['held']} connections held {w.end - w.start:.0f} s ({f['terminated']} of the app's terminated); "
            f"{len(these)} requests: {status_text(Counter(s.status for s in these))}; 503 without Retry-After:"
            f" {len(no_retry_after)}; slowest {slowest:.0f} ms (budget 5000); first success "
            f"{(first_ok.ended - w.end) * 1000 if first_ok else float('nan'):.0f} ms after release; 5xx in the 30 s"
            f" after (outside other faults): {len(late)}",
        )

    # PostgreSQL restart.
    f = found.get("PostgreSQL restart")
    if f:
        o = f["outage"]
        down = [s for s in samples if o.stopped <= s.started and s.ended <= o.start_issued]
        bad_down = [s for s in down if s.status != 503]
        five00 = [s for s in within(f["window"]) if s.status == 500]
        late = [
            s
            for s in samples
            if o.up + plan.margin <= s.started < o.up + plan.margin + 30
            and (s.status is None or s.status >= 500)
            and faults.label(s) is None
        ]
        slowest = max((s.ms for s in down), default=0.0)
        v.add(
            "fault: PostgreSQL restarted",
            not bad_down and not five00 and not late,
            f"stop took {1000 * (o.stopped - o.stop_issued):.0f} ms, down {o.start_issued - o.stopped:.1f} s; "
            f"{len(down)} requests while down: {status_text(Counter(s.status for s in down)) or 'none'} (slowest "
            f"{slowest:.0f} ms); 500s in the window: {len(five00)}; 5xx in the 30 s after it was back (outside other faults): {len(late)}",
        )

    # Statement timeout.
    f = found.get("statement timeout")
    if f:
        # The margin: 1.5 s, or the p95 of the minute before when the machine is slower than that.
        before = [
            s for s in samples if f["window"].start - 60 <= s.started < f["window"].start and faults.label(s) is None
        ]
        margin_ms = max(1500.0, p95(before) or 0.0)
        budget_ms = plan_statement_timeout_s * 1000 + margin_ms
        problems, parts = [], []
        for kind, r in f["results"].items():
            parts.append(
                f"{kind}: {r['status']} in {r['ms']:.0f} ms, Retry-After {r['retry_after']}, says {r['message']!r}"
            )
            if r["status"] != 503:
                problems.append(f"{kind} answered {r['status']}, not 503")
            if r["ms"] > budget_ms:
                problems.append(f"{kind} took {r['ms']:.0f} ms (budget {budget_ms:.0f})")
            if r["status"] == 503 and not r["retry_after"]:
                problems.append(f"{kind}: no Retry-After")
        row = f["row"]
        if row and row[0] == f["name"] and f["results"].get("probe edit save", {}).get("status", 0) >= 500:
            said = f["results"]["probe edit save"]["write"].said_saved
            if not said:
                problems.append("the refused edit landed anyway")
        v.add(
            "fault: statement timeout (row locked)",
            not problems,
            f"lock held {f['hold_s']:.1f} s, statement timeout {plan_statement_timeout_s:g} s, budget"
            f" {budget_ms:.0f} ms (margin: the p95 of the minute before, at least 1.5 s); "
            + "; ".join(parts)
            + (f" -- {'; '.join(problems)}" if problems else ""),
        )

    # Clerk down, then 429.
    f = found.get("Clerk outage")
    if f and "down" in f:
        judge_clerk_outage(v, f, samples, faults, plan, fake, sync_ids, dsn, baseline_pages_p95)

    # Rolling restart.
    f = found.get("rolling restart")
    if f:
        these = within(f["window"])
        bad = [s for s in these if s.status is None or s.status >= 500]
        v.add(
            "fault: rolling restart (SIGHUP)",
            f["replaced_after"] is not None and not bad,
            f"{len(f['old'])} workers replaced in {f['replaced_after'] or float('nan'):.1f} s; {len(these)} requests in the"
            f" window, 5xx or no answer: {describe_errors(bad)}",
        )

    for name, finding in found.items():
        if "crashed" in finding:
            v.add(f"fault runner: {name}", False, f"the fault itself failed: {finding['crashed']}")


plan_statement_timeout_s = 2.0  # set by main()


def judge_clerk_outage(v, f, samples, faults, plan, fake, sync_ids, dsn, baseline_pages_p95) -> None:
    down, limited = f["down"], f["limited"]
    attempts, calls_at = f["attempts"], f["calls_at"]
    # Backoff: how often each row was tried during the window, against what backoff allows.
    problems, parts = [], []
    for phase, (a, b), length, bound_of in (
        ("down", ("down_start", "down_end"), down.end - down.start, lambda w: 2 + int(math.log2(1 + w / 10))),
        ("429", ("down_end", "429_end"), limited.end - limited.start, lambda w: 2 + int(w / plan.retry_after)),
    ):
        before, after = attempts.get(a), attempts.get(b)
        if before is None or after is None:
            parts.append(f"{phase}: attempts unreadable")
            continue
        deltas = {row: after.get(row, 0) - before.get(row, 0) for row in after}
        tried = {row: d for row, d in deltas.items() if d > 0}
        most = max(tried.values(), default=0)
        bound = bound_of(length)
        parts.append(
            f"{phase} {length:.0f} s: {sum(tried.values())} attempts on {len(tried)} calls, at most {most} on one"
            f" (backoff allows {bound} + one per admin write on that user)"
        )
        # The page's own attempt after each write on a user is not the worker's: allow one per write.
        writes_in = sum(
            1
            for s in samples
            if s.kind in ("edit save", "status change", "bulk apply")
            and faults.inside(s, down if phase == "down" else limited, 0)
        )
        if sum(tried.values()) > len(tried) * bound + writes_in:
            problems.append(f"{phase}: {sum(tried.values())} attempts > {len(tried)} x {bound} + {writes_in} writes")
    received_503 = calls_at["429_start"] - calls_at["503_start"]
    received_429 = calls_at["429_end"] - calls_at["429_start"]
    parts.append(
        f"the fake received {received_503} calls in the 503 half ({received_503 / max(1e-9, down.end - down.start) * 2:.1f}/s)"
        f" and {received_429} in the 429 phase ({received_429 / max(1e-9, limited.end - limited.start):.1f}/s)"
    )
    pages = [s for s in samples if page_kind(s.kind) and faults.inside(s, down, 0) | faults.inside(s, limited, 0)]
    pages_p95 = p95(pages) or 0.0
    slow = baseline_pages_p95 is not None and pages_p95 > 1.5 * baseline_pages_p95
    fives = [
        s
        for s in samples
        if (faults.inside(s, down) or faults.inside(s, limited))
        and s.status is not None
        and s.status >= 500
        and faults.label(s) in ("Clerk down", "Clerk 429")
    ]
    v.add(
        "fault: Clerk down then 429: the outbox backs off",
        not problems,
        "; ".join(parts) + (f" -- {'; '.join(problems)}" if problems else ""),
    )
    v.add(
        "fault: Clerk down then 429: pages stay fast",
        not slow and not fives,
        f"pages p95 {pages_p95:.0f} ms over {len(pages)} pages (baseline {baseline_pages_p95 or 0:.0f} ms, limit x1.5);"
        f" 5xx: {describe_errors(fives)}",
    )
    runs = f["runs"]
    text = "; ".join(
        f"run {i + 1} from offset {r['offset']}: exit {r['rc']}"
        + (f", stopped at {r['resume_offset']}" if r["resume_offset"] is not None else "")
        + (f", {r['created']} created" if r["created"] is not None else "")
        for i, r in enumerate(runs)
    )
    problems = []
    interrupted = len(runs) >= 2 and runs[0]["rc"] != 0 and runs[0]["resume_offset"] is not None
    if not interrupted:
        problems.append("the sync was not interrupted by the outage" if runs and runs[0]["rc"] == 0 else "no resume")
    if not runs or runs[-1]["rc"] != 0:
        problems.append("the last run did not finish")
    for earlier, later in itertools.pairwise(runs):
        if later["offset"] != earlier["resume_offset"]:
            problems.append(f"resumed from {later['offset']}, printed {earlier['resume_offset']}")
    with pg_connect(dsn) as conn:
        rows = Counter(
            r[0] for r in conn.execute("SELECT clerk_id FROM users WHERE clerk_id LIKE 'user_soaksync%'").fetchall()
        )
        audited = Counter(
            r[0]
            for r in conn.execute(
                "SELECT u.clerk_id FROM audit_events a JOIN users u ON u.id = a.target_id"
                " WHERE u.clerk_id LIKE 'user_soaksync%' AND a.action = 'user.create'"
            ).fetchall()
        )
    missing = [c for c in sync_ids if rows[c] == 0]
    twice = [c for c in sync_ids if rows[c] > 1 or audited[c] > 1]
    created = sum(r["created"] or 0 for r in runs)
    if missing or twice:
        problems.append(f"{len(missing)} users missing, {len(twice)} there or created twice")
    if created != len(sync_ids):
        problems.append(f"the runs created {created} users in all, Clerk has {len(sync_ids)} new ones")
    v.add(
        "fault: Clerk down then 429: flask clerk sync resumes without doubling",
        not problems,
        f"{text}; {len(sync_ids)} users to copy: {sum(1 for c in sync_ids if rows[c] == 1)} rows once,"
        f" {sum(1 for c in sync_ids if audited[c] == 1)} created once"
        + (f" -- {'; '.join(problems)}" if problems else ""),
    )


def judge_goals(
    v, samples, faults, plan, t0, rss, outbox, exact_problems, counter_problems, half_written, server
) -> None:
    outside = [s for s in samples if faults.label(s) is None]
    fives = [s for s in outside if s.status is not None and s.status >= 500]
    no_answer = [s for s in outside if s.status is None]
    v.add(
        "goal: zero 5xx outside the faults' windows",
        not fives and not no_answer,
        f"{len(outside)} requests outside the windows (each fault's window + {plan.margin:g} s): "
        f"5xx {status_text(Counter(s.status for s in fives)) or 'none'}, no answer {len(no_answer)}",
    )
    # p95: first report window against the last, outside the faults' windows.
    first = [s for s in outside if t0 <= s.started < t0 + plan.report_every]
    last = [s for s in outside if t0 + plan.total - plan.report_every <= s.started < t0 + plan.total]
    parts, bad = [], []
    for kind in ("all", *MAIN_KINDS):
        a = p95([s for s in first if kind in ("all", s.kind)])
        b = p95([s for s in last if kind in ("all", s.kind)])
        if a is None or b is None:
            parts.append(f"{kind}: too few")
            continue
        parts.append(f"{kind} {a:.0f} -> {b:.0f} ms ({(b / a - 1) * 100:+.0f}%)")
        if b > 1.2 * a:
            bad.append(kind)
    on_server = []  # for reading the verdict: the same windows' server-side p95 (fault windows included)
    if len(server) >= 2:
        for kind in ("all", *MAIN_KINDS):
            a, b = (
                [ms for k, values in w.items() if kind in ("all", k) for ms in values] for w in (server[0], server[-1])
            )
            if a and b:
                on_server.append(f"{kind} {pct(a, 0.95):.0f} -> {pct(b, 0.95):.0f} ms")
    v.add(
        "goal: p95 flat (last window within 20% of the first)",
        not bad,
        "; ".join(parts)
        + (f" -- over 20%: {', '.join(bad)}" if bad else "")
        + (f" (server-side: {'; '.join(on_server)})" if on_server else ""),
    )
    # RSS: each worker's last sample against its baseline (the first report after warm-up; a
    # worker born later, `replacement_warmup` after its birth).
    parts, bad, judged = [], [], 0
    alive = set(worker_pids(rss.master))
    for pid in sorted(rss.samples):
        born = rss.first_seen[pid]
        moment = t0 + plan.report_every if born <= t0 + 1 else born + plan.replacement_warmup
        base = rss.at(pid, moment)
        last_kib = rss.samples[pid][-1][1]
        where = "alive" if pid in alive else "gone"
        if base is None:
            parts.append(f"{pid} ({where}): no baseline (lived {rss.samples[pid][-1][0] - born:.0f} s)")
            continue
        growth = last_kib / base - 1
        parts.append(f"{pid} ({where}) {base / 1024:.0f} -> {last_kib / 1024:.0f} MiB ({growth * 100:+.1f}%)")
        if pid in alive:
            judged += 1
            if growth >= 0.10:
                bad.append(str(pid))
    v.add(
        "goal: worker RSS growth under 10% after warm-up",
        judged > 0 and not bad,
        "; ".join(parts)
        + (f" -- over 10%: {', '.join(bad)}" if bad else "")
        + ("" if judged else " -- nothing to judge"),
    )
    lost_doubled = []
    if exact_problems:
        lost_doubled.append(f"{len(exact_problems)} write problems (first: {exact_problems[0]})")
    if counter_problems:
        lost_doubled.append(f"{len(counter_problems)} counters off (first: {counter_problems[0]})")
    if half_written:
        lost_doubled.append(f"{len(half_written)} half-written (first: {half_written[0]})")
    if outbox["lost"] or outbox["doubled"] or outbox["out_of_order_users"]:
        lost_doubled.append(
            f"outbox: {outbox['lost']} lost, {outbox['doubled']} doubled, {outbox['out_of_order_users']} users out of order"
        )
    pending = outbox["states"].get("pending", 0)
    if pending:
        lost_doubled.append(f"outbox not drained: {pending} pending")
    v.add(
        "goal: nothing lost or doubled",
        not lost_doubled,
        "every acknowledged write once, counters equal the recount, no half-written row, outbox drained"
        f" ({outbox['matched']} of {outbox['delivered']} delivered calls received once, in order, for"
        f" {outbox['users']} users; states {dict(outbox['states'])})"
        if not lost_doubled
        else "; ".join(lost_doubled),
    )


# --- Main -------------------------------------------------------------------------------------


def main() -> None:
    global plan_statement_timeout_s
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="60 (a report every 5 min) or 3 (every minute)")
    parser.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)  # short debugging runs
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--admins", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--webhook-threads", type=int, default=2)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--sync-users", type=int, default=3000, help="Clerk users only the fake holds, for the sync")
    parser.add_argument("--statement-timeout-ms", type=int, default=2000)
    parser.add_argument("--pool-size", type=int, default=5)
    parser.add_argument("--max-overflow", type=int, default=5)
    parser.add_argument("--pool-timeout", type=float, default=3.0)
    parser.add_argument("--push-interval", type=float, default=2.0)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-pairs", type=int, default=4, help="pairs of the load's each user keeps at most")
    parser.add_argument("--shared-buffers", default="2GB", help="the throwaway cluster's shared_buffers")
    parser.add_argument("--effective-cache-size", default="8GB")
    args = parser.parse_args()
    total = args.seconds if args.seconds else args.minutes * 60
    SoakAdmin.keep_pairs = args.keep_pairs
    plan = make_plan(total)
    plan_statement_timeout_s = args.statement_timeout_ms / 1000

    # A production-like cache (PostgreSQL's default is 128 MB; a dedicated server gets about a quarter
    # of its memory): the tables outgrow the default within the hour.
    cluster = ThrowawayCluster(
        args.port,
        prefix="soak-pg-",
        settings={"shared_buffers": args.shared_buffers, "effective_cache_size": args.effective_cache_size},
    )
    logs = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    gunicorn = push = None
    fake = None
    failed = True
    try:
        cluster.init()
        cluster.start()
        url = sa.make_url(cluster.url).set(database="soak")
        ensure_database(url)
        url_text = url.render_as_string(hide_password=False)
        dsn_app = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=soak"
        dsn_admin = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"
        print(
            f"soak: {total / 60:g} min; throwaway PostgreSQL {cluster.bindir.parent.name} on 127.0.0.1:{cluster.port};"
            f" seeding {args.users:,} demo users ...",
            flush=True,
        )
        data = prepare(url_text, args.users, args.admins + 1)  # the last admin is the prober's
        print(f"  {data['total']:,} users (seeded in {data['seeded_s']:.0f} s)", flush=True)
        edited = [u for targets in data["targets"] for u in targets]
        clerk_users, sync_ids = clerk_users_for(url_text, edited, args.sync_users)
        fake = FakeClerk(clerk_users)
        fake.start()
        print(
            f"  fake Clerk at {fake.url}: {len(edited)} users the admins edit, {len(sync_ids)} more to sync", flush=True
        )

        env = server_env(
            url_text,
            {
                "CLERK_SECRET_KEY": CLERK_SECRET_KEY,
                "CLERK_API_URL": fake.url,
                "DATABASE_STATEMENT_TIMEOUT_MS": str(args.statement_timeout_ms),
                "DATABASE_POOL_SIZE": str(args.pool_size),
                "DATABASE_MAX_OVERFLOW": str(args.max_overflow),
                "DATABASE_POOL_TIMEOUT_SECONDS": f"{args.pool_timeout:g}",
            },
        )
        gunicorn, base = start_server(env, args.workers, logs / "gunicorn.log", logs / "access.log")
        push_log = (logs / "push.log").open("w")
        push = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/flask"),
                "--app",
                "app",
                "clerk",
                "push",
                "--loop",
                "--interval",
                f"{args.push_interval:g}",
            ],
            cwd=ROOT,
            env=env,
            stdout=push_log,
            stderr=subprocess.STDOUT,
        )
        with sa.create_engine(url_text).connect() as connection:
            run_started_at = connection.scalar(sa.text("SELECT now() AT TIME ZONE 'utc'"))

        recorder = Recorder()
        faults = Faults(plan.margin, fake)
        prober = Prober(base, data["tokens"][args.admins], data["targets"][args.admins], data, recorder, args.timeout)
        t0 = time.monotonic()
        deadline = t0 + total
        admins = [
            SoakAdmin(
                i, base, data["tokens"][i], data["targets"][i], data, recorder, deadline, args.timeout, args.seed + i
            )
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
        stop = threading.Event()
        rss = RssWatch(gunicorn.pid, 10.0 if total >= 1800 else 5.0, stop)
        rss.sample_once()
        reporter = Reporter(
            t0, plan.report_every, deadline, recorder, faults, rss, dsn_app, fake, stop, AccessLog(logs / "access.log")
        )
        runner = FaultRunner(
            plan=plan,
            t0=t0,
            cluster=cluster,
            dsn_admin=dsn_admin,
            dsn_app=dsn_app,
            gunicorn=gunicorn,
            workers=args.workers,
            fake=fake,
            recorder=recorder,
            faults=faults,
            prober=prober,
            env=env,
            statement_timeout_s=plan_statement_timeout_s,
            logs=logs,
        )
        print(
            f"{args.admins} admins, {args.webhook_threads} webhook senders, gunicorn -w {args.workers}, clerk push --loop;"
            f" reports every {plan.report_every:.0f} s. Faults at: slow Clerk {plan.slow_at:.0f} s"
            f" ({plan.slow_for:.0f} s), SIGKILL {plan.kill_at:.0f} s, max_connections {plan.maxconn_at:.0f} s"
            f" ({plan.maxconn_hold:.0f} s), PostgreSQL restart {plan.restart_at:.0f} s, statement timeout"
            f" {plan.lock_at:.0f} s, Clerk down {plan.clerk_down_at:.0f} s ({plan.clerk_down_for:.0f} s) then 429"
            f" ({plan.clerk_429_for:.0f} s), SIGHUP {plan.hup_at:.0f} s",
            flush=True,
        )
        for thread in (*admins, *senders, rss, reporter):
            thread.start()
        runner.start()
        for thread in admins:
            thread.join()
        ran = time.monotonic() - t0
        for thread in senders:
            thread.join()
        reporter.join(timeout=plan.report_every)
        runner.join()
        stop.set()
        samples = recorder.samples
        print(f"\n## After {ran:.0f} s: {len(samples)} requests", flush=True)

        # The outbox drains: `clerk push --loop` keeps running for the grace period.
        drain_started = time.monotonic()
        pending = None
        while time.monotonic() - drain_started < plan.grace:
            figures = database_figures(dsn_app)
            pending = None if "error" in figures else figures["outbox"].get("pending", 0)
            if pending == 0:
                break
            time.sleep(2)
        print(f"outbox: {pending} pending after {time.monotonic() - drain_started:.0f} s of grace", flush=True)
        push.send_signal(signal.SIGINT)
        try:
            push.wait(timeout=30)
        except subprocess.TimeoutExpired:
            push.kill()
        gunicorn_log = (logs / "gunicorn.log").read_text(errors="replace")

        print_requests(samples, "Requests over the whole run (client-side wall time on loopback)")
        windows = []
        print(
            "\nFault windows (a request counts in one when it overlaps it, or ends within "
            f"{plan.margin:g} s after it)\n"
        )
        print("| window | from s | to s | requests | 4xx/5xx/no answer |")
        print("|---|---:|---:|---:|---|")
        for w in faults.windows:
            these = [s for s in samples if faults.inside(s, w)]
            bad = Counter(s.status for s in these if s.status is None or s.status >= 400)
            windows.append((w, these))
            print(
                f"| {w.name} | {w.start - t0:.1f} | {(w.end or w.start) - t0:.1f} | {len(these)} |"
                f" {status_text(bad) or 'none'} |"
            )
        print("\np95 per report window, outside the faults' windows (ms)\n")
        print("| window | requests | " + " | ".join(("all", *MAIN_KINDS)) + " |")
        print("|---|---:|" + "---:|" * (1 + len(MAIN_KINDS)))
        n_windows = round(total / plan.report_every)
        for i in range(n_windows):
            a, b = t0 + i * plan.report_every, t0 + (i + 1) * plan.report_every
            these = [s for s in samples if a <= s.started < b and faults.label(s) is None]
            cells = [p95([s for s in these if k in ("all", s.kind)]) for k in ("all", *MAIN_KINDS)]
            print(
                f"| {i * plan.report_every:.0f}-{(i + 1) * plan.report_every:.0f} s | {len(these)} | "
                + " | ".join("-" if c is None else f"{c:.0f}" for c in cells)
                + " |"
            )

        print(
            "\nServer-side p50 / p95 per report window, ms (gunicorn's access log: the time in the worker,"
            " without the queue before it; every request, fault windows included)\n"
        )
        print("\n".join(server_table(reporter.server, ("all", *MAIN_KINDS, "key-value add"), plan.report_every)))

        with (logs / "samples.csv").open("w") as out:
            out.write("kind,started_s,ms,status,error,window\n")
            for s in samples:
                out.write(
                    f"{s.kind},{s.started - t0:.3f},{s.ms:.1f},{s.status or ''},{s.error or ''},"
                    f"{faults.label(s) or ''}\n"
                )
        five00 = Counter((s.kind, faults.label(s) or "outside faults") for s in samples if s.status == 500)
        cut = Counter((s.kind, s.error, faults.label(s) or "outside faults") for s in samples if s.status is None)
        print(
            "\n500s: "
            + (", ".join(f"{k} in {w}: {n}" for (k, w), n in sorted(five00.items())) or "none")
            + "\nno answer: "
            + (", ".join(f"{k} ({e}) in {w}: {n}" for (k, e, w), n in sorted(cut.items())) or "none")
        )
        check = check_database(url_text, recorder.writes, senders, run_started_at)
        print_writes(check)
        counter_problems = check_counters(dsn_app)
        half_written = check_half_written(dsn_app, recorder.writes, run_started_at)
        outbox = check_outbox(dsn_app, fake, faults)
        print(
            f"\ncounters: {'equal to the recount' if not counter_problems else '; '.join(counter_problems[:10])}"
            f"\nhalf-written rows: {'none' if not half_written else '; '.join(half_written[:10])}"
            f"\noutbox: states {dict(outbox['states'])}; {outbox['delivered']} delivered calls for {outbox['users']}"
            f" users, {outbox['matched']} received by the fake once and in order; {outbox['doubled']} doubled,"
            f" {outbox['lost']} missing, {outbox['out_of_order_users']} users out of order; calls whose outcome was"
            f" lost (sent again or superseded, idempotent): {outbox['lost_outcomes'] or 'none'}"
            + ("".join(f"\n  {p}" for p in outbox["problems"]))
            + f"\ngunicorn's log: {gunicorn_log.count('Traceback')} tracebacks,"
            f" {gunicorn_log.count('[ERROR]')} [ERROR] lines, {gunicorn_log.count('WORKER TIMEOUT')} worker timeouts;"
            f" logs in {logs}",
            flush=True,
        )
        baseline = [
            s
            for s in samples
            if t0 <= s.started < t0 + plan.report_every and faults.label(s) is None and page_kind(s.kind)
        ]
        print("\n## Verdicts\n")
        verdicts = Verdicts()
        judge_faults(verdicts, faults, samples, senders, plan, fake, sync_ids, dsn_app, p95(baseline))
        judge_goals(
            verdicts,
            samples,
            faults,
            plan,
            t0,
            rss,
            outbox,
            check["problems"],
            counter_problems,
            half_written,
            reporter.server,
        )
        passed = sum(ok for _, ok, _ in verdicts.lines)
        print(f"\n{passed} of {len(verdicts.lines)} verdicts PASS", flush=True)
        failed = passed != len(verdicts.lines)
        if check["problems"]:
            print("write problems:\n  " + "\n  ".join(check["problems"][:40]))
    finally:
        if push is not None and push.poll() is None:
            push.kill()
        if gunicorn is not None:
            gunicorn.terminate()
            try:
                gunicorn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gunicorn.kill()
        if fake is not None and fake._server is not None:
            fake.stop()
        cluster.destroy()
    if failed:
        raise SystemExit(f"some verdicts failed; logs in {logs}")


if __name__ == "__main__":
    main()
