"""Keyset pages over (a timestamp, an id), newest first: the same cost on page 1 and page 10,000.

The audit trail and the webhook deliveries use this; the users list has its own pager because
it sorts by several keys (app/users/queries.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from app.extensions import db
from app.input_guard import text_problem

MAX_CURSOR_ID_LENGTH = 500


def cursor_parts(cursor: str | None, max_length: int = 500) -> list | None:
    """The JSON array inside a cursor, or None when it is missing, too long or not one."""
    if not cursor or len(cursor) > max_length:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        return None
    return parts if isinstance(parts, list) else None


def cursor_text(value: Any, max_length: int = MAX_CURSOR_ID_LENGTH) -> str | None:
    """A text part of a cursor that a database can compare (no NUL, no lone surrogate), or None."""
    if not isinstance(value, str) or len(value) > max_length or text_problem(value):
        return None
    return value


def cursor_time(value: Any) -> datetime | None:
    """A timestamp part of a cursor, in UTC, or None when it is not one or leaves the calendar in UTC."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
        # Year 1 at +14:00 is a valid datetime whose UTC is not: convert here, not in the query.
        return when.astimezone(UTC) if when.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def encode_cursor(when: datetime, row_id: str) -> str:
    raw = json.dumps([when.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A cursor from the URL, or None when it is missing or malformed ("from the newest")."""
    parts = cursor_parts(cursor)
    if parts is None or len(parts) != 2:
        return None
    when, row_id = cursor_time(parts[0]), cursor_text(parts[1])
    if when is None or row_id is None:
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
