"""The outbox of calls to Clerk's Backend API (DESIGN §8; docs/clerk-outbound.md), by job:

- `enqueue`: add a call in the caller's transaction, supersede older ones, Retry (never commits);
- `delivery`: the worker that sends calls and commits each outcome;
- `queries`: what the pages read (the /clerk page, "pending in Clerk", the overview's health).

This module holds what the three and the webhook rules share: the operations, which local fields
each one carries to Clerk, and which of a user's fields wait for Clerk (a webhook keeps them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

import sqlalchemy as sa

from app.extensions import db
from app.models import ClerkCall, ClerkCallState, User

BAN, UNBAN, METADATA = "ban", "unban", "update_metadata"
CREATE_INVITATION, REVOKE_INVITATION = "create_invitation", "revoke_invitation"
UPDATE_USER, EDIT_METADATA = "update_user", "edit_metadata"
CREATE_EMAIL, DELETE_EMAIL = "create_email", "delete_email"
REVOKE_SESSIONS, UNLOCK, DELETE_USER = "revoke_sessions", "unlock", "delete_user"
# About an organization (ClerkCall.organization_id set; membership calls name the member as user_id).
UPDATE_ORGANIZATION, DELETE_ORGANIZATION = "update_organization", "delete_organization"
CREATE_MEMBERSHIP, UPDATE_MEMBERSHIP, DELETE_MEMBERSHIP = "create_membership", "update_membership", "delete_membership"
CREATE_ORGANIZATION_INVITATION = "create_organization_invitation"
REVOKE_ORGANIZATION_INVITATION = "revoke_organization_invitation"
ORGANIZATION_OPERATIONS: Final = (
    UPDATE_ORGANIZATION,
    DELETE_ORGANIZATION,
    CREATE_MEMBERSHIP,
    UPDATE_MEMBERSHIP,
    DELETE_MEMBERSHIP,
    CREATE_ORGANIZATION_INVITATION,
    REVOKE_ORGANIZATION_INVITATION,
)
# The organization's fields an admin edits (organizations.update).
ORGANIZATION_FIELDS: Final = ("name", "slug")
OPERATIONS: Final = (
    BAN,
    UNBAN,
    METADATA,
    CREATE_INVITATION,
    REVOKE_INVITATION,
    UPDATE_USER,
    EDIT_METADATA,
    CREATE_EMAIL,
    DELETE_EMAIL,
    REVOKE_SESSIONS,
    UNLOCK,
    DELETE_USER,
    *ORGANIZATION_OPERATIONS,
)
# The Clerk-owned fields an admin edits, by the call that carries them (users.update).
PROFILE_FIELDS: Final = ("first_name", "last_name", "username", "external_id")
METADATA_KINDS: Final = ("public_metadata", "private_metadata", "unsafe_metadata")
# The keys of public metadata the dashboard itself writes (role and status): an edit keeps them.
DASHBOARD_METADATA_KEYS: Final = ("role", "status")
OPEN_STATES: Final = (ClerkCallState.PENDING.value, ClerkCallState.FAILED.value)
# session.info: the users whose calls this transaction enqueued, for delivery after the request.
TOUCHED: Final = "clerk_outbox_touched_users"


def is_clerk_user(user: User) -> bool:
    """Whether the row is a user in Clerk (invited rows hold `local_...` or `inv_...`)."""
    return not user.waits_for_clerk_user and user.deleted_at is None


def waits_for_clerk_user(user: User) -> bool:
    return user.waits_for_clerk_user


def carried_fields(operation: str, payload: dict[str, Any]) -> frozenset[str]:
    """The local columns whose value this call carries to Clerk."""
    if operation == UPDATE_USER:
        return frozenset(name for name in payload.get("fields", {}) if name in PROFILE_FIELDS)
    if operation == EDIT_METADATA:
        return frozenset({payload["kind"]}) if payload.get("kind") in METADATA_KINDS else frozenset()
    if operation in (CREATE_EMAIL, DELETE_EMAIL):
        return frozenset({"email"})
    if operation == UNLOCK:
        return frozenset({"locked"})
    if operation == UPDATE_ORGANIZATION:
        return frozenset(name for name in payload.get("fields", {}) if name in ORGANIZATION_FIELDS)
    if operation == UPDATE_MEMBERSHIP:
        return frozenset({"role"})
    return frozenset()


def holds_fields(call: ClerkCall) -> frozenset[str]:
    """The fields this call keeps from Clerk's webhooks: while it is pending, or failed and the local
    value still the admin's (until Retry or "Take Clerk's value"). A refused email was put back."""
    if call.state == ClerkCallState.PENDING.value:
        return carried_fields(call.operation, json.loads(call.payload))
    if call.state == ClerkCallState.FAILED.value and call.operation in (
        UPDATE_USER,
        EDIT_METADATA,
        UNLOCK,
        UPDATE_ORGANIZATION,
        UPDATE_MEMBERSHIP,
    ):
        return carried_fields(call.operation, json.loads(call.payload))
    return frozenset()


