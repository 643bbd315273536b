"""One configuration, read from the environment (and `.env` in development)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = ROOT / "instance"

DEVELOPMENT_SECRET = "dev-only-not-secret"


class ConfigError(RuntimeError):
    """Raised at start-up when the configuration cannot work; its message is one line."""


def normalise_database_url(url: str) -> str:
    """Accept the URL forms hosting providers hand out and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def default_database_url() -> str:
    return f"sqlite:///{INSTANCE_DIR / 'dashboard.sqlite3'}"


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError as exc:
        raise ConfigError(f"expected a whole number, got {value!r}") from exc


DEFAULT_ORGANIZATION_ROLES = ("org:admin", "org:member")


def organization_roles(value: str | None) -> list[str]:
    """Clerk's organization role keys the dashboard offers (comma separated), each `org:<name>`."""
    roles = list(dict.fromkeys(r.strip() for r in (value or "").split(",") if r.strip()))
    for role in roles:
        name = role.removeprefix("org:")
        if not role.startswith("org:") or not name or any(c.isspace() or not c.isprintable() for c in name):
            raise ConfigError(f"CLERK_ORGANIZATION_ROLES: {role!r} is not a Clerk role key like org:admin")
    return roles or list(DEFAULT_ORGANIZATION_ROLES)


