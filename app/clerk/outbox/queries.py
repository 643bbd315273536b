"""What the pages read from the outbox: the /clerk page, "pending in Clerk" on a user's and an
organization's page, the overview's health."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.outbox import (
    BAN,
    CREATE_EMAIL,
    CREATE_INVITATION,
    CREATE_MEMBERSHIP,
    CREATE_ORGANIZATION_INVITATION,
    DELETE_EMAIL,
    DELETE_MEMBERSHIP,
    DELETE_ORGANIZATION,
    DELETE_USER,
    EDIT_METADATA,
    METADATA,
    OPEN_STATES,
    ORGANIZATION_FIELDS,
    PROFILE_FIELDS,
    REVOKE_INVITATION,
    REVOKE_ORGANIZATION_INVITATION,
    REVOKE_SESSIONS,
    UNBAN,
    UNLOCK,
    UPDATE_MEMBERSHIP,
    UPDATE_ORGANIZATION,
    UPDATE_USER,
    carried_fields,
    holds_fields,
    open_calls_by_user,
    open_calls_of_organization,
    retryable,
)
from app.extensions import db
from app.models import ClerkCall, ClerkCallState, Organization, User, UTCDateTime
from app.pagination import Keyset, KeysetPage, select_page
from app.permissions import can_act_on, may

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
    UPDATE_ORGANIZATION: "Update the organization",
    DELETE_ORGANIZATION: "Delete the organization in Clerk",
    CREATE_MEMBERSHIP: "Add a member",
    UPDATE_MEMBERSHIP: "Change a member's role",
    DELETE_MEMBERSHIP: "Remove a member",
    CREATE_ORGANIZATION_INVITATION: "Invite to the organization",
    REVOKE_ORGANIZATION_INVITATION: "Revoke an organization invitation",
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


def call_offers(calls: Iterable[ClerkCall], actor: Actor) -> dict[str, set[int]]:
    """Which failed calls the person may retry, and which may take Clerk's value instead (a call
    that carried fields): for the call rows of a user's page, an organization's and the outbox page.
    None without clerk.retry; a call about a user (or member) only when they may act on that user."""
    retry_ids, take_value_ids = set(), set()
    if not may(actor, "clerk.retry"):
        return {"retry_ids": retry_ids, "take_value_ids": take_value_ids}
    for call in calls:
        if call.state != ClerkCallState.FAILED.value or (call.user is not None and not can_act_on(actor, call.user)):
            continue
        if retryable(call):
            retry_ids.add(call.id)
        if (call.user_id is not None or call.organization_id is not None) and carried_fields(
            call.operation, json.loads(call.payload)
        ):
            take_value_ids.add(call.id)
    return {"retry_ids": retry_ids, "take_value_ids": take_value_ids}


def organization_calls(organization: Organization, actor: Actor) -> dict[str, Any]:
    """What the organization's page shows of its calls not yet in Clerk: the calls (oldest first),
    the fields a call holds ({"name": "pending" | "failed"}), and what the person may do with them."""
    calls = open_calls_of_organization(organization.id)
    return {
        "open_calls": calls,
        "waiting": waiting_for(call for call in calls if call.operation == UPDATE_ORGANIZATION),
        **call_offers(calls, actor),
    }


def open_calls_for(user: User) -> list[ClerkCall]:
    """The user's calls that have not reached Clerk: pending ones and failed ones, oldest first."""
    return list(
        db.session.scalars(
            sa.select(ClerkCall)
            .where(
                ClerkCall.user_id == user.id,
                # A member's role call is the organization's: its "role" is not the user's role.
                ClerkCall.organization_id.is_(None),
                ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]),
            )
            .order_by(ClerkCall.id)
        )
    )


NEWEST_FIRST = Keyset((ClerkCall.id,), ("int",))


def list_calls(*, state: str | None = None, after: str | None = None, per_page: int = 50) -> KeysetPage:
    """The outbox, newest first, keyset-paged on id (optionally one state)."""
    query = sa.select(ClerkCall).options(
        sa.orm.selectinload(ClerkCall.user), sa.orm.selectinload(ClerkCall.organization)
    )
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
    if call.operation == UPDATE_ORGANIZATION:
        fields = payload.get("fields") or {}
        return f"{label}: {', '.join(f'{name} {fields[name]!r}' for name in ORGANIZATION_FIELDS if name in fields)}"
    if call.operation in (CREATE_MEMBERSHIP, UPDATE_MEMBERSHIP):
        return f"{label}: {_member(call, payload)} as {payload.get('role')}"
    if call.operation == DELETE_MEMBERSHIP:
        return f"{label}: {_member(call, payload)}"
    if call.operation == CREATE_ORGANIZATION_INVITATION:
        return f"{label}: {payload.get('email_address')} as {payload.get('role')}"
    if call.operation == REVOKE_ORGANIZATION_INVITATION:
        return f"{label}: {payload.get('email_address') or payload.get('invitation_id')}"
    return label


def _member(call: ClerkCall, payload: dict[str, Any]) -> str:
    return call.user.label if call.user is not None else str(payload.get("user_id"))


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
