"""`flask clerk sync`: everything in Clerk through the same rules as the webhooks, page by page.

Four stages, in this order, so each finds what it refers to: users, organizations, each
organization's memberships, then the instance's pending organization invitations. Users,
organizations and invitations are read oldest first (`+created_at`), so what Clerk creates during
the run lands on later pages instead of shifting the ones still to come, and an offset names a
place to resume; the memberships stage walks our organizations in the same order, and its offset
counts organizations. Each generator yields after each page; the caller commits there, so an
interrupted run keeps what it did and a re-run changes nothing that is already in step
(idempotent). A 429 from Clerk is waited out for as long as its Retry-After says, then the same
page is asked again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from clerk_backend_api import Clerk, models

from app.audit.services import Actor
from app.clerk.client import quiet_sdk_deprecations
from app.clerk.organizations import apply_invitation, apply_membership, apply_organization
from app.clerk.outbox.delivery import backoff_seconds, retry_after_seconds
from app.clerk.sync import MalformedClerkData, SyncOutcome, SyncResult, clerk_user_from_dict, upsert_clerk_user

MAX_PAGE_SIZE = 500  # Clerk refuses a limit above 500
MAX_RATE_LIMIT_WAITS: Final = 20  # then the 429 is reported: Clerk is not letting this run through
USERS, ORGANIZATIONS, MEMBERSHIPS, INVITATIONS = "users", "organizations", "memberships", "invitations"
STAGES: Final = (USERS, ORGANIZATIONS, MEMBERSHIPS, INVITATIONS)
# What an offset counts in each stage, for "sync stopped at <noun> <offset>".
STAGE_ITEM: Final = {
    USERS: "user",
    ORGANIZATIONS: "organization",
    MEMBERSHIPS: "membership",
    INVITATIONS: "invitation",
}
T = TypeVar("T")
Wait = Callable[[float], None]


def pause(seconds: float) -> None:
    """Sleep out Clerk's Retry-After (tests replace it)."""
    import time

    time.sleep(seconds)


@dataclass
class BackfillProgress:
    """Where a stage is: `offset` is the next item to read, and a place to resume from."""

    offset: int
    page_size: int = 0  # how many items the last page had (the users and invitations bars move by it)
    counts: Counter[str] = field(default_factory=Counter)
    stage: str = USERS
    step: int = 0  # how far the progress bar moves for the last page

    def summary(self) -> str:
        c = self.counts
        text = f"{c['created']} created, {c['updated']} updated, {c['unchanged']} unchanged"
        extras = [
            f"{c[k]} {label}"
            for k, label in (
                ("claimed", "claimed from invitations" if self.stage == USERS else "claimed from the dashboard's"),
                ("unclaimed", "created apart from a staff account (email not verified in Clerk)"),
                ("deleted", "stored as removed"),
                ("stale", "skipped (newer data already here)"),
                ("gone", "skipped (deleted here)"),
                ("malformed", "malformed"),
            )
            if c[k]
        ]
        return text + (f"; {', '.join(extras)}" if extras else "")


def patiently(request: Callable[[], T], *, wait: Wait) -> T:
    """`request()`, with each 429 waited out (Retry-After, else a backoff) and the request made again."""
    for attempt in range(1, MAX_RATE_LIMIT_WAITS + 1):
        try:
            with quiet_sdk_deprecations():
                return request()
        except models.ClerkBaseError as error:
            if error.status_code != 429:
                raise
            seconds = retry_after_seconds(error.headers)
            wait(seconds if seconds is not None else float(backoff_seconds(attempt)))
    with quiet_sdk_deprecations():
        return request()


def _dump(model: Any) -> dict[str, Any]:
    # by_alias: the JSON names, the same keys a webhook's `data` has.
    return model.model_dump(mode="python", by_alias=True)


# --- Users ------------------------------------------------------------------------------------------


def count_clerk_users(clerk: Clerk, *, wait: Wait = pause) -> int:
    return patiently(lambda: clerk.users.count(), wait=wait).total_count


def fetch_page(clerk: Clerk, *, offset: int, page_size: int, wait: Wait = pause) -> list[dict[str, Any]]:
    users = patiently(
        lambda: clerk.users.list(request={"limit": page_size, "offset": offset, "order_by": "+created_at"}), wait=wait
    )
    return [_dump(user) for user in users or []]


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


def _page_size(page_size: int) -> int:
    return max(1, min(page_size, MAX_PAGE_SIZE))


def backfill_users(
    clerk: Clerk, *, actor: Actor, page_size: int = MAX_PAGE_SIZE, offset: int = 0, wait: Wait = pause
) -> Iterator[BackfillProgress]:
    """Upsert every Clerk user from `offset` on; yields after each page (commit there)."""
    page_size = _page_size(page_size)
    progress = BackfillProgress(offset=offset)
    while True:
        users = fetch_page(clerk, offset=progress.offset, page_size=page_size, wait=wait)
        if not users:
            return
        progress.counts += backfill_page(users, actor=actor)
        progress.offset += len(users)
        progress.page_size = progress.step = len(users)
        yield progress
        if len(users) < page_size:
            return


