"""The outbox page (calls to Clerk and where each stands), Retry and "push now"."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, request, url_for

from app.auth.guard import current_actor
from app.clerk.client import clerk_connected
from app.clerk.forms import ClerkActionForm, OutboxFilterForm
from app.clerk.outbox import (
    RetryRefused,
    deliver_after_request,
    describe,
    list_calls,
    outbox_health,
    retry_call,
)
from app.errors import ensure_form_accepted
from app.extensions import db
from app.models import ClerkCall
from app.pages import answer
from app.users.permissions import can_act_on, ensure_can_manage

bp = Blueprint("clerk", __name__)
PAGE_SIZE = 50
MAX_CALL_ID = 2**31 - 1  # the id column is an INTEGER: a larger number is no call, not a query error


@bp.app_template_global()
def clerk_is_connected() -> bool:
    return clerk_connected()


@bp.app_template_global()
def clerk_call_label(call: ClerkCall) -> str:
    return describe(call)


@bp.get("/clerk")
def index():
    form = OutboxFilterForm(request.args)
    before = request.args.get("before", type=int)
    if before is not None and not 0 < before <= MAX_CALL_ID:
        before = None  # from the newest, as for any malformed parameter
    calls = list_calls(state=form.chosen_state, before=before, limit=PAGE_SIZE + 1)
    more = len(calls) > PAGE_SIZE
    calls = calls[:PAGE_SIZE]
    next_url = (url_for("clerk.index", state=form.chosen_state, before=calls[-1].id) if more else None)
    actor = current_actor()
    manageable_ids = {call.user.id for call in calls if call.user is not None and can_act_on(actor, call.user)}
    return answer("clerk/index.html", "clerk/_results.html", calls=calls, form=form,
                  health=outbox_health(), next_url=next_url, action_form=ClerkActionForm(formdata=None),
                  manageable_ids=manageable_ids)


@bp.post(f"/clerk/calls/<int(max={MAX_CALL_ID}):call_id>/retry")
def retry(call_id: int):
    call = db.get_or_404(ClerkCall, call_id, description="There is no such call to Clerk.")
    ensure_form_accepted(ClerkActionForm())
    if call.user is not None:
        ensure_can_manage(current_actor(), call.user)
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
        flash(f"Call #{call.id} is {call.state} in Clerk: {call.last_error or report.stopped or 'not sent yet'}.",
              "error" if call.state == "failed" else "warning")
    if request.form.get("back") == "user" and call.user is not None:
        return redirect(url_for("users.detail", user_id=call.user.id, _anchor="clerk"))
    return redirect(url_for("clerk.index"))


@bp.post("/clerk/push")
def push():
    """Send the due calls now (what `flask clerk push` does), within the request's short budget."""
    import time

    from app.clerk.outbox import REQUEST_BUDGET_MS, deliver_due

    ensure_form_accepted(ClerkActionForm())
    if not clerk_connected():
        abort(409, description="Clerk is not connected: set CLERK_SECRET_KEY.")
    report = deliver_due(50, deadline=time.monotonic() + REQUEST_BUDGET_MS / 1000, timeout_ms=REQUEST_BUDGET_MS,
                         actor=current_actor())
    stopped = f" Stopped: {report.stopped}." if report.stopped and report.stopped != "out of time" else ""
    flash(f"Clerk push: {report.summary()}.{stopped}", "warning" if report.stopped else "success")
    return redirect(url_for("clerk.index"))
