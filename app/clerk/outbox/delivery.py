"""Delivering the outbox's calls to Clerk: the worker (`flask clerk push`, and right after a request).

`deliver_due` commits each outcome, so every row lock is released and no outcome is lost: it is
the one place outside the views and the CLI that commits. Each worker claims one due row with
`FOR UPDATE SKIP LOCKED`, and every call is idempotent against Clerk (docs/clerk-outbound.md).
Answers that mean "never" (404, 400/422, other 4xx) mark the row `failed`; everything else is
retried later with exponential backoff.
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
from app.clerk.outbox import (
    BAN,
    CREATE_INVITATION,
    METADATA,
    REVOKE_INVITATION,
    TOUCHED,
    UNBAN,
    waits_for_clerk_user,
)
from app.extensions import db
from app.models import ClerkCall, ClerkCallState, utcnow
from app.records.users import update_user_fields

BACKOFF_BASE_S: Final = 10
BACKOFF_MAX_S: Final = 3600
REQUEST_BUDGET_MS: Final = 3_000  # right after a request: the page must answer quickly
CLI_TIMEOUT_MS: Final = 10_000
# Answers worth trying again: auth (an operator fixes the key), timeouts, conflicts, rate limits.
TRANSIENT_4XX: Final = frozenset({401, 403, 408, 409, 423, 425, 429})


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


def _claim_next(user_ids: Sequence[str] | None) -> ClerkCall | None:
    """The oldest due call whose user has no earlier pending call, locked (skipped by other workers)."""
    earlier = aliased(ClerkCall)
    query = sa.select(ClerkCall).where(
        ClerkCall.state == ClerkCallState.PENDING.value,
        ~sa.exists().where(
            earlier.user_id == ClerkCall.user_id,
            earlier.state == ClerkCallState.PENDING.value,
            earlier.id < ClerkCall.id,
        ),
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
            return clerk.users.update_metadata(
                user_id=payload["user_id"], public_metadata=payload["public_metadata"], timeout_ms=timeout_ms
            )
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
    if call.operation == REVOKE_INVITATION and answer is None:
        return Result(Outcome.DELIVERED, "nothing to revoke: no invitation was made")
    return Result(Outcome.DELIVERED)


def _refused(clerk: Clerk, call: ClerkCall, error: models.ClerkBaseError, *, timeout_ms: int, actor: Actor) -> Result:
    status, message = error.status_code, clerk_message(error)
    if status < 300:  # Clerk did it; only its answer did not match the SDK's model
        if call.operation == CREATE_INVITATION:
            with contextlib.suppress(ValueError, AttributeError):
                _adopt_invitation(call, json.loads(error.body).get("id"), actor=actor)
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
    touched = sorted(db.session.info.pop(TOUCHED, set()))
    if not touched or not clerk_connected():
        return PushReport()
    budget_ms = int(current_app.config.get("CLERK_OUTBOX_REQUEST_BUDGET_MS", REQUEST_BUDGET_MS))
    try:
        return deliver_due(
            len(touched) * 4 + 10,
            deadline=time.monotonic() + budget_ms / 1000,
            timeout_ms=budget_ms,
            user_ids=touched,
            actor=actor,
        )
    except Exception as error:  # the local change is committed; the CLI delivers later
        db.session.rollback()
        current_app.logger.exception("delivering Clerk calls after the request failed")
        return PushReport(stopped=f"{type(error).__name__}: {error}")
