"""Liveness and database check for load balancers."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError

from app.auth.guard import public
from app.database import RETRY_AFTER_SECONDS, first_line, rollback_quietly
from app.extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz():
    try:
        db.session.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as exc:
        rollback_quietly()
        current_app.logger.warning("health check: database unreachable: %s", first_line(exc))
        return jsonify(status="error", database="unreachable"), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return jsonify(status="ok", database="ok")
