"""Storing demo records: `seed_demo` adds the demo users (and organizations) that are missing, in the
caller's transaction.

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
from app.demo.organizations import (
    INVITATION_COLUMNS,
    INVITATION_TIMESTAMPS,
    MEMBERSHIP_COLUMNS,
    MEMBERSHIP_TIMESTAMPS,
    ORGANIZATION_COLUMNS,
    ORGANIZATION_TIMESTAMPS,
    Made,
    Member,
    Spec,
    demo_organization_count,
    large_specs,
    make_organizations,
    regular_organization_count,
    regular_spec,
    timestamp,
)
from app.extensions import db
from app.models import Membership, Organization, OrganizationInvitation, User, UserData
from app.records.counts import rebuild as rebuild_user_counts  # the demo's one use of the counters

DEFAULT_CHUNK_SIZE = 25_000
# Above this many missing users (and more than the table holds), PostgreSQL rebuilds indexes.
REBUILD_INDEXES_FROM = 100_000
INDEX_BUILD_MEMORY = "256MB"
ORGANIZATION_CHUNK_SIZE = 5_000
# Above this many missing demo organizations (and more than the table holds), PostgreSQL rebuilds
# the plain indexes of organizations, memberships and invitations.
REBUILD_ORGANIZATION_INDEXES_FROM = 10_000

Progress = Callable[[int, int], None]


def seed_demo(
    n_users: int,
    *,
    actor: Actor,
    organizations: bool = False,
    progress: Progress | None = None,
    organization_progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    now: datetime | None = None,
) -> dict[str, int]:
    """Make sure demo users 0..n_users-1 exist (with their data), in the caller's transaction;
    with `organizations`, their demo organizations too (members and invitations included).

    Returns {"users_created", "users_existing", "user_data_created"} (and "organizations_created",
    "memberships_created", "invitations_created" with `organizations`); `progress(done, total)` is
    called after every chunk of users, `organization_progress` after every chunk of organizations.
    Records one `demo.seed` audit event; the caller commits. Timestamps end at `now` (default: the
    current time); rows already there keep theirs.
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
    if progress is not None and n_users:
        progress(n_users, n_users)
    counts = {
        "users_created": users_created,
        "users_existing": n_users - users_created,
        "user_data_created": data_created,
    }
    if organizations:
        counts |= seed_organizations(n_users, now_ts=now_ts, pools=pools, progress=organization_progress)
    # COPY goes around the services that keep the overview's counters: recount them, same transaction.
    rebuild_user_counts()
    record("demo.seed", actor=actor, changes={key: [0, n] for key, n in counts.items() if key != "users_existing"})
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
                self.dropped_indexes = drop_plain_indexes(cursor, "users")

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
                create_indexes(cursor, self.dropped_indexes)

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


def drop_plain_indexes(cursor, table: str) -> list[str]:
    """Drop the valid, non-unique indexes of `table`; returns their CREATE INDEX statements."""
    cursor.execute(
        """
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indrelid = %s::regclass AND i.indisvalid AND NOT i.indisunique
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
        ORDER BY c.relname
        """,
        (table,),
    )
    indexes = cursor.fetchall()
    for schema, name, _definition in indexes:
        drop = psycopg_sql.SQL("DROP INDEX {}").format(psycopg_sql.Identifier(schema, name))
        cursor.execute(drop)
    return [definition for _schema, _name, definition in indexes]


def create_indexes(cursor, definitions: list[str]) -> None:
    cursor.execute("SELECT current_setting('maintenance_work_mem')")
    (before,) = cursor.fetchone()
    # More sort memory for the builds, for this transaction only, then back as it was; and no
    # statement timeout (DATABASE_STATEMENT_TIMEOUT_MS is for requests, not for index builds).
    cursor.execute("SELECT set_config('maintenance_work_mem', %s, true)", (INDEX_BUILD_MEMORY,))
    cursor.execute("SELECT set_config('statement_timeout', '0', true)")
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


