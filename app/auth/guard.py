"""Who is signed in, and the rule that everything but a few public endpoints needs staff."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from htmx_flask import make_response

from app.extensions import db
from app.models import User

SESSION_USER_KEY = "user_id"


def public(view: Callable) -> Callable:
    """Mark a view as reachable without signing in."""
    view.is_public = True  # type: ignore[attr-defined]
    return view


def sign_in(user: User) -> None:
    session.clear()
    session[SESSION_USER_KEY] = user.id
    session.permanent = True


def sign_out() -> None:
    session.clear()


def _load_current_user() -> None:
    g.user = None
    user_id = session.get(SESSION_USER_KEY)
    if isinstance(user_id, str):
        g.user = db.session.get(User, user_id)


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
            abort(403)  # a known, active account without a staff role
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
