"""Every list's machinery: one keyset page type, one cursor codec, one pager, one filter binding.

Not sqlakeyset: it runs the query itself with the keyset condition outside, where the users
search reads a window of the list from the cursor on (app/users/queries.py); on psycopg 3 it
spells the condition as AND/OR instead of a row comparison (other plans); its bookmarks take
their types from the URL and have none of the checks below.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from app.database import text_problem
from app.extensions import db

MAX_CURSOR_LENGTH = 2000
MAX_INT = 2**31 - 1  # an INTEGER column: a larger number is no row, not a query error


# --- the cursor codec --------------------------------------------------------------------------


def encode_cursor(*values: Any) -> str:
    """A URL-safe cursor for a row's key (text, integers, timestamps)."""
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else v for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, *kinds: str) -> tuple | None:
    """The key in a cursor, one part per kind ("datetime", "text", "int"), or None when it is
    missing or malformed: only parts a query can bind are kept (a timestamp that converts to
    UTC, text without NUL or lone surrogates, an INTEGER), anything else means the first page."""
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(parts, list) or len(parts) != len(kinds):
        return None
    key = tuple(_PARTS[kind](part) for kind, part in zip(kinds, parts, strict=True))
    return None if any(part is None for part in key) else key


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
        # Year 1 at +14:00 is a valid datetime whose UTC is not: convert here, not in the query.
        return when.astimezone(UTC) if when.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and not text_problem(value) else None


def _int(value: Any) -> int | None:
    return value if type(value) is int and -MAX_INT - 1 <= value <= MAX_INT else None


_PARTS: dict[str, Callable[[Any], Any]] = {"datetime": _time, "text": _text, "int": _int}


# --- pages -------------------------------------------------------------------------------------


@dataclass
class KeysetPage:
    rows: list[Any]
    next_cursor: str | None = None
    prev_cursor: str | None = None
    is_first: bool = True
    per_page: int = 50


@dataclass(frozen=True)
class Keyset:
    """The order a list pages in: its key columns (the last one unique), their cursor kinds, and
    `tag`, a first cursor part naming the order (a cursor of another order means the first page)."""

    columns: tuple[sa.ColumnElement, ...]
    kinds: tuple[str, ...]
    descending: bool = True
    tag: str | None = None

    def cursor(self, key: Sequence) -> str:
        return encode_cursor(*((self.tag,) if self.tag is not None else ()), *key)

    def decode(self, cursor: str | None) -> tuple | None:
        if self.tag is None:
            return decode_cursor(cursor, *self.kinds)
        key = decode_cursor(cursor, "text", *self.kinds)
        return key[1:] if key is not None and key[0] == self.tag else None

    def beyond(self, key: tuple, *, backwards: bool = False) -> sa.ColumnElement[bool]:
        """Rows after `key` in this order (before it, `backwards`), each value bound as its column."""
        bound = [sa.literal(value, column.type) for value, column in zip(key, self.columns, strict=True)]
        row, place = (self.columns[0], bound[0]) if len(bound) == 1 else (sa.tuple_(*self.columns), sa.tuple_(*bound))
        return row < place if self.descending != backwards else row > place

    def order_by(self, columns: Sequence[sa.ColumnElement] | None = None, *, backwards: bool = False) -> list:
        descending = self.descending != backwards
        return [c.desc() if descending else c.asc() for c in (columns or self.columns)]


def keyset_page(
    keyset: Keyset,
    fetch: Callable[[sa.ColumnElement[bool] | None, bool, int], list],
    key_of: Callable[[Any], Sequence],
    *,
    after: str | None = None,
    before: str | None = None,
    per_page: int = 50,
) -> KeysetPage:
    """One page after the cursor `after` (or before `before`): `fetch(condition, backwards, limit)`
    reads rows in the keyset's order (reversed when `backwards`), `key_of(row)` gives a row's key."""
    after_key, before_key = keyset.decode(after), keyset.decode(before)
    if before_key is not None and after_key is None:
        # Walk back from the cursor, then put the page in display order.
        rows = fetch(keyset.beyond(before_key, backwards=True), True, per_page + 1)
        more_before = len(rows) > per_page
        rows = list(reversed(rows[:per_page]))
        return KeysetPage(
            rows=rows,
            next_cursor=keyset.cursor(key_of(rows[-1])) if rows else None,
            prev_cursor=keyset.cursor(key_of(rows[0])) if rows and more_before else None,
            is_first=not more_before,
            per_page=per_page,
        )
    rows = fetch(keyset.beyond(after_key) if after_key is not None else None, False, per_page + 1)
    page = rows[:per_page]
    return KeysetPage(
        rows=page,
        next_cursor=keyset.cursor(key_of(page[-1])) if len(rows) > per_page else None,
        prev_cursor=keyset.cursor(key_of(page[0])) if after_key is not None and page else None,
        is_first=after_key is None,
        per_page=per_page,
    )


def select_page(query: sa.Select, keyset: Keyset, *, after=None, before=None, per_page: int = 50) -> KeysetPage:
    """`keyset_page` for a select of model rows whose key columns are attributes of each row."""

    def fetch(condition, backwards: bool, limit: int) -> list:
        ordered = query.where(condition) if condition is not None else query
        return list(db.session.scalars(ordered.order_by(*keyset.order_by(backwards=backwards)).limit(limit)))

    def key_of(row) -> tuple:
        return tuple(getattr(row, column.key) for column in keyset.columns)

    return keyset_page(keyset, fetch, key_of, after=after, before=before, per_page=per_page)


# --- filters bound from the query string -------------------------------------------------------


