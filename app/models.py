"""The schema: the seed's `users` and `user_data`, plus the audit trail, sign-in links, the outbox and the counters."""

from __future__ import annotations

import enum
import json
import re
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column, query_expression, relationship
from sqlalchemy.sql.visitors import InternalTraversal

from app.extensions import db


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(sa.types.TypeDecorator):
    """A plain `timestamp` column holding UTC; Python sees timezone-aware datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class UserRole(enum.StrEnum):
    SUPER_ADMIN = "super_admin"
    ADMIN = "admin"
    USER = "user"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    INVITED = "invited"
    SUSPENDED = "suspended"

    @property
    def label(self) -> str:
        return self.value


# What the dashboard's actions call each status it can set (bulk bar, row buttons, confirmations).
STATUS_VERBS = {"suspended": "Suspend", "active": "Reactivate", "inactive": "Mark inactive"}


class ClerkIdKind(enum.StrEnum):
    """What a row's clerk_id is, told by its prefix."""

    USER = "user_"  # a user in Clerk
    INVITATION = "inv_"  # Clerk's invitation, until its user signs up
    PLACEHOLDER = "local_"  # made here, before Clerk has heard of the row

    @classmethod
    def of(cls, clerk_id: str) -> ClerkIdKind | None:
        return next((kind for kind in cls if clerk_id.startswith(kind.value)), None)


def _enum(cls: type[enum.Enum], name: str) -> sa.Enum:
    # Native enum types on PostgreSQL; a named CHECK constraint on SQLite.
    return sa.Enum(
        cls,
        name=name,
        values_callable=lambda members: [m.value for m in members],
        create_constraint=True,
        validate_strings=True,
    )


user_role_enum = _enum(UserRole, "user_role")
user_status_enum = _enum(UserStatus, "user_status")

STAFF_ROLES = (UserRole.ADMIN, UserRole.SUPER_ADMIN)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(sa.Text)
    first_name: Mapped[str | None] = mapped_column(sa.Text)
    last_name: Mapped[str | None] = mapped_column(sa.Text)
    role: Mapped[UserRole] = mapped_column(user_role_enum, default=UserRole.USER, server_default=UserRole.USER.value)
    status: Mapped[UserStatus] = mapped_column(
        user_status_enum, default=UserStatus.ACTIVE, server_default=UserStatus.ACTIVE.value
    )
    image_url: Mapped[str | None] = mapped_column(sa.Text)
    username: Mapped[str | None] = mapped_column(sa.Text)
    external_id: Mapped[str | None] = mapped_column(sa.Text)
    public_metadata: Mapped[str | None] = mapped_column(sa.Text)
    private_metadata: Mapped[str | None] = mapped_column(sa.Text)
    unsafe_metadata: Mapped[str | None] = mapped_column(sa.Text)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clerk_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    # Additions to the seed: soft delete (a tombstone for Clerk deletions), the ordering guard
    # for webhooks (Clerk's updated_at in ms), and the optimistic-locking counter.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clerk_updated_at: Mapped[int | None] = mapped_column(sa.BigInteger)
    version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    # Dashboard sessions carry it; adding one ends every session this person has (app/auth/guard.py).
    session_generation: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    # Clerk locked the account after too many failed sign-in attempts (support staff unlock it).
    locked: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())

    data: Mapped[list[UserData]] = relationship(
        back_populates="user", order_by="UserData.key", cascade="all, delete-orphan"
    )
    # Whether calls about this user wait for Clerk: loaded with the users list's page (a column of
    # its query, app/users/queries.py), None wherever it is not asked for.
    has_open_calls: Mapped[bool | None] = query_expression()

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        # Keyset pagination and sorting on the list page: every sort ends with id as tie-breaker.
        sa.Index("ix_users_created_at_id", "created_at", "id"),
        sa.Index("ix_users_email_id", "email", "id"),
        sa.Index("ix_users_role_created_at", "role", "created_at"),
        sa.Index("ix_users_status_created_at", "status", "created_at"),
        # The "locked" filter: few users are locked at a time, so a partial index stays small.
        sa.Index(
            "ix_users_locked_created_at",
            "created_at",
            "id",
            postgresql_where=sa.text("locked"),
            sqlite_where=sa.text("locked"),
        ),
        # A search that is someone's external id (most users have none).
        sa.Index(
            "ix_users_external_id",
            "external_id",
            postgresql_where=sa.text("external_id IS NOT NULL"),
            sqlite_where=sa.text("external_id IS NOT NULL"),
        ),
    )

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    @property
    def display_name(self) -> str:
        return self.full_name or self.username or self.label

    @property
    def label(self) -> str:
        """What names the account in lists: its email, or its Clerk id when Clerk sent none."""
        return self.email or self.clerk_id

    @property
    def clerk_id_kind(self) -> ClerkIdKind | None:
        return ClerkIdKind.of(self.clerk_id)

    @property
    def waits_for_clerk_user(self) -> bool:
        """No user in Clerk yet: the row holds a placeholder or an invitation's id until one claims it."""
        return self.clerk_id_kind is not ClerkIdKind.USER

    @property
    def invitation_id(self) -> str | None:
        return self.clerk_id if self.clerk_id_kind is ClerkIdKind.INVITATION else None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    @property
    def can_use_dashboard(self) -> bool:
        return self.is_staff and self.status == UserStatus.ACTIVE and self.deleted_at is None

    # Flask-Login's user protocol (app/auth/guard.py). The session id names the person and the
    # session generation it was issued under, so moving the generation on ends every copy of it.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.can_use_dashboard

    def get_id(self) -> str:
        return f"{self.id}:{self.session_generation}"

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email}>"


