"""A stock Flask-Admin 2.2 list of the same `users` table: what benchmarks/users_list.py compares with.

    DATABASE_URL=... gunicorn 'benchmarks.flask_admin_view:create_app()'

Nothing is tuned: a ModelView with the same searchable columns as the dashboard, filters on role
and status, newest first. Install it with `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_admin import Admin
from flask_admin.contrib.sqla import ModelView

from app.extensions import db
from app.models import User


class UserView(ModelView):
    column_list = ("email", "first_name", "last_name", "role", "status", "last_sign_in_at", "created_at")
    column_searchable_list = ("email", "first_name", "last_name", "username", "clerk_id")
    column_filters = ("role", "status")
    column_default_sort = ("created_at", True)
    page_size = 25


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    app.config["SECRET_KEY"] = "flask-admin-bench"
    db.init_app(app)
    admin = Admin(app, name="Flask-Admin")
    admin.add_view(UserView(User, db.session, endpoint="users"))
    return app
