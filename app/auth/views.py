"""Sign-in pages: one-time links now, Clerk sessions later."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from app.auth.guard import public, sign_in, sign_out
from app.auth.services import SignInRefused, redeem_sign_in_link
from app.extensions import db
from app.urls import safe_next_url

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.get("/sign-in")
@public
def sign_in_page():
    if g.user is not None and g.user.can_use_dashboard:
        return redirect(safe_next_url(request.args.get("next")) or url_for("users.index"))
    return render_template("auth/sign_in.html")


@bp.get("/link/<token>")
@public
def redeem_link(token: str):
    try:
        user = redeem_sign_in_link(
            token,
            secret_key=current_app.config["SECRET_KEY"],
            max_age=current_app.config["SIGN_IN_LINK_MAX_AGE"],
            remote_addr=request.remote_addr,
        )
    except SignInRefused as refused:
        db.session.rollback()
        return render_template("auth/link_refused.html", reason=str(refused)), 403
    db.session.commit()
    sign_in(user)
    flash(f"Signed in as {user.email}.", "success")
    return redirect(safe_next_url(request.args.get("next")) or url_for("users.index"))


@bp.post("/sign-out")
@public
def sign_out_view():
    sign_out()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.sign_in_page"))