# Sort keys and the search text of the users list. Nullable columns are wrapped so keyset
# comparisons never meet NULL; the indexes below are built on exactly these expressions.
_EMPTY, _SPACE = sa.literal_column("''"), sa.literal_column("' '")


class NeverSignedIn(sa.sql.expression.ColumnElement):
    """The epoch, as each database stores a timestamp: SQLite compares them as text."""

    type = sa.DateTime()
    inherit_cache = True


@compiles(NeverSignedIn)
def _never_default(element, compiler, **kw):
    return "'1970-01-01 00:00:00'"


@compiles(NeverSignedIn, "sqlite")
def _never_sqlite(element, compiler, **kw):
    return "'1970-01-01 00:00:00.000000'"


class Contains(sa.sql.expression.ColumnElement):
    """`text` holds `part` as is (no pattern): strpos on PostgreSQL, which no trigram index
    answers, so the planner keeps it as a check on the rows an index found; instr on SQLite."""

    type = sa.Boolean()
    # Both parts in the cache key: statements holding one are compiled once, like any other.
    _traverse_internals = [("text", InternalTraversal.dp_clauseelement), ("part", InternalTraversal.dp_clauseelement)]
    inherit_cache = True

    def __init__(self, text: sa.ColumnElement, part: str):
        self.text, self.part = text, sa.bindparam(None, part, type_=sa.Text)


@compiles(Contains)
def _contains_default(element, compiler, **kw):
    return f"(strpos({compiler.process(element.text, **kw)}, {compiler.process(element.part, **kw)}) > 0)"


@compiles(Contains, "sqlite")
def _contains_sqlite(element, compiler, **kw):
    return f"(instr({compiler.process(element.text, **kw)}, {compiler.process(element.part, **kw)}) > 0)"


