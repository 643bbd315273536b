"""No request waits unbounded on PostgreSQL: a held row lock, an exhausted pool, a refused connection.

Each guard is tried for real on the scratch PostgreSQL database: another client holds a user's row
with `SELECT ... FOR UPDATE` past the statement timeout; the app's only pooled connection is taken;
the server refuses new connections (a role at its connection limit, as when `max_connections` is
reached). Each answer must be a 503 with Retry-After, quickly and with a message the reader can act
on; nothing is written half; and the next request after the fault is served as usual.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from flask import Flask

from app.database import TOO_SLOW_MESSAGE, UNREACHABLE_MESSAGE
from app.extensions import db as _db
from app.models import AuditEvent, User, UserData, WebhookEvent
from tests.clerk_payloads import SECRET, clerk_user, sign, user_created, user_updated
from tests.conftest import HX, csrf_token_from, make_app
from tests.test_database_down import same_browser, terminate_backends

pytestmark = pytest.mark.postgresql


def guarded_app(database_url: str, **config) -> Flask:
    return make_app(database_url, CLERK_WEBHOOK_SIGNING_SECRET=SECRET, **config)


def dispose(app: Flask) -> None:
    with app.app_context():
        _db.engine.dispose()


def timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def assert_503(response, message: str) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code == 503, body[:500]
    assert response.headers["Retry-After"] == "5"
    assert message in body
    assert "Traceback" not in body


class RowHolder:
    """Another client (its own connection) holding one user's row, as a long task would."""

    def __init__(self, database_url: str, user_id: int):
        self.engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        self.connection = self.engine.connect()
        self.connection.execute(sa.text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": user_id})

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()
        self.engine.dispose()


def test_the_web_app_is_configured_so_no_request_waits_unbounded(app):
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert "statement_timeout=5000" in options["connect_args"]["options"]
    assert options["connect_args"]["connect_timeout"] == 5
    assert (options["pool_size"], options["max_overflow"], options["pool_timeout"]) == (5, 5, 3)
    # A dead pooled connection is found by looking at its socket, not by a SELECT 1 per request.
    assert "pool_pre_ping" not in options
    with app.app_context():
        assert _db.engine.pool._pre_ping is False
        assert _db.session.scalar(sa.text("SHOW statement_timeout")) == "5s"


def test_a_row_held_past_the_statement_timeout_gets_a_clear_503_within_the_budget(database_url, client, staff, ada, db):
    guarded = guarded_app(database_url, DATABASE_STATEMENT_TIMEOUT_MS=400)
    browser = same_browser(client, guarded)
    token = csrf_token_from(browser.get(f"/users/{ada.id}").get_data(as_text=True))
    holder = RowHolder(database_url, ada.id)
    try:
        # Reading is not held up by the lock: the list and the user's page answer as usual.
        response, seconds = timed(lambda: browser.get("/users?q=ada", headers=HX))
        assert response.status_code == 200 and seconds < 0.4
        assert browser.get(f"/users/{ada.id}").status_code == 200

        # A change to the held row waits for the timeout, then answers, instead of hanging.
        add_pair = lambda: browser.post(  # noqa: E731
            f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"}, headers=HX
        )
        response, seconds = timed(add_pair)
        assert_503(response, TOO_SLOW_MESSAGE)
        assert 0.35 < seconds < 2.0
    finally:
        holder.release()

    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserData)) == 0
    assert (
        db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.target_id == ada.id)) == 0
    )
    # Once the row is free the same request goes through, once.
    assert add_pair().status_code == 200
    db.session.expire_all()
    assert db.session.scalars(sa.select(UserData.value).where(UserData.user_id == ada.id)).all() == ["pro"]
    dispose(guarded)


def test_a_webhook_for_a_held_row_is_refused_with_503_and_applied_once_on_the_retry(database_url, db):
    guarded = guarded_app(database_url, DATABASE_STATEMENT_TIMEOUT_MS=400)
    sender = guarded.test_client()
    person = clerk_user(first_name="Grace")
    assert sign(user_created(person)).post(sender).status_code == 200
    db.session.expire_all()
    user = db.session.scalar(sa.select(User).where(User.clerk_id == person["id"]))

    update = sign(user_updated(person, first_name="Amazing Grace"))
    holder = RowHolder(database_url, user.id)
    try:
        response, seconds = timed(lambda: update.post(sender))
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert "statement timeout" in response.get_json()["error"]
        assert seconds < 2.0
    finally:
        holder.release()

    db.session.expire_all()
    assert db.session.get(User, user.id).first_name == "Grace"
    assert db.session.get(WebhookEvent, update.msg_id).outcome == "failed"
    # Svix sends the same delivery again: it is applied, once.
    assert update.post(sender).get_json()["outcome"] == "applied"
    assert update.post(sender).get_json()["outcome"] == "duplicate"
    db.session.expire_all()
    assert db.session.get(User, user.id).first_name == "Amazing Grace"
    dispose(guarded)


