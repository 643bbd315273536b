"""Clerk webhook deliveries: one row per Svix message id.

Revision ID: 0002_webhook_events
Revises: 0001_foundation
Create Date: 2026-11-26

The primary key is the `svix-id` header, so inserting the row is what makes a delivery
happen exactly once. `outcome` is plain text limited by a named CHECK constraint (no native
enum: new outcomes should not need an `ALTER TYPE`).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_webhook_events"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("clerk_user_id", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="1", nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('applied', 'stale', 'ignored', 'failed')",
            name=op.f("ck_webhook_events_outcome"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    with op.batch_alter_table("webhook_events") as batch_op:
        batch_op.create_index("ix_webhook_events_received_at_id", ["received_at", "id"])
        batch_op.create_index("ix_webhook_events_outcome_received_at", ["outcome", "received_at", "id"])
        batch_op.create_index("ix_webhook_events_type_received_at", ["type", "received_at", "id"])
        batch_op.create_index("ix_webhook_events_clerk_user_id", ["clerk_user_id"])


def downgrade():
    op.drop_table("webhook_events")
