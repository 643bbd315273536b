"""Clerk users into our `users` table: the rules the webhook, replays and the backfill share.

Upsert by `clerk_id`, ordered by Clerk's `updated_at`, with tombstones for deletions and the claim
of a waiting row by email (a staff row only with a verified email); Clerk's data is stored as sent.
The rules, with their reasons: docs/webhooks.md. Nothing here commits: the caller does.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app.audit.services import Actor, diff, record_now
from app.clerk.outbox import fields_waiting, has_open_calls
from app.extensions import db
from app.models import ClerkIdKind, User, UserRole, UserStatus, utcnow
from app.records import counts
from app.records.organizations import (
    attach_waiting_memberships,
    dialect_insert,
    end_memberships_of_user,
    has_memberships,
    lock_clerk_user_id,
)
from app.records.users import normalise_email, update_user_fields

# Ids a row holds while it waits for its Clerk user: placeholder_clerk_id() and invitations.
CLAIMABLE_ID_PREFIXES = (ClerkIdKind.PLACEHOLDER.value, ClerkIdKind.INVITATION.value)
TEXT_FIELDS = ("first_name", "last_name", "username", "external_id")
METADATA_FIELDS = ("public_metadata", "private_metadata", "unsafe_metadata")
# Far above anything Clerk allows, and below what a PostgreSQL b-tree index entry can hold
# (about 2.7 kB): a longer value could never be stored, so it is refused as malformed.
MAX_ID_BYTES = 255
MAX_INDEXED_TEXT_BYTES = 1024
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds


class MalformedClerkData(ValueError):
    """A signed payload that cannot be what Clerk sends; the message says why, in one line."""


@dataclass(frozen=True)
class ClerkUser:
    """A Clerk user reduced to our columns; `fields` holds only what the payload carried."""

    clerk_id: str
    updated_at: int | None
    fields: dict[str, Any]
    email_verified: bool = False  # Clerk reports the primary email verified: it may claim a staff row

    @property
    def email(self) -> str:
        return self.fields.get("email") or ""


class SyncOutcome(enum.StrEnum):
    CREATED = "created"
    CLAIMED = "claimed"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    STALE = "stale"  # older than the version already applied
    GONE = "gone"  # the user was deleted; nothing brings it back
    UNKNOWN = "unknown"  # no such user here (yet)


@dataclass
class SyncResult:
    outcome: SyncOutcome
    user: User | None
    changes: dict[str, list[Any]] = field(default_factory=dict)
    reason: str | None = None
    # The reason is news even though the event was applied (a claim refused): the deliveries page shows it.
    noteworthy: bool = False
    row: Any = None  # the organization, membership or invitation an organization event touched


# --- Reading Clerk's JSON, defensively: real payloads lack documented keys and add others ----------


def clean_text(value: str) -> str:
    # PostgreSQL text refuses NUL and lone surrogates; neither can be meant, both would fail forever.
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def ms(value: Any) -> int | None:
    """A Clerk timestamp (ms since the epoch) as an int, or None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not 0 <= value <= MAX_MS:  # also false for NaN
        return None
    return int(value)


def ms_to_datetime(value: Any) -> datetime | None:
    millis = ms(value)
    return None if millis is None else EPOCH + timedelta(milliseconds=millis)


def text_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return clean_text(value)
    return clean_text(json.dumps(value, ensure_ascii=False))


def json_text(value: Any) -> str | None:
    # Sorted keys, so the same object always gives the same text and re-applying changes nothing.
    return None if value is None else clean_text(json.dumps(value, sort_keys=True, ensure_ascii=False))


def bounded(name: str, value: str | None, limit: int = MAX_INDEXED_TEXT_BYTES) -> str | None:
    # surrogatepass: a lone surrogate is measured here and replaced by clean_text, never a 500.
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > limit:
        raise MalformedClerkData(f"{name} is longer than {limit} bytes")
    return value


