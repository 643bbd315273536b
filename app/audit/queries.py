"""Reading the audit trail: filters by actor, target and action, keyset pages, newest first."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent
from app.pagination import newest_first


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


@dataclass
class AuditPage:
    events: list[AuditEvent]
    next_cursor: str | None
    is_first: bool


def list_events(filters: AuditFilters, *, after: str | None = None, per_page: int = 50) -> AuditPage:
    page = newest_first(filtered(filters), AuditEvent.occurred_at, AuditEvent.id, after=after, per_page=per_page)
    return AuditPage(events=page.rows, next_cursor=page.next_cursor, is_first=page.is_first)
