"""The users list: keyset pagination over (created_at, id), newest first, no COUNT(*)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from app.extensions import db
from app.models import User


def encode_cursor(user: User) -> str:
    raw = json.dumps([user.created_at.isoformat(), user.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A cursor from the URL; anything malformed means "from the start"."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, user_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(user_id, str):
            return None
        return when, user_id
    except (ValueError, TypeError):
        return None


@dataclass
class UserPage:
    users: list[User]
    next_cursor: str | None
    prev_cursor: str | None
    is_first: bool


def list_users(*, after: str | None = None, before: str | None = None, per_page: int = 50) -> UserPage:
    """One page of live users, newest first; `after`/`before` are cursors from a previous page."""
    query = sa.select(User).where(User.deleted_at.is_(None))
    after_key, before_key = decode_cursor(after), decode_cursor(before)
    key = sa.tuple_(User.created_at, User.id)

    if before_key is not None and after_key is None:
        # Walk backwards from the cursor, then put the page back in display order.
        rows = list(
            db.session.scalars(
                query.where(key > sa.tuple_(*_bind(before_key)))
                .order_by(User.created_at.asc(), User.id.asc())
                .limit(per_page + 1)
            )
        )
        has_more_before = len(rows) > per_page
        users = list(reversed(rows[:per_page]))
        return UserPage(
            users=users,
            next_cursor=encode_cursor(users[-1]) if users else None,
            prev_cursor=encode_cursor(users[0]) if users and has_more_before else None,
            is_first=not has_more_before,
        )

    if after_key is not None:
        query = query.where(key < sa.tuple_(*_bind(after_key)))
    rows = list(
        db.session.scalars(query.order_by(User.created_at.desc(), User.id.desc()).limit(per_page + 1))
    )
    users = rows[:per_page]
    return UserPage(
        users=users,
        next_cursor=encode_cursor(users[-1]) if len(rows) > per_page else None,
        prev_cursor=encode_cursor(users[0]) if after_key is not None and users else None,
        is_first=after_key is None,
    )


def _bind(key: tuple[datetime, str]):
    created_at, user_id = key
    return sa.literal(created_at, User.created_at.type), sa.literal(user_id, sa.Text)
