"""Staff groups: permissions as data a super admin controls (DESIGN §9).

Revision ID: 0011_staff_groups
Revises: 0010_organizations
Create Date: 2026-11-30

The built-in group "Administrators" holds exactly what the role `admin` allowed before this
revision, and every admin joins it, so upgrading changes no one's access. The permission names are
written out here as they were at this revision (app/permissions.py may grow; this must not move).
Audit events gain the group they are about (no foreign key: a deleted group's history stays).
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0011_staff_groups"
down_revision = "0010_organizations"
branch_labels = None
depends_on = None

ADMINISTRATORS_PERMISSIONS = [
    "audit.view",
    "clerk.retry",
    "organizations.manage",
    "user_data.edit",
    "users.edit",
    "users.export",
    "users.invite",
    "users.sessions",
    "users.suspend",
    "users.unlock",
    "users.view",
]
ADMINISTRATORS_DESCRIPTION = (
    "Everything an admin could do before staff groups: all but deleting users, roles, replays and permissions."
)


def upgrade():
    groups = op.create_table(
        "staff_groups",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("permissions", sa.Text(), server_default="[]", nullable=False),
        sa.Column("builtin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_groups")),
    )
    op.create_index("uq_staff_groups_lower_name", "staff_groups", [sa.text("lower(name)")], unique=True)
    op.create_table(
        "staff_group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["staff_groups.id"],
            name=op.f("fk_staff_group_members_group_id_staff_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_staff_group_members_user_id_users")),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_staff_group_members")),
    )
    op.create_index("ix_staff_group_members_user_id", "staff_group_members", ["user_id"])
    # A plain ADD COLUMN on both databases (no batch mode: a rebuilt SQLite table would lose indexes).
    op.add_column("audit_events", sa.Column("staff_group_id", sa.Integer(), nullable=True))
    op.create_index("ix_audit_events_staff_group_id_occurred_at", "audit_events", ["staff_group_id", "occurred_at"])

    op.bulk_insert(
        groups,
        [
            {
                "name": "Administrators",
                "description": ADMINISTRATORS_DESCRIPTION,
                "permissions": json.dumps(ADMINISTRATORS_PERMISSIONS),
                "builtin": True,
            }
        ],
    )
    op.execute(
        "INSERT INTO staff_group_members (group_id, user_id) "
        "SELECT staff_groups.id, users.id FROM staff_groups, users "
        "WHERE staff_groups.builtin AND users.role = 'admin'"
    )


def downgrade():
    op.drop_index("ix_audit_events_staff_group_id_occurred_at", table_name="audit_events")
    op.drop_column("audit_events", "staff_group_id")
    op.drop_index("ix_staff_group_members_user_id", table_name="staff_group_members")
    op.drop_table("staff_group_members")
    op.drop_index("uq_staff_groups_lower_name", table_name="staff_groups")
    op.drop_table("staff_groups")
