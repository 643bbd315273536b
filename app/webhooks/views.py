"""The Clerk (Svix) webhook receiver, and the page where admins see and re-apply deliveries."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from svix.webhooks import Webhook, WebhookVerificationError
from werkzeug.exceptions import RequestEntityTooLarge

from app.audit.services import Actor
from app.auth.guard import current_actor, public
from app.database import RETRY_AFTER_SECONDS, first_line, is_database_unreachable, rollback_quietly, timed_out
from app.extensions import csrf, db
from app.models import WebhookEvent, WebhookOutcome, utcnow
from app.pages import answer
from app.permissions import ensure, may
from app.webhooks.forms import WITHIN_LABELS, WebhookFilters
from app.webhooks.queries import find_clerk_users, list_webhook_events
from app.webhooks.services import (
    MAX_BODY_BYTES,
    MAX_SVIX_ID_BYTES,
    ReplayRefused,
    record_and_apply,
    record_failed_delivery,
    replay_event,
)

bp = Blueprint("webhooks", __name__)

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# Svix stops retrying a message when told so; used where a retry can only fail the same way.
ABORT_RETRIES = {"webhook-delivery": "abort-message"}


def _reply(status: int, headers: dict[str, str] | None = None, **fields: Any) -> Response:
    # One line of JSON: Svix shows it in Clerk's dashboard next to the attempt.
    return Response(json.dumps(fields) + "\n", status, headers=headers, mimetype="application/json")


def _read_body() -> bytes | None:
    """The raw body, or None when it is over the limit (checked before reading, then while reading)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    # This request only: a chunked body is cut one byte past the limit, which tells "too large".
    request.max_content_length = MAX_BODY_BYTES + 1
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return None
    return body if len(body) <= MAX_BODY_BYTES else None


# The headers svix reads (Svix's names, and the Standard Webhooks names it also accepts).
SIGNATURE_HEADERS = (
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)


def _verify(verifier: Webhook, body: bytes) -> str | None:
    """Why the signature does not hold, or None when it does."""
    # Only the headers it reads: svix lower-cases every header it is given, for each delivery.
    headers = {name: value for name in SIGNATURE_HEADERS if (value := request.headers.get(name)) is not None}
    try:
        verifier.verify(body, headers)  # returns None in svix 2.x: parse the body ourselves
    except WebhookVerificationError as error:
        return f"signature check failed: {error}"
    except UnicodeDecodeError:
        return "signature check failed: the body is not UTF-8"
    except ValueError:  # svix leaks these for a garbled svix-signature header
        return "signature check failed: garbled svix-signature header"
    return None


@bp.post("/webhooks/clerk")
@public
@csrf.exempt
def receive_clerk():
    secret = current_app.config.get("CLERK_WEBHOOK_SIGNING_SECRET")
    if not secret:
        return _reply(503, error="CLERK_WEBHOOK_SIGNING_SECRET is not set: deliveries cannot be verified")
    try:
        verifier = Webhook(secret)
    except (ValueError, TypeError):
        return _reply(503, error="CLERK_WEBHOOK_SIGNING_SECRET is not a valid whsec_ secret")
    body = _read_body()
    if body is None:
        return _reply(413, error=f"the body is over {MAX_BODY_BYTES} bytes")
    refused = _verify(verifier, body)
    if refused:
        return _reply(400, error=refused)
    svix_id = request.headers.get("svix-id") or request.headers.get("webhook-id", "")
    if len(svix_id.encode("utf-8")) > MAX_SVIX_ID_BYTES:
        return _reply(400, ABORT_RETRIES, error=f"svix-id is longer than {MAX_SVIX_ID_BYTES} bytes")
    if CONTROL_CHARACTERS.search(svix_id):  # the primary key: no NUL, no controls
        return _reply(400, ABORT_RETRIES, error="svix-id holds control characters")
    text = body.decode("utf-8")  # verification has decoded it already
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return _reply(400, ABORT_RETRIES, error="the body is not JSON")

    try:
        delivery = record_and_apply(svix_id, text, payload, actor=Actor.webhook())
        db.session.commit()
    except Exception as error:  # noqa: BLE001 - recorded, then answered 5xx so Svix retries
        return _failed(svix_id, text, payload, error)
    headers = ABORT_RETRIES if delivery.malformed else None
    fields = {"id": svix_id, "outcome": delivery.outcome}
    if delivery.reason:
        fields["reason" if not delivery.malformed else "error"] = delivery.reason
    return _reply(delivery.status_code, headers, **fields)


