"""Central error pages: htmx requests get a small fragment, full requests a page."""

from __future__ import annotations

from flask import Flask, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from app.extensions import db
from app.users.permissions import NotAllowed

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


def render_error(code: int, description: str):
    template = "errors/_error.html" if request.htmx else "errors/error.html"
    title = TITLES.get(code, "Error")
    return render_template(template, code=code, title=title, description=description), code


def init_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError):
        db.session.rollback()
        return render_error(400, f"The form could not be accepted: {error.description} Reload the page and try again.")

    @app.errorhandler(NotAllowed)
    def _not_allowed(error: NotAllowed):
        db.session.rollback()
        return render_error(403, str(error))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        if error.code and error.code >= 400:
            db.session.rollback()
        if error.code is None or error.code < 400:
            return error
        return render_error(error.code, error.description or TITLES.get(error.code, ""))

    @app.errorhandler(InternalServerError)
    def _internal(error: InternalServerError):
        db.session.rollback()
        return render_error(500, "The error has been logged. Nothing was changed.")
