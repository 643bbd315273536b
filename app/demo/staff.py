"""The demo's staff groups: the three a support team usually starts with, each with a few demo
admins, and every other demo admin in the built-in Administrators (as the migration puts admins)."""

from __future__ import annotations

import sqlalchemy as sa

from app.audit.services import Actor
from app.extensions import db
from app.models import StaffGroup, StaffGroupMember, User, UserRole, UserStatus
from app.records.staff import builtin_group
from app.staff.services import add_member, create_group, ensure_builtin_group

DEMO_GROUPS = (
    (
        "Support",
        "Front-line support: suspends, unlocks, invites and signs people out; no edits, no export.",
        ("users.view", "users.invite", "users.suspend", "users.unlock", "users.sessions"),
        3,
    ),
    ("Read-only", "Auditors: see every page and the audit trail, change nothing.", ("users.view", "audit.view"), 2),
    (
        "Engineer",
        "Engineers: replay webhooks and settle calls to Clerk; they do not touch users.",
        ("users.view", "webhooks.replay", "clerk.retry"),
        1,
    ),
)


def seed_staff_groups(*, actor: Actor) -> dict[str, int]:
    """Idempotent: makes the demo groups that are missing and places demo admins in no group yet."""
    ensure_builtin_group()
    made = placed = 0
    ungrouped = sa.select(User).where(
        User.role == UserRole.ADMIN,
        User.status == UserStatus.ACTIVE,
        User.deleted_at.is_(None),
        ~sa.exists().where(StaffGroupMember.user_id == User.id),
    )
    for name, description, permissions, n_members in DEMO_GROUPS:
        group = db.session.scalar(sa.select(StaffGroup).where(sa.func.lower(StaffGroup.name) == name.lower()))
        if group is not None:
            continue
        group = create_group(name, description=description, permissions=permissions, actor=actor)
        made += 1
        for user in db.session.scalars(ungrouped.order_by(User.email).limit(n_members)).all():
            add_member(group, user, actor=actor)
            placed += 1
    # Everyone else made an admin by the bulk load: the built-in group, as the migration and the app do.
    administrators = builtin_group()
    result = db.session.execute(
        sa.insert(StaffGroupMember.__table__).from_select(
            ["group_id", "user_id"],
            sa.select(sa.literal(administrators.id), User.id).where(
                User.role == UserRole.ADMIN, ~sa.exists().where(StaffGroupMember.user_id == User.id)
            ),
        )
    )
    return {"groups_created": made, "admins_placed": placed + max(result.rowcount, 0)}
