"""Enqueueing calls to Clerk: in the caller's transaction, next to the change they mirror; never commits.

A newer ban/unban, role-and-status, metadata edit, unlock or invitation call supersedes the user's
older pending or failed ones of the same kind, because it alone says what Clerk should hold; a
profile call supersedes only the fields it carries again. Email pairs are never superseded: each
pair is delivered in order. Nothing is enqueued without CLERK_SECRET_KEY, and only users that
exist in Clerk get calls about their account.

Calls about an organization (its name and slug, its members, its invitations) carry its id and are
delivered in order per organization. A newer rename supersedes the fields an older one carries
again, a newer role change of a member the older one, and a removal the member's role changes;
adding and removing members and invitations are never superseded: each goes, in order.
"""

from __future__ import annotations

import json
from typing import Any, Final

import sqlalchemy as sa

from app.audit.services import Actor, record
from app.clerk.client import clerk_connected
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
    OPERATIONS,
    ORGANIZATION_FIELDS,
    ORGANIZATION_OPERATIONS,
    PROFILE_FIELDS,
    REVOKE_INVITATION,
    REVOKE_ORGANIZATION_INVITATION,
    REVOKE_SESSIONS,
    TOUCHED,
    UNBAN,
    UNLOCK,
    UPDATE_MEMBERSHIP,
    UPDATE_ORGANIZATION,
    UPDATE_USER,
    is_clerk_user,
    retryable,
    waits_for_clerk_user,
)
from app.extensions import db
from app.models import (
    ClerkCall,
    ClerkCallState,
    ClerkIdKind,
    Membership,
    Organization,
    OrganizationInvitation,
    User,
    UserStatus,
    utcnow,
)
from app.permissions import ensure

# Calls of one kind: the newest says what Clerk should hold, so it supersedes older ones.
KINDS: Final = {BAN: "ban", UNBAN: "ban", METADATA: "metadata", CREATE_INVITATION: "invitation", UNLOCK: "unlock"}
# session.info: the organizations whose calls this transaction enqueued, for delivery after the request.
TOUCHED_ORGANIZATIONS: Final = "clerk_outbox_touched_organizations"
MEMBERSHIP_OPERATIONS: Final = (CREATE_MEMBERSHIP, UPDATE_MEMBERSHIP, DELETE_MEMBERSHIP)


class RetryRefused(ValueError):
    """Only a failed call can be tried again (or its value given up); the message says why."""


