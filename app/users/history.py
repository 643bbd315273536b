"""A user's history, read from the audit trail."""

from __future__ import annotations

from app.audit.queries import HistoryEntry, history
from app.models import AuditEvent, User

HISTORY_LIMIT = 50


def history_for(user: User, limit: int = HISTORY_LIMIT) -> list[HistoryEntry]:
    return history(AuditEvent.target_id == user.id, limit)
