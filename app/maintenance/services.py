"""Retention for the tables that only grow: each delivery leaves a `webhook_events` row with its raw
payload, each change an `audit_events` row, each call to Clerk a `clerk_outbox` row.

The work is done in batches the caller commits one by one, so it can run while the dashboard
serves: each batch picks at most `limit` rows by the time index, oldest first (on PostgreSQL
`FOR UPDATE SKIP LOCKED`: a row a request holds is left for the next run), and updates or deletes
those rows (by address on PostgreSQL, by id on SQLite). Nothing locks a table; stopping between or inside batches leaves every row whole,
and a later run carries on from the oldest rows still due. Nothing here commits.

What is kept, whatever the settings: a delivery's row for at least MIN_WEBHOOK_DAYS (its svix id
is what makes a retry a duplicate), calls to Clerk still pending or refused (an admin decides about
those), and every audit event unless audit_days is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from app.audit.services import Actor, record
from app.extensions import db
from app.models import AuditEvent, ClerkCall, ClerkCallState, WebhookEvent

# Svix retries a message for about a day and a half (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h);
# until the last retry the delivery's row must be there, or a retry of an applied message is
# applied a second time. A week leaves room for a retry by hand from Clerk's dashboard.
MIN_WEBHOOK_DAYS = 7
# Finished calls to Clerk: sent, or replaced by a newer call before they were sent. Pending calls
# are still to be sent; refused ones (`failed`) wait for an admin's Retry or "take Clerk's value".
FINISHED_CALLS = (ClerkCallState.DELIVERED.value, ClerkCallState.SUPERSEDED.value)

PRUNE_ACTION = "maintenance.prune"


class RetentionRefused(ValueError):
    """The retention asked for would break a guarantee; the message says which."""


@dataclass(frozen=True)
class Retention:
    """How many days each kind of row is kept; None keeps it for good."""

    payload_days: int | None
    webhook_days: int | None
    audit_days: int | None = None
    outbox_days: int | None = None

    @classmethod
    def from_config(cls, config: Mapping, **given: int | None) -> Retention:
        """The RETENTION_* settings, each overridden by a value `given` (not None); 0 keeps for good."""
        keys = {
            "payload_days": "RETENTION_WEBHOOK_PAYLOAD_DAYS",
            "webhook_days": "RETENTION_WEBHOOK_DAYS",
            "audit_days": "RETENTION_AUDIT_DAYS",
            "outbox_days": "RETENTION_OUTBOX_DAYS",
        }
        days = {name: given.get(name) if given.get(name) is not None else config.get(key) for name, key in keys.items()}
        for name, value in days.items():
            if value is not None and value < 0:
                raise RetentionRefused(f"{name.replace('_', '-')} must be 0 (keep) or a number of days, not {value}")
        retention = cls(**{name: value or None for name, value in days.items()})
        retention.check()
        return retention

    def check(self) -> None:
        if self.webhook_days is not None and self.webhook_days < MIN_WEBHOOK_DAYS:
            raise RetentionRefused(
                f"webhook deliveries must be kept at least {MIN_WEBHOOK_DAYS} days, not {self.webhook_days}: Svix "
                "retries a message for up to about a day and a half, and the delivery's row (its svix id) is what "
                "makes a retry a duplicate instead of applying the event twice"
            )
        if self.webhook_days is not None and self.payload_days is not None and self.webhook_days < self.payload_days:
            raise RetentionRefused(
                f"webhook deliveries ({self.webhook_days} days) must be kept at least as long as their payloads "
                f"({self.payload_days} days)"
            )

    def steps(self, now: datetime) -> list[PruneStep]:
        """What a run does, in order: old deliveries first, so their payloads are not cleared in vain."""
        steps = []
        delivery_cutoff = now - timedelta(days=self.webhook_days) if self.webhook_days else None
        if delivery_cutoff is not None:
            steps.append(PruneStep(DELIVERIES, self.webhook_days, delivery_cutoff))
        if self.payload_days:
            steps.append(
                PruneStep(PAYLOADS, self.payload_days, now - timedelta(days=self.payload_days), delivery_cutoff)
            )
        if self.audit_days:
            steps.append(PruneStep(AUDIT_EVENTS, self.audit_days, now - timedelta(days=self.audit_days)))
        if self.outbox_days:
            steps.append(PruneStep(OUTBOX_CALLS, self.outbox_days, now - timedelta(days=self.outbox_days)))
        return steps

    def kept(self) -> list[str]:
        """What this retention keeps for good, to say so."""
        names = {
            "payload_days": "webhook payloads",
            "webhook_days": "webhook deliveries",
            "audit_days": "audit events",
            "outbox_days": "finished calls to Clerk",
        }
        return [label for name, label in names.items() if getattr(self, name) is None]


# --- one batch of each kind -------------------------------------------------------------------


def _oldest(model: type, due: sa.ColumnElement[bool], time_column: sa.ColumnElement, limit: int):
    """Which rows a batch takes: at most `limit` rows of `model` that are `due`, oldest first; rows
    another transaction holds are skipped (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite has one
    writer at a time and no row locks). A condition for the batch's UPDATE or DELETE.

    On PostgreSQL the rows are named by their address (`ctid`, stable while they are locked), so
    the UPDATE or DELETE goes straight to their pages; named by id, each was looked up in the
    primary key, a random read each: a batch of 1,000 audit events took over 5 s on a cold cache."""
    if db.session.get_bind().dialect.name == "postgresql":
        ctid = sa.literal_column("ctid")
        picked = sa.select(ctid).select_from(model).where(due)
        picked = picked.order_by(time_column).limit(limit).with_for_update(skip_locked=True)
        return ctid == sa.func.any(sa.func.array(picked.scalar_subquery()))
    key = model.__table__.c.id
    picked = sa.select(key).where(due).order_by(time_column).limit(limit).with_for_update(skip_locked=True)
    return key.in_(picked.scalar_subquery())


def delete_deliveries(cutoff: datetime, limit: int, now: datetime) -> int:
    """Delete up to `limit` deliveries received before `cutoff`; the number deleted."""
    picked = _oldest(WebhookEvent, WebhookEvent.received_at < cutoff, WebhookEvent.received_at, limit)
    return db.session.execute(sa.delete(WebhookEvent.__table__).where(picked)).rowcount


def clear_payloads(cutoff: datetime, limit: int, now: datetime) -> int:
    """Clear the payload of up to `limit` deliveries received before `cutoff` (through the partial
    index of those whose payload is kept); the row and its outcome stay. The number cleared."""
    due = sa.and_(WebhookEvent.payload.is_not(None), WebhookEvent.received_at < cutoff)
    picked = _oldest(WebhookEvent, due, WebhookEvent.received_at, limit)
    statement = sa.update(WebhookEvent.__table__).where(picked).values(payload=None, payload_pruned_at=now)
    return db.session.execute(statement).rowcount


def delete_audit_events(cutoff: datetime, limit: int, now: datetime) -> int:
    """Delete up to `limit` audit events older than `cutoff`; the number deleted."""
    picked = _oldest(AuditEvent, AuditEvent.occurred_at < cutoff, AuditEvent.occurred_at, limit)
    return db.session.execute(sa.delete(AuditEvent.__table__).where(picked)).rowcount


def delete_finished_calls(cutoff: datetime, limit: int, now: datetime) -> int:
    """Delete up to `limit` delivered or superseded calls to Clerk made before `cutoff` (never a
    pending or refused one); the number deleted."""
    due = sa.and_(ClerkCall.state.in_(FINISHED_CALLS), ClerkCall.created_at < cutoff)
    picked = _oldest(ClerkCall, due, ClerkCall.id, limit)  # ids grow with created_at
    return db.session.execute(sa.delete(ClerkCall.__table__).where(picked)).rowcount


def _count(condition: sa.ColumnElement[bool], newer: sa.ColumnElement[bool] | None) -> int:
    _no_statement_timeout()
    where = [condition] if newer is None else [condition, newer]
    return db.session.scalar(sa.select(sa.func.count()).where(*where))


def _no_statement_timeout() -> None:
    """A count over millions of rows is not a request: lift the statement timeout for this
    transaction (PostgreSQL; the batches themselves stay short and keep it)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL statement_timeout = 0"))


