"""Exact user counts without counting users: the `user_counts` table and the one way to keep it.

The choke points that write users (`new_user` and `update_user_fields` in app/records/users.py,
`_insert_user_if_absent` in app/clerk/sync.py) report each change here; the deltas are summed per
transaction and written just before the outermost commit by the listeners `register_listeners`
installs. Why this is exact and deadlock-free: docs/overview.md.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, SessionTransaction

from app.extensions import db
from app.models import UserCount

STATUS, ROLE, SIGNUP, SIGNIN, DELETED = "status", "role", "signup", "signin", "deleted"
# Organizations (buckets LIVE and DELETED) and live memberships (bucket LIVE), for the overview.
ORGANIZATIONS, MEMBERSHIPS = "organizations", "memberships"
DIMENSIONS = (STATUS, ROLE, SIGNUP, SIGNIN, DELETED, ORGANIZATIONS, MEMBERSHIPS)
ALL = "all"  # the one bucket of DELETED
LIVE = "live"
COUNTED_FIELDS = ("status", "role", "created_at", "last_sign_in_at", "deleted_at")
_PENDING = "user_counts_pending"  # session.info: {transaction: Counter of deltas}

Key = tuple[str, str]


@dataclass(frozen=True)
class Counted:
    """The part of a user the counters depend on."""

    status: str
    role: str
    created_at: datetime | None
    last_sign_in_at: datetime | None
    deleted_at: datetime | None


def day(value: datetime) -> str:
    """The UTC date of a timestamp, as the bucket text (YYYY-MM-DD)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.date().isoformat()


def counted(user: Any) -> Counted:
    return Counted(
        status=_value(user.status),
        role=_value(user.role),
        created_at=user.created_at,
        last_sign_in_at=user.last_sign_in_at,
        deleted_at=user.deleted_at,
    )


def _value(member: Any) -> str:
    return getattr(member, "value", member)


def buckets(state: Counted | None) -> Counter[Key]:
    """The buckets one user counts in: a live user by status, role and days; a deleted one once."""
    if state is None:
        return Counter()
    if state.deleted_at is not None:
        return Counter({(DELETED, ALL): 1})
    found = Counter({(STATUS, state.status): 1, (ROLE, state.role): 1})
    if state.created_at is not None:
        found[SIGNUP, day(state.created_at)] += 1
    if state.last_sign_in_at is not None:
        found[SIGNIN, day(state.last_sign_in_at)] += 1
    return found


# --- What the choke points call ------------------------------------------------------------------


def note_insert(user: Any) -> None:
    """A user row was inserted (and flushed) in the current transaction."""
    _add(db.session(), buckets(counted(user)))


def note_change(before: Counted, user: Any) -> None:
    """A user row was updated (and flushed); `before` is `counted(user)` read before the change."""
    delta = buckets(counted(user))
    delta.subtract(buckets(before))
    _add(db.session(), delta)


def note(dimension: str, bucket: str, n: int) -> None:
    """Any other counted row changed (an organization or membership made, deleted or ended)."""
    _add(db.session(), Counter({(dimension, bucket): n}))


def _add(session: Session, delta: Counter[Key]) -> None:
    delta = Counter({key: n for key, n in delta.items() if n})
    if not delta:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    frames: dict[SessionTransaction, Counter[Key]] = session.info.setdefault(_PENDING, {})
    frames.setdefault(transaction, Counter()).update(delta)


def pending(session: Session | None = None) -> Counter[Key]:
    """The deltas this session will write at its next commit (tests look at them)."""
    session = session or db.session()
    total: Counter[Key] = Counter()
    for frame in session.info.get(_PENDING, {}).values():
        total.update(frame)
    return Counter({key: n for key, n in total.items() if n})


# --- Writing the deltas with the commit ----------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _add_rows(n_rows: int) -> sa.TextClause:
    """INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n for n_rows rows (PostgreSQL and SQLite
    say it alike). Text, built once per size: SQLAlchemy compiles a statement with several VALUES
    rows anew each time, which cost more than running it; a text statement is compiled once."""
    rows = ", ".join(f"(:d{i}, :b{i}, :n{i})" for i in range(n_rows))
    return sa.text(
        f"INSERT INTO {UserCount.__tablename__} (dimension, bucket, n) VALUES {rows} "
        "ON CONFLICT (dimension, bucket) DO UPDATE SET n = user_counts.n + excluded.n"
    )


def apply_deltas(session: Session, delta: Counter[Key]) -> None:
    """Add the deltas to the counters in one statement, rows in key order (a fixed lock order)."""
    rows = [(d, b, n) for (d, b), n in sorted(delta.items()) if n]
    if not rows:
        return
    params: dict[str, Any] = {}
    for i, (dimension, bucket, n) in enumerate(rows):
        params.update({f"d{i}": dimension, f"b{i}": bucket, f"n{i}": n})
    session.execute(_add_rows(len(rows)), params)


def _before_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint's release: its deltas join its parent's in _after_commit
    delta = pending(session)
    session.info.pop(_PENDING, None)
    apply_deltas(session, delta)