SIGN_IN_SORT_KEY = sa.func.coalesce(User.last_sign_in_at, NeverSignedIn(), type_=UTCDateTime)
NAME_SORT_KEY = sa.func.lower(
    sa.func.coalesce(User.first_name, _EMPTY).op("||")(_SPACE).op("||")(sa.func.coalesce(User.last_name, _EMPTY)),
    type_=sa.Text,
)
SEARCH_TEXT = sa.func.lower(
    User.email.op("||")(_SPACE)
    .op("||")(sa.func.coalesce(User.first_name, _EMPTY))
    .op("||")(_SPACE)
    .op("||")(sa.func.coalesce(User.last_name, _EMPTY))
    .op("||")(_SPACE)
    .op("||")(sa.func.coalesce(User.username, _EMPTY))
    .op("||")(_SPACE)
    .op("||")(User.clerk_id),
    type_=sa.Text,
)
sa.Index("ix_users_sign_in_sort", SIGN_IN_SORT_KEY, User.id)
sa.Index("ix_users_name_sort", NAME_SORT_KEY, User.id)
sa.Index("ix_users_lower_email", sa.func.lower(User.email))
# Substring search (LIKE '%term%') on PostgreSQL; SQLite scans, which is fine for a local run.
# The migrations create pg_trgm; this lets db.create_all() (benchmarks, scratch databases) do so too.
sa.event.listen(
    User.__table__,
    "before_create",
    sa.DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute_if(dialect="postgresql"),
)
sa.Index(
    "ix_users_search_trgm",
    SEARCH_TEXT.label("search_text"),
    postgresql_using="gin",
    postgresql_ops={"search_text": "gin_trgm_ops"},
).ddl_if(dialect="postgresql")
# A 1-2 character search matches the start of these instead (trigrams need three characters);
# on PostgreSQL each has a prefix index (text_pattern_ops: LIKE 'ab%' whatever the collation).
PREFIX_SEARCHED = tuple(
    sa.func.lower(column, type_=sa.Text) for column in (User.email, User.first_name, User.last_name, User.username)
)
FIRST_NAME_PREFIX, LAST_NAME_PREFIX = PREFIX_SEARCHED[1:3]
for _column, _expression in zip(("email", "first_name", "last_name", "username"), PREFIX_SEARCHED, strict=False):
    sa.Index(
        f"ix_users_{_column}_prefix",
        _expression.label(f"{_column}_prefix"),
        postgresql_ops={f"{_column}_prefix": "text_pattern_ops"},
    ).ddl_if(dialect="postgresql")


# What a search of users matches (the users list, its count and export, the member picker).
MIN_TRIGRAM_PIECE = 3  # a trigram index needs three letters or digits in a row
PIECE = re.compile(r"[^\W_]+")  # what pg_trgm makes trigrams of: runs of letters and digits


def user_search_condition(q: str) -> sa.ColumnElement[bool]:
    """What a search term matches: a substring of the searched text, or a prefix when the term has
    no piece of three letters, or an external id equal to it.

    A trigram index needs three letters or digits in a row. A term without such a piece (`ab`,
    `o'n`, `a b`) matches the start of the email, the first or last name or the username instead,
    each served by a prefix index on PostgreSQL; two short words also match first and last name
    starts (`a b`: Ada Byron). A term of several pieces with no space (an email, a Clerk id) asks
    the trigram index for its most telling piece only (what every row shares, like `example.com`
    or `user_`, would make the index read a million entries) and checks the whole term on the
    rows that come back. External ids are not searched text: they match whole.
    """
    lowered = q.lower()
    pieces = PIECE.findall(lowered)
    if not pieces or max(map(len, pieces)) < MIN_TRIGRAM_PIECE:
        matched = _prefix_condition(lowered)
    elif len(pieces) > 1 and " " not in lowered:
        matched = sa.and_(
            SEARCH_TEXT.like("%" + escape_like(_telling_piece(lowered, pieces)) + "%", escape="\\"),
            Contains(SEARCH_TEXT, lowered),
        )
    else:
        matched = SEARCH_TEXT.like("%" + escape_like(lowered) + "%", escape="\\")
    return sa.or_(matched, User.external_id == q)


# A term that is a whole value of one of these (an email, a Clerk id, ...) is rare: a search skips its window.
MIN_EXACT_LENGTH = 6


def names_one_user(q: str) -> bool:
    """A term that is a whole email, Clerk id, username or external id of someone (found through
    their equality indexes) is rare: its matches come straight from the search index."""
    return len(q) >= MIN_EXACT_LENGTH and " " not in q and exact_match_exists(q)


def exact_match_exists(q: str) -> bool:
    """Whether the term is a whole email, Clerk id (user_..., inv_...), username or external id,
    each looked up through its equality index."""
    return db.session.scalar(_EXACT_MATCH, {"q": q, "lowered": q.lower()}) is not None


# Built once: the values are parameters.
_EXACT_MATCH = (
    sa.select(sa.true())
    .where(
        sa.or_(
            sa.func.lower(User.email) == sa.bindparam("lowered", type_=sa.Text),
            User.clerk_id == sa.bindparam("q", type_=sa.Text),
            sa.func.lower(User.username) == sa.bindparam("lowered", type_=sa.Text),
            User.external_id == sa.bindparam("q", type_=sa.Text),
        )
    )
    .limit(1)
)


