"""`flask demo [--users N]`: seed realistic demo users, key-value data and organizations."""

from __future__ import annotations

from collections.abc import Callable

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
    help="How many demo users there should be in all (and one organization for about every ten).",
)
def demo_command(n_users: int) -> None:
    """Seed realistic demo users, data and organizations (idempotent: it only adds what is missing)."""
    from app.demo.load import seed_demo
    from app.demo.organizations import demo_organization_count

    bars = _Bars(("Seeding demo users", n_users), ("Seeding demo organizations", demo_organization_count(n_users)))
    try:
        counts = seed_demo(
            n_users, actor=Actor.cli(), organizations=True, progress=bars.stage(0), organization_progress=bars.stage(1)
        )
    finally:
        bars.close()
    db.session.commit()
    from app.demo.staff import seed_staff_groups

    staff = seed_staff_groups(actor=Actor.cli())
    db.session.commit()
    click.echo(
        f"Demo users: {counts['users_created']} created, {counts['users_existing']} already there; "
        f"{counts['user_data_created']} key-value rows created."
    )
    click.echo(
        f"Demo organizations: {counts['organizations_created']} created, with "
        f"{counts['memberships_created']} memberships and {counts['invitations_created']} invitations."
    )
    click.echo(
        f"Demo staff groups: {staff['groups_created']} created; {staff['admins_placed']} admins placed in groups."
    )


class _Bars:
    """One progress bar per stage, one after the other (two bars at once would share a line)."""

    def __init__(self, *stages: tuple[str, int]) -> None:
        width = max(len(label) for label, _length in stages)
        self.bars = [click.progressbar(length=length, label=label.ljust(width)) for label, length in stages]
        self.current: int | None = None
        self.done = 0

    def stage(self, index: int) -> Callable[[int, int], None]:
        def progress(finished: int, _total: int) -> None:
            if self.current != index:
                self.close()
                self.current, self.done = index, 0
                self.bars[index].__enter__()
            self.bars[index].update(finished - self.done)
            self.done = finished

        return progress

    def close(self) -> None:
        if self.current is not None:
            self.bars[self.current].__exit__(None, None, None)
            self.current = None