def test_an_exhausted_pool_answers_503_after_the_pool_timeout_and_the_webhook_asks_for_a_retry(
    database_url, client, staff, db
):
    guarded = guarded_app(database_url, DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0, DATABASE_POOL_TIMEOUT_SECONDS=1)
    browser = same_browser(client, guarded)
    assert browser.get("/users").status_code == 200
    delivery = sign(user_created(clerk_user(first_name="Pooled")))
    with guarded.app_context():
        taken = _db.engine.connect()  # the pool's one connection, held elsewhere
        taken.execute(sa.text("SELECT 1"))
    try:
        response, seconds = timed(lambda: browser.get("/users"))
        assert_503(response, UNREACHABLE_MESSAGE)
        assert "<html" in response.get_data(as_text=True)
        assert 0.9 < seconds < 2.5

        response, seconds = timed(lambda: delivery.post(guarded.test_client()))
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        assert response.get_json() == {
            "id": delivery.msg_id,
            "outcome": "failed",
            "error": "database unavailable; retry later",
        }
        assert seconds < 2.5  # one wait for a connection, not a second one to record the failure
    finally:
        taken.close()

    db.session.expire_all()
    assert db.session.get(WebhookEvent, delivery.msg_id) is None
    assert browser.get("/users").status_code == 200
    assert delivery.post(guarded.test_client()).get_json()["outcome"] == "applied"
    dispose(guarded)


@pytest.fixture
def limited_role(database_url):
    """A login role that may read and write the scratch database, whose connection limit we control."""
    name = f"dashboard_guard_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sa.make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
        connection.exec_driver_sql(f"GRANT pg_read_all_data, pg_write_all_data TO {name}")
    try:
        yield name, admin
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"
            )
            connection.exec_driver_sql(f"DROP ROLE {name}")
        admin.dispose()


def test_a_server_refusing_connections_gets_a_quick_503_and_recovery_when_it_accepts_again(
    database_url, client, staff, limited_role
):
    name, admin = limited_role
    guarded = guarded_app(sa.make_url(database_url).set(username=name).render_as_string(hide_password=False))
    browser = same_browser(client, guarded)
    try:
        assert browser.get("/users").status_code == 200
        with admin.connect() as connection:
            # What `max_connections` reached looks like to us: the server refuses every new connection.
            connection.exec_driver_sql(f"ALTER ROLE {name} CONNECTION LIMIT 0")
            connection.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"
            )
        time.sleep(0.2)  # the killed backends' goodbyes reach their sockets

        response, seconds = timed(lambda: browser.get("/users"))
        assert_503(response, UNREACHABLE_MESSAGE)
        assert seconds < 1.0
        response = browser.get("/users?q=ada", headers=HX)
        assert_503(response, UNREACHABLE_MESSAGE)
        assert "<html" not in response.get_data(as_text=True)

        with admin.connect() as connection:
            connection.exec_driver_sql(f"ALTER ROLE {name} CONNECTION LIMIT -1")
        assert browser.get("/users").status_code == 200
    finally:
        dispose(guarded)


def test_a_backend_killed_while_idle_in_the_pool_is_replaced_without_a_failed_request(database_url, client, staff):
    guarded = guarded_app(database_url, DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0)
    browser = same_browser(client, guarded)
    try:
        assert browser.get("/users").status_code == 200
        with guarded.app_context():
            before = _db.session.scalar(sa.text("SELECT pg_backend_pid()"))
            _db.session.remove()
        assert terminate_backends(database_url, pid=before) == 1
        for _ in range(3):
            assert browser.get("/users").status_code == 200
        with guarded.app_context():
            assert _db.session.scalar(sa.text("SELECT pg_backend_pid()")) != before
            _db.session.remove()
    finally:
        dispose(guarded)


# --- A button's change lands on the row as it is when the button is pressed ---------------------


def update_meanwhile(database_url: str, user_id: int, seconds: float) -> threading.Thread:
    """Another writer (a sync, a webhook, the outbox) changes the row and holds it `seconds`."""
    holder = RowHolder(database_url, user_id)
    holder.connection.execute(
        sa.text("UPDATE users SET first_name = 'Synced', version = version + 1 WHERE id = :id"), {"id": user_id}
    )

    def commit_later():
        time.sleep(seconds)
        holder.connection.commit()
        holder.release()

    thread = threading.Thread(target=commit_later)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "path, data, action",
    [
        ("status", {"status": "suspended", "view": "row"}, "user.suspend"),
        ("delete", {"confirm": "ada@example.com"}, "user.delete"),
    ],
)
def test_a_button_pressed_while_another_writer_holds_the_row_waits_for_it_and_keeps_its_change(
    database_url, client, token, ada, db, path, data, action
):
    # Found by the soak: `flask clerk sync` updated a user between the status view's read and its
    # write, and the versioned UPDATE failed as stale: a 500. The button now locks the row first.
    writer = update_meanwhile(database_url, ada.id, 0.3)
    response = client.post(f"/users/{ada.id}/{path}", data={"csrf_token": token, **data}, headers=HX)
    writer.join()
    assert response.status_code in (200, 302), response.get_data(as_text=True)[:500]
    db.session.expire_all()
    assert ada.first_name == "Synced"  # the other writer's change stays
    assert db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.target_id == ada.id)).all() == [action]
