"""Who is signed in, and the rule that everything but a few public endpoints needs staff.

Flask-Login keeps the session; its id for a person is "<user id>:<session generation>", accepted only
while the generation in the database is the same (README.md, "Signing in", says what moves it on).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import flask_login
import sqlalchemy as sa
from flask import Flask, abort, current_app, flash, g, redirect, request, session, url_for
from htmx_flask import make_response

from app.audit.services import Actor, record
from app.auth.clerk_session import ClerkTokenRefused, has_clerk_token, verify_clerk_request
from app.extensions import db, login_manager
from app.models import User
from app.pages import is_htmx_request, vary_on_htmx, wants_fragment
from app.permissions import ensure, may

SESSION_SEEN_KEY = "seen"
SESSION_STARTED_KEY = "started"


def public(view: Callable) -> Callable:
    """Mark a view as reachable without signing in."""
    view.is_public = True  # type: ignore[attr-defined]
    return view


def current_actor() -> Actor:
    """The signed-in staff member, as the actor of what this request does (with their address).

    One per request, so their permissions are read once (app/permissions.py)."""
    actor = g.get("actor")
    if actor is None or actor.user is not g.user:
        actor = g.actor = Actor.staff(g.user, request.remote_addr)
    return actor


def sign_in(user: User) -> None:
    session.clear()
    flask_login.login_user(user)
    now = int(time.time())
    session[SESSION_SEEN_KEY] = session[SESSION_STARTED_KEY] = now
    session.permanent = True


def sign_out() -> None:
    flask_login.logout_user()
    session.clear()


def _session_expired() -> str | None:
    """Why this session has run out (idle too long, or older than the maximum), if it has."""
    now = int(time.time())
    seen, started = session.get(SESSION_SEEN_KEY), session.get(SESSION_STARTED_KEY)
    if not isinstance(seen, int) or now - seen > current_app.config["SESSION_IDLE_MINUTES"] * 60:
        return "You were signed out after a while without activity. Sign in again."
    max_age = current_app.permanent_session_lifetime.total_seconds()
    if not isinstance(started, int) or now - started > max_age:
        return f"You were signed out {max_age / 3600:g} hours after signing in. Sign in again."
    if now - seen >= 60:  # refresh the cookie at most once a minute
        session[SESSION_SEEN_KEY] = now
    return None


@login_manager.user_loader
def _session_user(session_id: str) -> User | None:
    user_id, _, generation = session_id.rpartition(":")
    expired = _session_expired()
    if expired:
        session.clear()
        flash(expired, "info")
        return None
    user = db.session.get(User, user_id) if user_id else None
    if user is None or str(user.session_generation) != generation or not user.is_active:
        session.clear()  # signed out, suspended, deleted or demoted since: this cookie is dead
        return None
    return user


@login_manager.request_loader
def _clerk_user(request) -> User | None:
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
        record(
            "auth.signed_in",
            actor=Actor.staff(found.user, request.remote_addr),
            target=found.user,
            changes={"via": [None, "clerk session"]},
        )
        db.session.commit()
    return found.user


def _guard():
    """Before every view: who is signed in (once a request), and whether they may see this page."""
    g.user = None
    g.actor = None
    g.clerk_refusal = None
    # Flask-Login keeps the user it loaded in g, which outlives a request under an app context
    # pushed around several (the tests, the CLI): each request loads its own.
    g.pop("_login_user", None)
    endpoint = request.endpoint
    if endpoint == "static":
        return None
    view = current_app.view_functions.get(endpoint) if endpoint is not None else None
    if getattr(view, "is_public", False):
        # A public view (a webhook, the health check, sign-in) meets most requests without any
        # credentials: no session cookie and no Clerk token means nobody to look up.
        if _carries_credentials():
            g.user = _signed_in_user()
        return None
    g.user = user = _signed_in_user()  # an unknown address (404) still shows who is signed in
    if endpoint is None:
        return None
    if user is None:
        return login_manager.unauthorized()
    if not user.can_use_dashboard:  # only a Clerk token gets this far without the dashboard
        if user.deleted_at is None and user.status.value == "active":
            abort(403, description="The dashboard is for admins and super admins.")
        sign_out()
        return login_manager.unauthorized()
    permission = AREA_PERMISSIONS.get(request.blueprint or "")
    if permission is not None and not getattr(view, "own_check", False):
        ensure(current_actor(), permission)
    return None


def _signed_in_user() -> User | None:
    user = flask_login.current_user
    return user._get_current_object() if user.is_authenticated else None


def _carries_credentials() -> bool:
    config = current_app.config
    return config["SESSION_COOKIE_NAME"] in request.cookies or bool(
        config["CLERK_JWT_KEY"] and has_clerk_token(request)
    )


def safe_next_url(target: str | None) -> str | None:
    """Only a path on this site may follow a sign-in; anything else is dropped."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target:
        return None
    return target


def _page_the_htmx_request_came_from() -> str | None:
    """The page (HX-Current-URL) an htmx request was made on, when it is a path on this site."""
    try:
        parts = urlsplit(request.headers.get("HX-Current-URL", ""))
    except ValueError:  # e.g. a malformed IPv6 host
        return None
    if parts.scheme not in ("http", "https") or parts.netloc != request.host:
        return None
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if path.startswith(url_for("auth.sign_in_page")):
        return None
    return safe_next_url(path)


@login_manager.unauthorized_handler
def _to_sign_in():
    # A fragment's own URL is no page to come back to: an htmx swap returns to the page it was on.
    if wants_fragment():
        after = _page_the_htmx_request_came_from()
    else:
        after = request.full_path if request.method == "GET" else None
    target = url_for("auth.sign_in_page", next=after)
    if is_htmx_request():
        # A swap cannot show a page: htmx loads the sign-in page instead.
        return vary_on_htmx(make_response("", 401, redirect=target))
    return vary_on_htmx(redirect(target))


def init_guard(app: Flask) -> None:
    # The templates' current_user is g.user: None when signed out, and the error pages may drop it.
    login_manager.init_app(app, add_context_processor=False)
    app.before_request(_guard)

    @app.context_processor
    def _current_user():
        return {"current_user": g.get("user")}

    app.add_template_global(_may, "may")  # a global, so imported macros see it too


def _may(permission: str, target: User | None = None) -> bool:
    """For the templates: whether the signed-in person may do this (pages offer only what they may).

    An error page drawn because the database is unreachable offers nothing rather than ask it again."""
    if g.get("user") is None:
        return False
    try:
        return may(current_actor(), permission, target)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
        return False


def requires(permission: str) -> Callable:
    """A view that needs `permission` beyond its blueprint's (answered with a 403 naming it)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def checked(*args, **kwargs):
            ensure(current_actor(), permission)
            return view(*args, **kwargs)

        return checked

    return decorate


# What each area of the dashboard needs to be seen at all; each change needs its own permission
# besides, checked by the service that makes it (app/permissions.py). Views marked `own_check`
# (and public ones) are left to themselves: /staff/me shows anyone what they may do.
AREA_PERMISSIONS = {
    "overview": "users.view",
    "users": "users.view",
    "organizations": "users.view",
    "webhooks": "users.view",
    "clerk": "users.view",
    "audit": "audit.view",
    "staff": "permissions.manage",
}


def own_check(view: Callable) -> Callable:
    """Mark a view whose permission is checked by itself (or by the service it calls), not by its blueprint's."""
    view.own_check = True  # type: ignore[attr-defined]
    return view
