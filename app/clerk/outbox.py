"""Calls to Clerk's Backend API through an outbox (DESIGN §8).

A dashboard change and the `clerk_outbox` row that mirrors it in Clerk commit together, so a
Clerk outage loses nothing. The row is attempted right after the request (a short, bounded
wait) and otherwise by `flask clerk push`, with exponential backoff.

- What is sent: suspend → ban, leaving `suspended` → unban (Clerk bans exactly the suspended
  users), role and status → `public_metadata` {role, status} (a deep merge: other keys stay),
  invite → an invitation carrying the role, whose id becomes the invited row's `clerk_id`,
  revoke → revoke that invitation, resend → revoke + create (Clerk has no resend endpoint).
- Only users that exist in Clerk (`user_...` ids) get ban/unban/metadata calls; nothing is
  enqueued without CLERK_SECRET_KEY.
- Order: a user's calls are delivered in creation order (a later call waits while an earlier
  one is pending). A newer ban/unban, metadata or invitation call supersedes the user's older
  pending or failed ones of the same kind, because it alone says what Clerk should hold.
- Many workers: each claims one due row with `FOR UPDATE SKIP LOCKED` on PostgreSQL, holds it
  during the call and commits the outcome. Every call is idempotent against Clerk: a second ban
  bans a banned user, metadata merges the same values, revoking a gone invitation is done, and a
  repeated invitation adopts the pending one Clerk already holds.
- Answers that mean "never" (404 gone, 400/422 invalid, other 4xx) mark the row `failed` with
  Clerk's message, shown on the user's page with a Retry button. Everything else (connection
  refused, timeouts, 5xx, 401/403, 429 with Retry-After) is retried later.
"""

from __future__ import annotations

import email.utils
import enum
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
import sqlalchemy as sa
from clerk_backend_api import Clerk, models
from flask import current_app
from sqlalchemy.orm import aliased

from app.audit.services import Actor, record
from app.clerk.client import clerk_client, clerk_connected, quiet_sdk_deprecations
from app.extensions import db
from app.models import ClerkCall, ClerkCallState, User, UserStatus, UTCDateTime, utcnow

BAN, UNBAN, METADATA = "ban", "unban", "update_metadata"
CREATE_INVITATION, REVOKE_INVITATION = "create_invitation", "revoke_invitation"
OPERATIONS: Final = (BAN, UNBAN, METADATA, CREATE_INVITATION, REVOKE_INVITATION)
# Calls of one kind: the newest says what Clerk should hold, so it supersedes older ones.
KINDS: Final = {BAN: "ban", UNBAN: "ban", METADATA: "metadata", CREATE_INVITATION: "invitation"}
LABELS: Final = {
    BAN: "Ban in Clerk", UNBAN: "Unban in Clerk", METADATA: "Update public metadata",
    CREATE_INVITATION: "Send a Clerk invitation", REVOKE_INVITATION: "Revoke the Clerk invitation",
}

BACKOFF_BASE_S: Final = 10
BACKOFF_MAX_S: Final = 3600
REQUEST_BUDGET_MS: Final = 3_000  # right after a request: the page must answer quickly
CLI_TIMEOUT_MS: Final = 10_000
# Answers worth trying again: auth (an operator fixes the key), timeouts, conflicts, rate limits.
TRANSIENT_4XX: Final = frozenset({401, 403, 408, 409, 423, 425, 429})
_TOUCHED: Final = "clerk_outbox_touched_users"


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # still pending: tried again after a backoff
    FAILED = "failed"  # Clerk refused it for good


class RetryRefused(ValueError):
    """Only a failed call can be tried again; the message says why."""


def is_clerk_user(user: User) -> bool:
    """Whether the row is a user in Clerk (invited rows hold `local_...` or `inv_...`)."""
    return not user.waits_for_clerk_user and user.deleted_at is None


def waits_for_clerk_user(user: User) -> bool:
    return user.waits_for_clerk_user


# --- Enqueueing (services call these; nothing commits) -----------------------------------------


