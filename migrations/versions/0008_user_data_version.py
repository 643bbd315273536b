"""Optimistic locking for key-value pairs: user_data.version, as users have.

Revision ID: 0008_user_data_version
Revises: 0007_session_generation
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_user_data_version"
down_revision = "0007_session_generation"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("user_data") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))


def downgrade():
    with op.batch_alter_table("user_data") as batch:
        batch.drop_column("version")
