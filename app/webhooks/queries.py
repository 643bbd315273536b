"""The deliveries list: newest first, keyset paging over (received_at, id), no COUNT(*)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import defer

from app.extensions import db
from app.models import User, WebhookEvent
from app.pagination import newest_first


@dataclass
class EventPage:
    events: list[WebhookEvent]
    next_cursor: str | None
    is_first: bool


def list_webhook_events(
    *,
    outcome: str | None = None,
    event_type: str | None = None,
    received_since: datetime | None = None,
    after: str | None = None,
    per_page: int = 50,
) -> EventPage:
    """One page of deliveries, newest first; `after` is the cursor of the previous page's last row."""
    # The payload can be up to 1 MiB: the list never loads it.
    query = sa.select(WebhookEvent).options(defer(WebhookEvent.payload))
    if outcome:
        query = query.where(WebhookEvent.outcome == outcome)
    if event_type:
        query = query.where(WebhookEvent.type == event_type)
    if received_since is not None:
        query = query.where(WebhookEvent.received_at >= received_since)
    page = newest_first(query, WebhookEvent.received_at, WebhookEvent.id, after=after, per_page=per_page)
    return EventPage(events=page.rows, next_cursor=page.next_cursor, is_first=page.is_first)


def find_clerk_users(clerk_ids: set[str]) -> dict[str, User]:
    """The users these events are about, by Clerk id, in one query (for links on the page)."""
    if not clerk_ids:
        return {}
    users = db.session.scalars(sa.select(User).where(User.clerk_id.in_(clerk_ids)))
    return {user.clerk_id: user for user in users}
