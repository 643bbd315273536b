"""The seed's users and user_data, plus audit events and sign-in links.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-26

`user_role` and `user_status` are native enum types on PostgreSQL (named as in the seed) and
named CHECK constraints on SQLite. Timestamps are plain `timestamp` columns holding UTC.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

user_role = sa.Enum("super_admin", "admin", "user", name="user_role", create_constraint=True)
user_status = sa.Enum("active", "inactive", "invited", "suspended", name="user_status", create_constraint=True)


def upgrade():
    op.create_table(
        "users",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("role", user_role, server_default="user", nullable=False),
        sa.Column("status", user_status, server_default="active", nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("public_metadata", sa.Text(), nullable=True),
        sa.Column("private_metadata", sa.Text(), nullable=True),
        sa.Column("unsafe_metadata", sa.Text(), nullable=True),
        sa.Column("last_sign_in_at", sa.DateTime(), nullable=True),
        sa.Column("clerk_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        # Additions: soft delete, the webhook ordering guard (ms), optimistic locking.
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("clerk_updated_at", sa.BigInteger(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("clerk_id", name=op.f("uq_users_clerk_id")),
    )
    with op.batch_alter_table("users") as batch_op:
        batch_op.create_index("ix_users_created_at_id", ["created_at", "id"])
        batch_op.create_index("ix_users_email_id", ["email", "id"])
        batch_op.create_index("ix_users_last_sign_in_at_id", ["last_sign_in_at", "id"])
        batch_op.create_index("ix_users_role_created_at", ["role", "created_at"])
        batch_op.create_index("ix_users_status_created_at", ["status", "created_at"])

    op.create_table(
        "user_data",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_user_data_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_data")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_user_data_user_id_key")),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Text(), nullable=True),
        sa.Column("actor_label", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target_id", sa.Text(), nullable=True),
        sa.Column("target_label", sa.Text(), nullable=True),
        sa.Column("changes", sa.Text(), nullable=True),
        sa.Column("remote_addr", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name=op.f("fk_audit_events_actor_id_users")),
        sa.ForeignKeyConstraint(["target_id"], ["users.id"], name=op.f("fk_audit_events_target_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events") as batch_op:
        batch_op.create_index("ix_audit_events_action", ["action"])
        batch_op.create_index("ix_audit_events_actor_id", ["actor_id"])
        batch_op.create_index("ix_audit_events_occurred_at", ["occurred_at"])
        batch_op.create_index("ix_audit_events_target_id_occurred_at", ["target_id", "occurred_at"])

    op.create_table(
        "sign_in_links",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sign_in_links_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_links")),
    )
    with op.batch_alter_table("sign_in_links") as batch_op:
        batch_op.create_index("ix_sign_in_links_user_id", ["user_id"])


def downgrade():
    op.drop_table("sign_in_links")
    op.drop_table("audit_events")
    op.drop_table("user_data")
    op.drop_table("users")
    bind = op.get_bind()
    user_status.drop(bind, checkfirst=True)
    user_role.drop(bind, checkfirst=True)
