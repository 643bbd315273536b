"""The deliveries list: newest first, keyset paging over (received_at, id), no COUNT(*)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import defer

from app.extensions import db
from app.models import User, WebhookEvent
from app.pagination import Keyset, KeysetPage, select_page
from app.webhooks.forms import WebhookFilters

NEWEST_FIRST = Keyset((WebhookEvent.received_at, WebhookEvent.id), ("datetime", "text"))


def list_webhook_events(
    filters: WebhookFilters, *, now: datetime, after: str | None = None, per_page: int = 50
) -> KeysetPage:
    """One page of deliveries, newest first; `after` is the cursor of the previous page's last row."""
    # The payload can be up to 1 MiB: the list never loads it.
    query = sa.select(WebhookEvent).options(defer(WebhookEvent.payload))
    if filters.outcome:
        query = query.where(WebhookEvent.outcome == filters.outcome)
    if filters.event_type:
        query = query.where(WebhookEvent.type == filters.event_type)
    if filters.within:
        query = query.where(WebhookEvent.received_at >= filters.received_since(now))
    return select_page(query, NEWEST_FIRST, after=after, per_page=per_page)


def find_clerk_users(clerk_ids: set[str]) -> dict[str, User]:
    """The users these events are about, by Clerk id, in one query (for links on the page)."""
    if not clerk_ids:
        return {}
    users = db.session.scalars(sa.select(User).where(User.clerk_id.in_(clerk_ids)))
    return {user.clerk_id: user for user in users}