def from_environment(environ: dict[str, str] | None = None) -> dict:
    """Build the Flask config mapping from environment variables."""
    env = os.environ if environ is None else environ
    app_env = env.get("APP_ENV", "development").strip().lower()
    database_url = normalise_database_url(env.get("DATABASE_URL") or default_database_url())
    return {
        "APP_ENV": app_env,
        "SECRET_KEY": env.get("SECRET_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SIGN_IN_LINK_MAX_AGE": _int(env.get("SIGN_IN_LINK_MAX_AGE"), 15 * 60),
        "SESSION_IDLE_MINUTES": _int(env.get("SESSION_IDLE_MINUTES"), 30),
        "PERMANENT_SESSION_LIFETIME": 60 * 60 * _int(env.get("SESSION_MAX_HOURS"), 12),
        "SIGN_IN_FAILURE_LIMIT": _int(env.get("SIGN_IN_FAILURE_LIMIT"), 10),
        "TRUSTED_PROXIES": _int(env.get("TRUSTED_PROXIES"), 0),
        "BASE_URL": (env.get("BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "USERS_PER_PAGE": _int(env.get("USERS_PER_PAGE"), 25),
        # PostgreSQL only. No request waits unbounded: a statement (a lock wait included) is stopped
        # after DATABASE_STATEMENT_TIMEOUT_MS (0: never), and a request that finds every pooled
        # connection taken waits DATABASE_POOL_TIMEOUT_SECONDS; either way it is answered 503 with
        # Retry-After. A sync gunicorn worker holds one connection at a time (README, Deployment).
        "DATABASE_STATEMENT_TIMEOUT_MS": _int(env.get("DATABASE_STATEMENT_TIMEOUT_MS"), 5_000),
        "DATABASE_POOL_SIZE": _int(env.get("DATABASE_POOL_SIZE"), 5),
        "DATABASE_MAX_OVERFLOW": _int(env.get("DATABASE_MAX_OVERFLOW"), 5),
        "DATABASE_POOL_TIMEOUT_SECONDS": _int(env.get("DATABASE_POOL_TIMEOUT_SECONDS"), 3),
        "CLERK_WEBHOOK_SIGNING_SECRET": env.get("CLERK_WEBHOOK_SIGNING_SECRET") or None,
        "CLERK_SECRET_KEY": env.get("CLERK_SECRET_KEY") or None,
        "CLERK_API_URL": (env.get("CLERK_API_URL") or "https://api.clerk.com/v1").rstrip("/"),
        # How long one call to Clerk may keep retrying 5xx answers and refused connections (0: never).
        "CLERK_API_RETRY_MAX_MS": _int(env.get("CLERK_API_RETRY_MAX_MS"), 30_000),
        # How long a page may spend sending its own calls to Clerk before leaving them to `clerk push`.
        "CLERK_OUTBOX_REQUEST_BUDGET_MS": _int(env.get("CLERK_OUTBOX_REQUEST_BUDGET_MS"), 3_000),
        "CLERK_JWT_KEY": env.get("CLERK_JWT_KEY") or None,
        # The organization roles an admin may give (Clerk's keys; custom ones are `org:<name>`).
        "CLERK_ORGANIZATION_ROLES": organization_roles(env.get("CLERK_ORGANIZATION_ROLES")),
        "CLERK_PUBLISHABLE_KEY": env.get("CLERK_PUBLISHABLE_KEY") or None,
        "CLERK_AUTHORIZED_PARTIES": [
            p.strip() for p in (env.get("CLERK_AUTHORIZED_PARTIES") or "").split(",") if p.strip()
        ],
        # `flask maintenance prune`: days each kind of row is kept (0: for good; audit events are
        # kept unless RETENTION_AUDIT_DAYS is set). Deliveries are kept at least 7 days.
        "RETENTION_WEBHOOK_PAYLOAD_DAYS": _int(env.get("RETENTION_WEBHOOK_PAYLOAD_DAYS"), 30),
        "RETENTION_WEBHOOK_DAYS": _int(env.get("RETENTION_WEBHOOK_DAYS"), 90),
        "RETENTION_AUDIT_DAYS": _int(env.get("RETENTION_AUDIT_DAYS"), None),
        "RETENTION_OUTBOX_DAYS": _int(env.get("RETENTION_OUTBOX_DAYS"), 30),
        "SESSION_COOKIE_SECURE": _bool(env.get("SESSION_COOKIE_SECURE"), app_env == "production"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # The session refreshes its own cookie when it changes: at sign-in, and once a minute while
        # in use (app/auth/guard.py); Flask's default re-signs and re-sends it on every response.
        "SESSION_REFRESH_EACH_REQUEST": False,
        "WTF_CSRF_TIME_LIMIT": None,
    }


def frontend_api_host(publishable_key: str) -> str:
    """The Clerk instance's Frontend API host, which Clerk encodes in the publishable key."""
    import base64
    import binascii

    try:
        prefix, environment, encoded = publishable_key.split("_", 2)
        host = base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ConfigError("CLERK_PUBLISHABLE_KEY is not a Clerk publishable key (pk_test_... or pk_live_...)") from exc
    host = host.rstrip("$")
    if prefix != "pk" or environment not in {"test", "live"} or not host or "/" in host or " " in host:
        raise ConfigError("CLERK_PUBLISHABLE_KEY is not a Clerk publishable key (pk_test_... or pk_live_...)")
    return host


def finalise(config: dict) -> None:
    """Fill development defaults and refuse a configuration that cannot run safely."""
    if config["APP_ENV"] in {"development", "test"} or config.get("TESTING"):
        config["SECRET_KEY"] = config.get("SECRET_KEY") or DEVELOPMENT_SECRET
    elif not config.get("SECRET_KEY"):
        raise ConfigError(
            "SECRET_KEY is not set: outside development it is required "
            "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if config.get("CLERK_PUBLISHABLE_KEY"):
        config["CLERK_FRONTEND_API"] = frontend_api_host(config["CLERK_PUBLISHABLE_KEY"])
    uri = config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(config["SQLALCHEMY_DATABASE_URI"])
    options = config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
    if uri.startswith("postgresql"):
        # Timestamps are stored in UTC, so the server's now() must speak UTC too.
        # Plans are made for each search term: a generic plan for `LIKE $1` (what a prepared
        # statement falls back to) cannot know a rare term from a common one.
        # A database that does not answer fails the request in seconds (a 503), never hangs it;
        # nor does a statement that runs (or waits for a row lock) past the timeout.
        timeout = max(0, config.get("DATABASE_STATEMENT_TIMEOUT_MS", 5_000))
        options.setdefault(
            "connect_args",
            {
                "options": f"-c timezone=utc -c plan_cache_mode=force_custom_plan -c statement_timeout={timeout}",
                "connect_timeout": 5,
            },
        )
        options.setdefault("pool_size", max(1, config.get("DATABASE_POOL_SIZE", 5)))
        options.setdefault("max_overflow", max(0, config.get("DATABASE_MAX_OVERFLOW", 5)))
        options.setdefault("pool_timeout", max(0, config.get("DATABASE_POOL_TIMEOUT_SECONDS", 3)))
        # A connection that died in a restart is replaced on checkout: app/database.py looks at its
        # socket (no round trip) unless pool_pre_ping is set here, which pings with a query instead.
    elif uri.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 15})
