"""A per-person session generation: dashboard sessions carry it, and moving it on ends them all.

Revision ID: 0007_session_generation
Revises: 0006_user_counts
Create Date: 2026-12-02

A session cookie names the user and the generation it was issued under (app/auth/guard.py);
sign-out, suspension, deletion and loss of the staff role add one, so every copy of an older
cookie is refused, and reactivation does not bring it back.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_session_generation"
down_revision = "0006_user_counts"
branch_labels = None
depends_on = None


def upgrade():
    # A constant default: a plain ADD COLUMN on both databases, no table rebuild.
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("session_generation", sa.Integer(), server_default="0", nullable=False))


def downgrade():
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), so SQLite's expression indexes are not rebuilt away.
    op.drop_column("users", "session_generation")
