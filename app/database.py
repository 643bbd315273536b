"""Engine-level details that differ between PostgreSQL and SQLite, and how a lost database looks."""

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine


def enable_sqlite_foreign_keys(engine: Engine) -> None:
    """SQLite enforces foreign keys only when asked, per connection."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - trivial
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


# Said to everyone whose request met a database that is down, restarting or out of connections.
UNREACHABLE_MESSAGE = "The database is unreachable; nothing was changed; try again in a moment."
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


def rollback_quietly() -> None:
    """Roll back; when even that cannot reach the database, drop the session (and its connection)."""
    from app.extensions import db

    try:
        db.session.rollback()
    except exc.SQLAlchemyError:
        db.session.remove()
