"""Reading users for the list, the count and the export: filters, sorts and keyset pagination.

Every query here is served by an index on PostgreSQL (see migration 0003): a trigram index on
`SEARCH_TEXT` for substring search, b-tree indexes for each sort key followed by `id`. Pages are
cursors over (sort key, id), never OFFSET, and nothing counts more than `COUNT_CAP` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.orm import with_expression

from app.clerk.outbox import has_open_calls
from app.extensions import db
from app.models import NAME_SORT_KEY, SIGN_IN_SORT_KEY, User, UserRole, UserStatus, names_one_user
from app.models import user_search_condition as search_condition
from app.pagination import (
    Keyset,
    KeysetPage,
    ListFilters,
    choice_arg,
    flag_arg,
    int_arg,
    keyset_page,
    many_arg,
    ordered,
    search_rows,
    text_arg,
)

COUNT_CAP = 10_000
MAX_QUERY_LENGTH = 200
# A search first looks for a page of matches among this many rows of the list in its order
# (enough for any common term), and only then asks the search index for every match.
SEARCH_WINDOW = 6000
PER_PAGE_CHOICES = (10, 25, 50, 100)


@dataclass(frozen=True)
class Sort:
    name: str
    label: str
    key: sa.ColumnElement
    descending: bool
    kind: str  # how the cursor stores the key: "datetime" or "text"


SORTS: dict[str, Sort] = {
    s.name: s
    for s in (
        Sort("-created_at", "Newest first", User.created_at, True, "datetime"),
        Sort("created_at", "Oldest first", User.created_at, False, "datetime"),
        Sort("-last_sign_in_at", "Last signed in", SIGN_IN_SORT_KEY, True, "datetime"),
        Sort("last_sign_in_at", "Longest since sign-in", SIGN_IN_SORT_KEY, False, "datetime"),
        Sort("email", "Email A–Z", User.email, False, "text"),
        Sort("-email", "Email Z–A", User.email, True, "text"),
        Sort("name", "Name A–Z", NAME_SORT_KEY, False, "text"),
        Sort("-name", "Name Z–A", NAME_SORT_KEY, True, "text"),
    )
}
DEFAULT_SORT = "-created_at"


@dataclass(frozen=True)
class UserFilters(ListFilters):
    """What the list shows; every field has a safe default, so a bad URL just shows more."""

    q: str = text_arg(MAX_QUERY_LENGTH)
    roles: tuple[UserRole, ...] = many_arg(UserRole, name="role")
    statuses: tuple[UserStatus, ...] = many_arg(UserStatus, name="status")
    sort: str = choice_arg(SORTS, DEFAULT_SORT, narrows=False)
    include_deleted: bool = flag_arg(name="deleted")
    locked_only: bool = flag_arg(name="locked")
    per_page: int | None = int_arg(PER_PAGE_CHOICES, narrows=False)  # None: the configured default


def filtered(filters: UserFilters) -> sa.Select:
    query = sa.select(User)
    if not filters.include_deleted:
        query = query.where(User.deleted_at.is_(None))
    if filters.roles:
        query = query.where(User.role.in_(filters.roles))
    if filters.statuses:
        query = query.where(User.status.in_(filters.statuses))
    if filters.locked_only:
        # `WHERE users.locked` on PostgreSQL: the very predicate of ix_users_locked_created_at, so the
        # planner matches the partial index without having to prove `locked IS true` implies it.
        query = query.where(User.locked)
    if filters.q:
        query = query.where(search_condition(filters.q))
    return query


# --- pages ---------------------------------------------------------------------------------


def keyset(sort: Sort) -> Keyset:
    """The order of a sort: (sort key, id), the sort's name first in its cursors."""
    return Keyset((sort.key, User.id), (sort.kind, "text"), descending=sort.descending, tag=sort.name)


