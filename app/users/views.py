"""The users pages: thin views over the services and queries."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from app.extensions import db
from app.models import User
from app.rendering import page_or_fragment
from app.users.queries import list_users

bp = Blueprint("users", __name__)


@bp.get("/")
def overview():
    return redirect(url_for("users.index"))


@bp.get("/users")
def index():
    page = list_users(
        after=request.args.get("after"),
        before=request.args.get("before"),
        per_page=current_app.config["USERS_PER_PAGE"],
    )
    return page_or_fragment("users/index.html", "users/_results.html", page=page)


@bp.get("/users/<user_id>")
def detail(user_id: str):
    user = db.get_or_404(User, user_id)
    return render_template("users/detail.html", user=user)
