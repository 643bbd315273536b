"""What the pages read from the outbox: the /clerk page, "pending in Clerk", the overview's health."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from app.clerk.outbox import (
    BAN,
    CREATE_EMAIL,
    CREATE_INVITATION,
    DELETE_EMAIL,
    DELETE_USER,
    EDIT_METADATA,
    METADATA,
    OPEN_STATES,
    PROFILE_FIELDS,
    REVOKE_INVITATION,
    REVOKE_SESSIONS,
    UNBAN,
    UNLOCK,
    UPDATE_USER,
    carried_fields,
    holds_fields,
    open_calls_by_user,
    retryable,
)
from app.extensions import db
from app.models import ClerkCall, ClerkCallState, User, UTCDateTime
from app.pagination import Keyset, KeysetPage, select_page

LABELS: Final = {
    BAN: "Ban in Clerk",
    UNBAN: "Unban in Clerk",
    METADATA: "Update public metadata",
    CREATE_INVITATION: "Send a Clerk invitation",
    REVOKE_INVITATION: "Revoke the Clerk invitation",
    UPDATE_USER: "Update profile",
    EDIT_METADATA: "Edit metadata",
    CREATE_EMAIL: "Add email",
    DELETE_EMAIL: "Remove email",
    REVOKE_SESSIONS: "Sign out everywhere",
    UNLOCK: "Unlock",
    DELETE_USER: "Delete in Clerk",
}
# Calls that carry the dashboard's role and status (ban, unban, public metadata): "pending" by the status.
ACCESS_OPERATIONS: Final = frozenset({BAN, UNBAN, METADATA})


def waiting_in_clerk(user_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """For each of these users, what the pages mark as not in Clerk yet, in one query (see `waiting_for`)."""
    return {
        user_id: waiting
        for user_id, open_calls in open_calls_by_user(user_ids).items()
        if (waiting := waiting_for(open_calls))
    }


def waiting_for(open_calls: Iterable[ClerkCall]) -> dict[str, str]:
    """What one user's open calls leave out of Clerk, field by field, "pending" or "failed" (refused:
    it needs Retry or "Take Clerk's value"): the fields whose value Clerk does not hold yet (as
    `fields_waiting` says), and "status" while a role or status call (ban, unban, public metadata) is open."""
    waiting: dict[str, str] = {}
    for call in open_calls:
        fields = set(holds_fields(call))
        if call.operation in ACCESS_OPERATIONS and call.state in OPEN_STATES:
            fields.add("status")
        for name in fields:
            if waiting.get(name) != ClerkCallState.FAILED.value:
                waiting[name] = call.state
    return waiting


def call_offers(calls: Iterable[ClerkCall], manageable_ids: set[str]) -> dict[str, set[int]]:
    """Which failed calls the person may retry, and which may take Clerk's value instead (a call
    that carried fields): for the call rows of the user's page and the outbox page."""
    retry_ids, take_value_ids = set(), set()
    for call in calls:
        if call.state != ClerkCallState.FAILED.value or (
            call.user_id is not None and call.user_id not in manageable_ids
        ):
            continue
        if retryable(call):
            retry_ids.add(call.id)
        if call.user_id is not None and carried_fields(call.operation, json.loads(call.payload)):
            take_value_ids.add(call.id)
    return {"retry_ids": retry_ids, "take_value_ids": take_value_ids}


def open_calls_for(user: User) -> list[ClerkCall]:
    """The user's calls that have not reached Clerk: pending ones and failed ones, oldest first."""
    return list(
        db.session.scalars(
            sa.select(ClerkCall)
            .where(
                ClerkCall.user_id == user.id,
                ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]),
            )
            .order_by(ClerkCall.id)
        )
    )


NEWEST_FIRST = Keyset((ClerkCall.id,), ("int",))


def list_calls(*, state: str | None = None, after: str | None = None, per_page: int = 50) -> KeysetPage:
    """The outbox, newest first, keyset-paged on id (optionally one state)."""
    query = sa.select(ClerkCall).options(sa.orm.selectinload(ClerkCall.user))
    if state:
        query = query.where(ClerkCall.state == state)
    return select_page(query, NEWEST_FIRST, after=after, per_page=per_page)


METADATA_LABELS: Final = {
    "public_metadata": "Edit public metadata",
    "private_metadata": "Edit private metadata",
    "unsafe_metadata": "Edit unsafe metadata",
}


def describe(call: ClerkCall) -> str:
    """What a call does, in a line: "Update profile: first_name, username", "Remove email x"."""
    payload = json.loads(call.payload)
    label = LABELS.get(call.operation, call.operation)
    if call.operation == METADATA:
        values = ", ".join(f"{k}={v}" for k, v in sorted(payload.get("public_metadata", {}).items()))
        return f"{label}: {values}"
    if call.operation == CREATE_INVITATION:
        return f"{label} to {payload.get('email_address')} (role {payload.get('public_metadata', {}).get('role')})"
    if call.operation == UPDATE_USER:
        fields = payload.get("fields") or {}
        return f"{label}: {', '.join(name for name in PROFILE_FIELDS if name in fields)}"
    if call.operation == EDIT_METADATA:
        return METADATA_LABELS.get(payload.get("kind"), label)
    if call.operation == CREATE_EMAIL:
        return f"{label} {payload.get('email_address')} as primary"
    if call.operation == DELETE_EMAIL:
        return f"{label} {payload.get('email_address')}"
    return label


def outbox_health() -> dict[str, Any]:
    """Counts for the outbox page: pending, failed and the oldest pending call's age."""
    counts = dict(
        db.session.execute(
            sa.select(ClerkCall.state, sa.func.count())
            .where(ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]))
            .group_by(ClerkCall.state)
        ).all()
    )
    oldest: datetime | None = db.session.scalar(
        sa.select(sa.func.min(ClerkCall.created_at, type_=UTCDateTime)).where(
            ClerkCall.state == ClerkCallState.PENDING.value
        )
    )
    return {"pending": counts.get("pending", 0), "failed": counts.get("failed", 0), "oldest_pending": oldest}
