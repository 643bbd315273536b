"""Who is signed in, and the rule that everything but a few public endpoints needs staff.

A dashboard session is a signed cookie holding the user's id. It starts from a one-time link or
from a verified Clerk session token, ends on sign-out or after SESSION_IDLE_MINUTES without a
request, and is checked against the database on every request (a suspended or demoted admin is
out at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, abort, current_app, flash, g, redirect, request, session, url_for
from htmx_flask import make_response

from app.audit.services import Actor, record
from app.auth.clerk_session import ClerkTokenRefused, has_clerk_token, verify_clerk_request
from app.extensions import db
from app.models import User

SESSION_USER_KEY = "user_id"
SESSION_SEEN_KEY = "seen"


def public(view: Callable) -> Callable:
    """Mark a view as reachable without signing in."""
    view.is_public = True  # type: ignore[attr-defined]
    return view


def sign_in(user: User) -> None:
    session.clear()
    session[SESSION_USER_KEY] = user.id
    session[SESSION_SEEN_KEY] = int(time.time())
    session.permanent = True


def sign_out() -> None:
    session.clear()


def _session_user() -> User | None:
    user_id = session.get(SESSION_USER_KEY)
    if not isinstance(user_id, str):
        return None
    now = int(time.time())
    seen = session.get(SESSION_SEEN_KEY)
    idle_limit = current_app.config["SESSION_IDLE_MINUTES"] * 60
    if not isinstance(seen, int) or now - seen > idle_limit:
        sign_out()
        flash("You were signed out after a while without activity. Sign in again.", "info")
        return None
    if now - seen >= 60:  # refresh the cookie at most once a minute
        session[SESSION_SEEN_KEY] = now
    return db.session.get(User, user_id)


def _clerk_user() -> User | None:
    """The user a Clerk session token speaks for; a cookie token also starts a dashboard session."""
    config = current_app.config
    if not config["CLERK_JWT_KEY"] or not has_clerk_token(request):
        return None
    try:
        found = verify_clerk_request(
            request, jwt_key=config["CLERK_JWT_KEY"], authorized_parties=config["CLERK_AUTHORIZED_PARTIES"]
        )
    except ClerkTokenRefused as refused:
        g.clerk_refusal = str(refused)
        return None
    if found.user is None:
        g.clerk_refusal = "no user with this Clerk id here"
        return None
    if not found.bearer and found.user.can_use_dashboard:
        sign_in(found.user)
        record("auth.signed_in", actor=Actor.staff(found.user, request.remote_addr), target=found.user,
               changes={"via": [None, "clerk session"]})
        db.session.commit()
    return found.user


def _load_current_user() -> None:
    g.user = None
    g.clerk_refusal = None
    if request.endpoint == "static":
        return
    g.user = _session_user() or _clerk_user()


def _require_staff():
    if request.endpoint is None or request.endpoint == "static":
        return None
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "is_public", False):
        return None
    user = g.user
    if user is None:
        return _to_sign_in()
    if not user.can_use_dashboard:
        if user.deleted_at is None and user.status.value == "active":
            abort(403, description="The dashboard is for admins and super admins.")
        sign_out()
        return _to_sign_in()
    return None


def _to_sign_in():
    target = url_for("auth.sign_in_page", next=request.full_path if request.method == "GET" else None)
    if request.htmx:
        # A fragment swap cannot show a page: ask htmx to load the sign-in page instead.
        return make_response("", 401, redirect=target)
    return redirect(target)


def init_guard(app: Flask) -> None:
    app.before_request(_load_current_user)
    app.before_request(_require_staff)

    @app.context_processor
    def _current_user():
        return {"current_user": g.get("user")}
