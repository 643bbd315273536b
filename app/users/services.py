"""Operations on users, shared by the dashboard, the command line and the webhook."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from app.audit.services import Actor, record
from app.extensions import db
from app.models import User, UserRole, UserStatus


class UserError(ValueError):
    """A rule refused the operation; the message is fit to show to the person who asked."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def placeholder_clerk_id() -> str:
    """A unique stand-in until a Clerk user (or invitation) claims the row."""
    return f"local_{uuid.uuid4().hex}"


def live_users():
    """Users that have not been deleted (soft delete keeps the row as a tombstone)."""
    return sa.select(User).where(User.deleted_at.is_(None))


def find_live_user_by_email(email: str) -> User | None:
    return db.session.scalars(
        live_users().where(sa.func.lower(User.email) == normalise_email(email)).limit(1)
    ).first()


def create_admin(email: str, *, role: UserRole = UserRole.SUPER_ADMIN, actor: Actor) -> User:
    """Make (or promote) a staff member who can sign in to the dashboard."""
    from email_validator import EmailNotValidError, validate_email

    if role not in (UserRole.ADMIN, UserRole.SUPER_ADMIN):
        raise UserError("an administrator's role is admin or super_admin")
    try:
        email = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise UserError(f"{email!r} is not a valid email address: {exc}") from exc

    user = find_live_user_by_email(email)
    if user is None:
        user = User(
            email=email.lower(),
            role=role,
            status=UserStatus.ACTIVE,
            clerk_id=placeholder_clerk_id(),
        )
        db.session.add(user)
        db.session.flush()
        record(
            "user.create_admin",
            actor=actor,
            target=user,
            changes={"email": [None, user.email], "role": [None, role.value], "status": [None, "active"]},
        )
        return user

    changes = {}
    if user.role != role:
        changes["role"] = [user.role.value, role.value]
        user.role = role
    if user.status != UserStatus.ACTIVE:
        changes["status"] = [user.status.value, UserStatus.ACTIVE.value]
        user.status = UserStatus.ACTIVE
    if changes:
        db.session.flush()
        record("user.update", actor=actor, target=user, changes=changes)
    return user


def snapshot(user: User, fields) -> dict:
    return {field: getattr(user, field) for field in fields}


def update_user_fields(user: User, changes: dict, *, actor: Actor, action: str = "user.update") -> dict:
    """Set the given columns, and audit the ones whose value really changed.

    The one code path for field edits, whoever makes them (dashboard form, Clerk webhook, CLI).
    Returns the audited diff, {field: [before, after]}; an empty dict means nothing changed.
    """
    from app.audit.services import diff

    before = snapshot(user, changes)
    changed = diff(before, changes)
    if not changed:
        return {}
    for field in changed:
        setattr(user, field, changes[field])
    db.session.flush()
    record(action, actor=actor, target=user, changes=changed)
    return changed