def _primary_email_entry(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The entry whose id is primary_email_address_id (else the first one, else none)."""
    entries = data.get("email_addresses")
    addresses = [
        entry
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, Mapping) and isinstance(entry.get("email_address"), str)
    ]
    primary_id = data.get("primary_email_address_id")
    for entry in addresses:
        if primary_id is not None and entry.get("id") == primary_id:
            return entry
    return addresses[0] if addresses else None


def primary_email(data: Mapping[str, Any]) -> str:
    entry = _primary_email_entry(data)
    return clean_text(entry["email_address"]) if entry is not None else ""


def primary_email_verified(data: Mapping[str, Any]) -> bool:
    """Whether Clerk reports the primary email verified: its entry's `verification.status`."""
    entry = _primary_email_entry(data)
    verification = entry.get("verification") if entry is not None else None
    if not isinstance(verification, Mapping):
        return False
    status = verification.get("status")
    # A webhook sends the text; an SDK model_dump holds a str enum, which compares equal to it.
    return isinstance(status, str) and status == "verified"


def clerk_user_from_dict(data: Any) -> ClerkUser:
    """A webhook's `data`, or an SDK User's `.model_dump()`, as our columns."""
    if not isinstance(data, Mapping):
        raise MalformedClerkData("data is not a JSON object")
    clerk_id = data.get("id")
    if not isinstance(clerk_id, str) or not clerk_id.strip():
        raise MalformedClerkData("data.id (the Clerk user id) is missing")
    bounded("data.id", clerk_id, MAX_ID_BYTES)
    fields: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        if name in data:
            fields[name] = bounded(f"data.{name}", text_value(data[name]))
    if "image_url" in data or "profile_image_url" in data:
        # profile_image_url is the pre-Core-2 name; real payloads still send both.
        fields["image_url"] = text_value(data.get("image_url", data.get("profile_image_url")))
    for name in METADATA_FIELDS:
        if name in data:
            fields[name] = json_text(data[name])
    if "email_addresses" in data or "primary_email_address_id" in data:
        fields["email"] = bounded("the primary email address", primary_email(data))
    if "last_sign_in_at" in data:
        fields["last_sign_in_at"] = ms_to_datetime(data["last_sign_in_at"])
    if "locked" in data:
        fields["locked"] = data["locked"] is True
    return ClerkUser(clean_text(clerk_id), ms(data.get("updated_at")), fields, primary_email_verified(data))


# --- Writing ----------------------------------------------------------------------------------------


def find_user_by_clerk_id(clerk_id: str) -> User | None:
    """The row for a Clerk id, deleted or not, locked until the transaction ends.

    FOR UPDATE makes concurrent events for one user wait for each other, so the ordering guard
    sees the version the other one applied (SQLite has one writer at a time anyway).
    """
    return db.session.scalars(
        sa.select(User).where(User.clerk_id == clerk_id).with_for_update().execution_options(populate_existing=True)
    ).first()


@dataclass(frozen=True)
class Found:
    """A user's row, locked, and what else the rules ask about them, read in the same statement."""

    user: User
    open_calls: bool  # calls to Clerk not delivered yet: some fields may wait for Clerk (keep_dashboard_edits)
    memberships: bool  # membership rows name this user: a new name or email is copied to them


STAFF_ROLES = (UserRole.ADMIN, UserRole.SUPER_ADMIN)
_FACTS = (has_open_calls(User.id), has_memberships(User.id))  # Found's two flags, as columns
_IS_THE_USER = User.clerk_id == sa.bindparam("clerk_id")
# Live rows waiting for their Clerk user, with one of two spellings of an email (equality on both,
# so the b-tree index on email serves it, no lower() scan). The statements are built once, with
# bind parameters: building them cost more than running them.
_WAITING = sa.and_(
    User.email.in_([sa.bindparam("email"), sa.bindparam("normalised")]),
    User.deleted_at.is_(None),
    sa.or_(User.status == UserStatus.INVITED, *(User.clerk_id.startswith(p) for p in CLAIMABLE_ID_PREFIXES)),
)
# A staff row only when Clerk reports the email verified (find_claimable_user says why).
_CLAIMABLE_BY = {True: _WAITING, False: sa.and_(_WAITING, User.role.not_in(STAFF_ROLES))}
_LOCKED_USER = (
    sa.select(User, *_FACTS).where(_IS_THE_USER).with_for_update(of=User).execution_options(populate_existing=True)
)
_LOCKED_USER_OR_WAITING = {
    verified: sa.select(User, *_FACTS)
    .where(sa.or_(_IS_THE_USER, sa.and_(sa.bindparam("email") != "", claimable)))
    .order_by(sa.case((_IS_THE_USER, 0), else_=1), User.created_at, User.id)
    .limit(1)
    .with_for_update(of=User)
    .execution_options(populate_existing=True)
    for verified, claimable in _CLAIMABLE_BY.items()
}
_CLAIMABLE = {
    verified: sa.select(User)
    .where(claimable)
    .order_by(User.created_at, User.id)
    .limit(1)
    .with_for_update()
    .execution_options(populate_existing=True)
    for verified, claimable in _CLAIMABLE_BY.items()
}
_STAFF_ROW_WAITING = sa.select(User.id).where(_WAITING, User.role.in_(STAFF_ROLES)).limit(1)


def _spellings(email: str) -> dict[str, str]:
    return {"email": email, "normalised": normalise_email(email) if email else email}


def _found(row: sa.Row) -> Found:
    return Found(row[0], bool(row[1]), bool(row[2]))


def _find_locked(clerk_id: str) -> Found | None:
    """find_user_by_clerk_id, and whether the user has open calls to Clerk and memberships: one statement."""
    row = db.session.execute(_LOCKED_USER, {"clerk_id": clerk_id}).first()
    return None if row is None else _found(row)


def _find_locked_or_waiting(incoming: ClerkUser) -> tuple[Found | None, User | None]:
    """Under lock_clerk_user_id: the user's row if it is here (perhaps made while this waited for
    the lock), else the row find_claimable_user would claim, locked; one statement for both."""
    params = {"clerk_id": incoming.clerk_id, **_spellings(incoming.email)}
    row = db.session.execute(_LOCKED_USER_OR_WAITING[incoming.email_verified], params).first()
    if row is None:
        return None, None
    return (_found(row), None) if row[0].clerk_id == incoming.clerk_id else (None, row[0])


def find_claimable_user(email: str, *, verified: bool) -> User | None:
    """A live row waiting for its Clerk user, with this email, locked.

    A staff row only when Clerk reports the email verified: an unverified address need not belong
    to whoever holds it in Clerk, and a claim hands over the row and its role.
    """
    if not email:
        return None
    return db.session.scalars(_CLAIMABLE[verified], _spellings(email)).first()


def _staff_row_waiting_for(email: str) -> bool:
    """Whether a staff row waits for this email (asked only when an unverified email claimed nothing)."""
    if not email:
        return False
    return db.session.scalar(_STAFF_ROW_WAITING, _spellings(email)) is not None


@functools.cache
def _insert_user_once(dialect: str) -> sa.Select:
    """INSERT a user unless its clerk_id exists, RETURNING it as a User: built once (the values are
    parameters), a Core INSERT read as the entity (the ORM's own INSERT path costs more)."""
    users = User.__table__
    statement = dialect_insert(users, dialect).on_conflict_do_nothing(index_elements=[users.c.clerk_id])
    statement = statement.returning(*users.c)
    return sa.select(User).from_statement(statement)


def _insert_user_if_absent(values: dict[str, Any], *, actor: Actor, action: str) -> User | None:
    """Insert a user unless its clerk_id exists; None when another transaction got there first."""
    statement = _insert_user_once(db.session.get_bind().dialect.name)
    user = db.session.scalars(statement, values, execution_options={"populate_existing": True}).first()
    if user is not None:
        counts.note_insert(user)
        audited = {k: v for k, v in values.items() if k != "clerk_updated_at"}
        record_now(action, actor=actor, target=user, changes=diff({}, audited))
    return user


def _latest(current: datetime | None, incoming: datetime | None) -> datetime | None:
    # A sign-in time only moves forward: session.created may have recorded a newer one already.
    if current is None or incoming is None:
        return incoming or current
    return max(current, incoming)


def _advance_guard(user: User, updated_at: int | None, *, force: bool = False) -> None:
    """Move the ordering guard; set before update_user_fields, so that one UPDATE writes both (or
    the next flush writes it alone when no field changed)."""
    if updated_at is None:
        return
    if force or user.clerk_updated_at is None or updated_at > user.clerk_updated_at:
        user.clerk_updated_at = updated_at


def _is_stale(incoming: ClerkUser, user: User) -> str | None:
    """Why this version must not be applied over the stored one, or None when it may be."""
    if user.clerk_updated_at is None:
        return None
    if incoming.updated_at is None:
        return "the event has no updated_at to order it by, and a dated version is already applied"
    if incoming.updated_at < user.clerk_updated_at:
        return f"updated_at {incoming.updated_at} is older than the {user.clerk_updated_at} already applied"
    return None


def upsert_clerk_user(
    incoming: ClerkUser,
    *,
    actor: Actor,
    ignore_order: bool = False,
    action: str = "user.update",
    probably_new: bool = False,
) -> SyncResult:
    """Create, claim or update the user for this Clerk user; `ignore_order` only for a human's replay.

    `action` names the update in the audit trail (`clerk.answer` when Clerk answered our call).
    `probably_new` (a user.created): take the lock first, as for a user not here yet, which saves
    a look-up when it is so; the outcome is the same either way."""
    found = None if probably_new else _find_locked(incoming.clerk_id)
    if found is None:
        # Making or claiming the row attaches memberships that waited for it: the lock order of
        # app/records/organizations.py takes the Clerk user id before the user's row.
        lock_clerk_user_id(incoming.clerk_id)
        found, waiting = _find_locked_or_waiting(incoming)
        if waiting is not None:
            return _claim(waiting, incoming, actor=actor)
    if found is None:
        values = {
            "clerk_id": incoming.clerk_id,
            "email": "",
            **incoming.fields,
            "clerk_updated_at": incoming.updated_at,
        }
        user = _insert_user_if_absent(values, actor=actor, action="user.create")
        if user is not None:
            attach_waiting_memberships(user, locked=True)
            if not incoming.email_verified and _staff_row_waiting_for(incoming.email):
                reason = (
                    f"not claimed: {incoming.email} belongs to a staff account and Clerk does not report it verified"
                )
                return SyncResult(SyncOutcome.CREATED, user, reason=reason, noteworthy=True)
            return SyncResult(SyncOutcome.CREATED, user, reason="created")
        # A concurrent event for the same new user inserted (or claimed) it first: update that row.
        found = _find_locked(incoming.clerk_id)
        if found is None:  # pragma: no cover - a conflict on clerk_id means the row exists
            raise RuntimeError(f"clerk_id {incoming.clerk_id} conflicted but cannot be found")
    user = found.user
    if user.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, user, reason="the user was deleted in Clerk")
    stale = None if ignore_order else _is_stale(incoming, user)
    if stale:
        return SyncResult(SyncOutcome.STALE, user, reason=stale)
    changes = dict(incoming.fields)
    if "last_sign_in_at" in changes:
        changes["last_sign_in_at"] = _latest(user.last_sign_in_at, changes["last_sign_in_at"])
    kept = keep_dashboard_edits(user, changes) if found.open_calls else []
    _advance_guard(user, incoming.updated_at, force=ignore_order)
    applied = update_user_fields(user, changes, actor=actor, action=action, memberships=found.memberships)
    outcome = SyncOutcome.UPDATED if applied else SyncOutcome.UNCHANGED
    if kept:
        reason = f"{outcome.value}; kept the dashboard's {', '.join(kept)}: not in Clerk yet"
        return SyncResult(outcome, user, applied, reason=reason, noteworthy=True)
    return SyncResult(outcome, user, applied, reason=outcome.value)


