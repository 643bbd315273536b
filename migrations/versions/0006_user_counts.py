"""Counters for the overview: users by status, role, sign-up day and sign-in day, and deleted users.

Revision ID: 0006_user_counts
Revises: 0005_short_search_indexes
Create Date: 2026-11-28

The table is filled here from the existing rows (one GROUP BY per dimension: seconds at a million
users); from then on the services that write users keep it exact (app/records/counts.py), and
`flask stats rebuild` recounts it. Days are UTC dates as text, YYYY-MM-DD.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_user_counts"
down_revision = "0005_short_search_indexes"
branch_labels = None
depends_on = None


def _fill() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"

    def day(column: str) -> str:
        return f"to_char({column}, 'YYYY-MM-DD')" if postgres else f"strftime('%Y-%m-%d', {column})"

    buckets = {
        "status": "CAST(status AS TEXT)",
        "role": "CAST(role AS TEXT)",
        "signup": day("created_at"),
        "signin": day("last_sign_in_at"),
    }
    for dimension, bucket in buckets.items():
        only_signed_in = " AND last_sign_in_at IS NOT NULL" if dimension == "signin" else ""
        op.execute(
            f"INSERT INTO user_counts (dimension, bucket, n) "
            f"SELECT '{dimension}', {bucket}, count(*) FROM users "
            f"WHERE deleted_at IS NULL{only_signed_in} GROUP BY {bucket}"
        )
    op.execute(
        "INSERT INTO user_counts (dimension, bucket, n) "
        "SELECT 'deleted', 'all', count(*) FROM users WHERE deleted_at IS NOT NULL HAVING count(*) > 0"
    )


def upgrade():
    op.create_table(
        "user_counts",
        sa.Column("dimension", sa.Text(), nullable=False),
        sa.Column("bucket", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("dimension", "bucket", name=op.f("pk_user_counts")),
    )
    _fill()


def downgrade():
    op.drop_table("user_counts")
