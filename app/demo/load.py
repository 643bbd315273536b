"""Storing demo records: `seed_demo` adds the demo users that are missing, in the caller's transaction.

Running it again creates nothing, and a larger N adds just the difference; existing rows, demo or
not, are never changed. PostgreSQL gets each chunk by COPY into a temporary table and `INSERT ...
SELECT ... ON CONFLICT DO NOTHING` (a big seed into a small table rebuilds the plain indexes
instead of updating them row by row); SQLite gets an executemany of `INSERT ... ON CONFLICT DO
NOTHING`. Nothing is committed: the caller's transaction holds the users, their data, the
recounted counters and the one audit event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import sqlalchemy as sa
from psycopg import sql as psycopg_sql

from app.audit.services import Actor, record
from app.demo.generate import (
    CLERK_ID_PREFIX,
    DATA_COLUMNS,
    DATA_TIMESTAMPS,
    EPOCH,
    MAX_DEMO_USERS,
    USER_COLUMNS,
    USER_TIMESTAMPS,
    Chunk,
    DataRow,
    Pools,
    UserRow,
    build_pools,
    demo_clerk_id,
    make_chunk,
)
from app.extensions import db
from app.models import User, UserData
from app.records.counts import rebuild as rebuild_user_counts  # the demo's one use of the counters

DEFAULT_CHUNK_SIZE = 25_000
# Above this many missing users (and more than the table holds), PostgreSQL rebuilds indexes.
REBUILD_INDEXES_FROM = 100_000
INDEX_BUILD_MEMORY = "256MB"

Progress = Callable[[int, int], None]


def seed_demo(
    n_users: int,
    *,
    actor: Actor,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    now: datetime | None = None,
) -> dict[str, int]:
    """Make sure demo users 0..n_users-1 exist (with their data), in the caller's transaction.

    Returns {"users_created", "users_existing", "user_data_created"}; `progress(done, total)` is
    called after every chunk. Records one `demo.seed` audit event; the caller commits. Timestamps
    end at `now` (default: the current time); users already there keep theirs and their data.
    """
    if not 0 <= n_users <= MAX_DEMO_USERS:
        raise ValueError(f"the number of demo users must be between 0 and {MAX_DEMO_USERS:,}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    now_ts = (now - EPOCH).total_seconds()
    pools = build_pools()
    ranges = [(start, min(start + chunk_size, n_users)) for start in range(0, n_users, chunk_size)]
    writer = _PostgresWriter(n_users) if _dialect() == "postgresql" else _SqliteWriter()

    users_created = data_created = 0
    for stop, (users, data) in _made_ahead(ranges, pools, now_ts):
        created, rows_created = writer.write(users, data)
        users_created += created
        data_created += rows_created
        if progress is not None and stop < n_users:
            progress(stop, n_users)
    writer.close()  # may rebuild indexes, so the bar reaches its end only after it
    # COPY goes around the services that keep the overview's counters: recount them, same transaction.
    rebuild_user_counts()
    if progress is not None and n_users:
        progress(n_users, n_users)

    counts = {
        "users_created": users_created,
        "users_existing": n_users - users_created,
        "user_data_created": data_created,
    }
    record(
        "demo.seed",
        actor=actor,
        changes={"users_created": [0, users_created], "user_data_created": [0, data_created]},
    )
    return counts


def _dialect() -> str:
    return db.session.get_bind().dialect.name


# --- Who is there already ---------------------------------------------------------------------


def _existing_demo_indexes(start: int, stop: int) -> set[int]:
    """Indexes in [start, stop) whose demo user exists, by a range scan of the clerk_id index."""
    found = db.session.scalars(
        sa.select(User.clerk_id).where(User.clerk_id >= demo_clerk_id(start), User.clerk_id < demo_clerk_id(stop))
    )
    indexes = set()
    for clerk_id in found:
        # Other ids can sort into the range ('user_demo_0000005x', or more under a linguistic
        # collation): keep exact matches only.
        digits = clerk_id[len(CLERK_ID_PREFIX) :]
        exact = clerk_id.startswith(CLERK_ID_PREFIX) and len(digits) == 7 and digits.isdigit()
        if exact and start <= (index := int(digits)) < stop:
            indexes.add(index)
    return indexes


# --- Making and storing, side by side --------------------------------------------------------


def _made_ahead(ranges: list[tuple[int, int]], pools: Pools, now_ts: float) -> Iterator[tuple[int, Chunk]]:
    """(stop, rows) for each range; a worker thread makes the next chunk while this one is stored.

    Making rows is pure Python and storing them mostly waits on the database, so the two overlap
    on two cores. Who exists is asked here, in the caller's thread: the session is not thread-safe.
    """
    with ThreadPoolExecutor(max_workers=1) as maker:
        pending: deque[tuple[int, Future[Chunk]]] = deque()
        for start, stop in ranges:
            existing = _existing_demo_indexes(start, stop)
            pending.append((stop, maker.submit(make_chunk, start, stop, pools, now_ts, existing)))
            if len(pending) == 2:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


# --- Writing ----------------------------------------------------------------------------------


class _PostgresWriter:
    """COPY each chunk into temporary tables, then insert what is not there yet.

    A big seed into a small table drops the users table's plain (non-unique) indexes first and
    builds them again at the end: one sort per index instead of a million scattered inserts (the
    trigram GIN index above all). The unique ones stay, as ON CONFLICT needs them. The dropped
    indexes lock the table until the caller commits, which a demo seed can afford.
    """

    def __init__(self, n_users: int) -> None:
        # The session's own connection: the rows join the caller's transaction.
        self.connection = db.session.connection().connection.driver_connection
        self.dropped_indexes: list[str] = []
        with self.connection.cursor() as cursor:
            # ON COMMIT DROP cleans up if the caller never gets to close(); one set per call.
            cursor.execute("CREATE TEMP TABLE demo_seed_users (LIKE users INCLUDING DEFAULTS) ON COMMIT DROP")
            cursor.execute("CREATE TEMP TABLE demo_seed_user_data (LIKE user_data INCLUDING DEFAULTS) ON COMMIT DROP")
            if self._worth_rebuilding_indexes(cursor, n_users):
                self.dropped_indexes = self._drop_plain_indexes(cursor)

    def write(self, users: list[UserRow], data: list[DataRow]) -> tuple[int, int]:
        if not users:
            return 0, 0
        with self.connection.cursor() as cursor:
            users_created = self._copy_in(cursor, "users", USER_COLUMNS, users)
            data_created = self._copy_in(cursor, "user_data", DATA_COLUMNS, data) if data else 0
            cursor.execute("TRUNCATE demo_seed_users, demo_seed_user_data")
        return users_created, data_created

    def close(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("DROP TABLE demo_seed_users, demo_seed_user_data")
            if self.dropped_indexes:
                self._create_indexes(cursor, self.dropped_indexes)

    @staticmethod
    def _copy_in(cursor, table: str, columns: Sequence[str], rows: list[tuple]) -> int:
        names = ", ".join(columns)
        with cursor.copy(f"COPY demo_seed_{table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # A clash on any unique key (clerk_id, id, (user_id, key)) means the row is there already.
        cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM demo_seed_{table} ON CONFLICT DO NOTHING")
        return cursor.rowcount

    @staticmethod
    def _worth_rebuilding_indexes(cursor, n_users: int) -> bool:
        cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE clerk_id >= %s AND clerk_id < %s) FROM users",
            (demo_clerk_id(0), demo_clerk_id(n_users)),
        )
        rows, demo_rows = cursor.fetchone()
        missing = n_users - demo_rows
        return missing >= REBUILD_INDEXES_FROM and missing >= rows

    @staticmethod
    def _drop_plain_indexes(cursor) -> list[str]:
        """Drop the valid, non-unique indexes of users; returns their CREATE INDEX statements."""
        cursor.execute(
            """
            SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.indrelid = 'users'::regclass AND i.indisvalid AND NOT i.indisunique
              AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
            ORDER BY c.relname
            """
        )
        indexes = cursor.fetchall()
        for schema, name, _definition in indexes:
            drop = psycopg_sql.SQL("DROP INDEX {}").format(psycopg_sql.Identifier(schema, name))
            cursor.execute(drop)
        return [definition for _schema, _name, definition in indexes]

    @staticmethod
    def _create_indexes(cursor, definitions: list[str]) -> None:
        cursor.execute("SELECT current_setting('maintenance_work_mem')")
        (before,) = cursor.fetchone()
        # More sort memory for the builds, for this transaction only, then back as it was.
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, true)", (INDEX_BUILD_MEMORY,))
        for definition in definitions:
            cursor.execute(definition)
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, true)", (before,))


class _SqliteWriter:
    """executemany of INSERT ... ON CONFLICT DO NOTHING, through the models' column types."""

    def write(self, users: list[UserRow], data: list[DataRow]) -> tuple[int, int]:
        users_created = self._insert(User.__table__, USER_COLUMNS, USER_TIMESTAMPS, users)
        data_created = self._insert(UserData.__table__, DATA_COLUMNS, DATA_TIMESTAMPS, data)
        return users_created, data_created

    @staticmethod
    def _insert(table: sa.Table, columns: Sequence[str], timestamps: Sequence[str], rows: list[tuple]) -> int:
        if not rows:
            return 0
        from sqlalchemy.dialects.sqlite import insert

        params = [dict(zip(columns, row, strict=True)) for row in rows]
        for values in params:
            # The UTC column type takes aware datetimes only.
            for name in timestamps:
                if values[name] is not None:
                    values[name] = values[name].replace(tzinfo=UTC)
        result = db.session.execute(insert(table).on_conflict_do_nothing(), params)
        return result.rowcount

    def close(self) -> None:
        pass
