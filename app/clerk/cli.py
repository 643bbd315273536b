"""`flask clerk sync` (backfill from Clerk's API) and `flask clerk push` (the outbox worker).

`flask clerk replay` lives with the webhooks (app/webhooks/cli.py); app/cli.py adds it to this group.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.audit.services import Actor
from app.extensions import db

clerk_cli = AppGroup("clerk", help="Keep the users table in step with Clerk.")


@clerk_cli.command("sync")
@click.option(
    "--page-size",
    type=click.IntRange(1, 500),
    default=500,
    show_default=True,
    help="Users per request to Clerk (Clerk allows at most 500).",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Start from this user (oldest first): the place an interrupted run printed.",
)
def sync_command(page_size: int, offset: int) -> None:
    """Backfill every user from Clerk's API (idempotent; safe to run again at any time)."""
    import httpx
    from clerk_backend_api.models import ClerkBaseError
    from sqlalchemy.exc import SQLAlchemyError

    from app.clerk.backfill import BackfillProgress, backfill_users, count_clerk_users
    from app.clerk.client import ClerkNotConfigured, clerk_client

    try:
        client = clerk_client()
    except ClerkNotConfigured as error:
        raise click.ClickException(str(error)) from error
    progress = BackfillProgress(offset=offset)
    with client as clerk:
        try:
            total = count_clerk_users(clerk)
            with click.progressbar(length=max(total - offset, 0), label="Syncing users from Clerk") as bar:
                for progress in backfill_users(clerk, actor=Actor.cli(), page_size=page_size, offset=offset):
                    db.session.commit()  # each page is kept, so a later failure loses nothing before it
                    bar.update(progress.page_size)
        except (ClerkBaseError, httpx.HTTPError, SQLAlchemyError, KeyboardInterrupt) as error:
            db.session.rollback()
            reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
            raise click.ClickException(
                f"sync stopped at user {progress.offset} ({reason}). Users before it are saved "
                f"({progress.summary()}); resume with: flask clerk sync --offset {progress.offset}"
            ) from error
    click.echo(f"Clerk sync done: {progress.summary()}.")


@clerk_cli.command("push")
@click.option("--loop", is_flag=True, help="Keep running (a worker process); otherwise one pass (for cron).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between passes with --loop.",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=500, show_default=True, help="At most this many calls per pass."
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="A pass stops starting new calls after this long.",
)
def push_command(loop: bool, interval: float, limit: int, max_seconds: float) -> None:
    """Deliver pending outbox calls to Clerk (safe to run on several machines at once)."""
    import time

    from app.clerk.client import clerk_connected
    from app.clerk.outbox.delivery import deliver_due

    if not clerk_connected():
        raise click.ClickException("CLERK_SECRET_KEY is not set: there is no Clerk to push to")
    from sqlalchemy.exc import SQLAlchemyError

    while True:
        try:
            report = deliver_due(limit, deadline=time.monotonic() + max_seconds, actor=Actor.cli())
        except KeyboardInterrupt:
            db.session.rollback()
            return
        except SQLAlchemyError as error:
            db.session.rollback()
            if not loop:
                raise click.ClickException(f"the database failed: {error}") from error
            click.echo(f"Clerk push: the database failed ({type(error).__name__}); trying again.", err=True)
            report = None
        if report is not None and (report.attempted or not loop):
            stopped = f"; stopped: {report.stopped}" if report.stopped else ""
            click.echo(f"Clerk push: {report.summary()}{stopped}.")
        if not loop:
            return
        if report is not None and report.attempted >= limit:
            continue  # a full pass: more may be due right away
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return
