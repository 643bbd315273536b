"""`flask clerk sync`: every Clerk user through the same upsert as the webhook, page by page.

Pages are read oldest first (`+created_at`), so users created in Clerk during the run land on
later pages instead of shifting the ones still to come, and an offset names a place to resume.
The generator yields after each page; the caller commits there, so an interrupted run keeps
what it did and a re-run changes nothing that is already in step (idempotent).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from clerk_backend_api import Clerk

from app.audit.services import Actor
from app.clerk.client import quiet_sdk_deprecations
from app.clerk.sync import MalformedClerkData, SyncOutcome, clerk_user_from_dict, upsert_clerk_user

MAX_PAGE_SIZE = 500  # Clerk refuses a limit above 500


@dataclass
class BackfillProgress:
    """Where a run is: `offset` is the next user to read, and a place to resume from."""

    offset: int
    page_size: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        c = self.counts
        text = f"{c['created']} created, {c['updated']} updated, {c['unchanged']} unchanged"
        extras = [
            f"{c[k]} {label}"
            for k, label in (
                ("claimed", "claimed from invitations"),
                ("unclaimed", "created apart from a staff account (email not verified in Clerk)"),
                ("stale", "skipped (newer data already here)"),
                ("gone", "skipped (deleted here)"),
                ("malformed", "malformed"),
            )
            if c[k]
        ]
        return text + (f"; {', '.join(extras)}" if extras else "")


def count_clerk_users(clerk: Clerk) -> int:
    with quiet_sdk_deprecations():
        return clerk.users.count().total_count


def fetch_page(clerk: Clerk, *, offset: int, page_size: int) -> list[dict[str, Any]]:
    with quiet_sdk_deprecations():
        users = clerk.users.list(request={"limit": page_size, "offset": offset, "order_by": "+created_at"})
    # by_alias: the JSON names, the same keys a webhook's `data` has.
    return [user.model_dump(mode="python", by_alias=True) for user in users or []]


def backfill_page(users: list[dict[str, Any]], *, actor: Actor) -> Counter[str]:
    counts: Counter[str] = Counter()
    for data in users:
        try:
            result = upsert_clerk_user(clerk_user_from_dict(data), actor=actor)
        except MalformedClerkData:
            counts["malformed"] += 1
            continue
        counts[result.outcome.value if result.outcome != SyncOutcome.CLAIMED else "claimed"] += 1
        if result.noteworthy:  # a staff row this user was not allowed to claim
            counts["unclaimed"] += 1
    return counts


def backfill_users(
    clerk: Clerk, *, actor: Actor, page_size: int = MAX_PAGE_SIZE, offset: int = 0
) -> Iterator[BackfillProgress]:
    """Upsert every Clerk user from `offset` on; yields after each page (commit there)."""
    page_size = max(1, min(page_size, MAX_PAGE_SIZE))
    progress = BackfillProgress(offset=offset)
    while True:
        users = fetch_page(clerk, offset=progress.offset, page_size=page_size)
        if not users:
            return
        progress.counts += backfill_page(users, actor=actor)
        progress.offset += len(users)
        progress.page_size = len(users)
        yield progress
        if len(users) < page_size:
            return
