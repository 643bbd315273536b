"""Clerk webhook deliveries: stored once per Svix message id, applied in the same transaction.

The `webhook_events` row is written last, with the outcome, by one INSERT ... ON CONFLICT: a copy of
a message finds the row (waiting for the first transaction on PostgreSQL) and everything it did is
rolled back (docs/webhooks.md). Nothing here commits.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.organizations import (
    ORGANIZATION_EVENT_TYPES,
    apply_invitation,
    apply_membership,
    apply_organization,
    delete_organization,
)
from app.clerk.sync import (
    MAX_ID_BYTES,
    MalformedClerkData,
    SyncOutcome,
    SyncResult,
    bounded,
    clean_text,
    clerk_user_from_dict,
    delete_clerk_user,
    ms,
    ms_to_datetime,
    record_sign_in,
    upsert_clerk_user,
)
from app.extensions import db
from app.models import User, WebhookEvent, WebhookOutcome, utcnow
from app.permissions import ensure
from app.records.organizations import dialect_insert

MAX_BODY_BYTES = 1024 * 1024  # Clerk's user objects are a few KiB; anything near this is not Clerk
MAX_SVIX_ID_BYTES = MAX_ID_BYTES  # Svix's are about 30; the id is the primary key
DUPLICATE = "duplicate"  # answered, never stored: the message's row already exists
HANDLED_TYPES = ("user.created", "user.updated", "user.deleted", "session.created", *ORGANIZATION_EVENT_TYPES)
# organizationInvitation.<verb>: the status the event means, when its payload lacks one.
INVITATION_STATUS_OF = {"created": "pending", "accepted": "accepted", "revoked": "revoked"}
REPLAYABLE = (WebhookOutcome.FAILED, WebhookOutcome.STALE)

SYNC_TO_WEBHOOK = {
    SyncOutcome.CREATED: WebhookOutcome.APPLIED,
    SyncOutcome.CLAIMED: WebhookOutcome.APPLIED,
    SyncOutcome.UPDATED: WebhookOutcome.APPLIED,
    SyncOutcome.UNCHANGED: WebhookOutcome.APPLIED,
    SyncOutcome.DELETED: WebhookOutcome.APPLIED,
    SyncOutcome.STALE: WebhookOutcome.STALE,
    SyncOutcome.GONE: WebhookOutcome.IGNORED,
    SyncOutcome.UNKNOWN: WebhookOutcome.IGNORED,
}


class ReplayRefused(ValueError):
    """The event cannot be re-applied; the message says why."""


@dataclasses.dataclass(frozen=True)
class ClerkEvent:
    type: str
    data: Mapping[str, Any]
    timestamp: int | None  # ms


@dataclasses.dataclass(frozen=True)
class Applied:
    outcome: WebhookOutcome
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What became of one delivery, as the receiver answers it."""

    svix_id: str
    outcome: str  # a WebhookOutcome, or DUPLICATE
    reason: str | None = None
    malformed: bool = False  # signed, but not a Clerk event: refused with a 400

    @property
    def status_code(self) -> int:
        return 400 if self.malformed else 200


def parse_event(payload: Any) -> ClerkEvent:
    """The envelope `{type, data, timestamp, ...}`; other keys (instance_id, ...) are optional."""
    if not isinstance(payload, Mapping):
        raise MalformedClerkData("the body is not a JSON object")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedClerkData("type is missing")
    bounded("type", event_type, MAX_ID_BYTES)
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise MalformedClerkData("data is not a JSON object")
    return ClerkEvent(clean_text(event_type), data, ms(payload.get("timestamp")))


