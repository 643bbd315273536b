"""A database that is down, restarting or has dropped our connections: a clear 503, then recovery.

"Down" is real here, not a mock: a second app on the same secret key points at a database that
cannot be reached (a PostgreSQL port nothing listens on; for SQLite a file in a directory that
does not exist), and the signed-in browser's cookie is handed to it. Recovery on PostgreSQL
terminates the app's own backends on the scratch database with pg_terminate_backend, as a
restart does, and checks that the next request is served.
"""

from __future__ import annotations

import socket

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.auth.guard import public
from app.database import UNREACHABLE_AFTER_SAVE_MESSAGE, UNREACHABLE_MESSAGE, is_database_unreachable
from app.extensions import db as _db
from app.models import UserData, UserRole, WebhookEvent
from tests.clerk_payloads import SECRET, clerk_user, sign, user_created
from tests.conftest import HX, csrf_token_from, make_app


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once closed: nothing listens there


@pytest.fixture
def dead_url(database_url: str, tmp_path) -> str:
    if database_url.startswith("postgresql"):
        return sa.make_url(database_url).set(port=closed_port()).render_as_string(hide_password=False)
    return f"sqlite:///{tmp_path / 'no-such-directory' / 'dashboard.sqlite3'}"


@pytest.fixture
def dead_app(dead_url: str) -> Flask:
    app = make_app(dead_url, CLERK_WEBHOOK_SIGNING_SECRET=SECRET)
    yield app
    with app.app_context():
        _db.engine.dispose()


