"""The overview page (`/`): figures, charts and health at a glance; htmx swaps only the charts."""

from __future__ import annotations

from flask import Blueprint, redirect, request, url_for

from app.audit.labels import action_label, parse_changes
from app.auth.guard import current_actor, own_check
from app.overview.queries import RANGES, overview, parse_range, user_figures_and_activity
from app.pages import answer, wants_fragment
from app.permissions import ensure, may

bp = Blueprint("overview", __name__)


@bp.get("/")
@own_check
def index():
    # Home, where sign-in lands: someone who may not see users is shown what they may do instead.
    actor = current_actor()
    if not may(actor, "users.view"):
        if wants_fragment():
            ensure(actor, "users.view")
        return redirect(url_for("staff.me"))
    days = parse_range(request.args.get("days", type=int))
    if wants_fragment():
        # The range switch: only the charts change, so only their counters are read.
        _figures, activity = user_figures_and_activity(days, with_figures=False)
        context = {"activity": activity}
    else:
        context = overview(days, with_recent_changes=may(actor, "audit.view"))
    return answer(
        "overview/index.html",
        "overview/_activity.html",
        ranges=RANGES,
        action_label=action_label,
        parse_changes=parse_changes,
        **context,
    )
