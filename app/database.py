"""Engine-level details that differ between PostgreSQL and SQLite, and how a lost database looks."""

import re
import select
import unicodedata

from flask import has_request_context, request
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine


def enable_sqlite_foreign_keys(engine: Engine) -> None:
    """SQLite enforces foreign keys only when asked, per connection; and transactions are ours to begin.

    pysqlite would otherwise open no transaction before a SAVEPOINT, whose RELEASE then commits on
    its own (a key-value pair kept while its audit event was rolled back): SQLAlchemy's recipe.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - trivial
        dbapi_connection.isolation_level = None  # the driver stops beginning (and ending) transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # pragma: no cover - trivial
        connection.exec_driver_sql("BEGIN")


def replace_dead_connections(engine: Engine) -> None:
    """Hand out no pooled connection the server has closed, without a round trip to ask it.

    A server that stops (a restart, pg_terminate_backend, a crash) sends a last FATAL message and
    closes the socket; either makes the idle connection's socket readable, which a poll with no
    wait sees. Such a connection is dropped and the pool opens a new one (SQLAlchemy retries the
    checkout on DisconnectionError). pool_pre_ping's `SELECT 1` would cost every request and every
    webhook a round trip to learn the same thing.
    """

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, _record, _proxy):
        if dbapi_connection.closed or _socket_has_news(dbapi_connection.pgconn.socket):
            raise exc.DisconnectionError("the server closed this pooled connection")


def _socket_has_news(fd: int) -> bool:
    """Whether the server sent something to an idle connection: its goodbye, or end of file."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


# Said to everyone whose request met a database that is down, restarting or out of connections.
UNREACHABLE_MESSAGE = "The database is unreachable; nothing was changed; try again in a moment."
# ... or that did not answer within the statement timeout (a long query, or a row another task holds).
TOO_SLOW_MESSAGE = (
    "The database did not answer in time (another task may be holding this record); "
    "nothing was changed; try again in a moment."
)
QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement stopped by statement_timeout
# ... unless this request had already committed its change (a page drawn after the commit).
UNREACHABLE_AFTER_SAVE_MESSAGE = (
    "Your change was saved, but the database became unreachable before this page could be shown; "
    "reload in a moment to see it."
)
RETRY_AFTER_SECONDS = 5


def is_database_unreachable(error: BaseException | None) -> bool:
    """Whether `error` means the database could not be reached, rather than a bug in a query.

    OperationalError and InterfaceError are the DB-API's words for a lost or refused connection
    (and for a server shutting down or starting up); any other driver error counts when
    SQLAlchemy found the connection dead; a pool that cannot hand out a connection counts too.
    """
    if isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)):
        return True
    return isinstance(error, exc.DBAPIError) and bool(error.connection_invalidated)


def timed_out(error: BaseException | None) -> bool:
    """Whether `error` is a statement PostgreSQL stopped at the statement timeout."""
    return getattr(getattr(error, "orig", None), "sqlstate", None) == QUERY_CANCELED


def first_line(error: BaseException, limit: int = 300) -> str:
    """A driver error's first line, for a one-line log entry (psycopg's messages run on)."""
    return (str(error).splitlines() or [""])[0][:limit]


def rollback_quietly() -> None:
    """Roll back; when even that cannot reach the database, drop the session (and its connection)."""
    from app.extensions import db

    try:
        db.session.rollback()
    except exc.SQLAlchemyError:
        db.session.remove()


# Kept in the request's environ, which lives exactly as long as the request (`g` may not, in tests).
_FLUSHED, _COMMITTED = "dashboard.database_flushed", "dashboard.database_committed"


def _after_flush(_session, _context) -> None:
    if has_request_context():
        request.environ[_FLUSHED] = True


def _after_commit(_session) -> None:
    if has_request_context() and request.environ.pop(_FLUSHED, False):
        request.environ[_COMMITTED] = True


def committed_in_this_request() -> bool:
    return has_request_context() and bool(request.environ.get(_COMMITTED))


def note_commits(session) -> None:
    """Remember when a request commits a change, so an error after it does not deny the change."""
    for name, listener in (("after_flush", _after_flush), ("after_commit", _after_commit)):
        if not event.contains(session, name, listener):
            event.listen(session, name, listener)


def release_sessions_safely(app) -> None:
    """End each request's session without letting a dead connection turn its answer into a 500.

    Flask-SQLAlchemy's own teardown rolls the session back; when the server has just terminated
    the connection (a restart), that ROLLBACK raises after the response was made, and the server
    answers 500 instead. This teardown runs first (teardowns run last-registered first): it
    removes the session, and on such a failure drops the connection without talking to it.
    """
    from app.extensions import db

    @app.teardown_appcontext
    def _release_session(_error):
        try:
            db.session.remove()
        except exc.SQLAlchemyError as error:
            app.logger.warning("dropping a database connection that died: %s", first_line(error))
            try:
                db.session.registry().invalidate()
            finally:
                db.session.registry.clear()


# PostgreSQL text holds no NUL, and no driver encodes a lone surrogate.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Characters that reorder or hide the text around them (bidi controls), and invisible controls:
# names refuse them, and JSON shows them escaped, so "evil\u202e" cannot pass for something else.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
HIDDEN_IN_JSON = re.compile("[\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\x7f-\x9f]")


def line_problem(text: str) -> str | None:
    """Why one line of text an admin typed is refused (control or text-direction characters), or None."""
    for char in text:
        if char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            return f"Must not contain control or text-direction characters (found U+{ord(char):04X})."
    return None


def text_problem(text: str) -> str | None:
    """Why this text cannot be taken, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character"
    if _SURROGATE.search(text):
        return "is not valid text"
    return None
