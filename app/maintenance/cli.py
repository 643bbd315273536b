"""`flask maintenance prune`: retention for webhook deliveries, their payloads, audit events and
finished calls to Clerk, in small committed batches, safe to run while the dashboard serves."""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import exc

from app.audit.services import Actor
from app.database import timed_out
from app.extensions import db
from app.maintenance.services import MIN_WEBHOOK_DAYS, Retention, RetentionRefused, record_prune
from app.models import utcnow

maintenance_cli = AppGroup("maintenance", help="Upkeep of the tables that only grow.")

PROGRESS_EVERY_SECONDS = 5.0
# After a batch outlasts the statement timeout the batches are halved; after this many quick ones
# in a row they double again, up to --batch-size (a cold cache or a checkpoint passes).
REGROW_AFTER = 20


class PruneStalled(Exception):
    """Even a batch of one row outlasted the statement timeout (a lock on the table, a server
    overloaded): the run stops, keeping what it pruned."""


def _days(name: str, setting: str, extra: str = "") -> click.Option:
    return click.option(
        f"--{name}",
        type=click.IntRange(min=0),
        default=None,
        help=f"Keep {extra}this many days (default: {setting}; 0 keeps them for good).",
    )


@contextmanager
def _sigterm_interrupts():
    """A stop by systemd or kill (SIGTERM) ends the run as Ctrl-C does: the batch rolls back, the
    summary of what was done is recorded."""

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@maintenance_cli.command("prune")
@_days("payload-days", "RETENTION_WEBHOOK_PAYLOAD_DAYS, 30", "webhook deliveries' raw payloads ")
@_days("webhook-days", f"RETENTION_WEBHOOK_DAYS, 90; at least {MIN_WEBHOOK_DAYS}", "webhook deliveries ")
@_days("audit-days", "RETENTION_AUDIT_DAYS, unset: audit events are kept", "audit events ")
@_days("outbox-days", "RETENTION_OUTBOX_DAYS, 30", "delivered and superseded calls to Clerk ")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Rows per transaction.")
@click.option(
    "--pause", type=click.FloatRange(min=0), default=0.05, show_default=True, help="Seconds to wait between batches."
)
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; change nothing.")
def prune_command(
    payload_days: int | None,
    webhook_days: int | None,
    audit_days: int | None,
    outbox_days: int | None,
    batch_size: int,
    pause: float,
    dry_run: bool,
) -> None:
    """Prune old rows: clear the raw payload of old webhook deliveries (their row stays), delete
    older deliveries, finished calls to Clerk and, only when asked, old audit events.

    Each batch is its own short transaction (PostgreSQL: rows held by a request are skipped), so
    the dashboard keeps serving; Ctrl-C (or SIGTERM) stops it with nothing half done, and a rerun
    carries on. The run records one audit event with what it pruned."""
    try:
        retention = Retention.from_config(
            current_app.config,
            payload_days=payload_days,
            webhook_days=webhook_days,
            audit_days=audit_days,
            outbox_days=outbox_days,
        )
    except RetentionRefused as refused:
        raise click.UsageError(str(refused)) from refused
    now = utcnow()
    steps = retention.steps(now)
    kept = retention.kept()
    if kept:
        click.echo(f"Kept for good: {', '.join(kept)}.")

    if dry_run:
        for step in steps:
            due = step.count_due()
            db.session.rollback()
            click.echo(f"{step.kind.noun} older than {step.days} days: {due:,} to be {step.kind.verb}")
        click.echo("Dry run: nothing was changed.")
        return

    pruned: dict[str, int] = {}
    started = time.monotonic()
    interrupted = False
    stalled = None
    with _sigterm_interrupts():
        try:
            for step in steps:
                _run_step(step, pruned, batch_size=batch_size, pause=pause, now=now)
        except KeyboardInterrupt:
            db.session.rollback()  # the batch under way; every batch before it is committed
            interrupted = True
        except PruneStalled as stop:
            db.session.rollback()
            interrupted, stalled = True, stop
    record_prune(retention, pruned, actor=Actor.cli(), interrupted=interrupted)
    db.session.commit()
    elapsed = time.monotonic() - started
    total = sum(pruned.values())
    summary = ", ".join(f"{pruned.get(step.kind.key, 0):,} {step.kind.label}" for step in steps) or "nothing to do"
    rate = f", {total / elapsed:,.0f} rows/s" if elapsed > 0 and total else ""
    click.echo(f"Pruned in {elapsed:.1f} s{rate}: {summary}.")
    if stalled is not None:
        click.echo(f"Stopped: {stalled} What was pruned stays pruned, and a rerun carries on from there.", err=True)
        raise SystemExit(1)
    if interrupted:
        click.echo("Interrupted: what was pruned stays pruned, and a rerun carries on from there.", err=True)
        raise SystemExit(130)


def _run_step(step, pruned: dict[str, int], *, batch_size: int, pause: float, now) -> None:
    """Batches of one step until one comes back short, each committed and added to `pruned` (so an
    interrupted run's summary holds what it did); a progress line every few seconds.

    A batch stopped by the statement timeout (PostgreSQL; cold pages, a checkpoint, a busy server)
    is rolled back and tried again at half the size, down to one row; quick batches grow back."""
    done, started = 0, time.monotonic()
    last_report = started
    size, quick = batch_size, 0
    while True:
        try:
            n = step.prune_batch(size, now=now)
            db.session.commit()
        except exc.OperationalError as error:
            if not timed_out(error):
                raise
            db.session.rollback()
            if size == 1:
                raise PruneStalled(
                    f"one of the {step.kind.noun} could not be {step.kind.verb} within the statement timeout "
                    "(DATABASE_STATEMENT_TIMEOUT_MS): the table is locked or the server overloaded."
                ) from error
            size, quick = max(1, size // 2), 0
            click.echo(f"  a batch outlasted the statement timeout: going on with batches of {size:,}")
            continue
        done += n
        pruned[step.kind.key] = done
        if n < size:
            break
        quick += 1
        if size < batch_size and quick >= REGROW_AFTER:
            size, quick = min(batch_size, size * 2), 0
        if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            click.echo(f"  {step.kind.label}: {done:,} so far ({done / (last_report - started):,.0f} rows/s)")
        if pause:
            time.sleep(pause)
    click.echo(f"{step.kind.label} (older than {step.days} days): {done:,} in {time.monotonic() - started:.1f} s")
