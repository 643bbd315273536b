"""Dashboard sign-in: one-time links (the break-glass path and the local demo's way in)."""

from __future__ import annotations

import secrets
from datetime import timedelta

import sqlalchemy as sa
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from app.audit.services import Actor, record
from app.extensions import db
from app.models import SignInLink, User, utcnow

SALT = "dashboard-sign-in-link"


class SignInRefused(Exception):
    """The link cannot start a session; the message says why, for the person holding it."""


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=SALT)


def issue_sign_in_link(user: User, *, secret_key: str, max_age: int, actor: Actor) -> str:
    """Store a single-use link for a staff member and return its signed token."""
    if not user.can_use_dashboard:
        raise SignInRefused(f"{user.email} cannot sign in to the dashboard: it needs an active admin or super admin")
    link = SignInLink(
        id=secrets.token_urlsafe(24),
        user_id=user.id,
        expires_at=utcnow() + timedelta(seconds=max_age),
    )
    db.session.add(link)
    db.session.flush()
    record("auth.sign_in_link_issued", actor=actor, target=user)
    return _serializer(secret_key).dumps(link.id)


def redeem_sign_in_link(token: str, *, secret_key: str, max_age: int, remote_addr: str | None) -> User:
    """Spend a link: it works once, before it expires, for an active staff member."""
    try:
        link_id = _serializer(secret_key).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise SignInRefused("This sign-in link has expired. Ask for a new one.") from exc
    except BadSignature as exc:
        raise SignInRefused("This sign-in link is not valid.") from exc

    link = db.session.get(SignInLink, link_id) if isinstance(link_id, str) else None
    if link is None:
        raise SignInRefused("This sign-in link is not valid.")
    now = utcnow()
    if link.used_at is not None:
        raise SignInRefused("This sign-in link has already been used. Ask for a new one.")
    if link.expires_at <= now:
        raise SignInRefused("This sign-in link has expired. Ask for a new one.")
    user = link.user
    if not user.can_use_dashboard:
        raise SignInRefused("This account may not use the dashboard.")

    # Spend it atomically, so two requests racing with the same link cannot both get in.
    spent = db.session.execute(
        sa.update(SignInLink)
        .where(SignInLink.id == link.id, SignInLink.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:
        raise SignInRefused("This sign-in link has already been used. Ask for a new one.")
    record("auth.signed_in", actor=Actor.staff(user, remote_addr), target=user)
    return user


def end_sessions(user: User, *, actor: Actor) -> None:
    """Sign a person out everywhere: every copy of every session cookie issued to them stops working."""
    # A statement, not a flush: `version` (the edit forms' optimistic lock) and updated_at stay as they were.
    db.session.execute(
        sa.update(User)
        .where(User.id == user.id)
        .values(session_generation=User.session_generation + 1, updated_at=User.updated_at)
    )
    record("auth.signed_out", actor=actor, target=user)
