"""Prefix indexes for 1-2 character searches (PostgreSQL only).

Revision ID: 0005_short_search_indexes
Revises: 0004_clerk_outbox
Create Date: 2026-11-26

Trigram indexes cannot serve a term shorter than three characters, so a short term matches the
start of the email, the names or the username, each served by a b-tree in byte order.
"""

from alembic import op

revision = "0005_short_search_indexes"
down_revision = "0004_clerk_outbox"
branch_labels = None
depends_on = None


COLUMNS = ("email", "first_name", "last_name", "username")


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.execute(f"CREATE INDEX ix_users_{column}_prefix ON users (lower({column}) text_pattern_ops)")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.drop_index(f"ix_users_{column}_prefix", table_name="users")