def _failed(svix_id: str, text: str, payload: Any, error: Exception) -> Response:
    rollback_quietly()
    unreachable = is_database_unreachable(error)
    if unreachable:  # one line, not a traceback per delivery while the database is away
        current_app.logger.warning("webhook %s: database unreachable: %s", svix_id, first_line(error))
    else:
        current_app.logger.exception("webhook %s could not be applied", svix_id)
    database = isinstance(error, SQLAlchemyError)
    summary = f"{type(error).__name__}: {error}".splitlines()[0][:500]
    if not isinstance(error, PoolTimeout):  # every connection taken: recording would wait as long again
        _record_failure(svix_id, text, payload, summary)
    if timed_out(error):
        reason = "database too slow to answer (statement timeout); retry later"
    elif database:
        reason = "database unavailable; retry later"
    else:
        reason = "could not be applied; retry later"
    # 503 for the database (transient by nature), 500 for a bug; both make Svix retry.
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if database else None
    return _reply(503 if database else 500, headers, id=svix_id, outcome="failed", error=reason)


def _record_failure(svix_id: str, text: str, payload: Any, summary: str) -> None:
    try:
        record_failed_delivery(svix_id, text, payload, summary)
        db.session.commit()
    except SQLAlchemyError as also:
        rollback_quietly()
        if is_database_unreachable(also):
            current_app.logger.warning("webhook %s: the failure could not be recorded either", svix_id)
        else:
            current_app.logger.exception("webhook %s: the failure could not be recorded either", svix_id)


# --- The page --------------------------------------------------------------------------------


@bp.get("/webhooks")
def index():
    filters = WebhookFilters.from_args(request.args)
    page = list_webhook_events(
        filters, now=utcnow(), after=request.args.get("after"), per_page=current_app.config.get("WEBHOOKS_PER_PAGE", 50)
    )
    users = find_clerk_users({e.clerk_user_id for e in page.rows if e.clerk_user_id})
    return answer(
        "webhooks/index.html",
        "webhooks/_results.html",
        filters=filters,
        page=page,
        users=users,
        outcomes=[o.value for o in WebhookOutcome],
        within=WITHIN_LABELS,
        may_replay=_may_replay(),
    )


@bp.get("/webhooks/<svix_id>")
def detail(svix_id: str):
    event = db.get_or_404(WebhookEvent, svix_id)
    users = find_clerk_users({event.clerk_user_id} if event.clerk_user_id else set())
    return render_template("webhooks/detail.html", event=event, users=users, may_replay=_may_replay())


def _may_replay() -> bool:
    # The pages offer Retry and "Apply anyway" only to those replay_event lets through.
    return may(current_actor(), "webhooks.replay")


@bp.post("/webhooks/<svix_id>/replay")
def replay(svix_id: str):
    """Re-apply one event; NotAllowed (a 403, rolled back) without webhooks.replay."""
    actor = current_actor()
    ensure(actor, "webhooks.replay")  # before the look-up, so a 404 does not tell others which ids exist
    db.get_or_404(WebhookEvent, svix_id)
    try:
        delivery = replay_event(svix_id, actor=actor)
    except ReplayRefused as refused:
        db.session.rollback()
        abort(409, str(refused))
    db.session.commit()
    note = f" ({delivery.reason})" if delivery.reason else ""
    category = "success" if delivery.outcome == "applied" else "error"
    flash(f"Event {svix_id} re-applied: {delivery.outcome}{note}.", category)
    return redirect(url_for("webhooks.detail", svix_id=svix_id))
