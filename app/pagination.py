"""Keyset pages over (a timestamp, an id), newest first: the same cost on page 1 and page 10,000.

The audit trail and the webhook deliveries use this; the users list has its own pager because
it sorts by several keys (app/users/queries.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from app.extensions import db


def encode_cursor(when: datetime, row_id: str) -> str:
    raw = json.dumps([when.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A cursor from the URL, or None when it is missing or malformed ("from the newest")."""
    if not cursor or len(cursor) > 500:
        return None
    try:
        when, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(when)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    if when.tzinfo is None or not isinstance(row_id, str):
        return None
    return when, row_id


@dataclass
class NewestFirstPage:
    rows: list[Any]
    next_cursor: str | None
    is_first: bool


def newest_first(query: sa.Select, when: sa.Column, row_id: sa.Column, *, after: str | None, per_page: int) -> NewestFirstPage:
    """One page of `query` ordered by (when, id) descending, after the cursor `after`."""
    key = decode_cursor(after)
    if key is not None:
        query = query.where(
            sa.tuple_(when, row_id) < sa.tuple_(sa.literal(key[0], when.type), sa.literal(key[1], sa.Text))
        )
    rows = list(db.session.scalars(query.order_by(when.desc(), row_id.desc()).limit(per_page + 1)))
    page = rows[:per_page]
    last = page[-1] if page else None
    return NewestFirstPage(
        rows=page,
        next_cursor=encode_cursor(getattr(last, when.key), getattr(last, row_id.key)) if len(rows) > per_page else None,
        is_first=key is None,
    )