def _prefix_condition(lowered: str) -> sa.ColumnElement[bool]:
    term = escape_like(lowered)
    starts = [column.like(term + "%", escape="\\") for column in PREFIX_SEARCHED]
    words = lowered.split(" ")
    if len(words) == 2:  # initials: "a b", "jo sm"
        first, last = (escape_like(word) + "%" for word in words)
        starts.append(sa.and_(FIRST_NAME_PREFIX.like(first, escape="\\"), LAST_NAME_PREFIX.like(last, escape="\\")))
    return sa.or_(*starts)


def _telling_piece(lowered: str, pieces: list[str]) -> str:
    """What the trigram index should look for: the longest piece (the last of equals: the random
    part of a Clerk id), taken from an email's local part when that has one of three letters.

    A local part of shorter pieces only (`jo@example.com`) gives the whole term instead: every row
    may hold each piece of the domain, but pg_trgm makes trigrams of the short word too (` jo`,
    `jo `), and all of them together narrow what the index returns (at a million users, a term
    matching nobody: 944 -> 75 ms for `jo@example.com`, 997 -> 358 ms for `x@example.org`)."""
    local = PIECE.findall(lowered.partition("@")[0]) if "@" in lowered else []
    if local and max(map(len, local)) < MIN_TRIGRAM_PIECE:
        return lowered
    candidates = [p for p in local if len(p) >= MIN_TRIGRAM_PIECE] or pieces
    return max(reversed(candidates), key=len)


def escape_like(text: str) -> str:
    """`text` as a LIKE pattern matches it literally (with `escape="\\"`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class UserData(db.Model):
    __tablename__ = "user_data"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(sa.Text)
    value: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )

    # Optimistic locking, as users have: two tabs saving one pair cannot silently overwrite each other.
    version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")

    user: Mapped[User] = relationship(back_populates="data")

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (sa.UniqueConstraint("user_id", "key"),)


class AuditEvent(db.Model):
    """Who did what to whom, when, from where, with the before and after of each field."""

    __tablename__ = "audit_events"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True, default=new_id)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(sa.Text)  # dashboard, webhook, cli
    actor_id: Mapped[str | None] = mapped_column(sa.Text, sa.ForeignKey("users.id"))
    actor_label: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text)
    target_id: Mapped[str | None] = mapped_column(sa.Text, sa.ForeignKey("users.id"))
    target_label: Mapped[str | None] = mapped_column(sa.Text)
    changes: Mapped[str | None] = mapped_column(sa.Text)  # JSON: {field: [before, after]}
    remote_addr: Mapped[str | None] = mapped_column(sa.Text)
    # The organization the change was about (its own fields, a membership or an invitation).
    organization_id: Mapped[str | None] = mapped_column(sa.Text, sa.ForeignKey("organizations.id"))
    # The staff group a change of permissions was about; no foreign key, so a deleted group's history stays.
    staff_group_id: Mapped[int | None] = mapped_column(sa.Integer)

    actor: Mapped[User | None] = relationship(foreign_keys=[actor_id])
    target: Mapped[User | None] = relationship(foreign_keys=[target_id])
    organization: Mapped[Organization | None] = relationship(foreign_keys=[organization_id])
    # The group while it exists (None once deleted: its events keep its name in target_label).
    staff_group: Mapped[StaffGroup | None] = relationship(
        primaryjoin="foreign(AuditEvent.staff_group_id) == StaffGroup.id", viewonly=True
    )

    __table_args__ = (
        # The audit trail's filters, each read newest first from its own index at ten million
        # events (app/audit/queries.py); the action and actor label ones also list their values.
        sa.Index("ix_audit_events_action_occurred_at", "action", "occurred_at", "id"),
        sa.Index("ix_audit_events_actor_id_occurred_at", "actor_id", "occurred_at", "id"),
        sa.Index("ix_audit_events_actor_label_occurred_at", "actor_label", "occurred_at", "id"),
        sa.Index("ix_audit_events_target_id_occurred_at", "target_id", "occurred_at"),
        sa.Index("ix_audit_events_organization_id_occurred_at", "organization_id", "occurred_at"),
        sa.Index("ix_audit_events_staff_group_id_occurred_at", "staff_group_id", "occurred_at"),
    )


class SignInLink(db.Model):
    """A one-time sign-in link; the token handed out is this row's id, signed."""

    __tablename__ = "sign_in_links"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class WebhookOutcome(enum.StrEnum):
    """What became of a Clerk delivery. A duplicate is answered but never stored: its row exists."""

    APPLIED = "applied"
    STALE = "stale"
    IGNORED = "ignored"
    FAILED = "failed"


