"""Central error pages: htmx requests get a small fragment, full requests a page."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, abort, current_app, g, request
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from app.database import (
    RETRY_AFTER_SECONDS,
    TOO_SLOW_MESSAGE,
    UNREACHABLE_AFTER_SAVE_MESSAGE,
    UNREACHABLE_MESSAGE,
    committed_in_this_request,
    first_line,
    is_database_unreachable,
    note_commits,
    release_sessions_safely,
    rollback_quietly,
    timed_out,
)
from app.extensions import db
from app.pages import answer
from app.permissions import NotAllowed

TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    500: "Something went wrong",
    503: "Unavailable",
}

# What a page needs of the signed-in user to draw the navigation (see base.html).
_NAV_FIELDS = frozenset({"email", "role", "status", "deleted_at"})


def error_page(code: int, description: str) -> dict:
    """What errors/error.html (and its fragment) show."""
    return {"code": code, "title": TITLES.get(code, "Error"), "description": description}


def render_error(code: int, description: str):
    return answer("errors/error.html", "errors/_error.html", status=code, **error_page(code, description))


def expired_form_message(reason: str = "The form has expired.") -> str:
    return f"The form could not be accepted: {reason} Reload the page and try again."


def ensure_form_accepted(form: FlaskForm) -> None:
    """A form that carries only its CSRF token (Retry, Revoke, ...): 400, the expired-form answer, unless valid."""
    if not form.validate():
        abort(400, description=expired_form_message())


def _keep_user_for_the_page() -> None:
    """Let the error page show who is signed in without asking the database again.

    A rollback expires every loaded object, and reading an expired one would query the very
    database that just failed; so the user leaves the session first, or the page goes without.
    """
    user = g.get("user")
    if user is None:
        return
    state = sa.inspect(user)
    if state.unloaded & _NAV_FIELDS:
        g.user = None
    elif state.session is not None:
        state.session.expunge(user)


def database_unreachable(error: BaseException):
    """503 with Retry-After: the client (a person, htmx, Svix) can try the same request again."""
    current_app.logger.warning("%s %s: database unreachable: %s", request.method, request.path, first_line(error))
    _keep_user_for_the_page()
    rollback_quietly()
    if committed_in_this_request():
        message = UNREACHABLE_AFTER_SAVE_MESSAGE
    else:
        message = TOO_SLOW_MESSAGE if timed_out(error) else UNREACHABLE_MESSAGE
    response = render_error(503, message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def init_error_handlers(app: Flask) -> None:
    note_commits(db.session)
    release_sessions_safely(app)

    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError):
        db.session.rollback()
        return render_error(400, expired_form_message(error.description))

    @app.errorhandler(NotAllowed)
    def _not_allowed(error: NotAllowed):
        db.session.rollback()
        missing = getattr(error, "permission", None)  # a MissingPermission names what was lacking
        return answer(
            "errors/error.html",
            "errors/_error.html",
            status=403,
            missing_permission=missing,
            **error_page(403, str(error)),
        )

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        if error.code and error.code >= 400:
            db.session.rollback()
        if error.code is None or error.code < 400:
            return error
        return render_error(error.code, error.description or TITLES.get(error.code, ""))

    # Raised in a view or in a before_request hook (the sign-in guard reads the session's user).
    app.register_error_handler(sa.exc.OperationalError, database_unreachable)
    app.register_error_handler(sa.exc.InterfaceError, database_unreachable)
    app.register_error_handler(sa.exc.TimeoutError, database_unreachable)

    @app.errorhandler(InternalServerError)
    def _internal(error: InternalServerError):
        # Anything else that escaped, including an after_request hook and other driver errors
        # on a connection SQLAlchemy found dead, arrives here wrapped.
        if is_database_unreachable(error.original_exception):
            return database_unreachable(error.original_exception)
        db.session.rollback()
        return render_error(500, "The error has been logged. Nothing was changed.")