def list_users(
    filters: UserFilters,
    *,
    after: str | None = None,
    before: str | None = None,
    per_page: int = 50,
    windowed: bool = True,
    with_open_calls: bool = True,
) -> KeysetPage:
    """One page of users in the chosen order; `after`/`before` are cursors from a neighbouring page.

    `windowed=False` leaves a search's plan to PostgreSQL: right for reading every match in
    batches (the export), where one page's worth of latency matters less than the total. Each
    user comes with `has_open_calls` (calls about them wait for Clerk) unless `with_open_calls`
    is False: a column of the page's query, so that a page asks the outbox only about those.
    """
    sort = SORTS[filters.sort]
    window = None  # no search, SQLite, or the export: a plain query
    if windowed and filters.q and db.session.get_bind().dialect.name == "postgresql":
        window = 0 if names_one_user(filters.q) else SEARCH_WINDOW

    def options(entity) -> tuple:
        if not with_open_calls:
            return ()
        if entity is User:
            return _WITH_OPEN_CALLS  # built once: a page pays nothing to make it
        return (with_expression(entity.has_open_calls, has_open_calls(entity.id)),)

    def fetch(condition, backwards: bool, limit: int) -> list:
        descending = sort.descending != backwards
        return _rows(filters, sort, condition, descending=descending, limit=limit, window=window, options=options)

    # The key comes back with each row, so cursors hold exactly what the database compares.
    page = keyset_page(
        keyset(sort), fetch, lambda row: (row[1], row[0].id), after=after, before=before, per_page=per_page
    )
    page.rows = [user for user, _ in page.rows]
    return page


def _rows(
    filters: UserFilters, sort: Sort, condition, *, descending: bool, limit: int, window: int | None, options
) -> list:
    """Up to `limit` (user, sort key) rows matching the filters and `condition`, in order."""
    if window is None:
        query = filtered(filters).add_columns(sort.key).options(*options(User))
        if condition is not None:
            query = query.where(condition)
        return db.session.execute(query.order_by(*ordered(sort.key, User.id, descending)).limit(limit)).all()
    # A search on PostgreSQL: app/pagination.py's search_rows, for this list.
    return search_rows(
        User,
        unsearched=filtered(replace(filters, q="")) if window else None,  # a window of 0 reads none
        searched=filtered(filters),
        hit=search_condition(filters.q) if window else None,
        sort_key=sort.key,
        condition=condition,
        descending=descending,
        limit=limit,
        window=window,
        options=options,
    )


_WITH_OPEN_CALLS = (with_expression(User.has_open_calls, has_open_calls(User.id)),)


@dataclass(frozen=True)
class UserCount:
    total: int
    kind: str  # "exact", "capped" (more than total) or "estimate" (the planner's row estimate)


def count_users(filters: UserFilters, cap: int | None = None) -> UserCount:
    """How many users match, never counting more than `cap` + 1 rows.

    Unfiltered, on PostgreSQL, a large table is not counted at all: the planner's estimate
    (pg_class.reltuples, kept by autovacuum) is close enough for "about a million users".
    """
    cap = COUNT_CAP if cap is None else cap
    if not filters.is_filtered and db.session.get_bind().dialect.name == "postgresql":
        estimate = db.session.scalar(sa.text("SELECT reltuples::bigint FROM pg_class WHERE relname = 'users'"))
        if estimate and estimate > cap:
            return UserCount(int(estimate), "estimate")
    capped = filtered(filters).with_only_columns(User.id).limit(cap + 1).subquery()
    n = db.session.scalar(sa.select(sa.func.count()).select_from(capped)) or 0
    return UserCount(min(n, cap), "capped" if n > cap else "exact")


def iter_users(filters: UserFilters, batch: int = 1000) -> Iterator[User]:
    """Every matching user in the list's order, fetched in keyset batches so memory stays flat."""
    after = None
    while True:
        page = list_users(filters, after=after, per_page=batch, windowed=False, with_open_calls=False)
        yield from page.rows
        for user in page.rows:
            db.session.expunge(user)  # forget the batch already written out: memory stays flat
        if not page.next_cursor:
            return
        after = page.next_cursor
