"""Time `seed_demo(N)` on PostgreSQL, from an empty schema.

    .venv/bin/python benchmarks/seed_demo.py [N]          # N defaults to 1,000,000

The database comes from BENCH_DATABASE_URL, by default postgresql+psycopg://postgres@127.0.0.1:5432/bench.
The script creates that database if it is missing, empties it (drop_all), builds the schema with
db.create_all() (plus the pg_trgm extension the search index needs), seeds, commits, and prints
the time and the rate. Add --keep to leave the database in place; otherwise it is dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app
from app.audit.services import Actor
from app.demo.load import seed_demo
from app.extensions import db

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench"


def create_database(url: sa.URL) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database})
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


def drop_database(url: sa.URL) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n_users", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the bench database in place")
    args = parser.parse_args()

    url = sa.make_url(os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    create_database(url)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url.render_as_string(hide_password=False),
                      "TESTING": True, "SECRET_KEY": "bench"})  # fmt: skip
    try:
        with app.app_context():
            db.drop_all()
            db.session.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            db.session.commit()
            db.create_all()

            started = time.perf_counter()

            def progress(done: int, total: int) -> None:
                elapsed = time.perf_counter() - started
                print(f"  {done:>9,} / {total:,} users  {elapsed:6.1f} s", flush=True)

            counts = seed_demo(args.n_users, actor=Actor.cli(), progress=progress)
            db.session.commit()
            seconds = time.perf_counter() - started
            db.engine.dispose()
    finally:
        if not args.keep:
            drop_database(url)

    print(f"seeded {counts['users_created']:,} users and {counts['user_data_created']:,} key-value rows")
    print(f"total {seconds:.1f} s, {counts['users_created'] / seconds:,.0f} users/s "
          f"({os.cpu_count()} cores)")  # fmt: skip


if __name__ == "__main__":
    main()
