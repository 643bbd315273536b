"""What the staff pages read: the staff with their groups, the groups with their counts, a group's
members and history, and what one person may do (every permission, granted or not, and by which group).

The list of staff is one query (people and their groups joined), the list of groups one more (each
group with its member count): the /staff page costs the same for 5 staff as for 500."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from app.audit.queries import HistoryEntry, history
from app.extensions import db
from app.models import STAFF_ROLES, AuditEvent, StaffGroup, StaffGroupMember, User, UserRole
from app.permissions import CATALOGUE, PERMISSIONS, Permission, grants_of
from app.staff.services import known_permissions

HISTORY_LIMIT = 30
# Pages list this many people at most (a demo of a million users has some 30,000 staff); the rest
# are counted, and `flask staff groups` lists everyone.
LIST_LIMIT = 200

# How the grid and the person's page title each area of the catalogue (the part before the dot).
AREA_LABELS = {
    "users": "Users",
    "user_data": "Users' key-value data",
    "roles": "Roles",
    "organizations": "Organizations",
    "webhooks": "Webhooks",
    "clerk": "Calls to Clerk",
    "audit": "Audit trail",
    "permissions": "Permissions",
}


def area_label(area: str) -> str:
    return AREA_LABELS.get(area, area.replace("_", " ").capitalize())


@dataclass(frozen=True)
class Area:
    name: str
    label: str
    permissions: tuple[Permission, ...]


def permission_areas() -> list[Area]:
    """The catalogue by area, in its own order: one fieldset of the grid each."""
    areas: dict[str, list[Permission]] = {}
    for permission in CATALOGUE:
        areas.setdefault(permission.area, []).append(permission)
    return [Area(name, area_label(name), tuple(permissions)) for name, permissions in areas.items()]


# --- the staff ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRef:
    id: int
    name: str


@dataclass
class StaffRow:
    """One member of staff with the groups they are in (a super admin's are unused: the role grants all)."""

    user: User
    groups: list[GroupRef] = field(default_factory=list)

    @property
    def is_super_admin(self) -> bool:
        return self.user.role == UserRole.SUPER_ADMIN


def list_staff(limit: int | None = None) -> tuple[list[StaffRow], int]:
    """The first `limit` admins and super admins not deleted (super admins first, then by email) with
    their groups, in one query; and how many there are in all."""
    limit = limit or LIST_LIMIT
    is_staff = sa.and_(User.role.in_(STAFF_ROLES), User.deleted_at.is_(None))
    role_order = sa.case((User.role == UserRole.SUPER_ADMIN, 0), else_=1)
    order = (role_order, sa.func.lower(User.email), User.id)
    people = sa.select(User.id).where(is_staff).order_by(*order).limit(limit).subquery()
    rows = db.session.execute(
        sa.select(User, StaffGroup.id, StaffGroup.name)
        .join(people, people.c.id == User.id)
        .outerjoin(StaffGroupMember, StaffGroupMember.user_id == User.id)
        .outerjoin(StaffGroup, StaffGroup.id == StaffGroupMember.group_id)
        .order_by(*order, sa.func.lower(StaffGroup.name))
    ).all()
    staff: dict[str, StaffRow] = {}
    for user, group_id, group_name in rows:
        row = staff.setdefault(user.id, StaffRow(user))
        if group_id is not None:
            row.groups.append(GroupRef(group_id, group_name))
    total = len(staff) if len(staff) < limit else db.session.scalar(sa.select(sa.func.count()).where(is_staff))
    return list(staff.values()), total


def find_staff_person(user_id: str) -> User | None:
    """A member of staff (admin or super admin, not deleted) by id, or None."""
    user = db.session.get(User, user_id)
    return user if user is not None and user.is_staff and user.deleted_at is None else None


# --- the groups ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSummary:
    group: StaffGroup
    members: int

    @property
    def permissions(self) -> int:
        """How many permissions of the catalogue it grants (a name since removed from the code does not count)."""
        return len(known_permissions(self.group))


def list_groups() -> list[GroupSummary]:
    """Every group, the built-in one first, then by name, each with its number of members: one query."""
    members = (
        sa.select(sa.func.count())
        .select_from(StaffGroupMember)
        .where(StaffGroupMember.group_id == StaffGroup.id)
        .correlate(StaffGroup)
        .scalar_subquery()
    )
    rows = db.session.execute(
        sa.select(StaffGroup, members).order_by(
            StaffGroup.builtin.desc(), sa.func.lower(StaffGroup.name), StaffGroup.id
        )
    ).all()
    return [GroupSummary(group, count) for group, count in rows]


def find_group(group_id: int) -> StaffGroup | None:
    return db.session.get(StaffGroup, group_id)


def unknown_permissions(group: StaffGroup) -> list[str]:
    """Names the group holds that the catalogue no longer has (they grant nothing)."""
    return [name for name in group.permission_names if name not in PERMISSIONS]


@dataclass(frozen=True)
class GroupMember:
    user: User
    joined_at: datetime


def group_members(group: StaffGroup, limit: int | None = None) -> tuple[list[GroupMember], int]:
    """The group's first `limit` members by email, with when each joined; and how many it has in all."""
    limit = limit or LIST_LIMIT
    rows = db.session.execute(
        sa.select(User, StaffGroupMember.created_at)
        .join(StaffGroupMember, StaffGroupMember.user_id == User.id)
        .where(StaffGroupMember.group_id == group.id)
        .order_by(sa.func.lower(User.email), User.id)
        .limit(limit)
    ).all()
    members = [GroupMember(user, joined_at) for user, joined_at in rows]
    if len(members) < limit:
        return members, len(members)
    total = db.session.scalar(sa.select(sa.func.count()).where(StaffGroupMember.group_id == group.id))
    return members, total


def group_history(group: StaffGroup, limit: int = HISTORY_LIMIT) -> list[HistoryEntry]:
    """The newest audit events about the group: made, renamed, its permissions, who joined or left."""
    return history(AuditEvent.staff_group_id == group.id, limit)


# --- what one person may do ---------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    permission: Permission
    granted_by: tuple[str, ...]  # the groups granting it (for a super admin: the role); empty when not held

    @property
    def granted(self) -> bool:
        return bool(self.granted_by)


@dataclass(frozen=True)
class AreaGrants:
    name: str
    label: str
    grants: tuple[Grant, ...]


def person_grants(user: User) -> list[AreaGrants]:
    """Every permission of the catalogue by area, each with the groups that grant it to `user` (none: not held)."""
    grants = grants_of(user)
    return [
        AreaGrants(area.name, area.label, tuple(Grant(p, tuple(grants.get(p.name, ()))) for p in area.permissions))
        for area in permission_areas()
    ]