def enqueue(user: User | None, operation: str, payload: dict[str, Any]) -> ClerkCall:
    """Add a call to the outbox in the caller's transaction; older calls of its kind are superseded."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown Clerk operation {operation!r}")
    call = ClerkCall(user_id=user.id if user else None, operation=operation,
                     payload=json.dumps(payload, sort_keys=True), state=ClerkCallState.PENDING.value,
                     attempts=0, next_attempt_at=utcnow())
    db.session.add(call)
    db.session.flush()
    if user is not None:
        _supersede_older(call, user)
        db.session.info.setdefault(_TOUCHED, set()).add(user.id)
    return call


def _supersede_older(call: ClerkCall, user: User) -> None:
    kind = KINDS.get(call.operation)
    if kind is None:
        return
    same_kind = [op for op, k in KINDS.items() if k == kind]
    # SKIP LOCKED: a row a worker is sending right now finishes on its own; this one follows it.
    older = db.session.scalars(
        sa.select(ClerkCall)
        .where(ClerkCall.user_id == user.id, ClerkCall.id < call.id, ClerkCall.operation.in_(same_kind),
               ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]))
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
    """A person asks for a failed call to be sent again (it is the newest of its kind: see supersede)."""
    if call.state != ClerkCallState.FAILED.value:
        raise RetryRefused(f"Call #{call.id} is {call.state}; only a failed call can be retried.")
    call.state = ClerkCallState.PENDING.value
    call.next_attempt_at = utcnow()
    db.session.flush()
    if call.user is not None:
        db.session.info.setdefault(_TOUCHED, set()).add(call.user.id)
        record("clerk.retry", actor=actor, target=call.user,
               changes={f"clerk_call.{call.id}": [ClerkCallState.FAILED.value, ClerkCallState.PENDING.value]})


# --- Reading, for the pages ----------------------------------------------------------------------


def pending_user_ids(user_ids: Iterable[str]) -> set[str]:
    """Which of these users have a call not yet in Clerk (pending or failed): one query per page."""
    ids = list(user_ids)
    if not ids:
        return set()
    return set(db.session.scalars(
        sa.select(ClerkCall.user_id).distinct()
        .where(ClerkCall.user_id.in_(ids),
               ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]))
    ))


def open_calls_for(user: User) -> list[ClerkCall]:
    """The user's calls that have not reached Clerk: pending ones and failed ones, oldest first."""
    return list(db.session.scalars(
        sa.select(ClerkCall)
        .where(ClerkCall.user_id == user.id,
               ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]))
        .order_by(ClerkCall.id)
    ))


def list_calls(*, state: str | None = None, before: int | None = None, limit: int = 50) -> list[ClerkCall]:
    """The outbox, newest first, keyset-paged on id (optionally one state)."""
    query = sa.select(ClerkCall).order_by(ClerkCall.id.desc()).limit(limit)
    if state:
        query = query.where(ClerkCall.state == state)
    if before is not None:
        query = query.where(ClerkCall.id < before)
    return list(db.session.scalars(query.options(sa.orm.selectinload(ClerkCall.user))))


def describe(call: ClerkCall) -> str:
    payload = json.loads(call.payload)
    label = LABELS.get(call.operation, call.operation)
    if call.operation == METADATA:
        values = ", ".join(f"{k}={v}" for k, v in sorted(payload.get("public_metadata", {}).items()))
        return f"{label}: {values}"
    if call.operation == CREATE_INVITATION:
        return f"{label} to {payload.get('email_address')} (role {payload.get('public_metadata', {}).get('role')})"
    return label


# --- Delivery --------------------------------------------------------------------------------------


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


def _claim_next(user_ids: Sequence[str] | None) -> ClerkCall | None:
    """The oldest due call whose user has no earlier pending call, locked (skipped by other workers)."""
    earlier = aliased(ClerkCall)
    query = sa.select(ClerkCall).where(
        ClerkCall.state == ClerkCallState.PENDING.value,
        ~sa.exists().where(earlier.user_id == ClerkCall.user_id,
                           earlier.state == ClerkCallState.PENDING.value, earlier.id < ClerkCall.id),
    )
    if user_ids is None:
        query = query.where(ClerkCall.next_attempt_at <= utcnow())
    else:  # right after a request: its users' calls now, whatever their backoff said
        query = query.where(ClerkCall.user_id.in_(list(user_ids)))
    query = query.order_by(ClerkCall.id).limit(1).with_for_update(skip_locked=True, of=ClerkCall)
    return db.session.scalars(query.execution_options(populate_existing=True)).first()


def _send(clerk: Clerk, call: ClerkCall, timeout_ms: int) -> Any:
    payload = json.loads(call.payload)
    with quiet_sdk_deprecations():
        if call.operation == BAN:
            return clerk.users.ban(user_id=payload["user_id"], timeout_ms=timeout_ms)
        if call.operation == UNBAN:
            return clerk.users.unban(user_id=payload["user_id"], timeout_ms=timeout_ms)
        if call.operation == METADATA:
            return clerk.users.update_metadata(user_id=payload["user_id"], public_metadata=payload["public_metadata"],
                                               timeout_ms=timeout_ms)
        if call.operation == CREATE_INVITATION:
            return clerk.invitations.create(request=payload, timeout_ms=timeout_ms)
        if call.operation == REVOKE_INVITATION:
            invitation_id = payload.get("invitation_id") or _current_invitation_id(call)
            if invitation_id is None:
                return None  # the invitation was never made (or the user has joined): nothing to revoke
            return clerk.invitations.revoke(invitation_id=invitation_id, timeout_ms=timeout_ms)
    raise ValueError(f"unknown Clerk operation {call.operation!r}")


def _current_invitation_id(call: ClerkCall) -> str | None:
    user = call.user
    return user.invitation_id if user is not None else None