# --- Organizations ----------------------------------------------------------------------------------


def _apply_each(items: list[Any], apply: Callable[[dict[str, Any]], SyncResult], counts: Counter[str]) -> None:
    for item in items:
        try:
            result = apply(_dump(item))
        except MalformedClerkData:
            counts["malformed"] += 1
            continue
        counts[result.outcome.value] += 1


def count_clerk_organizations(clerk: Clerk, *, wait: Wait = pause) -> int:
    return patiently(lambda: clerk.organizations.list(limit=1, offset=0), wait=wait).total_count


def _walk(
    stage: str,
    fetch: Callable[[int, int], Any],
    apply: Callable[[dict[str, Any]], SyncResult],
    *,
    page_size: int,
    offset: int,
) -> Iterator[BackfillProgress]:
    """Apply every item of Clerk's list `fetch(offset, limit)` from `offset` on; yields after each page."""
    page_size = _page_size(page_size)
    progress = BackfillProgress(offset=offset, stage=stage)
    while True:
        items = list(fetch(progress.offset, page_size).data or [])
        if not items:
            return
        _apply_each(items, apply, progress.counts)
        progress.offset += len(items)
        progress.page_size = progress.step = len(items)
        yield progress
        if len(items) < page_size:
            return


def backfill_organizations(
    clerk: Clerk, *, actor: Actor, page_size: int = MAX_PAGE_SIZE, offset: int = 0, wait: Wait = pause
) -> Iterator[BackfillProgress]:
    """Every Clerk organization from `offset` on, oldest first."""

    def fetch(start: int, limit: int) -> Any:
        return patiently(lambda: clerk.organizations.list(order_by="+created_at", limit=limit, offset=start), wait=wait)

    return _walk(
        ORGANIZATIONS, fetch, lambda data: apply_organization(data, actor=actor), page_size=page_size, offset=offset
    )


# --- Memberships: the instance's, in one list ------------------------------------------------------


def _instance_memberships(clerk: Clerk, *, offset: int, limit: int, wait: Wait) -> Any:
    return patiently(
        lambda: clerk.users.get_instance_organization_memberships(order_by="+created_at", limit=limit, offset=offset),
        wait=wait,
    )


def count_clerk_memberships(clerk: Clerk, *, wait: Wait = pause) -> int:
    return patiently(
        lambda: clerk.users.get_instance_organization_memberships(limit=1, offset=0), wait=wait
    ).total_count


def backfill_memberships(
    clerk: Clerk, *, actor: Actor, page_size: int = MAX_PAGE_SIZE, offset: int = 0, wait: Wait = pause
) -> Iterator[BackfillProgress]:
    """Every membership of the instance from `offset` on, oldest first (one list for all the
    organizations: 3,000 pages for 1.5 million, where asking each organization would make 100,000
    requests); each embeds its organization, which it makes when missing."""

    def fetch(start: int, limit: int) -> Any:
        return _instance_memberships(clerk, offset=start, limit=limit, wait=wait)

    return _walk(
        MEMBERSHIPS, fetch, lambda data: apply_membership(data, actor=actor), page_size=page_size, offset=offset
    )


# --- Pending organization invitations: the instance's -----------------------------------------------


def _pending_invitations(clerk: Clerk, *, offset: int, limit: int, wait: Wait) -> Any:
    return patiently(
        lambda: clerk.organization_invitations.get_all(
            status=models.ListInstanceOrganizationInvitationsQueryParamStatus.PENDING,
            order_by="+created_at",
            limit=limit,
            offset=offset,
        ),
        wait=wait,
    )


def count_pending_invitations(clerk: Clerk, *, wait: Wait = pause) -> int:
    return _pending_invitations(clerk, offset=0, limit=1, wait=wait).total_count


def backfill_invitations(
    clerk: Clerk, *, actor: Actor, page_size: int = MAX_PAGE_SIZE, offset: int = 0, wait: Wait = pause
) -> Iterator[BackfillProgress]:
    """Every pending organization invitation from `offset` on, oldest first."""

    def fetch(start: int, limit: int) -> Any:
        return _pending_invitations(clerk, offset=start, limit=limit, wait=wait)

    return _walk(
        INVITATIONS, fetch, lambda data: apply_invitation(data, actor=actor), page_size=page_size, offset=offset
    )


STAGE_RUNS: Final = {
    USERS: backfill_users,
    ORGANIZATIONS: backfill_organizations,
    MEMBERSHIPS: backfill_memberships,
    INVITATIONS: backfill_invitations,
}


def stage_total(clerk: Clerk, stage: str, *, wait: Wait = pause) -> int:
    """How far the stage's progress bar goes: Clerk's count of what the stage reads."""
    if stage == USERS:
        return count_clerk_users(clerk, wait=wait)
    if stage == ORGANIZATIONS:
        return count_clerk_organizations(clerk, wait=wait)
    if stage == MEMBERSHIPS:
        return count_clerk_memberships(clerk, wait=wait)
    return count_pending_invitations(clerk, wait=wait)
