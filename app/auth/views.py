"""Sign-in pages: Clerk's own sign-in when the instance is configured, one-time links always."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from app.audit.services import Actor, record
from app.auth.guard import current_actor, public, safe_next_url, sign_in, sign_out
from app.auth.services import SignInRefused, end_sessions, redeem_sign_in_link
from app.extensions import db
from app.models import AuditEvent, utcnow
from app.security import clerk_sign_in_policy

bp = Blueprint("auth", __name__, url_prefix="/auth")

THROTTLE_WINDOW = timedelta(minutes=15)


@bp.get("/sign-in")
@public
def sign_in_page():
    if g.user is not None and g.user.can_use_dashboard:
        return redirect(safe_next_url(request.args.get("next")) or url_for("overview.index"))
    frontend_api = current_app.config.get("CLERK_FRONTEND_API")
    response = current_app.make_response(
        render_template(
            "auth/sign_in.html",
            frontend_api=frontend_api,
            after_sign_in=safe_next_url(request.args.get("next")) or url_for("overview.index"),
            clerk_refusal=g.get("clerk_refusal"),
            signed_out=request.args.get("signed_out") == "1",
        )
    )
    if frontend_api:
        response.headers["Content-Security-Policy"] = clerk_sign_in_policy(frontend_api)
    return response


def _recent_failures(remote_addr: str | None) -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditEvent)
        .where(
            AuditEvent.action == "auth.sign_in_refused",
            AuditEvent.remote_addr == remote_addr,
            AuditEvent.occurred_at > utcnow() - THROTTLE_WINDOW,
        )
    )


@bp.get("/link/<token>")
@public
def redeem_link(token: str):
    if _recent_failures(request.remote_addr) >= current_app.config["SIGN_IN_FAILURE_LIMIT"]:
        reason = "Too many refused sign-in links from your address. Wait a quarter of an hour and try again."
        return render_template("auth/link_refused.html", reason=reason), 429
    try:
        user = redeem_sign_in_link(
            token,
            secret_key=current_app.config["SECRET_KEY"],
            max_age=current_app.config["SIGN_IN_LINK_MAX_AGE"],
            remote_addr=request.remote_addr,
        )
    except SignInRefused as refused:
        db.session.rollback()
        record(
            "auth.sign_in_refused", actor=Actor.anonymous(request.remote_addr), changes={"reason": [None, str(refused)]}
        )
        db.session.commit()
        return render_template("auth/link_refused.html", reason=str(refused)), 403
    db.session.commit()
    sign_in(user)
    flash(f"Signed in as {user.email}.", "success")
    return redirect(safe_next_url(request.args.get("next")) or url_for("overview.index"))


@bp.post("/sign-out")
@public
def sign_out_view():
    user = g.user
    if user is not None and user.can_use_dashboard:
        end_sessions(user, actor=current_actor())
        db.session.commit()
    sign_out()
    flash("You have signed out.", "info")
    response = redirect(url_for("auth.sign_in_page", signed_out=1))
    # Clerk's session cookie would sign the browser straight back in.
    response.delete_cookie("__session")
    return response