def _required_id(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedClerkData(f"data.{key} is missing")
    return clean_text(bounded(f"data.{key}", value, MAX_ID_BYTES))


def apply_clerk_event(event: ClerkEvent, *, actor: Actor, ignore_order: bool = False) -> Applied:
    """Apply one Clerk event to the users table (no commit). Raises MalformedClerkData first."""
    if event.type in ("user.created", "user.updated"):
        incoming = clerk_user_from_dict(event.data)
        probably_new = event.type == "user.created"
        result = upsert_clerk_user(incoming, actor=actor, ignore_order=ignore_order, probably_new=probably_new)
    elif event.type == "user.deleted":
        result = delete_clerk_user(_required_id(event.data, "id"), actor=actor)
    elif event.type == "session.created":
        result = _apply_session_created(event, actor=actor)
    elif event.type in ORGANIZATION_EVENT_TYPES:
        result = _apply_organization_event(event, actor=actor, ignore_order=ignore_order)
    else:
        return Applied(WebhookOutcome.IGNORED, f"{event.type} is not an event this dashboard uses")
    outcome = SYNC_TO_WEBHOOK[result.outcome]
    # An applied event's reason ("created", "updated") is noise, unless it tells of a refused claim.
    keep_reason = outcome != WebhookOutcome.APPLIED or result.noteworthy
    return Applied(outcome, result.reason if keep_reason else None)


def _apply_organization_event(event: ClerkEvent, *, actor: Actor, ignore_order: bool) -> SyncResult:
    kind, _, verb = event.type.partition(".")
    if kind == "organization":
        if verb == "deleted":
            return delete_organization(event.data, event.timestamp, actor=actor)
        return apply_organization(event.data, actor=actor, ignore_order=ignore_order)
    if kind == "organizationMembership":
        return apply_membership(event.data, actor=actor, deleted=verb == "deleted", ignore_order=ignore_order)
    return apply_invitation(event.data, actor=actor, ignore_order=ignore_order, status=INVITATION_STATUS_OF[verb])


def _apply_session_created(event: ClerkEvent, *, actor: Actor) -> SyncResult:
    clerk_id = _required_id(event.data, "user_id")
    signed_in_at = ms_to_datetime(event.data.get("created_at")) or ms_to_datetime(event.timestamp)
    if signed_in_at is None:
        raise MalformedClerkData("data.created_at is missing")
    embedded = event.data.get("user")
    made = None
    if isinstance(embedded, Mapping) and embedded.get("id") == clerk_id:
        # Newer payloads carry the user: a sign-in that beats user.created still makes the user.
        made = upsert_clerk_user(clerk_user_from_dict(embedded), actor=actor)
    result = record_sign_in(clerk_id, signed_in_at, actor=actor)
    if made is not None and made.noteworthy:  # a claim refused on the way: say so on this delivery
        result.reason, result.noteworthy = made.reason, True
    return result


# --- The webhook_events row ---------------------------------------------------------------------


def _describe(payload: Any) -> tuple[str, str | None]:
    """The type and Clerk id to file the row under, whatever shape the payload has: the user's (a
    session's, a membership's member's), or else the object's own (an organization, an invitation)."""
    if not isinstance(payload, Mapping):
        return "", None
    event_type = payload.get("type") if isinstance(payload.get("type"), str) else ""
    data = payload.get("data") if isinstance(payload.get("data"), Mapping) else {}
    if event_type.startswith("organizationMembership."):  # the member: the page links their user
        member = data.get("public_user_data")
        data, key = (member if isinstance(member, Mapping) else {}), "user_id"
    else:
        key = "user_id" if event_type.startswith("session.") else "id"
    user_id = data.get(key) if isinstance(data.get(key), str) else None
    return _clip(event_type), _clip(user_id) if user_id else None


def _clip(text: str) -> str:
    # These columns are indexed, and the row must be writable even for a malformed event.
    return clean_text(text).encode("utf-8")[:MAX_ID_BYTES].decode("utf-8", "ignore")


def _row_values(svix_id: str, body: str, payload: Any, *, outcome: WebhookOutcome, error: str | None) -> dict:
    event_type, clerk_user_id = _describe(payload)
    return {
        "id": svix_id,
        "type": event_type,
        "clerk_user_id": clerk_user_id,
        "payload": body,
        "received_at": utcnow(),
        "outcome": outcome.value,
        "error": error,
        "attempts": 1,
    }


_EVENTS = WebhookEvent.__table__


@functools.cache
def _store_once(dialect: str) -> sa.Insert:
    """INSERT the delivery's row with its outcome, or take over a `failed` row of the same svix id
    (Svix's retry), RETURNING its id; nothing is returned for any other existing row: a copy.
    Built once per dialect; the values are parameters."""
    statement = dialect_insert(_EVENTS, dialect)
    return statement.on_conflict_do_update(
        index_elements=[_EVENTS.c.id],
        set_={
            "outcome": statement.excluded.outcome,
            "error": statement.excluded.error,
            "processed_at": statement.excluded.processed_at,
            "attempts": _EVENTS.c.attempts + 1,
        },
        where=_EVENTS.c.outcome == WebhookOutcome.FAILED.value,
    ).returning(_EVENTS.c.id)


_EVENT_OUTCOME = sa.select(_EVENTS.c.outcome).where(_EVENTS.c.id == sa.bindparam("svix_id"))
_FINISH_EVENT = (
    sa.update(_EVENTS)
    .where(_EVENTS.c.id == sa.bindparam("b_id"))
    .values(
        outcome=sa.bindparam("b_outcome"),
        error=sa.bindparam("b_error"),
        processed_at=sa.bindparam("b_processed_at"),
        attempts=_EVENTS.c.attempts + 1,
    )
)


def _locked_event(svix_id: str) -> WebhookEvent | None:
    return db.session.scalars(
        sa.select(WebhookEvent)
        .where(WebhookEvent.id == svix_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def _apply(payload: Any, *, actor: Actor, ignore_order: bool = False) -> Delivery:
    """Apply the event (no commit); the Delivery's svix id is filled in by the caller."""
    try:
        event = parse_event(payload)
        applied = apply_clerk_event(event, actor=actor, ignore_order=ignore_order)
    except MalformedClerkData as malformed:  # raised before anything was written
        return Delivery("", WebhookOutcome.FAILED.value, f"malformed: {malformed}", malformed=True)
    return Delivery("", applied.outcome.value, applied.reason)


def record_and_apply(svix_id: str, body: str, payload: Any, *, actor: Actor) -> Delivery:
    """Apply this delivery and store it, once per svix id, in the caller's transaction (no commit).

    The `webhook_events` row is written last, with the outcome, by one INSERT ... ON CONFLICT: of
    two copies of a message only one transaction can hold that row, so a copy finds it (on
    PostgreSQL after waiting for the first transaction to end) and everything it did is rolled back
    here; it answers DUPLICATE. A `failed` row is Svix retrying: it is taken over and applied.
    """
    received_at = utcnow()
    delivery = _apply(payload, actor=actor)
    values = _row_values(svix_id, body, payload, outcome=WebhookOutcome(delivery.outcome), error=delivery.reason)
    values["received_at"], values["processed_at"] = received_at, values["received_at"]
    stored = db.session.execute(_store_once(db.session.get_bind().dialect.name), values).first()
    if stored is None:
        db.session.rollback()  # a copy: nothing it did may stay
        outcome = db.session.execute(_EVENT_OUTCOME, {"svix_id": svix_id}).scalar()
        return Delivery(svix_id, DUPLICATE, f"already received: {outcome}")
    return dataclasses.replace(delivery, svix_id=svix_id)


def record_failed_delivery(svix_id: str, body: str, payload: Any, error: str) -> None:
    """After a rollback: keep the failed delivery, in a transaction of its own, for the page and replay.

    Never overwrites a row that a concurrent copy of the message has meanwhile applied.
    """
    values = _row_values(svix_id, body, payload, outcome=WebhookOutcome.FAILED, error=error)
    values["processed_at"] = values["received_at"]
    statement = dialect_insert(WebhookEvent).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[WebhookEvent.id],
        set_={
            "error": statement.excluded.error,
            "processed_at": statement.excluded.processed_at,
            "attempts": WebhookEvent.attempts + 1,
        },
        where=WebhookEvent.outcome == WebhookOutcome.FAILED.value,
    )
    db.session.execute(statement)


def replay_event(svix_id: str, *, actor: Actor) -> Delivery:
    """Re-apply a stored failed or stale event (no commit).

    A failed event runs through the usual rules again. A stale one is applied despite the ordering
    guard: a person asked for exactly that. A deleted user stays deleted either way. Only those with
    webhooks.replay (and, for an event about a user here, who may act on that user) and the command
    line may (raises NotAllowed).
    """
    ensure(actor, "webhooks.replay")
    row = _locked_event(svix_id)
    if row is None:
        raise LookupError(f"no webhook event with id {svix_id!r}")
    if row.clerk_user_id:
        user = db.session.scalar(sa.select(User).where(User.clerk_id == row.clerk_user_id))
        if user is not None:
            ensure(actor, "webhooks.replay", user)  # admins act on users with the role 'user' only
    if row.outcome not in REPLAYABLE:
        raise ReplayRefused(f"only failed or stale events can be re-applied; {svix_id} was {row.outcome}")
    if row.payload is None:  # `flask maintenance prune` cleared it: there is nothing left to apply
        pruned = f" on {row.payload_pruned_at:%Y-%m-%d}" if row.payload_pruned_at else ""
        raise ReplayRefused(f"the payload of {svix_id} was pruned{pruned}: there is nothing left to re-apply")
    try:
        payload = json.loads(row.payload)
    except (ValueError, RecursionError) as error:  # only parsed bodies are stored, but be sure
        raise ReplayRefused(f"the stored payload is not JSON: {error}") from error
    delivery = _apply(payload, actor=actor, ignore_order=row.outcome == WebhookOutcome.STALE)
    params = {"b_id": svix_id, "b_outcome": delivery.outcome, "b_error": delivery.reason, "b_processed_at": utcnow()}
    db.session.execute(_FINISH_EVENT, params)
    db.session.expire(row)  # the page shows what was written
    return dataclasses.replace(delivery, svix_id=svix_id)
