"""The deliveries list: newest first, keyset paging over (received_at, id), no COUNT(*)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import defer

from app.extensions import db
from app.models import User, WebhookEvent


def encode_cursor(event: WebhookEvent) -> str:
    raw = json.dumps([event.received_at.isoformat(), event.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A cursor from the URL; anything malformed means "from the newest"."""
    if not cursor or len(cursor) > 500:
        return None
    try:
        received_at, event_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(received_at)
        if when.tzinfo is None or not isinstance(event_id, str):
            return None
        return when, event_id
    except (ValueError, TypeError):
        return None


@dataclass
class EventPage:
    events: list[WebhookEvent]
    next_cursor: str | None
    is_first: bool


def list_webhook_events(
    *, outcome: str | None = None, event_type: str | None = None, after: str | None = None, per_page: int = 50
) -> EventPage:
    """One page of deliveries, newest first; `after` is the cursor of the previous page's last row."""
    # The payload can be up to 1 MiB: the list never loads it.
    query = sa.select(WebhookEvent).options(defer(WebhookEvent.payload))
    if outcome:
        query = query.where(WebhookEvent.outcome == outcome)
    if event_type:
        query = query.where(WebhookEvent.type == event_type)
    after_key = decode_cursor(after)
    if after_key is not None:
        received_at, event_id = after_key
        query = query.where(
            sa.tuple_(WebhookEvent.received_at, WebhookEvent.id)
            < sa.tuple_(sa.literal(received_at, WebhookEvent.received_at.type), sa.literal(event_id, sa.Text))
        )
    rows = list(
        db.session.scalars(
            query.order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc()).limit(per_page + 1)
        )
    )
    events = rows[:per_page]
    return EventPage(
        events=events,
        next_cursor=encode_cursor(events[-1]) if len(rows) > per_page else None,
        is_first=after_key is None,
    )


def find_clerk_users(clerk_ids: set[str]) -> dict[str, User]:
    """The users these events are about, by Clerk id, in one query (for links on the page)."""
    if not clerk_ids:
        return {}
    users = db.session.scalars(sa.select(User).where(User.clerk_id.in_(clerk_ids)))
    return {user.clerk_id: user for user in users}