def retryable(call: ClerkCall) -> bool:
    """Whether Retry may send a failed call again: not an email change, whose email was put back."""
    return call.state == ClerkCallState.FAILED.value and call.operation not in (CREATE_EMAIL, DELETE_EMAIL)


def _open_user_calls() -> sa.ColumnElement[bool]:
    # Calls about an organization's memberships are the organization's, not the member's.
    return sa.and_(ClerkCall.state.in_(OPEN_STATES), ClerkCall.organization_id.is_(None))


def has_open_calls(user_id: Any) -> sa.Exists:
    """Whether this user has calls not yet in Clerk (those `open_calls_by_user` reads): a column for
    the user's look-up, so that `fields_waiting` is asked only when there are some (almost never)."""
    return sa.exists().where(ClerkCall.user_id == user_id, _open_user_calls())


def open_calls_by_user(user_ids: Iterable[str]) -> dict[str, list[ClerkCall]]:
    """These users' calls not yet in Clerk (pending or failed), oldest first: one query for a page."""
    ids = list(user_ids)
    if not ids:
        return {}
    calls = db.session.scalars(
        sa.select(ClerkCall)
        .where(ClerkCall.user_id.in_(ids), _open_user_calls())
        .order_by(ClerkCall.id)
        .execution_options(populate_existing=True)
    )
    by_user: dict[str, list[ClerkCall]] = {}
    for call in calls:
        if call.user_id is not None:
            by_user.setdefault(call.user_id, []).append(call)
    return by_user


def fields_waiting(user_ids: Iterable[str]) -> dict[str, set[str]]:
    """For each of these users, the fields whose dashboard value Clerk does not hold yet: one query."""
    waiting = {
        user_id: set().union(*(holds_fields(call) for call in calls))
        for user_id, calls in open_calls_by_user(user_ids).items()
    }
    return {user_id: fields for user_id, fields in waiting.items() if fields}


def open_calls_of_organization(organization_id: str) -> list[ClerkCall]:
    """An organization's calls not yet in Clerk (its fields, members, invitations), oldest first."""
    return list(
        db.session.scalars(
            sa.select(ClerkCall)
            .where(ClerkCall.organization_id == organization_id, ClerkCall.state.in_(OPEN_STATES))
            .order_by(ClerkCall.id)
            .execution_options(populate_existing=True)
        )
    )


def organization_fields_waiting(organization_id: str) -> set[str]:
    """The organization's fields (name, slug) whose dashboard value Clerk does not hold yet."""
    calls = open_calls_of_organization(organization_id)
    return set().union(*(holds_fields(c) for c in calls if c.operation == UPDATE_ORGANIZATION))


def member_roles_waiting(organization_id: str) -> set[str]:
    """The Clerk user ids of members whose role change Clerk does not hold yet."""
    calls = open_calls_of_organization(organization_id)
    return {json.loads(c.payload).get("user_id") for c in calls if c.operation == UPDATE_MEMBERSHIP and holds_fields(c)}
