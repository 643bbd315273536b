"""`flask clerk replay SVIX_ID`: apply a stored webhook delivery again (added to the clerk group in app/cli.py)."""

from __future__ import annotations

import click

from app.audit.services import Actor
from app.extensions import db
from app.webhooks.services import ReplayRefused, replay_event


@click.command("replay")
@click.argument("svix_id")
def replay_command(svix_id: str) -> None:
    """Re-apply a stored failed or stale webhook event (a stale one despite its age)."""
    try:
        delivery = replay_event(svix_id, actor=Actor.cli())
    except (LookupError, ReplayRefused) as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error
    db.session.commit()
    click.echo(f"{svix_id}: {delivery.outcome}" + (f" ({delivery.reason})" if delivery.reason else ""))
    if delivery.outcome == "failed":
        raise SystemExit(1)
