"""Fixtures: an app on a schema built by the migrations, on SQLite or (TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from html.parser import HTMLParser

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from app import create_app
from app.audit.services import Actor
from app.auth.services import issue_sign_in_link
from app.config import normalise_database_url
from app.extensions import db as _db
from app.models import StaffGroupMember, User, UserRole, UserStatus
from app.records.staff import builtin_group

TEST_SECRET = "test-secret-key"


def _scratch_postgres_database(base_url: str) -> tuple[str, sa.Engine, str]:
    """A database of its own for this run, so runs side by side cannot disturb each other."""
    url = sa.make_url(normalise_database_url(base_url))
    name = f"test_dashboard_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return url.set(database=name).render_as_string(hide_password=False), admin, name


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TEST_DATABASE_URL"):
        return
    reason = "needs PostgreSQL: set TEST_DATABASE_URL (make test and .ci/run do)"
    for item in items:
        if "postgresql" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        path = tmp_path_factory.mktemp("db") / "test.sqlite3"
        url = f"sqlite:///{path}"
        _migrate(url)
        yield url
        return
    url, admin, name = _scratch_postgres_database(base)
    try:
        _migrate(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrate(url: str) -> None:
    from flask_migrate import upgrade

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": TEST_SECRET})
    with app.app_context():
        upgrade()
        _db.engine.dispose()


def make_app(database_url: str, **overrides) -> Flask:
    config = {
        "TESTING": True,
        "APP_ENV": "test",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SECRET_KEY": TEST_SECRET,
        "SERVER_NAME": None,
        "BASE_URL": "http://localhost",
        # Tests must never reach a real Clerk.
        "CLERK_SECRET_KEY": None,
        "CLERK_WEBHOOK_SIGNING_SECRET": None,
        "CLERK_JWT_KEY": None,
    }
    config.update(overrides)
    return create_app(config)


def _empty_tables() -> None:
    _db.session.remove()
    with _db.engine.begin() as connection:
        for table in reversed(_db.metadata.sorted_tables):
            connection.execute(table.delete())
    _restore_builtin_groups()


def _restore_builtin_groups() -> None:
    """The migrations' built-in staff group, as every database has it (emptied with the rest above)."""
    from app.staff.services import ensure_builtin_group

    ensure_builtin_group()
    _db.session.commit()
    _db.session.remove()


@pytest.fixture(scope="session")
def _shared_app(database_url: str) -> Iterator[Flask]:
    """One app (and engine, and pool) for the whole run: making them per test cost more than the test."""
    app = make_app(database_url)
    yield app
    with app.app_context():
        _db.engine.dispose()


@pytest.fixture
def app(_shared_app: Flask) -> Iterator[Flask]:
    """The shared app in a context of its own; its settings and every table are as new after each test."""
    settings = dict(_shared_app.config)
    with _shared_app.app_context():
        try:
            yield _shared_app
        finally:
            _empty_tables()
            _shared_app.config.clear()
            _shared_app.config.update(settings)


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app served over real HTTP on loopback, in a thread, for browsers and HTTP clients."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def db(app: Flask):
    return _db


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


@pytest.fixture
def make_user(db):
    counter = iter(range(1, 1_000_000))

    def make(**fields) -> User:
        n = next(counter)
        fields.setdefault("email", f"person{n}@example.com")
        # Digits only, so a search for letters never matches a random id by chance.
        fields.setdefault("clerk_id", f"user_test_{n}_{uuid.uuid4().int % 10**12}")
        fields.setdefault("role", UserRole.USER)
        fields.setdefault("status", UserStatus.ACTIVE)
        user = User(**fields)
        db.session.add(user)
        if user.role == UserRole.ADMIN:  # as the app does for anyone made an admin (app/records/staff.py)
            db.session.flush()
            db.session.add(StaffGroupMember(group_id=builtin_group().id, user_id=user.id))
        db.session.commit()
        return user

    return make


class AuthActions:
    """Sign a test client in the way a person does: with a one-time link."""

    def __init__(self, app: Flask, client: FlaskClient, make_user):
        self.app, self.client, self.make_user = app, client, make_user

    def link_for(self, user: User) -> str:
        token = issue_sign_in_link(
            user,
            secret_key=self.app.config["SECRET_KEY"],
            max_age=self.app.config["SIGN_IN_LINK_MAX_AGE"],
            actor=Actor.cli(),
        )
        _db.session.commit()
        return f"/auth/link/{token}"

    def sign_in(self, user: User | None = None, *, role: UserRole = UserRole.SUPER_ADMIN) -> User:
        if user is None:
            user = self.make_user(email=f"{role.value}-{uuid.uuid4().int % 10**6}@staff.example", role=role)
        response = self.client.get(self.link_for(user))
        assert response.status_code == 302, response.get_data(as_text=True)
        return user


@pytest.fixture
def auth(app, client, make_user) -> AuthActions:
    return AuthActions(app, client, make_user)


HX = {"HX-Request": "true"}  # what htmx sends with each of its requests


@pytest.fixture
def staff(auth) -> User:
    """A super admin, signed in on `client`."""
    return auth.sign_in(role=UserRole.SUPER_ADMIN)


@pytest.fixture
def token(client, staff) -> str:
    """A CSRF token of `staff`'s session."""
    return csrf_token_from(client.get("/users/new").get_data(as_text=True))


@pytest.fixture
def ada(make_user) -> User:
    return make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace")


@pytest.fixture
def signing_secret(app) -> str:
    """The webhook receiver takes deliveries signed with tests.clerk_payloads.SECRET."""
    from tests.clerk_payloads import SECRET

    app.config["CLERK_WEBHOOK_SIGNING_SECRET"] = SECRET
    return SECRET


@pytest.fixture
def count_queries(db) -> Callable[[], AbstractContextManager[list[str]]]:
    """`with count_queries() as statements:` lists the SQL the engine ran inside the block.

    SQLite's explicit BEGIN (app/database.py) is transaction control, not a query: not counted.
    """

    @contextmanager
    def counting() -> Iterator[list[str]]:
        statements: list[str] = []

        def listen(_conn, _cursor, statement, *_args) -> None:
            if statement != "BEGIN":
                statements.append(statement)

        sa.event.listen(db.engine, "before_cursor_execute", listen)
        try:
            yield statements
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", listen)

    return counting


CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class _FormReader(HTMLParser):
    """The values a browser would submit for the form whose action is `action`."""

    def __init__(self, action: str):
        super().__init__(convert_charrefs=True)
        self.action, self.inside, self.values = action, False, []
        self._textarea: str | None = None
        self._select: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("action") == self.action
        if not self.inside:
            return
        if tag == "input" and attrs.get("name"):
            if attrs.get("type") in ("checkbox", "radio") and "checked" not in attrs:
                return
            self.values.append((attrs["name"], attrs.get("value") or ""))
        elif tag == "textarea":
            self._textarea, self._text = attrs.get("name"), []
        elif tag == "select":
            self._select = attrs.get("name")
        elif tag == "option" and self._select and "selected" in attrs:
            self.values.append((self._select, attrs.get("value") or ""))

    def handle_data(self, data):
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self._textarea is not None:
            self.values.append((self._textarea, "".join(self._text).removeprefix("\r\n").removeprefix("\n")))
            self._textarea = None
        elif tag == "select":
            self._select = None


def form_values(html: str, action: str) -> dict:
    """The fields of the form posting to `action`, as a browser would send them (last value wins)."""
    reader = _FormReader(action)
    reader.feed(html)
    assert reader.values, f"no form posting to {action}"
    return dict(reader.values)