def _pending_invitation_id(clerk: Clerk, email_address: str, timeout_ms: int) -> str | None:
    """The pending invitation Clerk already holds for this email (an earlier attempt that got through)."""
    try:
        with quiet_sdk_deprecations():
            found = clerk.invitations.list(status=models.ListInvitationsQueryParamStatus.PENDING,
                                           query=email_address, timeout_ms=timeout_ms)
    except (models.ClerkBaseError, httpx.HTTPError, models.NoResponseError):
        return None
    for invitation in found or []:
        if invitation.email_address.lower() == email_address.lower():
            return invitation.id
    return None


def _adopt_invitation(call: ClerkCall, invitation_id: str | None, *, actor: Actor) -> None:
    """The invited row takes the invitation's id as its clerk_id, until user.created claims it."""
    from app.users.services import update_user_fields  # the users module imports this one

    user = call.user
    if invitation_id is None or user is None or user.deleted_at is not None or not waits_for_clerk_user(user):
        return
    update_user_fields(user, {"clerk_id": invitation_id}, actor=actor, action="user.invitation_sent")


def attempt_call(clerk: Clerk, call: ClerkCall, *, timeout_ms: int, actor: Actor) -> Result:
    """Send one claimed call and record the outcome on its row (no commit)."""
    call.attempts += 1
    try:
        answer = _send(clerk, call, timeout_ms)
        result = _delivered(call, answer, actor=actor)
    except models.ClerkBaseError as error:
        result = _refused(clerk, call, error, timeout_ms=timeout_ms, actor=actor)
    except (httpx.HTTPError, models.NoResponseError) as error:
        reason = "timed out" if isinstance(error, httpx.TimeoutException) else "unreachable"
        result = Result(Outcome.RETRY, f"Clerk {reason}: {type(error).__name__}: {error}".rstrip(": "))
    _record(call, result)
    return result


def _delivered(call: ClerkCall, answer: Any, *, actor: Actor) -> Result:
    if call.operation == CREATE_INVITATION:
        _adopt_invitation(call, getattr(answer, "id", None), actor=actor)
    note = "nothing to revoke: no invitation was made" if call.operation == REVOKE_INVITATION and answer is None else None
    return Result(Outcome.DELIVERED, note)


def _refused(clerk: Clerk, call: ClerkCall, error: models.ClerkBaseError, *, timeout_ms: int, actor: Actor) -> Result:
    status, message = error.status_code, clerk_message(error)
    if status < 300:  # Clerk did it; only its answer did not match the SDK's model
        if call.operation == CREATE_INVITATION:
            try:
                _adopt_invitation(call, json.loads(error.body).get("id"), actor=actor)
            except (ValueError, AttributeError):
                pass
        return Result(Outcome.DELIVERED, message)
    if status == 429:
        return Result(Outcome.RETRY, message, retry_after_seconds(error.headers))
    if status >= 500 or status in TRANSIENT_4XX:
        return Result(Outcome.RETRY, message)
    if call.operation == REVOKE_INVITATION:  # already revoked, accepted or gone: no invitation remains
        return Result(Outcome.DELIVERED, message)
    if call.operation == CREATE_INVITATION:
        existing = _pending_invitation_id(clerk, json.loads(call.payload)["email_address"], timeout_ms)
        if existing is not None:  # an earlier attempt got through before its answer was lost
            _adopt_invitation(call, existing, actor=actor)
            return Result(Outcome.DELIVERED, f"adopted the pending invitation {existing}")
    return Result(Outcome.FAILED, message)


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
    actor: Actor | None = None,
) -> PushReport:
    """Send due calls one by one, committing each outcome, until `limit`, the `deadline`
    (a time.monotonic() value) or the first answer that says Clerk cannot take calls now.

    With `user_ids`, only those users' pending calls are sent, due or not (right after a request).
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
            call = _claim_next(user_ids)
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
    touched = sorted(db.session.info.pop(_TOUCHED, set()))
    if not touched or not clerk_connected():
        return PushReport()
    budget_ms = int(current_app.config.get("CLERK_OUTBOX_REQUEST_BUDGET_MS", REQUEST_BUDGET_MS))
    try:
        return deliver_due(len(touched) * 4 + 10, deadline=time.monotonic() + budget_ms / 1000,
                           timeout_ms=budget_ms, user_ids=touched, actor=actor)
    except Exception as error:  # the local change is committed; the CLI delivers later
        db.session.rollback()
        current_app.logger.exception("delivering Clerk calls after the request failed")
        return PushReport(stopped=f"{type(error).__name__}: {error}")


def outbox_health() -> dict[str, Any]:
    """Counts for the outbox page: pending, failed and the oldest pending call's age."""
    counts = dict(db.session.execute(
        sa.select(ClerkCall.state, sa.func.count())
        .where(ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]))
        .group_by(ClerkCall.state)
    ).all())
    oldest: datetime | None = db.session.scalar(
        sa.select(sa.func.min(ClerkCall.created_at, type_=UTCDateTime)).where(ClerkCall.state == ClerkCallState.PENDING.value)
    )
    return {"pending": counts.get("pending", 0), "failed": counts.get("failed", 0), "oldest_pending": oldest}