def enqueue(
    user: User | None, operation: str, payload: dict[str, Any], *, organization: Organization | None = None
) -> ClerkCall:
    """Add a call to the outbox in the caller's transaction; older calls of its kind are superseded.

    With `organization`, the call is the organization's (`user` is the member it is about, if any)."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown Clerk operation {operation!r}")
    call = ClerkCall(
        user_id=user.id if user else None,
        organization_id=organization.id if organization else None,
        operation=operation,
        payload=json.dumps(payload, sort_keys=True),
        state=ClerkCallState.PENDING.value,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    db.session.add(call)
    db.session.flush()
    if organization is not None:
        _supersede_older_of_organization(call, organization)
        db.session.info.setdefault(TOUCHED_ORGANIZATIONS, set()).add(organization.id)
    elif user is not None:
        _supersede_older(call, user)
        db.session.info.setdefault(TOUCHED, set()).add(user.id)
    return call


def _older_open_calls(call: ClerkCall, user: User, operations: list[str]) -> list[ClerkCall]:
    # SKIP LOCKED: a row a worker is sending right now finishes on its own; this one follows it.
    return list(
        db.session.scalars(
            sa.select(ClerkCall)
            .where(
                ClerkCall.user_id == user.id,
                ClerkCall.id < call.id,
                ClerkCall.operation.in_(operations),
                ClerkCall.state.in_(OPEN_STATES),
            )
            .with_for_update(skip_locked=True)
        )
    )


def supersede(row: ClerkCall, reason: str) -> None:
    row.state = ClerkCallState.SUPERSEDED.value
    row.last_error = reason + (f" (was: {row.last_error})" if row.last_error else "")


def _supersede_older(call: ClerkCall, user: User) -> None:
    payload = json.loads(call.payload)
    if call.operation == UPDATE_USER:  # field by field: an older call keeps the fields not sent again
        for row in _older_open_calls(call, user, [UPDATE_USER]):
            older = json.loads(row.payload)
            kept = {k: v for k, v in older["fields"].items() if k not in payload["fields"]}
            if kept:
                row.payload = json.dumps({**older, "fields": kept}, sort_keys=True)
            else:
                supersede(row, f"superseded by call #{call.id}")
    elif call.operation == EDIT_METADATA:  # the newest edit of one kind says what Clerk should hold
        for row in _older_open_calls(call, user, [EDIT_METADATA]):
            if json.loads(row.payload).get("kind") == payload["kind"]:
                supersede(row, f"superseded by call #{call.id}")
    elif call.operation == DELETE_USER:  # nothing else is worth sending about a deleted user
        for row in _older_open_calls(call, user, [op for op in OPERATIONS if op != DELETE_USER]):
            supersede(row, f"not sent: the user is deleted (call #{call.id})")
    elif (kind := KINDS.get(call.operation)) is not None:
        for row in _older_open_calls(call, user, [op for op, k in KINDS.items() if k == kind]):
            supersede(row, f"superseded by call #{call.id}")
    db.session.flush()


def _older_open_calls_of_organization(
    call: ClerkCall, organization: Organization, operations: list[str]
) -> list[ClerkCall]:
    return list(
        db.session.scalars(
            sa.select(ClerkCall)
            .where(
                ClerkCall.organization_id == organization.id,
                ClerkCall.id < call.id,
                ClerkCall.operation.in_(operations),
                ClerkCall.state.in_(OPEN_STATES),
            )
            .order_by(ClerkCall.id)
            .with_for_update(skip_locked=True)
        )
    )


def _supersede_older_of_organization(call: ClerkCall, organization: Organization) -> None:
    payload = json.loads(call.payload)
    if call.operation == UPDATE_ORGANIZATION:  # field by field, as a profile edit
        for row in _older_open_calls_of_organization(call, organization, [UPDATE_ORGANIZATION]):
            older = json.loads(row.payload)
            kept = {k: v for k, v in older["fields"].items() if k not in payload["fields"]}
            if kept:
                row.payload = json.dumps({**older, "fields": kept}, sort_keys=True)
            else:
                supersede(row, f"superseded by call #{call.id}")
    elif call.operation == DELETE_ORGANIZATION:  # nothing else is worth sending about a deleted organization
        others = [op for op in ORGANIZATION_OPERATIONS if op != DELETE_ORGANIZATION]
        for row in _older_open_calls_of_organization(call, organization, others):
            supersede(row, f"not sent: the organization is deleted (call #{call.id})")
    elif call.operation in (UPDATE_MEMBERSHIP, DELETE_MEMBERSHIP):  # the member's newest role says it
        for row in _older_open_calls_of_organization(call, organization, [UPDATE_MEMBERSHIP]):
            if json.loads(row.payload).get("user_id") == payload["user_id"]:
                reason = "superseded" if call.operation == UPDATE_MEMBERSHIP else "not sent: the member is removed"
                supersede(row, f"{reason} (call #{call.id})")
    db.session.flush()


def in_clerk(clerk_id: str | None) -> bool:
    """Whether an id is Clerk's own (not a `local_...` placeholder or a user's invitation id)."""
    return bool(clerk_id) and not clerk_id.startswith((ClerkIdKind.PLACEHOLDER.value, ClerkIdKind.INVITATION.value))


def _organization_in_clerk(organization: Organization) -> bool:
    return clerk_connected() and organization.deleted_at is None and in_clerk(organization.clerk_id)


def enqueue_organization_deletion(organization: Organization) -> ClerkCall | None:
    """organizations.delete, enqueued before the organization is marked deleted here; its calls that
    have not gone yet are not sent."""
    if not clerk_connected() or not in_clerk(organization.clerk_id):
        return None
    return enqueue(None, DELETE_ORGANIZATION, {"organization_id": organization.clerk_id}, organization=organization)


def enqueue_organization_update(organization: Organization, fields: dict[str, Any]) -> ClerkCall | None:
    """organizations.update with the changed name and slug (the admin's values)."""
    fields = {name: value for name, value in fields.items() if name in ORGANIZATION_FIELDS}
    if not fields or not _organization_in_clerk(organization):
        return None
    payload = {"organization_id": organization.clerk_id, "fields": fields}
    return enqueue(None, UPDATE_ORGANIZATION, payload, organization=organization)


def enqueue_membership_call(membership: Membership, operation: str) -> ClerkCall | None:
    """Add (organization_memberships.create), change the role (update) or remove (delete) a member:
    keyed in Clerk by the organization and the member's Clerk user id."""
    if operation not in MEMBERSHIP_OPERATIONS:
        raise ValueError(f"{operation!r} is not a membership call")
    organization = membership.organization
    member = membership.user
    if not _organization_in_clerk(organization) or not in_clerk(membership.clerk_user_id):
        return None
    if member is not None and (member.deleted_at is not None or member.waits_for_clerk_user):
        return None
    payload = {
        "organization_id": organization.clerk_id,
        "user_id": membership.clerk_user_id,
        "role": membership.role,
        "membership": membership.id,
    }
    return enqueue(member, operation, payload, organization=organization)


def enqueue_organization_invitation(invitation: OrganizationInvitation) -> ClerkCall | None:
    """organization_invitations.create; Clerk's answer gives the row its Clerk id."""
    organization = invitation.organization
    if not _organization_in_clerk(organization):
        return None
    payload = {
        "organization_id": organization.clerk_id,
        "email_address": invitation.email,
        "role": invitation.role,
        "invitation": invitation.id,
    }
    return enqueue(None, CREATE_ORGANIZATION_INVITATION, payload, organization=organization)


def enqueue_organization_invitation_revocation(invitation: OrganizationInvitation) -> ClerkCall | None:
    """organization_invitations.revoke; an invitation still being made is revoked once its id is known
    (delivery reads it then: calls of one organization go in order)."""
    organization = invitation.organization
    if not _organization_in_clerk(organization):
        return None
    payload = {
        "organization_id": organization.clerk_id,
        "invitation_id": invitation.clerk_id if in_clerk(invitation.clerk_id) else None,
        "invitation": invitation.id,
        "email_address": invitation.email,
    }
    return enqueue(None, REVOKE_ORGANIZATION_INVITATION, payload, organization=organization)


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


def enqueue_profile(user: User, before: dict[str, Any]) -> list[ClerkCall]:
    """After an edit: the changed names, username and external id (users.update), and a changed email
    as an ordered pair: the new address, verified and primary, then the old one removed."""
    if not clerk_connected() or not is_clerk_user(user):
        return []
    calls = []
    fields = {
        name: getattr(user, name) for name in PROFILE_FIELDS if name in before and before[name] != getattr(user, name)
    }
    if fields:
        calls.append(enqueue(user, UPDATE_USER, {"user_id": user.clerk_id, "fields": fields}))
    old_email = before.get("email")
    if "email" in before and user.email and old_email != user.email:
        create = enqueue(
            user, CREATE_EMAIL, {"user_id": user.clerk_id, "email_address": user.email, "previous": old_email}
        )
        calls.append(create)
        if old_email:
            remove = {"user_id": user.clerk_id, "email_address": old_email, "keep": user.email, "after_call": create.id}
            calls.append(enqueue(user, DELETE_EMAIL, remove))
    return calls


def enqueue_metadata_edit(user: User, kind: str, value: dict[str, Any]) -> ClerkCall | None:
    """Make one metadata object in Clerk equal `value` (delivery reads Clerk's and sends the difference)."""
    if not clerk_connected() or not is_clerk_user(user):
        return None
    return enqueue(user, EDIT_METADATA, {"user_id": user.clerk_id, "kind": kind, "value": value})


def enqueue_user_call(user: User, operation: str) -> ClerkCall | None:
    """Unlock, sign out everywhere or delete: a call that names only the user."""
    if operation not in (UNLOCK, REVOKE_SESSIONS, DELETE_USER):
        raise ValueError(f"{operation!r} is not a call about the user alone")
    if not clerk_connected() or user.waits_for_clerk_user:
        return None
    return enqueue(user, operation, {"user_id": user.clerk_id})


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

    Only someone with clerk.retry who may act on the call's user (or member) may retry it
    (NotAllowed otherwise).
    """
    ensure(actor, "clerk.retry", call.user)
    if call.state != ClerkCallState.FAILED.value:
        raise RetryRefused(f"Call #{call.id} is {call.state}; only a failed call can be retried.")
    if not retryable(call):
        raise RetryRefused(
            f"Call #{call.id} changed an email that Clerk refused, and the email was put back to Clerk's: "
            "edit the user to try another address."
        )
    call.state = ClerkCallState.PENDING.value
    call.next_attempt_at = utcnow()
    db.session.flush()
    changes = {f"clerk_call.{call.id}": [ClerkCallState.FAILED.value, ClerkCallState.PENDING.value]}
    if call.organization_id is not None:
        db.session.info.setdefault(TOUCHED_ORGANIZATIONS, set()).add(call.organization_id)
        record("clerk.retry", actor=actor, target=call.user, organization=call.organization, changes=changes)
    elif call.user is not None:
        db.session.info.setdefault(TOUCHED, set()).add(call.user.id)
        record("clerk.retry", actor=actor, target=call.user, changes=changes)
