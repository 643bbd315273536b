"""An equality index on users.external_id: a search that is someone's external id finds them.

Revision ID: 0012_exact_lookups
Revises: 0011_staff_groups
Create Date: 2026-11-30

The other whole values a search may be (an email, a Clerk id, a username) already have their
equality indexes: lower(email), the unique clerk_id, and lower(username) (its prefix index answers
equality too). Most users have no external id, so the index holds only those who do.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_exact_lookups"
down_revision = "0011_staff_groups"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        "ix_users_external_id",
        "users",
        ["external_id"],
        postgresql_where=sa.text("external_id IS NOT NULL"),
        sqlite_where=sa.text("external_id IS NOT NULL"),
    )


def downgrade():
    op.drop_index("ix_users_external_id", table_name="users")
