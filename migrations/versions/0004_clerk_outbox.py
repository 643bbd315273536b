"""The outbox of calls to Clerk: each row commits with the local change it mirrors.

Revision ID: 0004_clerk_outbox
Revises: 0003_users_list_indexes
Create Date: 2026-11-27

`state` is plain text limited by a named CHECK constraint, like webhook_events.outcome. The
integer key orders a user's calls (a ban is delivered before the unban that follows it).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_clerk_outbox"
down_revision = "0003_users_list_indexes"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "clerk_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed', 'superseded')", name=op.f("ck_clerk_outbox_state")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_clerk_outbox_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clerk_outbox")),
    )
    with op.batch_alter_table("clerk_outbox") as batch_op:
        batch_op.create_index("ix_clerk_outbox_state_next_attempt_at", ["state", "next_attempt_at"])
        batch_op.create_index("ix_clerk_outbox_user_id_state", ["user_id", "state"])
        batch_op.create_index("ix_clerk_outbox_state_id", ["state", "id"])


def downgrade():
    op.drop_table("clerk_outbox")