REPLAYABLE_OUTCOMES = "outcome IN ('failed', 'stale')"


class WebhookEvent(db.Model):
    """One Clerk (Svix) message: the svix id is the key, so each message is applied once."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)  # the svix-id header
    type: Mapped[str] = mapped_column(sa.Text)
    clerk_user_id: Mapped[str | None] = mapped_column(sa.Text, index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")
    # The verified body, exactly as received; None once `flask maintenance prune` cleared it (the
    # row stays: it is what makes a late copy of the message a duplicate), and when that was.
    payload: Mapped[str | None] = mapped_column(sa.Text)
    payload_pruned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.CheckConstraint("outcome IN ('applied', 'stale', 'ignored', 'failed')", name="outcome"),
        # The /webhooks page: newest first, optionally by outcome or type, keyset on (time, id).
        sa.Index("ix_webhook_events_received_at_id", "received_at", "id"),
        sa.Index("ix_webhook_events_outcome_received_at", "outcome", "received_at", "id"),
        sa.Index("ix_webhook_events_type_received_at", "type", "received_at", "id"),
        # Failed and stale deliveries (those to look into and re-apply) by type: filtering both the
        # outcome and a rare type otherwise reads every delivery of that type (30+ ms at 10 million).
        sa.Index(
            "ix_webhook_events_replayable_type",
            "type",
            "received_at",
            "id",
            postgresql_where=sa.text(REPLAYABLE_OUTCOMES),
            sqlite_where=sa.text(REPLAYABLE_OUTCOMES),
        ),
        # The prune's way to the oldest payloads still kept, past the pruned rows before them.
        sa.Index(
            "ix_webhook_events_payload_kept",
            "received_at",
            postgresql_where=sa.text("payload IS NOT NULL"),
            sqlite_where=sa.text("payload IS NOT NULL"),
        ),
    )


class ClerkCallState(enum.StrEnum):
    """Where a call to Clerk stands. `failed` means Clerk refused it for good (404, 422): shown, not retried."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer call of the same kind for the same user says what Clerk should hold


class ClerkCall(db.Model):
    """The outbox: one call to Clerk's Backend API, committed with the local change it mirrors."""

    __tablename__ = "clerk_outbox"

    # An integer key: a user's calls are delivered in this order (ban before unban).
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(sa.Text, sa.ForeignKey("users.id"))
    # Calls about an organization (its fields, members, invitations) are delivered in order per organization.
    organization_id: Mapped[str | None] = mapped_column(sa.Text, sa.ForeignKey("organizations.id"))
    operation: Mapped[str] = mapped_column(sa.Text)  # ban, unban, update_metadata, create_invitation, ...
    payload: Mapped[str] = mapped_column(sa.Text)  # JSON: the call's arguments
    state: Mapped[str] = mapped_column(
        sa.Text, default=ClerkCallState.PENDING.value, server_default=ClerkCallState.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User | None] = relationship()
    organization: Mapped[Organization | None] = relationship()

    __table_args__ = (
        sa.CheckConstraint("state IN ('pending', 'delivered', 'failed', 'superseded')", name="state"),
        sa.Index("ix_clerk_outbox_organization_id_state", "organization_id", "state"),
        # The worker's claim (due pending calls) and the pages' "pending in Clerk" per user.
        sa.Index("ix_clerk_outbox_state_next_attempt_at", "state", "next_attempt_at"),
        sa.Index("ix_clerk_outbox_user_id_state", "user_id", "state"),
        sa.Index("ix_clerk_outbox_state_id", "state", "id"),  # the outbox page, by state, newest first
    )

    @property
    def is_pending(self) -> bool:
        return self.state == ClerkCallState.PENDING


class UserCount(db.Model):
    """How many users fall in one bucket: live users by status, role, sign-up day and sign-in day,
    and the number of deleted users (dimension `deleted`, bucket `all`); kept by app/records/counts.py.

    Days are UTC dates as text (YYYY-MM-DD), so they sort and range-scan in order. A missing row
    means zero; a row may hold zero after its last user left the bucket.
    """

    __tablename__ = "user_counts"

    dimension: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    bucket: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    n: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")

    def __repr__(self) -> str:
        return f"<UserCount {self.dimension}:{self.bucket} = {self.n}>"


