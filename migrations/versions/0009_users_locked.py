"""Clerk's `locked` flag on users: an account Clerk locked after too many failed sign-in attempts.

Revision ID: 0009_users_locked
Revises: 0008_user_data_version
Create Date: 2026-11-30

Set from user events and `flask clerk sync`; support staff unlock (app/users/services.py). A
partial index serves the "locked" filter: few users are locked at any time.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_users_locked"
down_revision = "0008_user_data_version"
branch_labels = None
depends_on = None


def upgrade():
    # A plain ADD COLUMN with a constant default on both databases: no batch mode, because a
    # rebuilt SQLite table would lose the expression indexes of 0003 and 0005.
    op.add_column("users", sa.Column("locked", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index(
        "ix_users_locked_created_at",
        "users",
        ["created_at", "id"],
        postgresql_where=sa.text("locked"),
        sqlite_where=sa.text("locked"),
    )


def downgrade():
    op.drop_index("ix_users_locked_created_at", table_name="users")
    op.drop_column("users", "locked")
