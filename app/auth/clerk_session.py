"""Signing in with a Clerk session token, verified offline with the instance's PEM public key.

Clerk's frontend keeps a short-lived (60 s) session JWT in the `__session` cookie; API clients send
it as `Authorization: Bearer`. `clerk-backend-api`'s `authenticate_request` checks the signature,
`exp`/`nbf` (with 5 s of leeway) and `azp`; we add what it leaves out (see docs/clerk.md):
a token must carry `exp`, a pending session (`sts`) is not signed in, and a non-Bearer
Authorization header must not hide the cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from clerk_backend_api.security import authenticate_request
from clerk_backend_api.security.types import AuthenticateRequestOptions

from app.extensions import db
from app.models import User


@dataclass(frozen=True)
class TokenHeaders:
    """The one header authenticate_request should read, so nothing else can shadow it."""

    headers: dict[str, str]


@dataclass(frozen=True)
class ClerkSignIn:
    user: User | None  # None: the token was good, but it is no user we know
    bearer: bool  # a bearer token signs in one request; a cookie starts a dashboard session
    subject: str


class ClerkTokenRefused(Exception):
    """A Clerk token was presented and is not good; the message is the reason."""


def _token_headers(request) -> TokenHeaders | None:
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return TokenHeaders({"Authorization": authorization})
    session_cookies = [(name, value) for name, value in request.cookies.items() if name.startswith("__session")]
    if session_cookies:
        name, value = session_cookies[0]
        return TokenHeaders({"cookie": f"{name}={value}"})
    return None


def has_clerk_token(request) -> bool:
    return _token_headers(request) is not None


def verify_clerk_request(request, *, jwt_key: str, authorized_parties: list[str]) -> ClerkSignIn:
    """The local user a Clerk session token speaks for; raises ClerkTokenRefused when it is not good."""
    headers = _token_headers(request)
    if headers is None:
        raise ClerkTokenRefused("no Clerk session token")
    options = AuthenticateRequestOptions(jwt_key=jwt_key, authorized_parties=authorized_parties or None)
    state = authenticate_request(headers, options)
    if not state.is_signed_in:
        raise ClerkTokenRefused(str(state.reason.value if hasattr(state.reason, "value") else state.reason))
    payload = state.payload or {}
    if "exp" not in payload:
        raise ClerkTokenRefused("token without an expiry")
    if payload.get("sts") == "pending":
        raise ClerkTokenRefused("session pending")
    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ClerkTokenRefused("token without a subject")
    user = db.session.scalars(sa.select(User).where(User.clerk_id == subject)).first()
    return ClerkSignIn(user=user, bearer="Authorization" in headers.headers, subject=subject)
