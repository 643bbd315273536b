"""Delivering the outbox's calls to Clerk: the worker (`flask clerk push`, and right after a request).

`deliver_due` commits each outcome, so every row lock is released and no outcome is lost: it is
the one place outside the views and the CLI that commits. Each worker claims one due row with
`FOR UPDATE SKIP LOCKED`, and every call is idempotent against Clerk (docs/clerk-outbound.md).
Answers that mean "never" (404, 400/422, other 4xx) mark the row `failed`; everything else is
retried later with exponential backoff. When Clerk answers with the user, its state is applied
here through the webhook rules, so a late webhook older than it cannot undo the edit; so are its
answers about an organization, a membership or an organization invitation (app/clerk/organizations.py).
A user's calls go in order, and so do an organization's (its fields, members and invitations).
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import httpx
import sqlalchemy as sa
from clerk_backend_api import Clerk, models
from flask import current_app
from sqlalchemy.orm import aliased

from app.audit.services import Actor
from app.clerk.client import clerk_client, clerk_connected, quiet_sdk_deprecations
from app.clerk.organizations import apply_invitation, apply_membership, apply_organization, organization_from_dict
from app.clerk.outbox import (
    BAN,
    CREATE_EMAIL,
    CREATE_INVITATION,
    CREATE_MEMBERSHIP,
    CREATE_ORGANIZATION_INVITATION,
    DASHBOARD_METADATA_KEYS,
    DELETE_EMAIL,
    DELETE_MEMBERSHIP,
    DELETE_ORGANIZATION,
    DELETE_USER,
    EDIT_METADATA,
    METADATA,
    OPEN_STATES,
    REVOKE_INVITATION,
    REVOKE_ORGANIZATION_INVITATION,
    REVOKE_SESSIONS,
    TOUCHED,
    UNBAN,
    UNLOCK,
    UPDATE_MEMBERSHIP,
    UPDATE_ORGANIZATION,
    UPDATE_USER,
    carried_fields,
    waits_for_clerk_user,
)
from app.clerk.outbox.enqueue import TOUCHED_ORGANIZATIONS, RetryRefused, in_clerk, supersede
from app.clerk.sync import MalformedClerkData, clerk_user_from_dict, upsert_clerk_user
from app.database import first_line, is_database_unreachable, rollback_quietly
from app.extensions import db
from app.models import ClerkCall, ClerkCallState, Membership, OrganizationInvitation, User, utcnow
from app.permissions import ensure
from app.records.organizations import update_invitation_fields, update_membership_fields, update_organization_fields
from app.records.users import update_user_fields

BACKOFF_BASE_S: Final = 10
BACKOFF_MAX_S: Final = 3600
REQUEST_BUDGET_MS: Final = 3_000  # right after a request: the page must answer quickly
CLI_TIMEOUT_MS: Final = 10_000
# Answers worth trying again: auth (an operator fixes the key), timeouts, conflicts, rate limits.
TRANSIENT_4XX: Final = frozenset({401, 403, 408, 409, 423, 425, 429})
ALREADY_A_MEMBER: Final = "already_a_member_in_organization"  # Clerk's code for adding a member twice


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # still pending: tried again after a backoff
    FAILED = "failed"  # Clerk refused it for good


@dataclass
class Result:
    outcome: Outcome
    error: str | None = None
    retry_after_s: float | None = None


@dataclass
class PushReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    stopped: str | None = None  # why the run ended early (Clerk unreachable, out of time)
    errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.failed

    def add(self, result: Result) -> None:
        if result.outcome == Outcome.DELIVERED:
            self.delivered += 1
        elif result.outcome == Outcome.FAILED:
            self.failed += 1
        else:
            self.retried += 1
        if result.error:
            self.errors.append(result.error)

    def summary(self) -> str:
        return f"{self.delivered} delivered, {self.retried} to retry, {self.failed} failed"


def backoff_seconds(attempts: int) -> int:
    """10 s, 20 s, 40 s ... at most an hour, after the `attempts`-th failed attempt."""
    return min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_MAX_S)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), at most an hour; None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None or parsed.tzinfo is None:
            return None
        seconds = (parsed - utcnow()).total_seconds()
    return min(max(seconds, 0.0), float(BACKOFF_MAX_S))


def clerk_message(error: models.ClerkBaseError) -> str:
    """Clerk's own words for an error answer, in one line."""
    text = ""
    if isinstance(error, models.ClerkErrors) and error.data.errors:
        first = error.data.errors[0]
        text = first.long_message or first.message
    else:
        try:
            errors = json.loads(error.body).get("errors") or []
            text = errors[0].get("long_message") or errors[0].get("message") or ""
        except (ValueError, AttributeError, IndexError, TypeError):
            text = error.body[:200]
    return f"Clerk answered {error.status_code}: {text or error.message}".strip()


