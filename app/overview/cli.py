"""`flask stats rebuild` and `flask stats check`: recount the overview's counters from the users table."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.extensions import db

stats_cli = AppGroup("stats", help="The overview's user counters.")


def _describe(differences: dict) -> list[str]:
    return [f"  {dimension}:{bucket}  stored {stored:,}, actual {actual:,}"
            for (dimension, bucket), (stored, actual) in differences.items()]


@stats_cli.command("rebuild")
def rebuild_command() -> None:
    """Recount every counter from the users table (one scan per dimension) and store the result."""
    from app.overview.stats import rebuild

    differences = rebuild()
    db.session.commit()
    if not differences:
        click.echo("The counters were exact; recounted and stored again.")
        return
    click.echo(f"Corrected {len(differences)} counter(s):")
    for line in _describe(differences):
        click.echo(line)


@stats_cli.command("check")
def check_command() -> None:
    """Compare the counters with a recount, changing nothing; exits 1 when they differ."""
    from app.overview.stats import differences, read_counts, recount, snapshot_isolation

    snapshot_isolation()
    found = differences(read_counts(), recount())
    db.session.rollback()
    if not found:
        click.echo("The counters equal a recount.")
        return
    click.echo(f"{len(found)} counter(s) differ from a recount (run `flask stats rebuild`):")
    for line in _describe(found):
        click.echo(line)
    raise SystemExit(1)
