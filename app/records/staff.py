"""Staff groups follow a person's role: who becomes an admin joins the built-in group, who stops
being staff leaves every group. Called by app/records/users.py whenever a role is set."""

from __future__ import annotations

import sqlalchemy as sa

from app.audit.services import Actor, record
from app.extensions import db
from app.models import StaffGroup, StaffGroupMember, User, UserRole


def builtin_group() -> StaffGroup | None:
    """Administrators, made by the migration 0011_staff_groups (never renamed or deleted here)."""
    return db.session.scalars(sa.select(StaffGroup).where(StaffGroup.builtin).order_by(StaffGroup.id).limit(1)).first()


def groups_of(user: User) -> list[StaffGroup]:
    return list(
        db.session.scalars(
            sa.select(StaffGroup)
            .join(StaffGroupMember, StaffGroupMember.group_id == StaffGroup.id)
            .where(StaffGroupMember.user_id == user.id)
            .order_by(sa.func.lower(StaffGroup.name))
        )
    )


def add_to_group(group: StaffGroup, user: User, *, actor: Actor) -> None:
    db.session.add(StaffGroupMember(group_id=group.id, user_id=user.id))
    db.session.flush()
    record("staff_group.member_add", actor=actor, target=user, staff_group=group, changes={"group": [None, group.name]})


def remove_from_group(group: StaffGroup, user: User, *, actor: Actor) -> None:
    db.session.execute(
        sa.delete(StaffGroupMember).where(StaffGroupMember.group_id == group.id, StaffGroupMember.user_id == user.id)
    )
    record(
        "staff_group.member_remove", actor=actor, target=user, staff_group=group, changes={"group": [group.name, None]}
    )


def follow_role(user: User, *, actor: Actor) -> None:
    """After `user`'s role was set: an admin in no group joins the built-in one (what an admin could
    always do), and someone who is no longer staff leaves every group, so a later promotion does not
    bring old permissions back unseen. A super admin keeps their groups (unused while they are one)."""
    if user.role == UserRole.ADMIN:
        if groups_of(user):
            return
        group = builtin_group()
        if group is not None:
            add_to_group(group, user, actor=actor)
    elif user.role == UserRole.USER:
        for group in groups_of(user):
            remove_from_group(group, user, actor=actor)
