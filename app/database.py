"""Engine-level details that differ between PostgreSQL and SQLite."""

from sqlalchemy import event
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
