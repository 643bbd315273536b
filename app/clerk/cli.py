"""`flask clerk sync` (backfill from Clerk's API) and `flask clerk push` (the outbox worker).

`flask clerk replay` lives with the webhooks (app/webhooks/cli.py); app/cli.py adds it to this group.
"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.audit.services import Actor
from app.extensions import db

clerk_cli = AppGroup("clerk", help="Keep users and organizations in step with Clerk.")


@clerk_cli.command("sync")
@click.option(
    "--page-size",
    type=click.IntRange(1, 500),
    default=500,
    show_default=True,
    help="Items per request to Clerk (Clerk allows at most 500).",
)
@click.option(
    "--from",
    "start",
    type=click.Choice(["users", "organizations", "memberships", "invitations"]),
    default="users",
    show_default=True,
    help="Begin at this stage (the stages before it are skipped): the one an interrupted run printed.",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Start the first stage from this item (oldest first): the place an interrupted run printed.",
)
def sync_command(page_size: int, start: str, offset: int) -> None:
    """Backfill users, organizations, their memberships and pending organization invitations from
    Clerk's API (idempotent; safe to run again at any time)."""
    import httpx
    from clerk_backend_api.models import ClerkBaseError
    from sqlalchemy.exc import SQLAlchemyError

    from app.clerk import backfill
    from app.clerk.client import ClerkNotConfigured, clerk_client

    try:
        client = clerk_client()
    except ClerkNotConfigured as error:
        raise click.ClickException(str(error)) from error

    def wait(seconds: float) -> None:
        click.echo(f"\nClerk asks us to slow down (429): waiting {seconds:g} s.", err=True)
        backfill.pause(seconds)

    done: list[str] = []
    with client as clerk:
        for stage in backfill.STAGES[backfill.STAGES.index(start) :]:
            first = offset if stage == start else 0
            progress = backfill.BackfillProgress(offset=first, stage=stage)
            try:
                total = backfill.stage_total(clerk, stage, wait=wait)
                with click.progressbar(length=max(total - first, 0), label=f"Syncing {stage} from Clerk") as bar:
                    run = backfill.STAGE_RUNS[stage]
                    for progress in run(clerk, actor=Actor.cli(), page_size=page_size, offset=first, wait=wait):
                        db.session.commit()  # each page is kept, so a later failure loses nothing before it
                        bar.update(progress.step)
            except (ClerkBaseError, httpx.HTTPError, SQLAlchemyError, KeyboardInterrupt) as error:
                db.session.rollback()
                reason = "interrupted" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
                resume = "flask clerk sync" + ("" if stage == "users" else f" --from {stage}")
                raise click.ClickException(
                    f"sync stopped at {backfill.STAGE_ITEM[stage]} {progress.offset} ({reason}). "
                    f"{SAVED[stage]} ({progress.summary()}); resume with: {resume} --offset {progress.offset}"
                ) from error
            done.append(f"{stage}: {progress.summary()}")
    click.echo(f"Clerk sync done: {'; '.join(done)}.")


# What an interrupted stage kept, for its message.
SAVED = {
    "users": "Users before it are saved",
    "organizations": "Organizations before it are saved",
    "memberships": "Memberships before it are saved",
    "invitations": "Invitations before it are saved",
}


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