def _claim_next(user_ids: Sequence[str] | None, organization_ids: Sequence[str] | None = None) -> ClerkCall | None:
    """The oldest due call with no earlier pending call of its own (a user's call: none of that user;
    an organization's: none of that organization), locked (skipped by other workers)."""
    earlier = aliased(ClerkCall)
    pending = ClerkCallState.PENDING.value
    query = sa.select(ClerkCall).where(
        ClerkCall.state == pending,
        sa.or_(
            ClerkCall.organization_id.is_not(None),
            ~sa.exists().where(
                earlier.user_id == ClerkCall.user_id,
                earlier.organization_id.is_(None),
                earlier.state == pending,
                earlier.id < ClerkCall.id,
            ),
        ),
        ~sa.exists().where(
            earlier.organization_id == ClerkCall.organization_id,
            earlier.state == pending,
            earlier.id < ClerkCall.id,
        ),
    )
    if user_ids is None and organization_ids is None:
        query = query.where(ClerkCall.next_attempt_at <= utcnow())
    else:  # right after a request: its users' and organizations' calls now, whatever their backoff said
        query = query.where(
            sa.or_(
                ClerkCall.user_id.in_(list(user_ids or [])),
                ClerkCall.organization_id.in_(list(organization_ids or [])),
            )
        )
    query = query.order_by(ClerkCall.id).limit(1).with_for_update(skip_locked=True, of=ClerkCall)
    return db.session.scalars(query.execution_options(populate_existing=True)).first()


class Budget:
    """What is left of one call's time, for each request it makes: in ms, at least 1."""

    def __init__(self, timeout_ms: int) -> None:
        self.end = time.monotonic() + timeout_ms / 1000

    @property
    def ms(self) -> int:
        return max(1, int((self.end - time.monotonic()) * 1000))


