"""Enqueueing calls to Clerk: in the caller's transaction, next to the change they mirror; never commits.

A newer ban/unban, metadata or invitation call supersedes the user's older pending or failed ones
of the same kind, because it alone says what Clerk should hold. Nothing is enqueued without
CLERK_SECRET_KEY, and only users that exist in Clerk get ban/unban/metadata calls.
"""

from __future__ import annotations

import json
from typing import Any, Final

import sqlalchemy as sa

from app.audit.services import Actor, record
from app.clerk.client import clerk_connected
from app.clerk.outbox import (
    BAN,
    CREATE_INVITATION,
    METADATA,
    OPERATIONS,
    REVOKE_INVITATION,
    TOUCHED,
    UNBAN,
    is_clerk_user,
    waits_for_clerk_user,
)
from app.extensions import db
from app.models import ClerkCall, ClerkCallState, User, UserStatus, utcnow
from app.permissions import ensure_can_manage

# Calls of one kind: the newest says what Clerk should hold, so it supersedes older ones.
KINDS: Final = {BAN: "ban", UNBAN: "ban", METADATA: "metadata", CREATE_INVITATION: "invitation"}


class RetryRefused(ValueError):
    """Only a failed call can be tried again; the message says why."""


def enqueue(user: User | None, operation: str, payload: dict[str, Any]) -> ClerkCall:
    """Add a call to the outbox in the caller's transaction; older calls of its kind are superseded."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown Clerk operation {operation!r}")
    call = ClerkCall(
        user_id=user.id if user else None,
        operation=operation,
        payload=json.dumps(payload, sort_keys=True),
        state=ClerkCallState.PENDING.value,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    db.session.add(call)
    db.session.flush()
    if user is not None:
        _supersede_older(call, user)
        db.session.info.setdefault(TOUCHED, set()).add(user.id)
    return call


def _supersede_older(call: ClerkCall, user: User) -> None:
    kind = KINDS.get(call.operation)
    if kind is None:
        return
    same_kind = [op for op, k in KINDS.items() if k == kind]
    # SKIP LOCKED: a row a worker is sending right now finishes on its own; this one follows it.
    older = db.session.scalars(
        sa.select(ClerkCall)
        .where(
            ClerkCall.user_id == user.id,
            ClerkCall.id < call.id,
            ClerkCall.operation.in_(same_kind),
            ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]),
        )
        .with_for_update(skip_locked=True)
    ).all()
    for row in older:
        row.state = ClerkCallState.SUPERSEDED.value
        row.last_error = f"superseded by call #{call.id}" + (f" (was: {row.last_error})" if row.last_error else "")
    db.session.flush()


def enqueue_role_and_status(user: User, *, role_before: Any, status_before: Any) -> list[ClerkCall]:
    """After a role or status change: ban/unban when `suspended` is entered or left, then metadata."""
    if not clerk_connected() or not is_clerk_user(user):
        return []
    calls = []
    was_banned, banned = status_before == UserStatus.SUSPENDED, user.status == UserStatus.SUSPENDED
    if was_banned != banned:
        calls.append(enqueue(user, BAN if banned else UNBAN, {"user_id": user.clerk_id}))
    if (role_before, status_before) != (user.role, user.status):
        metadata = {"role": user.role.value, "status": user.status.value}
        calls.append(enqueue(user, METADATA, {"user_id": user.clerk_id, "public_metadata": metadata}))
    return calls


def enqueue_invitation(user: User) -> ClerkCall | None:
    """Ask Clerk to invite this row's email with its role; the answer's id becomes its clerk_id."""
    if not clerk_connected() or not waits_for_clerk_user(user):
        return None
    payload = {"email_address": user.email, "public_metadata": {"role": user.role.value}, "notify": True}
    return enqueue(user, CREATE_INVITATION, payload)


def enqueue_revocation(user: User) -> ClerkCall | None:
    """Revoke the user's invitation; its id is read at delivery when the invitation is still being made."""
    if not clerk_connected() or not waits_for_clerk_user(user):
        return None
    invitation_id = user.invitation_id
    return enqueue(user, REVOKE_INVITATION, {"invitation_id": invitation_id})


def retry_call(call: ClerkCall, *, actor: Actor) -> None:
    """A person asks for a failed call to be sent again (it is the newest of its kind: see supersede).

    Only someone who may manage the call's user may retry it (NotAllowed otherwise).
    """
    if call.user is not None:
        ensure_can_manage(actor, call.user)
    if call.state != ClerkCallState.FAILED.value:
        raise RetryRefused(f"Call #{call.id} is {call.state}; only a failed call can be retried.")
    call.state = ClerkCallState.PENDING.value
    call.next_attempt_at = utcnow()
    db.session.flush()
    if call.user is not None:
        db.session.info.setdefault(TOUCHED, set()).add(call.user.id)
        record(
            "clerk.retry",
            actor=actor,
            target=call.user,
            changes={f"clerk_call.{call.id}": [ClerkCallState.FAILED.value, ClerkCallState.PENDING.value]},
        )
