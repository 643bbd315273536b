"""The users list as CSV, streamed row by row so memory stays flat at any size."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from app.models import User, utcnow
from app.users.queries import UserFilters, iter_users

COLUMNS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "username",
    "role",
    "status",
    "clerk_id",
    "external_id",
    "image_url",
    "last_sign_in_at",
    "created_at",
    "updated_at",
    "deleted_at",
    "public_metadata",
    "private_metadata",
    "unsafe_metadata",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A byte order mark, so Excel reads the file as UTF-8 and keeps accents intact.
BOM = "\ufeff"


def filename() -> str:
    return f"users-{utcnow():%Y%m%d-%H%M%S}.csv"


def cell(value) -> str:
    """Text for a spreadsheet; a leading formula character is quoted so it cannot run."""
    if value is None:
        return ""
    if hasattr(value, "value"):  # enums
        value = value.value
    elif hasattr(value, "isoformat"):
        value = value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def row(user: User) -> list[str]:
    return [cell(getattr(user, column)) for column in COLUMNS]


def rows(filters: UserFilters) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(COLUMNS)
    yield BOM + flush()
    for n, user in enumerate(iter_users(filters), start=1):
        writer.writerow(row(user))
        if n % 500 == 0:
            yield flush()
    yield flush()