# --- Organizations, memberships and organization invitations: mirrored from Clerk (docs/clerk.md §6) --


class Organization(db.Model):
    """A Clerk organization. `members_count` counts its live memberships, kept in the transaction
    that changes them (app/records/organizations.py); Clerk's own count is not trusted."""

    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True, default=new_id)
    clerk_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    name: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    slug: Mapped[str | None] = mapped_column(sa.Text)
    image_url: Mapped[str | None] = mapped_column(sa.Text)
    max_allowed_memberships: Mapped[int | None] = mapped_column(sa.Integer)  # 0: no limit
    public_metadata: Mapped[str | None] = mapped_column(sa.Text)
    private_metadata: Mapped[str | None] = mapped_column(sa.Text)
    created_by: Mapped[str | None] = mapped_column(sa.Text)  # a Clerk user id
    members_count: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    clerk_updated_at: Mapped[int | None] = mapped_column(sa.BigInteger)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        # The list's sorts (keyset: each ends with id) and its live-only filter.
        sa.Index("ix_organizations_created_at_id", "created_at", "id"),
        sa.Index("ix_organizations_members_count_id", "members_count", "id"),
    )

    @property
    def label(self) -> str:
        return self.name or self.slug or self.clerk_id

    def __repr__(self) -> str:
        return f"<Organization {self.id} {self.name}>"


ORGANIZATION_NAME_SORT_KEY = sa.func.lower(Organization.name, type_=sa.Text)
ORGANIZATION_SEARCH_TEXT = sa.func.lower(
    Organization.name.op("||")(_SPACE).op("||")(sa.func.coalesce(Organization.slug, _EMPTY)), type_=sa.Text
)
sa.Index("ix_organizations_name_sort", ORGANIZATION_NAME_SORT_KEY, Organization.id)
sa.Index(
    "ix_organizations_search_trgm",
    ORGANIZATION_SEARCH_TEXT.label("search_text"),
    postgresql_using="gin",
    postgresql_ops={"search_text": "gin_trgm_ops"},
).ddl_if(dialect="postgresql")
sa.Index(
    "ix_organizations_slug_prefix",
    sa.func.lower(Organization.slug, type_=sa.Text).label("slug_prefix"),
    postgresql_ops={"slug_prefix": "text_pattern_ops"},
).ddl_if(dialect="postgresql")
sa.Index(
    "ix_organizations_name_prefix",
    ORGANIZATION_NAME_SORT_KEY.label("name_prefix"),
    postgresql_ops={"name_prefix": "text_pattern_ops"},
).ddl_if(dialect="postgresql")


class Membership(db.Model):
    """A user's membership of an organization, as Clerk sent it.

    `clerk_user_id` is Clerk's user id, always known; `user_id` links our row once that user is
    here (a membership may arrive before its user: it waits, and the user's arrival claims it).
    One live membership per organization and Clerk user.
    """

    __tablename__ = "memberships"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True, default=new_id)
    clerk_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    organization_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("organizations.id"))
    user_id: Mapped[str | None] = mapped_column(sa.Text, sa.ForeignKey("users.id"))
    clerk_user_id: Mapped[str] = mapped_column(sa.Text)
    # Clerk's public_user_data, kept current from the user's row once it is here: the members search
    # reads these, so it never joins the users table (app/records/organizations.py).
    identifier: Mapped[str | None] = mapped_column(sa.Text)  # usually the email
    first_name: Mapped[str | None] = mapped_column(sa.Text)
    last_name: Mapped[str | None] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.Text)  # Clerk's role key: org:admin, org:member, org:<custom>
    permissions: Mapped[str | None] = mapped_column(sa.Text)  # JSON list, as Clerk sent it
    public_metadata: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    clerk_updated_at: Mapped[int | None] = mapped_column(sa.BigInteger)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")

    organization: Mapped[Organization] = relationship()
    user: Mapped[User | None] = relationship()

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        sa.Index(
            "uq_memberships_live_organization_user",
            "organization_id",
            "clerk_user_id",
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
            sqlite_where=sa.text("deleted_at IS NULL"),
        ),
        # An organization's members, newest first (keyset), live only.
        sa.Index(
            "ix_memberships_organization_live",
            "organization_id",
            "created_at",
            "id",
            postgresql_where=sa.text("deleted_at IS NULL"),
            sqlite_where=sa.text("deleted_at IS NULL"),
        ),
        sa.Index("ix_memberships_user_id", "user_id"),
        sa.Index("ix_memberships_clerk_user_id", "clerk_user_id"),
    )

    @property
    def label(self) -> str:
        if self.user is not None:
            return self.user.label
        return self.identifier or self.clerk_user_id


