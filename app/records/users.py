"""The basic user records every path shares: create, update fields, snapshot, look-ups.

The dashboard's operations, Clerk's sync and the outbox's delivery all write users through
`new_user` and `update_user_fields`, which keep the counters (app/records/counts.py) and the audit
trail in the same transaction. Nothing here checks permissions or commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from app.audit.services import Actor, diff, record, record_now
from app.extensions import db
from app.models import ClerkIdKind, User, UserRole, UserStatus
from app.records import counts
from app.records.organizations import MEMBER_FIELDS, refresh_member_details
from app.records.staff import follow_role


def normalise_email(email: str) -> str:
    """One spelling per address: trimmed, lower case, an IDNA domain in Unicode (bücher.de, not xn--)."""
    email = email.strip()
    if email.isascii() and email.islower() and '"' not in email and "xn--" not in email:
        return email  # already its one spelling (the common case, asked for every new Clerk user)
    try:
        return validate_email(email, check_deliverability=False).normalized.lower()
    except (EmailNotValidError, UnicodeError, ValueError):
        return email.lower()


def email_spellings(email: str) -> set[str]:
    """Every lower-case spelling of an address that names the same mailbox (Unicode or ASCII domain)."""
    spellings = {email.strip().lower(), normalise_email(email)}
    try:
        ascii_email = validate_email(email.strip(), check_deliverability=False).ascii_email
    except (EmailNotValidError, UnicodeError, ValueError):
        ascii_email = None
    if ascii_email:
        spellings.add(ascii_email.lower())
    return spellings


def placeholder_clerk_id() -> str:
    """A unique stand-in until a Clerk user (or invitation) claims the row."""
    return f"{ClerkIdKind.PLACEHOLDER.value}{uuid.uuid4().hex}"


def live_users() -> sa.Select:
    """Users that have not been deleted (soft delete keeps the row as a tombstone)."""
    return sa.select(User).where(User.deleted_at.is_(None))


def find_live_user_by_email(email: str) -> User | None:
    """The live user with this address; a staff row first, then the oldest.

    Two rows can share an address: Clerk's user with an unverified email is kept apart from a
    staff account, and the command line must then promote or sign in the staff account.
    """
    staff_first = sa.case((User.role.in_([UserRole.SUPER_ADMIN, UserRole.ADMIN]), 0), else_=1)
    return db.session.scalars(
        live_users()
        .where(sa.func.lower(User.email).in_(email_spellings(email)))
        .order_by(staff_first, User.created_at, User.id)
        .limit(1)
    ).first()


def new_user(
    email: str,
    *,
    role: UserRole,
    status: UserStatus,
    action: str,
    actor: Actor,
    first_name: str | None = None,
    last_name: str | None = None,
) -> User:
    """A local row, with a placeholder Clerk id until Clerk's user.created claims it; audited."""
    user = User(
        email=normalise_email(email),
        first_name=first_name or None,
        last_name=last_name or None,
        role=role,
        status=status,
        clerk_id=placeholder_clerk_id(),
    )
    db.session.add(user)
    db.session.flush()
    counts.note_insert(user)
    fields = ("email", "first_name", "last_name", "role", "status")
    record(action, actor=actor, target=user, changes=diff(dict.fromkeys(fields), snapshot(user, fields)))
    if user.is_staff:
        follow_role(user, actor=actor)
    return user


def snapshot(user: User, fields: Iterable[str]) -> dict:
    return {field: getattr(user, field) for field in fields}


def update_user_fields(
    user: User, changes: dict, *, actor: Actor, action: str = "user.update", memberships: bool = True
) -> dict:
    """Set the given columns, and audit the ones whose value really changed.

    The one code path for field edits, whoever makes them (dashboard form, Clerk webhook, CLI).
    Returns the audited diff, {field: [before, after]}; an empty dict means nothing changed.
    `memberships=False`: the caller has just read, in this transaction, that no membership names
    this user, so a new name or email has no membership to refresh (a statement saved).
    """
    before = snapshot(user, changes)
    changed = diff(before, changes)
    if not changed:
        return {}
    counted_before = counts.counted(user)
    could_sign_in = user.can_use_dashboard
    for field in changed:
        setattr(user, field, changes[field])
    if could_sign_in and not user.can_use_dashboard:  # suspended, deleted or no longer staff
        user.session_generation = User.session_generation + 1  # ends all their sessions (app/auth/guard.py)
    db.session.flush()
    counts.note_change(counted_before, user)
    if memberships and MEMBER_FIELDS.keys() & changed.keys():
        refresh_member_details(user, changed)
    record_now(action, actor=actor, target=user, changes=changed)  # the row is flushed above
    if "role" in changed:
        follow_role(user, actor=actor)
    return changed
