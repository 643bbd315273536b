"""Reading the audit trail: filters by actor, target and action, keyset pages, newest first."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    target: str = ""
    action: str = ""
    source: str = ""

    @classmethod
    def from_args(cls, args) -> AuditFilters:
        def text(name: str) -> str:
            return " ".join(args.get(name, "").split())[:200]

        return cls(actor=text("actor"), target=text("target"), action=text("action"), source=text("source"))

    def to_args(self) -> dict:
        return {k: v for k, v in vars(self).items() if v}


def known_actions() -> list[str]:
    return list(db.session.scalars(sa.select(AuditEvent.action).distinct().order_by(AuditEvent.action)))


def _matches(column_id, column_label, text: str):
    # An id matches exactly; anything else is a case-insensitive part of the label (an email).
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.or_(column_id == text, sa.func.lower(column_label).like(f"%{escaped}%", escape="\\"))


def filtered(filters: AuditFilters) -> sa.Select:
    query = sa.select(AuditEvent)
    if filters.actor:
        query = query.where(_matches(AuditEvent.actor_id, AuditEvent.actor_label, filters.actor))
    if filters.target:
        query = query.where(_matches(AuditEvent.target_id, AuditEvent.target_label, filters.target))
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.source:
        query = query.where(AuditEvent.source == filters.source)
    return query


def encode_cursor(event: AuditEvent) -> str:
    raw = json.dumps([event.occurred_at.isoformat(), event.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None):
    if not cursor or len(cursor) > 500:
        return None
    try:
        when, event_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(when)
        return (when, event_id) if when.tzinfo and isinstance(event_id, str) else None
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


@dataclass
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None
    is_first: bool


def list_events(filters: AuditFilters, *, after: str | None = None, per_page: int = 50) -> AuditPage:
    query = filtered(filters)
    key = decode_cursor(after)
    if key is not None:
        when, event_id = key
        query = query.where(
            sa.tuple_(AuditEvent.occurred_at, AuditEvent.id)
            < sa.tuple_(sa.literal(when, AuditEvent.occurred_at.type), sa.literal(event_id, sa.Text))
        )
    rows = list(
        db.session.scalars(
            query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(per_page + 1)
        )
    )
    events = rows[:per_page]
    return AuditPage(
        events=events,
        next_cursor=encode_cursor(events[-1]) if len(rows) > per_page else None,
        is_first=key is None,
    )
