"""`flask stats rebuild` and `flask stats check`: recount the overview's counters from the users table."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from app.extensions import db

stats_cli = AppGroup("stats", help="The overview's user counters.")


def _report(differences: dict, *, exact: str, differ: str) -> None:
    """Say `exact` when nothing differs, else `differ` and one line per counter that does."""
    if not differences:
        click.echo(exact)
        return
    click.echo(differ.format(n=len(differences)))
    for (dimension, bucket), (stored, actual) in differences.items():
        click.echo(f"  {dimension}:{bucket}  stored {stored:,}, actual {actual:,}")


@stats_cli.command("rebuild")
def rebuild_command() -> None:
    """Recount every counter from the users table (one scan per dimension) and store the result."""
    from app.records.counts import rebuild

    differences = rebuild()
    db.session.commit()
    _report(
        differences, exact="The counters were exact; recounted and stored again.", differ="Corrected {n} counter(s):"
    )


@stats_cli.command("check")
def check_command() -> None:
    """Compare the counters with a recount, changing nothing; exits 1 when they differ."""
    from app.records.counts import differences, read_counts, recount, snapshot_isolation

    snapshot_isolation()
    found = differences(read_counts(), recount())
    db.session.rollback()
    _report(
        found,
        exact="The counters equal a recount.",
        differ="{n} counter(s) differ from a recount (run `flask stats rebuild`):",
    )
    if found:
        raise SystemExit(1)