def same_value(name: str, ours: Any, theirs: Any) -> bool:
    """Whether Clerk's value is the dashboard's (emails by case, metadata as JSON, not as text)."""
    if name == "email":
        return (ours or "").casefold() == (theirs or "").casefold()
    if name in METADATA_FIELDS:
        try:
            return json.loads(ours or "null") == json.loads(theirs or "null")
        except ValueError:
            return ours == theirs
    return ours == theirs


def keep_dashboard_edits(user: User, changes: dict[str, Any]) -> list[str]:
    """Drop from `changes` each field an admin changed that Clerk has not taken yet, when Clerk's
    value differs from ours (it is the value before the edit); return their names.

    Once the call that carries the edit is delivered, Clerk's value rules again (docs/webhooks.md).
    """
    waiting = fields_waiting([user.id]).get(user.id, set())
    kept = sorted(name for name in waiting & changes.keys() if not same_value(name, getattr(user, name), changes[name]))
    for name in kept:
        del changes[name]
    return kept


def _claim(user: User, incoming: ClerkUser, *, actor: Actor) -> SyncResult:
    changes = {**incoming.fields, "clerk_id": incoming.clerk_id}
    if "last_sign_in_at" in changes:
        changes["last_sign_in_at"] = _latest(user.last_sign_in_at, changes["last_sign_in_at"])
    if user.status == UserStatus.INVITED:
        changes["status"] = UserStatus.ACTIVE  # the invitation was accepted
    _advance_guard(user, incoming.updated_at)
    applied = update_user_fields(user, changes, actor=actor, action="user.claimed")
    attach_waiting_memberships(user, locked=True)  # upsert_clerk_user holds the lock
    return SyncResult(SyncOutcome.CLAIMED, user, applied, reason=f"claimed the waiting row for {user.email}")


