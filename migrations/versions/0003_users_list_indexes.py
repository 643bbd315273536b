"""Indexes for the users list at a million rows: trigram search, sort keys, lower(email).

Revision ID: 0003_users_list_indexes
Revises: 0002_webhook_events
Create Date: 2026-11-26

Each expression is the same SQL as in app/models.py (SEARCH_TEXT, SIGN_IN_SORT_KEY,
NAME_SORT_KEY), so PostgreSQL's planner matches them. The trigram index serves LIKE '%term%'
on PostgreSQL only (pg_trgm); SQLite has no equivalent and scans, which a local run can afford.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_users_list_indexes"
down_revision = "0002_webhook_events"
branch_labels = None
depends_on = None

SEARCH_TEXT = (
    "lower((((((((email || ' ') || coalesce(first_name, '')) || ' ') || coalesce(last_name, '')) || ' ') "
    "|| coalesce(username, '')) || ' ') || clerk_id)"
)
# The epoch as each database stores timestamps (SQLite compares them as text).
SIGN_IN_SORT_KEY = {
    "postgresql": "coalesce(last_sign_in_at, '1970-01-01 00:00:00')",
    "sqlite": "coalesce(last_sign_in_at, '1970-01-01 00:00:00.000000')",
}
NAME_SORT_KEY = "lower((coalesce(first_name, '') || ' ') || coalesce(last_name, ''))"


def upgrade():
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_index("ix_users_last_sign_in_at_id")
    dialect = op.get_bind().dialect.name
    op.create_index("ix_users_sign_in_sort", "users", [sa.text(SIGN_IN_SORT_KEY[dialect]), "id"])
    op.create_index("ix_users_name_sort", "users", [sa.text(NAME_SORT_KEY), "id"])
    op.create_index("ix_users_lower_email", "users", [sa.text("lower(email)")])
    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(f"CREATE INDEX ix_users_search_trgm ON users USING gin (({SEARCH_TEXT}) gin_trgm_ops)")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_users_search_trgm", table_name="users")
    op.drop_index("ix_users_lower_email", table_name="users")
    op.drop_index("ix_users_name_sort", table_name="users")
    op.drop_index("ix_users_sign_in_sort", table_name="users")
    with op.batch_alter_table("users") as batch_op:
        batch_op.create_index("ix_users_last_sign_in_at_id", ["last_sign_in_at", "id"])
