"""A user's history, read from the audit trail."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa

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


ACTION_LABELS = {
    "user.update": "Edited",
    "user.invite": "Invited",
    "user.create_admin": "Made an administrator",
    "user.suspend": "Suspended",
    "user.reactivate": "Reactivated",
    "user.deactivate": "Marked inactive",
    "user_data.add": "Key-value added",
    "user_data.update": "Key-value edited",
    "user_data.delete": "Key-value deleted",
    "auth.sign_in_link_issued": "Sign-in link issued",
    "auth.signed_in": "Signed in to the dashboard",
    "demo.seed": "Demo data seeded",
    "user.claimed": "Joined through Clerk (invitation claimed)",
    "user.invitation_sent": "Invitation sent by Clerk",
    "user.invitation_revoke": "Invitation revoked",
    "user.invitation_resend": "Invitation sent again",
    "clerk.retry": "Call to Clerk retried",
    "auth.sign_in_refused": "Sign-in link refused",
}


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action, action.replace("_", " ").replace(".", ": "))


def parse_changes(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def history_for(user: User, limit: int = HISTORY_LIMIT) -> list[HistoryEntry]:
    events = db.session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.target_id == user.id)
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    return [HistoryEntry(event, parse_changes(event.changes)) for event in events]
