"""`flask demo [--users N]`: seed realistic demo users and key-value data."""

from __future__ import annotations

import click

from app.audit.services import Actor
from app.extensions import db


@click.command("demo")
@click.option(
    "--users",
    "n_users",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="How many demo users there should be in all.",
)
def demo_command(n_users: int) -> None:
    """Seed realistic demo users and data (idempotent: it only adds what is missing)."""
    from app.demo.load import seed_demo

    with click.progressbar(length=n_users, label="Seeding demo users") as bar:
        done = 0

        def progress(finished: int, _total: int) -> None:
            nonlocal done
            bar.update(finished - done)
            done = finished

        counts = seed_demo(n_users, actor=Actor.cli(), progress=progress)
    db.session.commit()
    click.echo(
        f"Demo users: {counts['users_created']} created, {counts['users_existing']} already there; "
        f"{counts['user_data_created']} key-value rows created."
    )