def merge_patch(current: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """What update_metadata (a deep merge where null removes a key) needs to turn `current` into `wanted`."""
    current = current if isinstance(current, dict) else {}
    patch: dict[str, Any] = {key: None for key in current if key not in wanted}
    for key, value in wanted.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            nested = merge_patch(current[key], value)
            if nested:
                patch[key] = nested
        elif key not in current or current[key] != value or type(current[key]) is not type(value):
            patch[key] = value
    return patch


def _metadata_patch(clerk_user: models.User, kind: str, wanted: dict[str, Any]) -> dict[str, Any]:
    patch = merge_patch(getattr(clerk_user, kind, None) or {}, wanted)
    if kind == "public_metadata":  # role and status go by their own calls, in their own order
        for key in DASHBOARD_METADATA_KEYS:
            patch.pop(key, None)
    return patch


def _addresses(clerk_user: models.User) -> list[models.EmailAddress]:
    return list(clerk_user.email_addresses or [])


def _create_email(clerk: Clerk, payload: dict[str, Any], budget: Budget) -> models.User:
    """The new address, verified and primary; an earlier attempt that got through is made primary."""
    address = payload["email_address"]
    try:
        clerk.email_addresses.create(
            request={"user_id": payload["user_id"], "email_address": address, "verified": True, "primary": True},
            timeout_ms=budget.ms,
        )
    except models.ClerkBaseError as error:
        if not 400 <= error.status_code < 500 or error.status_code in TRANSIENT_4XX:
            raise
        clerk_user = clerk.users.get(user_id=payload["user_id"], timeout_ms=budget.ms)
        mine = next((e for e in _addresses(clerk_user) if e.email_address.casefold() == address.casefold()), None)
        if mine is None or mine.id is None:
            raise  # another account holds it: Clerk's refusal stands
        clerk.email_addresses.update(email_address_id=mine.id, verified=True, primary=True, timeout_ms=budget.ms)
    return clerk.users.get(user_id=payload["user_id"], timeout_ms=budget.ms)


def _delete_email(clerk: Clerk, payload: dict[str, Any], budget: Budget) -> models.User:
    """Remove the old address, unless it is gone already or is the primary one again."""
    clerk_user = clerk.users.get(user_id=payload["user_id"], timeout_ms=budget.ms)
    address = payload["email_address"].casefold()
    for entry in _addresses(clerk_user):
        if entry.email_address.casefold() == address and entry.id and entry.id != clerk_user.primary_email_address_id:
            clerk.email_addresses.delete(email_address_id=entry.id, timeout_ms=budget.ms)
            return clerk.users.get(user_id=payload["user_id"], timeout_ms=budget.ms)
    return clerk_user


def _revoke_sessions(clerk: Clerk, payload: dict[str, Any], budget: Budget) -> int:
    """Revoke every active session of the user; one that ended meanwhile is not an error."""
    revoked, seen = 0, set()
    while True:
        active = clerk.sessions.list(
            user_id=payload["user_id"], status=models.QueryParamStatus.ACTIVE, limit=100, timeout_ms=budget.ms
        )
        todo = [s for s in active or [] if s.id not in seen]
        if not todo:
            return revoked
        for session in todo:
            seen.add(session.id)
            try:
                clerk.sessions.revoke(session_id=session.id, timeout_ms=budget.ms)
                revoked += 1
            except models.ClerkBaseError as error:
                if error.status_code not in (400, 404, 410, 422):
                    raise


def _send(clerk: Clerk, call: ClerkCall, timeout_ms: int) -> Any:
    """Make the call's requests, all of them within `timeout_ms` (an email change makes several)."""
    payload = json.loads(call.payload)
    budget = Budget(timeout_ms)
    with quiet_sdk_deprecations():
        user_id = payload.get("user_id")
        if call.operation == UPDATE_USER:
            return clerk.users.update(user_id=user_id, **payload["fields"], timeout_ms=budget.ms)
        if call.operation == EDIT_METADATA:
            kind = payload["kind"]
            clerk_user = clerk.users.get(user_id=user_id, timeout_ms=budget.ms)
            patch = _metadata_patch(clerk_user, kind, payload["value"])
            if not patch:
                return clerk_user  # Clerk holds it already
            return clerk.users.update_metadata(user_id=user_id, **{kind: patch}, timeout_ms=budget.ms)
        if call.operation == CREATE_EMAIL:
            return _create_email(clerk, payload, budget)
        if call.operation == DELETE_EMAIL:
            return _delete_email(clerk, payload, budget)
        if call.operation == REVOKE_SESSIONS:
            return _revoke_sessions(clerk, payload, budget)
        if call.operation == UNLOCK:
            return clerk.users.unlock(user_id=user_id, timeout_ms=budget.ms)
        if call.operation == DELETE_USER:
            return clerk.users.delete(user_id=user_id, timeout_ms=budget.ms)
        if call.operation == BAN:
            return clerk.users.ban(user_id=payload["user_id"], timeout_ms=budget.ms)
        if call.operation == UNBAN:
            return clerk.users.unban(user_id=payload["user_id"], timeout_ms=budget.ms)
        if call.operation == METADATA:
            return clerk.users.update_metadata(
                user_id=payload["user_id"], public_metadata=payload["public_metadata"], timeout_ms=budget.ms
            )
        if call.operation == CREATE_INVITATION:
            return clerk.invitations.create(request=payload, timeout_ms=budget.ms)
        if call.operation == REVOKE_INVITATION:
            invitation_id = payload.get("invitation_id") or _current_invitation_id(call)
            if invitation_id is None:
                return None  # the invitation was never made (or the user has joined): nothing to revoke
            return clerk.invitations.revoke(invitation_id=invitation_id, timeout_ms=budget.ms)
        if call.operation in ORGANIZATION_SENDERS:
            return ORGANIZATION_SENDERS[call.operation](clerk, call, payload, budget)
    raise ValueError(f"unknown Clerk operation {call.operation!r}")


# --- An organization's calls ------------------------------------------------------------------------


def _update_organization(clerk: Clerk, call: ClerkCall, payload: dict[str, Any], budget: Budget) -> Any:
    return clerk.organizations.update(
        organization_id=payload["organization_id"], **payload["fields"], timeout_ms=budget.ms
    )


def _delete_organization(clerk: Clerk, call: ClerkCall, payload: dict[str, Any], budget: Budget) -> Any:
    return clerk.organizations.delete(organization_id=payload["organization_id"], timeout_ms=budget.ms)


def _create_membership(clerk: Clerk, call: ClerkCall, payload: dict[str, Any], budget: Budget) -> Any:
    """Add the member with the role; one Clerk has already (an earlier attempt got through, or someone
    added them in Clerk) is given the role instead."""
    keys = {"organization_id": payload["organization_id"], "user_id": payload["user_id"]}
    try:
        return clerk.organization_memberships.create(**keys, role=payload["role"], timeout_ms=budget.ms)
    except models.ClerkErrors as error:
        if error.status_code != 400 or not any(e.code == ALREADY_A_MEMBER for e in error.data.errors):
            raise
    return clerk.organization_memberships.update(**keys, role=payload["role"], timeout_ms=budget.ms)


def _update_membership(clerk: Clerk, call: ClerkCall, payload: dict[str, Any], budget: Budget) -> Any:
    return clerk.organization_memberships.update(
        organization_id=payload["organization_id"],
        user_id=payload["user_id"],
        role=payload["role"],
        timeout_ms=budget.ms,
    )


def _delete_membership(clerk: Clerk, call: ClerkCall, payload: dict[str, Any], budget: Budget) -> Any:
    return clerk.organization_memberships.delete(
        organization_id=payload["organization_id"], user_id=payload["user_id"], timeout_ms=budget.ms
    )


def _create_organization_invitation(clerk: Clerk, call: ClerkCall, payload: dict[str, Any], budget: Budget) -> Any:
    return clerk.organization_invitations.create(
        organization_id=payload["organization_id"],
        email_address=payload["email_address"],
        role=payload["role"],
        timeout_ms=budget.ms,
    )


def _local_invitation(payload: dict[str, Any]) -> OrganizationInvitation | None:
    invitation_id = payload.get("invitation")
    return db.session.get(OrganizationInvitation, invitation_id) if isinstance(invitation_id, str) else None


def _revoke_organization_invitation(clerk: Clerk, call: ClerkCall, payload: dict[str, Any], budget: Budget) -> Any:
    """Revoke by Clerk's id: the one enqueued, or the one the invitation's own call brought since."""
    invitation_id = payload.get("invitation_id")
    if not in_clerk(invitation_id):
        local = _local_invitation(payload)
        invitation_id = local.clerk_id if local is not None and in_clerk(local.clerk_id) else None
    if invitation_id is None:
        return None  # never made in Clerk: nothing to revoke
    return clerk.organization_invitations.revoke(
        organization_id=payload["organization_id"], invitation_id=invitation_id, timeout_ms=budget.ms
    )


ORGANIZATION_SENDERS: Final = {
    UPDATE_ORGANIZATION: _update_organization,
    DELETE_ORGANIZATION: _delete_organization,
    CREATE_MEMBERSHIP: _create_membership,
    UPDATE_MEMBERSHIP: _update_membership,
    DELETE_MEMBERSHIP: _delete_membership,
    CREATE_ORGANIZATION_INVITATION: _create_organization_invitation,
    REVOKE_ORGANIZATION_INVITATION: _revoke_organization_invitation,
}


def _adopt_organization_invitation(call: ClerkCall, invitation_id: str | None, *, actor: Actor) -> None:
    """The invitation made here takes Clerk's id (whatever became of it here since: a revocation
    enqueued after it needs that id)."""
    local = _local_invitation(json.loads(call.payload))
    if invitation_id is None or local is None or in_clerk(local.clerk_id):
        return
    taken = db.session.scalar(
        sa.select(OrganizationInvitation.id).where(OrganizationInvitation.clerk_id == invitation_id)
    )
    if taken is None:
        update_invitation_fields(local, {"clerk_id": invitation_id}, actor=actor, action="organization_invitation.sent")
        return
    # Its webhook came first and, the row being revoked here already, made one of its own: the
    # revocation waiting behind this call revokes Clerk's invitation by its id.
    revocations = db.session.scalars(
        sa.select(ClerkCall).where(
            ClerkCall.organization_id == call.organization_id,
            ClerkCall.operation == REVOKE_ORGANIZATION_INVITATION,
            ClerkCall.state.in_(OPEN_STATES),
            ClerkCall.id > call.id,
        )
    )
    for revocation in revocations:
        payload = json.loads(revocation.payload)
        if payload.get("invitation") == local.id and not in_clerk(payload.get("invitation_id")):
            revocation.payload = json.dumps({**payload, "invitation_id": invitation_id}, sort_keys=True)
    db.session.flush()


def _pending_organization_invitation_id(clerk: Clerk, payload: dict[str, Any], timeout_ms: int) -> str | None:
    """The pending invitation Clerk holds for this organization and email (an earlier attempt that got through)."""
    try:
        with quiet_sdk_deprecations():
            found = clerk.organization_invitations.list(
                organization_id=payload["organization_id"],
                status=models.ListOrganizationInvitationsQueryParamStatus.PENDING,
                email_address=payload["email_address"],
                timeout_ms=timeout_ms,
            )
    except (models.ClerkBaseError, httpx.HTTPError, models.NoResponseError):
        return None
    for invitation in found.data or []:
        if invitation.email_address.lower() == payload["email_address"].lower():
            return invitation.id
    return None


def apply_organization_answer(call: ClerkCall, answer: Any, *, actor: Actor) -> None:
    """Clerk's answer about an organization, a membership or an invitation, stored by the webhook
    rules (audited as `clerk.answer`), so an older webhook cannot undo it."""
    if answer is None or not hasattr(answer, "model_dump"):
        return
    data = answer.model_dump(mode="python", by_alias=True)
    with contextlib.suppress(MalformedClerkData):
        if isinstance(answer, models.Organization):
            apply_organization(data, actor=actor, action="clerk.answer")
        elif isinstance(answer, models.OrganizationMembership):
            deleted = call.operation == DELETE_MEMBERSHIP
            apply_membership(data, actor=actor, deleted=deleted, action="clerk.answer")
        elif isinstance(answer, models.OrganizationInvitation):
            apply_invitation(data, actor=actor, action="clerk.answer")


def _current_invitation_id(call: ClerkCall) -> str | None:
    user = call.user
    return user.invitation_id if user is not None else None


def _pending_invitation_id(clerk: Clerk, email_address: str, timeout_ms: int) -> str | None:
    """The pending invitation Clerk already holds for this email (an earlier attempt that got through)."""
    try:
        with quiet_sdk_deprecations():
            found = clerk.invitations.list(
                status=models.ListInvitationsQueryParamStatus.PENDING, query=email_address, timeout_ms=timeout_ms
            )
    except (models.ClerkBaseError, httpx.HTTPError, models.NoResponseError):
        return None
    for invitation in found or []:
        if invitation.email_address.lower() == email_address.lower():
            return invitation.id
    return None


def _adopt_invitation(call: ClerkCall, invitation_id: str | None, *, actor: Actor) -> None:
    """The invited row takes the invitation's id as its clerk_id, until user.created claims it."""
    user = call.user
    if invitation_id is None or user is None or user.deleted_at is not None or not waits_for_clerk_user(user):
        return
    update_user_fields(user, {"clerk_id": invitation_id}, actor=actor, action="user.invitation_sent")


def attempt_call(clerk: Clerk, call: ClerkCall, *, timeout_ms: int, actor: Actor) -> Result:
    """Send one claimed call and record the outcome on its row (no commit)."""
    call.attempts += 1
    answer = None
    try:
        answer = _send(clerk, call, timeout_ms)
        result = _delivered(call, answer, actor=actor)
    except models.ClerkBaseError as error:
        result = _refused(clerk, call, error, timeout_ms=timeout_ms, actor=actor)
    except (httpx.HTTPError, models.NoResponseError) as error:
        reason = "timed out" if isinstance(error, httpx.TimeoutException) else "unreachable"
        result = Result(Outcome.RETRY, f"Clerk {reason}: {type(error).__name__}: {error}".rstrip(": "))
    _record(call, result)
    if result.outcome == Outcome.DELIVERED and isinstance(answer, models.User):
        apply_clerk_state(call.user, answer, actor=actor)  # after _record: this call holds no field now
    elif result.outcome == Outcome.DELIVERED and call.organization_id is not None:
        apply_organization_answer(call, answer, actor=actor)
    return result


def apply_clerk_state(user: User | None, answer: models.User, *, actor: Actor) -> None:
    """Clerk's answer is its user as it stands: store it by the webhook rules (ordered by updated_at,
    fields other calls still carry kept), so a webhook older than this answer cannot undo the edit."""
    if user is None or user.clerk_id != answer.id:
        return
    try:
        incoming = clerk_user_from_dict(answer.model_dump(mode="python", by_alias=True))
    except MalformedClerkData:
        return
    upsert_clerk_user(incoming, actor=actor, action="clerk.answer")


def _delivered(call: ClerkCall, answer: Any, *, actor: Actor) -> Result:
    if call.operation == CREATE_INVITATION:
        _adopt_invitation(call, getattr(answer, "id", None), actor=actor)
    if call.operation == CREATE_ORGANIZATION_INVITATION:
        _adopt_organization_invitation(call, getattr(answer, "id", None), actor=actor)
    if call.operation in (REVOKE_INVITATION, REVOKE_ORGANIZATION_INVITATION) and answer is None:
        return Result(Outcome.DELIVERED, "nothing to revoke: no invitation was made")
    if call.operation == REVOKE_SESSIONS:
        return Result(Outcome.DELIVERED, f"revoked {answer} active session{'s' if answer != 1 else ''}")
    return Result(Outcome.DELIVERED)


def _refused(clerk: Clerk, call: ClerkCall, error: models.ClerkBaseError, *, timeout_ms: int, actor: Actor) -> Result:
    status, message = error.status_code, clerk_message(error)
    if status < 300:  # Clerk did it; only its answer did not match the SDK's model
        with contextlib.suppress(ValueError, AttributeError):
            if call.operation == CREATE_INVITATION:
                _adopt_invitation(call, json.loads(error.body).get("id"), actor=actor)
            if call.operation == CREATE_ORGANIZATION_INVITATION:
                _adopt_organization_invitation(call, json.loads(error.body).get("id"), actor=actor)
        return Result(Outcome.DELIVERED, message)
    if status == 429:
        return Result(Outcome.RETRY, message, retry_after_seconds(error.headers))
    if status >= 500 or status in TRANSIENT_4XX:
        return Result(Outcome.RETRY, message)
    if call.operation in (REVOKE_INVITATION, REVOKE_ORGANIZATION_INVITATION):
        return Result(Outcome.DELIVERED, message)  # already revoked, accepted or gone: no invitation remains
    if call.operation in (DELETE_USER, DELETE_MEMBERSHIP, DELETE_ORGANIZATION) and status == 404:  # gone already
        return Result(Outcome.DELIVERED, message)
    if call.operation == CREATE_ORGANIZATION_INVITATION:
        existing = _pending_organization_invitation_id(clerk, json.loads(call.payload), timeout_ms)
        if existing is not None:  # an earlier attempt got through before its answer was lost
            _adopt_organization_invitation(call, existing, actor=actor)
            return Result(Outcome.DELIVERED, f"adopted the pending invitation {existing}")
    if call.operation == CREATE_EMAIL:
        _email_refused(call, message, actor=actor)
    if call.operation == CREATE_INVITATION:
        existing = _pending_invitation_id(clerk, json.loads(call.payload)["email_address"], timeout_ms)
        if existing is not None:  # an earlier attempt got through before its answer was lost
            _adopt_invitation(call, existing, actor=actor)
            return Result(Outcome.DELIVERED, f"adopted the pending invitation {existing}")
    return Result(Outcome.FAILED, message)


def _email_refused(call: ClerkCall, message: str, *, actor: Actor) -> None:
    """Clerk refused the new address: the local email goes back to Clerk's, and its removal of the
    old address is not sent."""
    payload = json.loads(call.payload)
    user = call.user
    if user is not None and user.email == payload["email_address"] and payload.get("previous"):
        update_user_fields(user, {"email": payload["previous"]}, actor=actor, action="clerk.email_refused")
    pairs = db.session.scalars(
        sa.select(ClerkCall).where(
            ClerkCall.user_id == call.user_id,
            ClerkCall.operation == DELETE_EMAIL,
            ClerkCall.state.in_(OPEN_STATES),
            ClerkCall.id > call.id,
        )
    )
    for pair in pairs:
        if json.loads(pair.payload).get("after_call") == call.id:
            supersede(pair, f"not sent: Clerk refused the new address (call #{call.id}: {message})")
    db.session.flush()


def _record(call: ClerkCall, result: Result) -> None:
    now = utcnow()
    call.last_error = result.error
    if result.outcome == Outcome.DELIVERED:
        call.state, call.delivered_at = ClerkCallState.DELIVERED.value, now
    elif result.outcome == Outcome.FAILED:
        call.state = ClerkCallState.FAILED.value
    else:
        delay = result.retry_after_s if result.retry_after_s is not None else backoff_seconds(call.attempts)
        call.next_attempt_at = now + timedelta(seconds=delay)
    db.session.flush()


def deliver_due(
    limit: int = 100,
    *,
    deadline: float,
    timeout_ms: int = CLI_TIMEOUT_MS,
    user_ids: Sequence[str] | None = None,
    organization_ids: Sequence[str] | None = None,
    actor: Actor | None = None,
) -> PushReport:
    """Send due calls one by one, committing each outcome, until `limit`, the `deadline`
    (a time.monotonic() value) or the first answer that says Clerk cannot take calls now.

    With `user_ids` or `organization_ids`, only those users' and organizations' pending calls are
    sent, due or not (right after a request).
    A driver like the CLI's loop: it commits, so each outcome is kept and each row lock released.
    """
    report = PushReport()
    if not clerk_connected():
        report.stopped = "Clerk is not connected (CLERK_SECRET_KEY is not set)"
        return report
    actor = actor or Actor.cli()
    with clerk_client(retry_config=None, timeout_ms=timeout_ms) as clerk:
        while report.attempted < limit:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                report.stopped = "out of time"
                break
            call = _claim_next(user_ids, organization_ids)
            if call is None:
                db.session.commit()  # ends the claim's transaction
                break
            result = attempt_call(clerk, call, timeout_ms=min(timeout_ms, remaining_ms), actor=actor)
            db.session.commit()
            report.add(result)
            if result.outcome == Outcome.RETRY:
                # Clerk is down, slow or limiting us: the rest waits for its backoff.
                report.stopped = result.error
                break
    return report


def deliver_after_request(*, actor: Actor) -> PushReport:
    """After a view committed: try the calls it enqueued, within a short budget; never raises."""
    touched = sorted(db.session.info.pop(TOUCHED, set()))
    organizations = sorted(db.session.info.pop(TOUCHED_ORGANIZATIONS, set()))
    if not (touched or organizations) or not clerk_connected():
        return PushReport()
    budget_ms = int(current_app.config.get("CLERK_OUTBOX_REQUEST_BUDGET_MS", REQUEST_BUDGET_MS))
    try:
        return deliver_due(
            (len(touched) + len(organizations)) * 4 + 10,
            deadline=time.monotonic() + budget_ms / 1000,
            timeout_ms=budget_ms,
            user_ids=touched,
            organization_ids=organizations,
            actor=actor,
        )
    except Exception as error:  # the local change is committed; the CLI delivers later
        rollback_quietly()
        if is_database_unreachable(error):  # one line, not a traceback per request while it is away
            current_app.logger.warning("delivering Clerk calls after the request: %s", first_line(error))
        else:
            current_app.logger.exception("delivering Clerk calls after the request failed")
        return PushReport(stopped=f"{type(error).__name__}: {error}")


class ClerkUnavailable(RuntimeError):
    """Clerk could not be asked (not connected, down, slow or refusing): the message says which."""


def take_clerks_value(call: ClerkCall, *, actor: Actor, timeout_ms: int = REQUEST_BUDGET_MS) -> dict:
    """Give up a failed call: the fields it carried take the values Clerk holds now (read live).

    Only someone with clerk.retry who may act on the call's user may do it; no commit (the view commits).
    """
    if call.organization_id is not None:
        return _take_organization_value(call, actor=actor, timeout_ms=timeout_ms)
    user = call.user
    if user is None:
        raise RetryRefused(f"Call #{call.id} is about no user: there is no value to take.")
    ensure(actor, "clerk.retry", user)
    if call.state != ClerkCallState.FAILED.value:
        raise RetryRefused(f"Call #{call.id} is {call.state}; only a failed call's value can be given up.")
    if not clerk_connected():
        raise ClerkUnavailable("Clerk is not connected (CLERK_SECRET_KEY is not set).")
    try:
        with clerk_client(retry_config=None, timeout_ms=timeout_ms) as clerk, quiet_sdk_deprecations():
            answer = clerk.users.get(user_id=user.clerk_id, timeout_ms=timeout_ms)
    except models.ClerkBaseError as error:
        raise ClerkUnavailable(f"{clerk_message(error)}; nothing changed.") from error
    except (httpx.HTTPError, models.NoResponseError) as error:
        raise ClerkUnavailable(f"Clerk did not answer ({type(error).__name__}); nothing changed.") from error
    incoming = clerk_user_from_dict(answer.model_dump(mode="python", by_alias=True))
    supersede(call, f"{actor.label} took Clerk's value")
    db.session.flush()
    fields = carried_fields(call.operation, json.loads(call.payload))
    taken = {name: incoming.fields[name] for name in sorted(fields) if name in incoming.fields}
    return update_user_fields(user, taken, actor=actor, action="clerk.take_value")


def _take_organization_value(call: ClerkCall, *, actor: Actor, timeout_ms: int) -> dict:
    """A refused rename takes the organization's name and slug as Clerk holds them; a refused role
    change, the member's role in Clerk (or, when Clerk has no such member, the membership ends here)."""
    ensure(actor, "clerk.retry", call.user)
    if call.state != ClerkCallState.FAILED.value:
        raise RetryRefused(f"Call #{call.id} is {call.state}; only a failed call's value can be given up.")
    payload = json.loads(call.payload)
    fields = carried_fields(call.operation, payload)
    if not fields:
        raise RetryRefused(f"Call #{call.id} carries no value of ours: there is no value to take.")
    if not clerk_connected():
        raise ClerkUnavailable("Clerk is not connected (CLERK_SECRET_KEY is not set).")
    try:
        with clerk_client(retry_config=None, timeout_ms=timeout_ms) as clerk, quiet_sdk_deprecations():
            if call.operation == UPDATE_ORGANIZATION:
                answer: Any = clerk.organizations.get(organization_id=payload["organization_id"], timeout_ms=timeout_ms)
            else:
                found = clerk.organization_memberships.list(
                    organization_id=payload["organization_id"],
                    user_id=[payload["user_id"]],
                    limit=1,
                    timeout_ms=timeout_ms,
                )
                answer = next((m for m in found.data or [] if _member_id(m) == payload["user_id"]), None)
    except models.ClerkBaseError as error:
        raise ClerkUnavailable(f"{clerk_message(error)}; nothing changed.") from error
    except (httpx.HTTPError, models.NoResponseError) as error:
        raise ClerkUnavailable(f"Clerk did not answer ({type(error).__name__}); nothing changed.") from error
    supersede(call, f"{actor.label} took Clerk's value")
    db.session.flush()
    if call.operation == UPDATE_ORGANIZATION:
        incoming = organization_from_dict(answer.model_dump(mode="python", by_alias=True))
        taken = {name: incoming.fields[name] for name in sorted(fields) if name in incoming.fields}
        return update_organization_fields(call.organization, taken, actor=actor, action="clerk.take_value")
    membership = db.session.scalars(
        sa.select(Membership).where(
            Membership.organization_id == call.organization_id,
            Membership.clerk_user_id == payload["user_id"],
            Membership.deleted_at.is_(None),
        )
    ).first()
    if membership is None:
        return {}
    changes = {"role": answer.role} if answer is not None else {"deleted_at": utcnow()}
    return update_membership_fields(membership, changes, actor=actor, action="clerk.take_value")


def _member_id(membership: models.OrganizationMembership) -> str | None:
    public = membership.public_user_data
    return public.user_id if public is not None else None