# --- Organizations -------------------------------------------------------------------------------


def seed_organizations(
    n_users: int,
    *,
    now_ts: float,
    pools: Pools,
    progress: Progress | None = None,
    chunk_size: int | None = None,
) -> dict[str, int]:
    """Make sure the demo organizations of N users exist, with their members and invitations.

    An organization that is there already is left as it is (members removed since stay removed);
    a missing one is made whole, in one go with its memberships, so `members_count` is set as it
    is inserted. The demo users must be there (seed them first, in the same transaction).
    """
    chunk_size = chunk_size or ORGANIZATION_CHUNK_SIZE
    total = demo_organization_count(n_users)
    regular = regular_organization_count(n_users)
    chunks: list[list[Spec]] = [large] if (large := large_specs(n_users)) else []
    chunks += [[regular_spec(i) for i in range(a, min(a + chunk_size, regular))] for a in range(0, regular, chunk_size)]
    writer = _PostgresOrganizationWriter(total) if _dialect() == "postgresql" else _SqliteOrganizationWriter()
    created = {"organizations_created": 0, "memberships_created": 0, "invitations_created": 0}
    done = 0
    for size, (organizations, memberships, invitations) in _organizations_ahead(chunks, pools, now_ts):
        made = writer.write(organizations, memberships, invitations)
        expected = (len(organizations), len(memberships), len(invitations))
        if made != expected:
            # Another writer got to some of these first: count their members from the table instead.
            writer.recount_members([row[0] for row in organizations])
        for key, n in zip(created, made, strict=True):
            created[key] += n
        done += size
        if progress is not None and done < total:
            progress(done, total)
    writer.close()
    if progress is not None and total:
        progress(total, total)
    return created


def _organizations_ahead(chunks: list[list[Spec]], pools: Pools, now_ts: float) -> Iterator[tuple[int, Made]]:
    """(specs in the chunk, rows) per chunk; the worker thread makes the next while this one is stored.

    Who exists already and the members' facts are read here, in the caller's thread."""
    with ThreadPoolExecutor(max_workers=1) as maker:
        pending: deque[tuple[int, Future[Made]]] = deque()
        for specs in chunks:
            existing = _existing_organizations([s.clerk_id for s in specs])
            todo = [s for s in specs if s.clerk_id not in existing]
            members = _live_demo_members(min(s.lo for s in todo), max(s.hi for s in todo)) if todo else {}
            pending.append((len(specs), maker.submit(make_organizations, todo, members, pools, now_ts)))
            if len(pending) == 2:
                size, future = pending.popleft()
                yield size, future.result()
        while pending:
            size, future = pending.popleft()
            yield size, future.result()


def _existing_organizations(clerk_ids: list[str]) -> set[str]:
    """Which of these clerk ids (consecutive demo ids, or the few large ones) are there already."""
    wanted = set(clerk_ids)
    low, high = min(clerk_ids), max(clerk_ids)
    found = db.session.scalars(
        sa.select(Organization.clerk_id).where(Organization.clerk_id >= low, Organization.clerk_id <= high)
    )
    return {clerk_id for clerk_id in found if clerk_id in wanted}


def _live_demo_members(start: int, stop: int) -> dict[int, Member]:
    """The live demo users start..stop-1 by index: who may join an organization, and as what."""
    rows = db.session.execute(
        sa.select(User.id, User.clerk_id, User.email, User.first_name, User.last_name, User.created_at).where(
            User.clerk_id >= demo_clerk_id(start), User.clerk_id < demo_clerk_id(stop), User.deleted_at.is_(None)
        )
    )
    members = {}
    for user_id, clerk_id, email, first_name, last_name, created_at in rows:
        digits = clerk_id[len(CLERK_ID_PREFIX) :]
        if clerk_id.startswith(CLERK_ID_PREFIX) and len(digits) == 7 and digits.isdigit():
            members[int(digits)] = Member(user_id, clerk_id, email, first_name, last_name, timestamp(created_at))
    return members