@dataclass(frozen=True)
class Kind:
    """One kind of row a run prunes: its summary key, how progress names it, one batch, a count."""

    key: str
    noun: str
    verb: str
    prune: Callable[[datetime, int, datetime], int]  # (cutoff, limit, now) -> rows pruned
    count: Callable[[datetime, datetime | None], int]  # (cutoff, newer_than) -> rows due

    @property
    def label(self) -> str:
        return f"{self.noun} {self.verb}"


DELIVERIES = Kind(
    "webhook_events_deleted",
    "webhook deliveries",
    "deleted",
    delete_deliveries,
    lambda cutoff, newer: _count(WebhookEvent.received_at < cutoff, None),
)
PAYLOADS = Kind(
    "webhook_payloads_cleared",
    "webhook payloads",
    "cleared",
    clear_payloads,
    lambda cutoff, newer: _count(
        sa.and_(WebhookEvent.payload.is_not(None), WebhookEvent.received_at < cutoff),
        WebhookEvent.received_at >= newer if newer is not None else None,
    ),
)
AUDIT_EVENTS = Kind(
    "audit_events_deleted",
    "audit events",
    "deleted",
    delete_audit_events,
    lambda cutoff, newer: _count(AuditEvent.occurred_at < cutoff, None),
)
OUTBOX_CALLS = Kind(
    "clerk_outbox_deleted",
    "finished calls to Clerk",
    "deleted",
    delete_finished_calls,
    lambda cutoff, newer: _count(sa.and_(ClerkCall.state.in_(FINISHED_CALLS), ClerkCall.created_at < cutoff), None),
)


@dataclass(frozen=True)
class PruneStep:
    """One kind of row, older than `cutoff` (`days` before the run started)."""

    kind: Kind
    days: int
    cutoff: datetime
    # Rows older than this are an earlier step's (deleted deliveries need no payload cleared).
    newer_than: datetime | None = None

    def prune_batch(self, limit: int, *, now: datetime) -> int:
        """Prune at most `limit` rows in the caller's transaction; the number pruned."""
        return self.kind.prune(self.cutoff, limit, now)

    def count_due(self) -> int:
        """How many rows the step would prune now (for a dry run)."""
        return self.kind.count(self.cutoff, self.newer_than)


def record_prune(
    retention: Retention, pruned: Mapping[str, int], *, actor: Actor, interrupted: bool = False
) -> AuditEvent:
    """The run's one audit event: what it pruned, with the retention it applied."""
    changes: dict[str, object] = {kind.key: pruned.get(kind.key, 0) for kind in KINDS}
    changes |= {
        "webhook_payload_days": retention.payload_days or "kept",
        "webhook_days": retention.webhook_days or "kept",
        "audit_days": retention.audit_days or "kept",
        "outbox_days": retention.outbox_days or "kept",
    }
    if interrupted:
        changes["interrupted"] = True
    return record(PRUNE_ACTION, actor=actor, changes=changes)


KINDS = (DELIVERIES, PAYLOADS, AUDIT_EVENTS, OUTBOX_CALLS)