MEMBER_SEARCH_TEXT = sa.func.lower(
    sa.func.coalesce(Membership.identifier, _EMPTY)
    .op("||")(_SPACE)
    .op("||")(sa.func.coalesce(Membership.first_name, _EMPTY))
    .op("||")(_SPACE)
    .op("||")(sa.func.coalesce(Membership.last_name, _EMPTY)),
    type_=sa.Text,
)
sa.Index(
    "ix_memberships_search_trgm",
    MEMBER_SEARCH_TEXT.label("search_text"),
    postgresql_using="gin",
    postgresql_ops={"search_text": "gin_trgm_ops"},
    _table=Membership.__table__,  # the expression opens with a coalesce(): name the table outright
).ddl_if(dialect="postgresql")
# A search that holds "@" is an email: its members are found from the start of their address.
MEMBER_EMAIL_KEY = sa.func.lower(Membership.identifier, type_=sa.Text)
sa.Index(
    "ix_memberships_organization_email",
    Membership.organization_id,
    MEMBER_EMAIL_KEY.label("email_key"),
    postgresql_ops={"email_key": "text_pattern_ops"},
    postgresql_where=sa.text("deleted_at IS NULL"),
).ddl_if(dialect="postgresql")


class OrganizationInvitationStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"  # Clerk sends no event for it: a pending invitation past expires_at is expired


class OrganizationInvitation(db.Model):
    __tablename__ = "organization_invitations"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True, default=new_id)
    clerk_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    organization_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("organizations.id"))
    email: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(
        sa.Text, default=OrganizationInvitationStatus.PENDING.value, server_default="pending"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clerk_updated_at: Mapped[int | None] = mapped_column(sa.BigInteger)

    organization: Mapped[Organization] = relationship()

    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'accepted', 'revoked', 'expired')", name="status"),
        sa.Index("ix_organization_invitations_organization_status", "organization_id", "status", "created_at"),
    )

    @property
    def effective_status(self) -> str:
        """`expired` for a pending invitation past its expiry (Clerk sends no event for that)."""
        pending = self.status == OrganizationInvitationStatus.PENDING
        if pending and self.expires_at is not None and self.expires_at <= utcnow():
            return OrganizationInvitationStatus.EXPIRED.value
        return self.status


class StaffGroup(db.Model):
    """A named set of permissions (app/permissions.py's catalogue) granted to the admins in it.

    Super admins hold every permission by their role: none is added to a group. A built-in group is
    made by the migrations (Administrators: what every admin could do before groups existed) and
    may have its permissions changed but is never renamed or deleted."""

    __tablename__ = "staff_groups"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    permissions: Mapped[str] = mapped_column(sa.Text, default="[]", server_default="[]")  # JSON list of names
    builtin: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    # Optimistic locking: two super admins editing one group's grid cannot silently overwrite each other.
    version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")

    members: Mapped[list[StaffGroupMember]] = relationship(
        back_populates="group", cascade="all, delete-orphan", passive_deletes=True
    )

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (sa.Index("uq_staff_groups_lower_name", sa.func.lower(name), unique=True),)

    @property
    def permission_names(self) -> list[str]:
        """The names stored, sorted; unknown ones (a permission since removed from the code) included."""
        try:
            names = json.loads(self.permissions or "[]")
        except ValueError:
            return []
        return sorted(n for n in names if isinstance(n, str)) if isinstance(names, list) else []

    def __repr__(self) -> str:
        return f"<StaffGroup {self.id} {self.name}>"


class StaffGroupMember(db.Model):
    __tablename__ = "staff_group_members"

    group_id: Mapped[int] = mapped_column(
        sa.Integer, sa.ForeignKey("staff_groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(sa.Text, sa.ForeignKey("users.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=sa.func.now())

    group: Mapped[StaffGroup] = relationship(back_populates="members")
    user: Mapped[User] = relationship()

    __table_args__ = (sa.Index("ix_staff_group_members_user_id", "user_id"),)