def same_browser(client: FlaskClient, app: Flask) -> FlaskClient:
    """A client of `app` carrying the signed-in session cookie of `client` (same secret key)."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    return other


def assert_unreachable(response, *, fragment: bool) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body[:500]
    assert response.headers["Retry-After"] == "5"
    assert UNREACHABLE_MESSAGE in body
    assert ("<html" in body) is not fragment
    assert "Traceback" not in body


# --- Unreachable: every kind of request answers 503 ---------------------------------------------


def test_a_page_answers_503_when_the_sign_in_check_cannot_reach_the_database(client, staff, dead_app):
    down = same_browser(client, dead_app)
    assert_unreachable(down.get("/users"), fragment=False)
    assert_unreachable(down.get(f"/users/{staff.id}"), fragment=False)


def test_an_htmx_request_gets_the_503_as_a_fragment(client, staff, dead_app):
    down = same_browser(client, dead_app)
    assert_unreachable(down.get("/users?q=ada", headers=HX), fragment=True)


def test_a_form_post_answers_503_and_changes_nothing(client, staff, ada, dead_app, db):
    token = csrf_token_from(client.get(f"/users/{ada.id}").get_data(as_text=True))
    down = same_browser(client, dead_app)

    response = down.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"})
    assert_unreachable(response, fragment=False)
    htmx = down.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"}, headers=HX)
    assert_unreachable(htmx, fragment=True)

    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserData)) == 0
    # The same browser, on the database that is there, carries on.
    assert (
        client.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"}).status_code
        == 302
    )


def test_the_webhook_answers_503_so_svix_retries(dead_app):
    signed = sign(user_created(clerk_user()))
    response = signed.post(dead_app.test_client())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == {
        "id": signed.msg_id,
        "outcome": "failed",
        "error": "database unavailable; retry later",
    }


def test_healthz_says_when_to_ask_again(dead_app):
    response = dead_app.test_client().get("/healthz")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"


def test_a_sign_in_link_answers_503_not_500(dead_app):
    assert_unreachable(dead_app.test_client().get("/auth/link/whatever"), fragment=False)


# --- A failure inside a view, after the user was loaded ------------------------------------------


def test_a_view_that_loses_the_database_answers_503_and_still_shows_who_is_signed_in(client, staff, monkeypatch):
    import app.users.views as views

    def lost(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT ...", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(views, "list_users", lost)
    response = client.get("/users")
    assert_unreachable(response, fragment=False)
    assert staff.email in response.get_data(as_text=True)  # the navigation, drawn without a query


def test_an_expired_user_is_not_reloaded_from_the_lost_database(client, staff, monkeypatch):
    import app.users.views as views

    def lost_after_a_commit(*args, **kwargs):
        _db.session.expire_all()  # what a commit earlier in the request leaves behind
        raise sa.exc.OperationalError("SELECT ...", {}, Exception("terminating connection"))

    monkeypatch.setattr(views, "list_users", lost_after_a_commit)
    assert_unreachable(client.get("/users", headers=HX), fragment=True)


def test_a_change_committed_before_the_database_went_away_is_not_denied(client, staff, ada, db, monkeypatch):
    import app.users.views as views

    def lost(*args, **kwargs):  # the fragment is drawn after the commit, from the database
        raise sa.exc.OperationalError("SELECT ...", {}, Exception("terminating connection"))

    token = csrf_token_from(client.get(f"/users/{ada.id}").get_data(as_text=True))
    monkeypatch.setattr(views, "render_data", lost)
    response = client.post(
        f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"}, headers=HX
    )
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert UNREACHABLE_AFTER_SAVE_MESSAGE in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(UserData.value).where(UserData.user_id == ada.id)) == "pro"
    # The next request starts afresh: a failure before any commit says nothing was changed.
    monkeypatch.setattr(views, "list_users", lost)
    assert UNREACHABLE_MESSAGE in client.get("/users").get_data(as_text=True)


def test_a_dead_connection_seen_as_another_driver_error_is_503_too(app, client, staff, monkeypatch):
    import app.users.views as views

    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the 500 handler sees it

    def invalidated(*args, **kwargs):
        raise sa.exc.DBAPIError("SELECT ...", {}, Exception("lost"), connection_invalidated=True)

    monkeypatch.setattr(views, "list_users", invalidated)
    assert_unreachable(client.get("/users"), fragment=False)


def test_a_bug_is_still_a_500(app, client, staff, monkeypatch):
    import app.users.views as views

    app.config["PROPAGATE_EXCEPTIONS"] = False

    def bug(*args, **kwargs):
        raise sa.exc.ProgrammingError("SELECT nonsense", {}, Exception("syntax error"))

    monkeypatch.setattr(views, "list_users", bug)
    response = client.get("/users")
    assert response.status_code == 500 and "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (sa.exc.OperationalError("x", {}, Exception("connection refused")), True),
        (sa.exc.InterfaceError("x", {}, Exception("connection already closed")), True),
        (sa.exc.TimeoutError("QueuePool limit reached"), True),
        (sa.exc.DBAPIError("x", {}, Exception("eof"), connection_invalidated=True), True),
        (sa.exc.IntegrityError("x", {}, Exception("duplicate key")), False),
        (ValueError("no"), False),
        (None, False),
    ],
)
def test_what_counts_as_unreachable(error, unreachable):
    assert is_database_unreachable(error) is unreachable


# --- Recovery on PostgreSQL: backends killed as a restart kills them ----------------------------


def terminate_backends(database_url: str, pid: int | None = None) -> int:
    """Kill every session on the test's scratch database (or one), as a server restart would, and
    wait (up to 5 s each) until each is gone: "after the backends die" is after, not while."""
    admin = sa.create_engine(sa.make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(
                connection.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid() AND (CAST(:pid AS integer) IS NULL OR pid = CAST(:pid AS integer))"
                    ),
                    {"name": sa.make_url(database_url).database, "pid": pid},
                ).all()
            )
    finally:
        admin.dispose()


@pytest.mark.postgresql
def test_after_the_backends_die_the_next_requests_are_served(app, client, staff, ada, database_url, db, signing_secret):
    token = csrf_token_from(client.get(f"/users/{ada.id}").get_data(as_text=True))
    db.session.remove()
    assert terminate_backends(database_url) >= 1

    # Every pooled connection is dead now; the look at its socket on checkout replaces it.
    assert client.get("/users").status_code == 200
    assert client.get("/users?q=ada", headers=HX).status_code == 200
    assert (
        client.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"}).status_code
        == 302
    )
    signed = sign(user_created(clerk_user()))
    assert signed.post(client).status_code == 200

    db.session.expire_all()
    assert db.session.scalar(sa.select(UserData.value).where(UserData.user_id == ada.id)) == "pro"
    assert db.session.get(WebhookEvent, signed.msg_id).outcome == "applied"


@pytest.mark.postgresql
def test_without_the_ping_a_dead_connection_costs_one_503_not_a_500(database_url, auth, make_user, client, db):
    # The same app, but trusting its pool: the first request after the kill meets a dead
    # connection mid-query. It must be answered 503, and the pool must be usable right after.
    bare = make_app(database_url, SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": False, "pool_size": 1, "max_overflow": 0})
    staff = auth.sign_in(role=UserRole.SUPER_ADMIN)
    browser = same_browser(client, bare)
    try:
        assert browser.get("/users").status_code == 200
        db.session.remove()
        assert terminate_backends(database_url) >= 1
        assert_unreachable(browser.get("/users"), fragment=False)
        assert browser.get("/users").status_code == 200
        assert staff.email in browser.get("/users").get_data(as_text=True)
    finally:
        with bare.app_context():
            _db.engine.dispose()


@pytest.mark.postgresql
def test_a_connection_killed_after_the_page_was_made_does_not_turn_it_into_a_500(database_url, db):
    # The restart run found it: the page was drawn, then the session's closing ROLLBACK met a
    # connection the server had terminated, and the answer became a 500.
    probe = make_app(database_url)

    @probe.get("/_probe")
    @public
    def _probe():
        pid = _db.session.scalar(sa.text("SELECT pg_backend_pid()"))
        terminate_backends(database_url, pid=pid)
        return "drawn"

    client = probe.test_client()
    try:
        response = client.get("/_probe")
        assert response.status_code == 200 and response.get_data(as_text=True) == "drawn"
        assert client.get("/healthz").status_code == 200
    finally:
        with probe.app_context():
            _db.engine.dispose()
