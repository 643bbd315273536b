"""The outbox page (calls to Clerk and where each stands), Retry and "push now"."""

from __future__ import annotations

import time

from flask import Blueprint, abort, flash, redirect, request, url_for

from app.auth.guard import current_actor
from app.clerk.client import clerk_connected
from app.clerk.forms import ClerkActionForm, OutboxFilters
from app.clerk.outbox.delivery import (
    REQUEST_BUDGET_MS,
    ClerkUnavailable,
    deliver_after_request,
    deliver_due,
    take_clerks_value,
)
from app.clerk.outbox.enqueue import RetryRefused, retry_call
from app.clerk.outbox.queries import call_offers, describe, list_calls, outbox_health
from app.errors import ensure_form_accepted
from app.extensions import db
from app.models import ClerkCall, ClerkCallState
from app.pages import answer
from app.pagination import MAX_INT
from app.permissions import ensure

bp = Blueprint("clerk", __name__)
PAGE_SIZE = 50
MAX_CALL_ID = MAX_INT  # the id column is an INTEGER: a larger number is no call, not a query error


@bp.app_template_global()
def clerk_is_connected() -> bool:
    return clerk_connected()


@bp.app_template_global()
def clerk_call_label(call: ClerkCall) -> str:
    return describe(call)


@bp.get("/clerk")
def index():
    filters = OutboxFilters.from_args(request.args)
    page = list_calls(state=filters.state, after=request.args.get("after"), per_page=PAGE_SIZE)
    actor = current_actor()
    return answer(
        "clerk/index.html",
        "clerk/_results.html",
        page=page,
        filters=filters,
        states=[s.value for s in ClerkCallState],
        health=outbox_health(),
        action_form=ClerkActionForm(formdata=None),
        **call_offers(page.rows, actor),
    )


@bp.post(f"/clerk/calls/<int(max={MAX_CALL_ID}):call_id>/retry")
def retry(call_id: int):
    call = db.get_or_404(ClerkCall, call_id, description="There is no such call to Clerk.")
    ensure_form_accepted(ClerkActionForm())
    try:
        retry_call(call, actor=current_actor())
    except RetryRefused as refused:
        abort(409, description=str(refused))
    db.session.commit()
    report = deliver_after_request(actor=current_actor())
    db.session.refresh(call)
    if call.state == "delivered":
        flash(f"Call #{call.id} reached Clerk.", "success")
    else:
        flash(
            f"Call #{call.id} is {call.state} in Clerk: {call.last_error or report.stopped or 'not sent yet'}.",
            "error" if call.state == "failed" else "warning",
        )
    return redirect(page_of(call, back=request.form.get("back")))


def page_of(call: ClerkCall, *, back: str | None = "user") -> str:
    """Where the admin acted on a call: its organization's page, its user's page, or the Clerk page."""
    if call.organization_id is not None and back in ("user", "organization"):
        return url_for("organizations.detail", organization_id=call.organization_id, _anchor="clerk")
    if call.user_id is not None and back == "user":
        return url_for("users.detail", user_id=call.user_id, _anchor="clerk")
    return url_for("clerk.index")


def shown(value, limit: int = 80) -> str:
    text = "nothing" if value in (None, "") else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@bp.post(f"/clerk/calls/<int(max={MAX_CALL_ID}):call_id>/take-clerk-value")
def take_value(call_id: int):
    """Give up a failed call: the fields it carried take the values Clerk holds now."""
    call = db.get_or_404(ClerkCall, call_id, description="There is no such call to Clerk.")
    ensure_form_accepted(ClerkActionForm())
    try:
        changed = take_clerks_value(call, actor=current_actor())
    except RetryRefused as refused:
        abort(409, description=str(refused))
    except ClerkUnavailable as unavailable:
        db.session.rollback()
        flash(f"Could not take Clerk's value for call #{call_id}: {unavailable}", "error")
        return redirect(page_of(call))
    db.session.commit()
    if changed:
        taken = "; ".join(f"{name}: {shown(pair[0])} → {shown(pair[1])}" for name, pair in changed.items())
        flash(f"Took Clerk's value (call #{call_id} given up). {taken}.", "success")
    else:
        flash(f"Call #{call_id} given up: Clerk holds the same values as the dashboard; nothing changed.", "success")
    return redirect(page_of(call))


@bp.post("/clerk/push")
def push():
    """Send the due calls now (what `flask clerk push` does), within the request's short budget."""
    ensure(current_actor(), "clerk.retry")
    ensure_form_accepted(ClerkActionForm())
    if not clerk_connected():
        abort(409, description="Clerk is not connected: set CLERK_SECRET_KEY.")
    report = deliver_due(
        50, deadline=time.monotonic() + REQUEST_BUDGET_MS / 1000, timeout_ms=REQUEST_BUDGET_MS, actor=current_actor()
    )
    stopped = f" Stopped: {report.stopped}." if report.stopped and report.stopped != "out of time" else ""
    flash(f"Clerk push: {report.summary()}.{stopped}", "warning" if report.stopped else "success")
    return redirect(url_for("clerk.index"))