def _after_commit(session: Session) -> None:
    frames = session.info.get(_PENDING)
    released = session.get_nested_transaction()
    if not frames or released is None:
        return
    frame = frames.pop(released, None)
    if frame:
        frames.setdefault(released.parent, Counter()).update(frame)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    frames = session.info.get(_PENDING)
    if not frames:
        return
    if transaction.parent is None:
        session.info.pop(_PENDING, None)  # the outermost transaction ended: committed or rolled back
    elif transaction.nested:
        frames.pop(transaction, None)  # still here only when the savepoint was rolled back


def register_listeners(session: Any) -> None:
    """Write the deltas with each commit of `session` (the factory passes `db.session`); idempotent."""
    for name, handler in (
        ("before_commit", _before_commit),
        ("after_commit", _after_commit),
        ("after_transaction_end", _after_transaction_end),
    ):
        if not sa.event.contains(session, name, handler):
            sa.event.listen(session, name, handler)


# --- Reading and recounting ----------------------------------------------------------------------


def read_counts(dimensions: Iterable[str] = DIMENSIONS, *, since: str | None = None) -> Counter[Key]:
    """The stored counters (non-zero ones); day dimensions from the bucket `since` on, if given."""
    dimensions = list(dimensions)
    table = UserCount.__table__
    query = sa.select(table.c.dimension, table.c.bucket, table.c.n).where(table.c.dimension.in_(dimensions))
    if since is not None:
        query = query.where(sa.or_(table.c.dimension.not_in((SIGNUP, SIGNIN)), table.c.bucket >= since))
    return Counter({(d, b): n for d, b, n in db.session.execute(query) if n})


def _day_sql(column) -> sa.ColumnElement:
    if db.session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(column, "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column)


def recount_queries() -> list[tuple[str, sa.Select]]:
    """One GROUP BY per dimension over users (and a count of organizations and memberships):
    (dimension, SELECT bucket, count)."""
    users = sa.table(
        "users",
        sa.column("status"),
        sa.column("role"),
        sa.column("created_at"),
        sa.column("last_sign_in_at"),
        sa.column("deleted_at"),
    )
    live = users.c.deleted_at.is_(None)

    def grouped(expression, *where) -> sa.Select:
        bucket = expression.label("bucket")
        return sa.select(bucket, sa.func.count().label("n")).where(*where).group_by(bucket)

    organizations = sa.table("organizations", sa.column("deleted_at"))
    memberships = sa.table("memberships", sa.column("deleted_at"))

    def total(table, bucket: str, *where) -> sa.Select:
        return (
            sa.select(sa.literal(bucket).label("bucket"), sa.func.count().label("n")).select_from(table).where(*where)
        )

    return [
        (ORGANIZATIONS, total(organizations, LIVE, organizations.c.deleted_at.is_(None))),
        (ORGANIZATIONS, total(organizations, DELETED, organizations.c.deleted_at.is_not(None))),
        (MEMBERSHIPS, total(memberships, LIVE, memberships.c.deleted_at.is_(None))),
        (STATUS, grouped(sa.cast(users.c.status, sa.Text), live)),
        (ROLE, grouped(sa.cast(users.c.role, sa.Text), live)),
        (SIGNUP, grouped(_day_sql(users.c.created_at), live)),
        (SIGNIN, grouped(_day_sql(users.c.last_sign_in_at), live, users.c.last_sign_in_at.is_not(None))),
        (
            DELETED,
            sa.select(sa.literal(ALL).label("bucket"), sa.func.count().label("n")).where(
                users.c.deleted_at.is_not(None)
            ),
        ),
    ]


def recount() -> Counter[Key]:
    """What the counters should hold, counted from the users table (full scans: not for pages)."""
    found: Counter[Key] = Counter()
    for dimension, query in recount_queries():
        for bucket, n in db.session.execute(query):
            if n:
                found[dimension, bucket] = n
    return found


def snapshot_isolation() -> None:
    """Read the counters and the users from one snapshot (call first in a transaction).

    On PostgreSQL each statement of a READ COMMITTED transaction sees the latest commits, so a
    comparison made while writers run would mix two moments; REPEATABLE READ sees one.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def differences(stored: Counter[Key], actual: Counter[Key]) -> dict[Key, tuple[int, int]]:
    """{bucket: (stored, actual)} wherever the two disagree."""
    return {
        key: (stored.get(key, 0), actual.get(key, 0))
        for key in sorted(set(stored) | set(actual))
        if stored.get(key, 0) != actual.get(key, 0)
    }


def rebuild() -> dict[Key, tuple[int, int]]:
    """Recount every counter in the caller's transaction (no commit); returns what was corrected."""
    session = db.session()
    if session.get_bind().dialect.name == "postgresql":
        # Writers add their deltas under ROW EXCLUSIVE: wait for those that did, hold off the rest.
        session.execute(sa.text("LOCK TABLE user_counts IN EXCLUSIVE MODE"))
    session.info.pop(_PENDING, None)  # the recount sees this transaction's own changes already
    stored = read_counts()
    actual = recount()
    session.execute(sa.delete(UserCount.__table__))
    apply_deltas(session, actual)
    return differences(stored, actual)