def delete_clerk_user(clerk_id: str, *, actor: Actor) -> SyncResult:
    """Soft-delete the user; for an id never seen, keep a tombstone so it cannot appear later."""
    lock_clerk_user_id(clerk_id)  # before the user's row: the lock order of app/records/organizations.py
    user = find_user_by_clerk_id(clerk_id)
    if user is None:
        now = utcnow()
        user = _insert_user_if_absent(
            {"clerk_id": clerk_id, "email": "", "deleted_at": now}, actor=actor, action="user.delete"
        )
        if user is not None:
            end_memberships_of_user(user, actor=actor, action="membership.user_deleted")  # any that waited for it
            return SyncResult(SyncOutcome.DELETED, user, reason="tombstone for a user not seen before")
        user = find_user_by_clerk_id(clerk_id)
        if user is None:  # pragma: no cover - a conflict on clerk_id means the row exists
            raise RuntimeError(f"clerk_id {clerk_id} conflicted but cannot be found")
    if user.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, user, reason="the user was already deleted")
    changes = update_user_fields(user, {"deleted_at": utcnow()}, actor=actor, action="user.delete")
    end_memberships_of_user(user, actor=actor, action="membership.user_deleted")
    return SyncResult(SyncOutcome.DELETED, user, changes, reason="deleted")


def record_sign_in(clerk_id: str, signed_in_at: datetime, *, actor: Actor) -> SyncResult:
    """Move last_sign_in_at forward (never back: events arrive in any order)."""
    user = find_user_by_clerk_id(clerk_id)
    if user is None:
        return SyncResult(SyncOutcome.UNKNOWN, None, reason="no user with this Clerk id yet")
    if user.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, user, reason="the user was deleted in Clerk")
    latest = _latest(user.last_sign_in_at, signed_in_at)
    changes = update_user_fields(user, {"last_sign_in_at": latest}, actor=actor, action="user.sign_in")
    outcome = SyncOutcome.UPDATED if changes else SyncOutcome.UNCHANGED
    return SyncResult(outcome, user, changes, reason=outcome.value)
