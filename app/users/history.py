"""A user's history, read from the audit trail."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.audit.labels import action_label, parse_changes
from app.extensions import db
from app.models import AuditEvent, User

HISTORY_LIMIT = 50


@dataclass
class HistoryEntry:
    event: AuditEvent
    changes: dict

    @property
    def action_label(self) -> str:
        return action_label(self.event.action)


def history_for(user: User, limit: int = HISTORY_LIMIT) -> list[HistoryEntry]:
    events = db.session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.target_id == user.id)
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    return [HistoryEntry(event, parse_changes(event.changes)) for event in events]