def ordered(key, row_id, descending: bool) -> tuple:
    """ORDER BY a sort key with the row's id as tie-breaker, as every keyset list pages."""
    return (key.desc(), row_id.desc()) if descending else (key.asc(), row_id.asc())


def search_rows(
    model: type,
    *,
    unsearched: sa.Select | None,
    searched: sa.Select,
    hit: sa.ColumnElement[bool] | None,
    sort_key: sa.ColumnElement,
    condition: sa.ColumnElement[bool] | None,
    descending: bool,
    limit: int,
    window: int,
    options: Callable[[Any], Sequence] = lambda _entity: (),
) -> list:
    """A page of (row, sort key) for a search on PostgreSQL, without letting the planner gamble
    on the term (the users list and the organizations list).

    Left alone, PostgreSQL either walks the sort index and filters (fast for a common term, a
    scan of the table for a rare one) or reads every match through the trigram index and sorts
    them (fast for a rare term, tens of thousands of rows for a common one), choosing on an
    estimate of how common the term is that is often wrong. So: first read the next `window`
    rows of the list in its order (`unsearched`: the filters but the search) and keep those
    that are a `hit`; a common term fills the page there. Otherwise the term is rare, and its
    every match (`searched`: a few thousand at most) comes from the search index, materialised,
    then sorted. A `window` of 0 goes straight there (a term known to be rare). `options(entity)`:
    loader options for the rows' entity (what else to load with them).
    """
    key = model.__mapper__.primary_key[0]
    if window:
        rows = _window_hits(model, unsearched, hit, sort_key, condition, descending, limit, window, options)
        if len(rows) == limit:
            return rows
    hits = searched.with_only_columns(key, sort_key.label("sort_key"))
    if condition is not None:
        hits = hits.where(condition)
    hits = hits.cte("hits").prefix_with("MATERIALIZED")
    first = sa.select(hits).order_by(*ordered(hits.c.sort_key, hits.c[key.name], descending)).limit(limit)
    first = first.subquery("first")
    return db.session.execute(
        sa.select(model, first.c.sort_key)
        .options(*options(model))
        .join(first, first.c[key.name] == key)
        .order_by(*ordered(first.c.sort_key, first.c[key.name], descending))
    ).all()


def _window_hits(model, unsearched, hit, sort_key, condition, descending, limit, window, options) -> list:
    key = model.__mapper__.primary_key[0]
    rows_window = unsearched.add_columns(sort_key.label("sort_key"), hit.label("hit"))
    if condition is not None:
        rows_window = rows_window.where(condition)
    rows_window = rows_window.order_by(*ordered(sort_key, key, descending)).limit(window).subquery("window")
    row = aliased(model, rows_window)
    return db.session.execute(
        sa.select(row, rows_window.c.sort_key)
        .options(*options(row))
        .where(rows_window.c.hit)
        .order_by(*ordered(rows_window.c.sort_key, rows_window.c[key.name], descending))
        .limit(limit)
    ).all()


def arg(default: Any, read: Callable[[Any, str], Any], *, name: str | None = None, write=None, narrows=True):
    """A filter field bound to the query-string parameter `name` (the field's own by default):
    `read(args, name)` gives its value, or None to keep the default; `write` turns it back."""
    return field(default=default, metadata={"arg": (name, read, write or (lambda v: v), narrows)})


def text_arg(max_length: int = 200, **kw):
    """Free text, whitespace folded, cut at `max_length`."""
    return arg("", lambda args, name: " ".join(args.get(name, "").split())[:max_length], **kw)


def choice_arg(choices, default: Any = None, **kw):
    """One of `choices` (a collection, or a predicate), else the default."""
    allowed = choices if callable(choices) else (lambda value, c=frozenset(choices): value in c)
    return arg(default, lambda args, name: v if (v := args.get(name)) and allowed(v) else None, **kw)


def many_arg(enum: type, **kw):
    """Several values of an enum (repeated parameter), unknown ones and repeats dropped."""

    def read(args, name):
        values = dict.fromkeys(args.getlist(name))
        return tuple(enum(v) for v in values if v in enum._value2member_map_)

    return arg((), read, write=lambda values: [v.value for v in values], **kw)


def flag_arg(**kw):
    return arg(False, lambda args, name: args.get(name) in {"1", "on", "true", "y"}, write=lambda _: "1", **kw)


def int_arg(choices, **kw):
    return arg(None, lambda args, name: n if (n := args.get(name, type=int)) in choices else None, **kw)


@dataclass(frozen=True)
class ListFilters:
    """A list's filters: a frozen dataclass of `arg` fields. Every field has a safe default, so a
    bad URL just shows more; `to_args()` writes back what differs from the defaults, for links."""

    @classmethod
    def from_args(cls, args):
        values = {}
        for f, (name, read, _, _) in cls._args():
            value = read(args, name or f.name)
            if value is not None:
                values[f.name] = value
        return cls(**values)

    def to_args(self, **overrides) -> dict:
        current = replace(self, **overrides) if overrides else self
        return {
            name or f.name: write(value)
            for f, (name, _, write, _) in current._args()
            if (value := getattr(current, f.name)) != f.default and value
        }

    @property
    def is_filtered(self) -> bool:
        """Whether the filters narrow the list (an order or a page size does not)."""
        return any(getattr(self, f.name) != f.default for f, (_, _, _, narrows) in self._args() if narrows)

    @classmethod
    def arg_names(cls) -> list[str]:
        return [name or f.name for f, (name, *_) in cls._args()]

    @classmethod
    def _args(cls):
        return [(f, f.metadata["arg"]) for f in fields(cls) if "arg" in f.metadata and f.default is not MISSING]