class _PostgresOrganizationWriter:
    """COPY into temporary tables, then INSERT ... SELECT ... ON CONFLICT DO NOTHING, as for users.

    A big seed into few organizations drops the plain indexes of the three tables first and
    builds them again at the end (the trigram index on names above all)."""

    TABLES = ("organizations", "memberships", "organization_invitations")

    def __init__(self, n_organizations: int) -> None:
        self.connection = db.session.connection().connection.driver_connection
        self.dropped_indexes: list[str] = []
        with self.connection.cursor() as cursor:
            for table in self.TABLES:
                cursor.execute(f"CREATE TEMP TABLE demo_seed_{table} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
            cursor.execute(
                "SELECT count(*), count(*) FILTER (WHERE clerk_id LIKE 'org\\_demo\\_%%') FROM organizations"
            )
            rows, demo_rows = cursor.fetchone()
            missing = n_organizations - demo_rows
            if missing >= REBUILD_ORGANIZATION_INDEXES_FROM and missing >= rows:
                for table in self.TABLES:
                    self.dropped_indexes += drop_plain_indexes(cursor, table)

    def write(self, organizations: list, memberships: list, invitations: list) -> tuple[int, int, int]:
        if not organizations:
            return 0, 0, 0
        with self.connection.cursor() as cursor:
            made = (
                self._copy_in(cursor, "organizations", ORGANIZATION_COLUMNS, organizations),
                self._copy_in(cursor, "memberships", MEMBERSHIP_COLUMNS, memberships),
                self._copy_in(cursor, "organization_invitations", INVITATION_COLUMNS, invitations),
            )
            cursor.execute("TRUNCATE " + ", ".join(f"demo_seed_{t}" for t in self.TABLES))
        return made

    @staticmethod
    def _copy_in(cursor, table: str, columns: Sequence[str], rows: list[tuple]) -> int:
        if not rows:
            return 0
        names = ", ".join(columns)
        with cursor.copy(f"COPY demo_seed_{table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        # Members and invitations of an organization that is not there (a clash on its clerk id) wait.
        parent = (
            ""
            if table == "organizations"
            else " t WHERE EXISTS (SELECT 1 FROM organizations o WHERE o.id = t.organization_id)"
        )
        cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT {names} FROM demo_seed_{table}{parent} ON CONFLICT DO NOTHING"
        )
        return cursor.rowcount

    def recount_members(self, organization_ids: list[str]) -> None:
        _recount_members(organization_ids)

    def close(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("DROP TABLE " + ", ".join(f"demo_seed_{t}" for t in self.TABLES))
            if self.dropped_indexes:
                create_indexes(cursor, self.dropped_indexes)


class _SqliteOrganizationWriter:
    def write(self, organizations: list, memberships: list, invitations: list) -> tuple[int, int, int]:
        insert = _SqliteWriter._insert
        return (
            insert(Organization.__table__, ORGANIZATION_COLUMNS, ORGANIZATION_TIMESTAMPS, organizations),
            insert(Membership.__table__, MEMBERSHIP_COLUMNS, MEMBERSHIP_TIMESTAMPS, memberships),
            insert(OrganizationInvitation.__table__, INVITATION_COLUMNS, INVITATION_TIMESTAMPS, invitations),
        )

    def recount_members(self, organization_ids: list[str]) -> None:
        _recount_members(organization_ids)

    def close(self) -> None:
        pass


def _recount_members(organization_ids: list[str]) -> None:
    live = (
        sa.select(sa.func.count())
        .where(Membership.organization_id == Organization.id, Membership.deleted_at.is_(None))
        .scalar_subquery()
    )
    for start in range(0, len(organization_ids), 1000):
        db.session.execute(
            sa.update(Organization)
            .where(Organization.id.in_(organization_ids[start : start + 1000]))
            .values(members_count=live)
            .execution_options(synchronize_session=False)
        )
