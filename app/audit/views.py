"""The audit trail page."""

from __future__ import annotations

from flask import Blueprint, request

from app.audit.labels import action_label, parse_changes
from app.audit.queries import AuditFilters, known_actions, list_events, organization_named
from app.audit.services import Source
from app.pages import answer

bp = Blueprint("audit", __name__)


@bp.get("/audit")
def index():
    filters = AuditFilters.from_args(request.args)
    page = list_events(filters, after=request.args.get("after"))
    return answer(
        "audit/index.html",
        "audit/_results.html",
        page=page,
        filters=filters,
        actions=known_actions(),
        sources=[s.value for s in Source],
        action_label=action_label,
        parse_changes=parse_changes,
        page_extras=lambda: {"organization": organization_named(filters.organization)},
    )
