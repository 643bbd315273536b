"""Organizations, memberships and organization invitations, mirrored from Clerk (docs/clerk.md §6).

Revision ID: 0010_organizations
Revises: 0009_users_locked
Create Date: 2026-11-30

Audit events and outbox calls gain the organization they are about. Trigram and prefix indexes
serve the organizations list's search on PostgreSQL; SQLite scans, fine for a local run.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_organizations"
down_revision = "0009_users_locked"
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")


def _timestamps():
    return [
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
    ]


def upgrade():
    op.create_table(
        "organizations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("clerk_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("slug", sa.Text(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("max_allowed_memberships", sa.Integer(), nullable=True),
        sa.Column("public_metadata", sa.Text(), nullable=True),
        sa.Column("private_metadata", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("members_count", sa.Integer(), server_default="0", nullable=False),
        *_timestamps(),
        sa.Column("clerk_updated_at", sa.BigInteger(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("clerk_id", name=op.f("uq_organizations_clerk_id")),
    )
    op.create_index("ix_organizations_created_at_id", "organizations", ["created_at", "id"])
    op.create_index("ix_organizations_members_count_id", "organizations", ["members_count", "id"])
    op.create_index("ix_organizations_name_sort", "organizations", [sa.text("lower(name)"), "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_organizations_search_trgm ON organizations "
            "USING gin ((lower(name || ' ' || coalesce(slug, ''))) gin_trgm_ops)"
        )
        op.execute("CREATE INDEX ix_organizations_slug_prefix ON organizations (lower(slug) text_pattern_ops)")
        op.execute("CREATE INDEX ix_organizations_name_prefix ON organizations (lower(name) text_pattern_ops)")

    op.create_table(
        "memberships",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("clerk_id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("clerk_user_id", sa.Text(), nullable=False),
        sa.Column("identifier", sa.Text(), nullable=True),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("permissions", sa.Text(), nullable=True),
        sa.Column("public_metadata", sa.Text(), nullable=True),
        *_timestamps(),
        sa.Column("clerk_updated_at", sa.BigInteger(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"], ["organizations.id"], name=op.f("fk_memberships_organization_id_organizations")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint("clerk_id", name=op.f("uq_memberships_clerk_id")),
    )
    op.create_index(
        "uq_memberships_live_organization_user",
        "memberships",
        ["organization_id", "clerk_user_id"],
        unique=True,
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    op.create_index(
        "ix_memberships_organization_live",
        "memberships",
        ["organization_id", "created_at", "id"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_memberships_search_trgm ON memberships USING gin ((lower(coalesce(identifier, '') "
            "|| ' ' || coalesce(first_name, '') || ' ' || coalesce(last_name, ''))) gin_trgm_ops)"
        )
        op.execute(
            "CREATE INDEX ix_memberships_organization_email ON memberships "
            "(organization_id, lower(identifier) text_pattern_ops) WHERE deleted_at IS NULL"
        )
    op.create_index("ix_memberships_clerk_user_id", "memberships", ["clerk_user_id"])

    op.create_table(
        "organization_invitations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("clerk_id", sa.Text(), nullable=False),
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        *_timestamps(),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("clerk_updated_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'revoked', 'expired')", name=op.f("ck_organization_invitations_status")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_invitations_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization_invitations")),
        sa.UniqueConstraint("clerk_id", name=op.f("uq_organization_invitations_clerk_id")),
    )
    op.create_index(
        "ix_organization_invitations_organization_status",
        "organization_invitations",
        ["organization_id", "status", "created_at"],
    )

    # audit_events and clerk_outbox hold only plain indexes, so SQLite's batch rebuild keeps them.
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("organization_id", sa.Text(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_audit_events_organization_id_organizations"), "organizations", ["organization_id"], ["id"]
        )
        batch.create_index("ix_audit_events_organization_id_occurred_at", ["organization_id", "occurred_at"])
    with op.batch_alter_table("clerk_outbox") as batch:
        batch.add_column(sa.Column("organization_id", sa.Text(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_clerk_outbox_organization_id_organizations"), "organizations", ["organization_id"], ["id"]
        )
        batch.create_index("ix_clerk_outbox_organization_id_state", ["organization_id", "state"])


def downgrade():
    with op.batch_alter_table("clerk_outbox") as batch:
        batch.drop_index("ix_clerk_outbox_organization_id_state")
        batch.drop_constraint(batch.f("fk_clerk_outbox_organization_id_organizations"), type_="foreignkey")
        batch.drop_column("organization_id")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_organization_id_occurred_at")
        batch.drop_constraint(batch.f("fk_audit_events_organization_id_organizations"), type_="foreignkey")
        batch.drop_column("organization_id")
    op.drop_table("organization_invitations")
    op.drop_table("memberships")
    op.drop_table("organizations")
