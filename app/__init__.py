"""The application factory: `flask --app app ...` finds `create_app` here."""

from __future__ import annotations

import gc

from flask import Flask

from app import config as config_module
from app.config import ROOT


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_path=str(config_module.INSTANCE_DIR),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    register_config(app, test_config)
    register_extensions(app)
    register_blueprints(app)
    register_security(app)
    register_errorhandlers(app)
    register_template_helpers(app)
    register_commands(app)
    if app.config["APP_ENV"] == "production" and not app.testing:
        # What the factory built lives as long as the worker: the collector need not scan it on
        # every full collection, which a busy worker would otherwise pay for every few requests.
        gc.freeze()
    return app


def register_config(app: Flask, test_config: dict | None) -> None:
    from dotenv import load_dotenv

    if test_config is None:
        load_dotenv(ROOT / ".env")
    settings = config_module.from_environment()
    if test_config:
        settings.update(test_config)
    config_module.finalise(settings)
    app.config.from_mapping(settings)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        config_module.INSTANCE_DIR.mkdir(exist_ok=True)


def register_extensions(app: Flask) -> None:
    from app.extensions import csrf, db, htmx, migrate
    from app.records.counts import register_listeners as register_counter_listeners

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)
    register_counter_listeners(db.session)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        from app.database import enable_sqlite_foreign_keys

        with app.app_context():
            enable_sqlite_foreign_keys(db.engine)
    elif "pool_pre_ping" not in app.config["SQLALCHEMY_ENGINE_OPTIONS"]:
        from app.database import replace_dead_connections

        with app.app_context():
            replace_dead_connections(db.engine)


def register_blueprints(app: Flask) -> None:
    from app.audit.views import bp as audit_bp
    from app.auth.views import bp as auth_bp
    from app.clerk.views import bp as clerk_bp
    from app.health import bp as health_bp
    from app.organizations.views import bp as organizations_bp
    from app.overview.views import bp as overview_bp
    from app.staff.views import bp as staff_bp
    from app.users.views import bp as users_bp
    from app.webhooks.views import bp as webhooks_bp

    app.register_blueprint(health_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(overview_bp)
    app.register_blueprint(users_bp)
    app.register_blueprint(organizations_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(clerk_bp)
    app.register_blueprint(staff_bp)


def register_security(app: Flask) -> None:
    from app.auth.guard import init_guard
    from app.input_guard import init_input_guard
    from app.security import init_security_headers

    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    init_guard(app)
    # After the sign-in check: a signed-in admin's 400 page keeps its navigation.
    init_input_guard(app)
    init_security_headers(app)


def register_errorhandlers(app: Flask) -> None:
    from app.errors import init_error_handlers

    init_error_handlers(app)


def register_template_helpers(app: Flask) -> None:
    from app.pages import init_template_helpers

    init_template_helpers(app)


def register_commands(app: Flask) -> None:
    from app.cli import init_commands

    init_commands(app)
