"""The overview page (`/`): figures, charts and health at a glance; htmx swaps only the charts."""

from __future__ import annotations

from flask import Blueprint, request

from app.audit.labels import action_label, parse_changes
from app.overview.queries import RANGES, overview, parse_range, user_figures_and_activity
from app.pages import answer, wants_fragment

bp = Blueprint("overview", __name__)


@bp.get("/")
def index():
    days = parse_range(request.args.get("days", type=int))
    if wants_fragment():
        # The range switch: only the charts change, so only their counters are read.
        _figures, activity = user_figures_and_activity(days, with_figures=False)
        context = {"activity": activity}
    else:
        context = overview(days)
    return answer(
        "overview/index.html",
        "overview/_activity.html",
        ranges=RANGES,
        action_label=action_label,
        parse_changes=parse_changes,
        **context,
    )
