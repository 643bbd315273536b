"""What the pages read from the outbox: the /clerk page, "pending in Clerk", the overview's health."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from app.clerk.outbox import BAN, CREATE_INVITATION, METADATA, REVOKE_INVITATION, UNBAN
from app.extensions import db
from app.models import ClerkCall, ClerkCallState, User, UTCDateTime
from app.pagination import Keyset, KeysetPage, select_page

LABELS: Final = {
    BAN: "Ban in Clerk",
    UNBAN: "Unban in Clerk",
    METADATA: "Update public metadata",
    CREATE_INVITATION: "Send a Clerk invitation",
    REVOKE_INVITATION: "Revoke the Clerk invitation",
}


def pending_user_ids(user_ids: Iterable[str]) -> set[str]:
    """Which of these users have a call not yet in Clerk (pending or failed): one query per page."""
    ids = list(user_ids)
    if not ids:
        return set()
    return set(
        db.session.scalars(
            sa.select(ClerkCall.user_id)
            .distinct()
            .where(
                ClerkCall.user_id.in_(ids),
                ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]),
            )
        )
    )


def open_calls_for(user: User) -> list[ClerkCall]:
    """The user's calls that have not reached Clerk: pending ones and failed ones, oldest first."""
    return list(
        db.session.scalars(
            sa.select(ClerkCall)
            .where(
                ClerkCall.user_id == user.id,
                ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]),
            )
            .order_by(ClerkCall.id)
        )
    )


NEWEST_FIRST = Keyset((ClerkCall.id,), ("int",))


def list_calls(*, state: str | None = None, after: str | None = None, per_page: int = 50) -> KeysetPage:
    """The outbox, newest first, keyset-paged on id (optionally one state)."""
    query = sa.select(ClerkCall).options(sa.orm.selectinload(ClerkCall.user))
    if state:
        query = query.where(ClerkCall.state == state)
    return select_page(query, NEWEST_FIRST, after=after, per_page=per_page)


def describe(call: ClerkCall) -> str:
    payload = json.loads(call.payload)
    label = LABELS.get(call.operation, call.operation)
    if call.operation == METADATA:
        values = ", ".join(f"{k}={v}" for k, v in sorted(payload.get("public_metadata", {}).items()))
        return f"{label}: {values}"
    if call.operation == CREATE_INVITATION:
        return f"{label} to {payload.get('email_address')} (role {payload.get('public_metadata', {}).get('role')})"
    return label


def outbox_health() -> dict[str, Any]:
    """Counts for the outbox page: pending, failed and the oldest pending call's age."""
    counts = dict(
        db.session.execute(
            sa.select(ClerkCall.state, sa.func.count())
            .where(ClerkCall.state.in_([ClerkCallState.PENDING.value, ClerkCallState.FAILED.value]))
            .group_by(ClerkCall.state)
        ).all()
    )
    oldest: datetime | None = db.session.scalar(
        sa.select(sa.func.min(ClerkCall.created_at, type_=UTCDateTime)).where(
            ClerkCall.state == ClerkCallState.PENDING.value
        )
    )
    return {"pending": counts.get("pending", 0), "failed": counts.get("failed", 0), "oldest_pending": oldest}
