"""Who may do what to whom: the catalogue of permissions, and the one function that answers.

Staff groups (app/models.py, StaffGroup) grant permissions to admins; a super admin holds every
permission by role and cannot be locked out. On top of permissions, admins act only on users with
the role `user`, and nobody suspends, demotes or deletes themselves. The command line and Clerk's
webhook act for the system (the break-glass path and the mirror of Clerk), so only the
last-super-admin rule binds them. The services call `ensure`; pages ask `may` to offer only what
the person may do. README.md ("Who may do what") has the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa

from app.audit.services import Actor, Source
from app.extensions import db
from app.models import StaffGroup, StaffGroupMember, User, UserRole, UserStatus
from app.records.staff import builtin_group


@dataclass(frozen=True)
class Permission:
    name: str  # area.action
    description: str  # one line, shown where groups are edited

    @property
    def area(self) -> str:
        return self.name.partition(".")[0]


CATALOGUE: tuple[Permission, ...] = (
    Permission("users.view", "See users, organizations, webhook deliveries and calls to Clerk (every read page)."),
    Permission("users.edit", "Edit users' names, email, username, external id and metadata."),
    Permission("users.invite", "Invite users, and resend or revoke their invitations."),
    Permission("users.suspend", "Suspend, reactivate or deactivate users, one at a time or in bulk."),
    Permission("users.unlock", "Lift Clerk's lockout after too many failed sign-in attempts."),
    Permission("users.sessions", "See users' active sessions in Clerk and sign them out everywhere."),
    Permission("users.delete", "Delete users, here and in Clerk."),
    Permission("users.export", "Export the users list as CSV: personal data leaves the dashboard."),
    Permission("user_data.edit", "Add, change and delete users' key-value data."),
    Permission("roles.manage", "Make users admins and back (only super admins make super admins)."),
    Permission(
        "organizations.manage", "Rename organizations; add, remove and change members; invite and revoke invitations."
    ),
    Permission(
        "organizations.delete",
        "Delete organizations, here and in Clerk: their memberships end and their invitations are revoked.",
    ),
    Permission("webhooks.replay", "Re-apply a stored webhook event, which can force an older version over newer data."),
    Permission("clerk.retry", "Retry refused calls to Clerk, take Clerk's value instead, or send pending calls now."),
    Permission("audit.view", "See the whole audit trail (each user's own history is on their page)."),
    Permission("permissions.manage", "Manage staff groups: their permissions and who is in them."),
)
PERMISSIONS: dict[str, Permission] = {permission.name: permission for permission in CATALOGUE}
ALL = frozenset(PERMISSIONS)

# The built-in group the migration 0011_staff_groups made, holding every admin: exactly what the
# role `admin` allowed before permissions were data (DESIGN §9's table). Someone who becomes an
# admin joins it unless already in a group (app/records/staff.py).
ADMINISTRATORS = "Administrators"
ADMINISTRATORS_DESCRIPTION = (
    "Everything an admin could do before staff groups: all but deleting users, roles, replays and permissions."
)
ADMINISTRATORS_PERMISSIONS = frozenset(
    {
        "users.view",
        "users.edit",
        "users.invite",
        "users.suspend",
        "users.unlock",
        "users.sessions",
        "users.export",
        "user_data.edit",
        "organizations.manage",
        "clerk.retry",
        "audit.view",
    }
)


class NotAllowed(PermissionError):
    """The acting person may not do this; the message says why, fit to show them."""


class MissingPermission(NotAllowed):
    """The acting person lacks a permission: the message and `permission` name it."""

    def __init__(self, permission: str) -> None:
        self.permission = permission
        super().__init__(
            f"This needs the permission {permission}: {PERMISSIONS[permission].description} "
            "A super admin can add you to a staff group that grants it."
        )


def grants_of(user: User) -> dict[str, list[str]]:
    """Each permission `user` holds, with the groups that grant it (a super admin: every one, by role)."""
    if user.role == UserRole.SUPER_ADMIN:
        return {name: ["the super admin role"] for name in PERMISSIONS}
    if user.role != UserRole.ADMIN:
        return {}
    rows = db.session.execute(
        sa.select(StaffGroup.name, StaffGroup.permissions)
        .join(StaffGroupMember, StaffGroupMember.group_id == StaffGroup.id)
        .where(StaffGroupMember.user_id == user.id)
        .order_by(StaffGroup.name)
    )
    grants: dict[str, list[str]] = {}
    for name, stored in rows:
        for permission in _names(stored):
            grants.setdefault(permission, []).append(name)
    return {permission: grants[permission] for permission in PERMISSIONS if permission in grants}


def _names(stored: str | None) -> list[str]:
    try:
        names = json.loads(stored or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str) and n in PERMISSIONS] if isinstance(names, list) else []


def permissions_of(actor: Actor) -> frozenset[str]:
    """What `actor` may do at all: everything for the system, nothing for someone not signed in.

    Read once per actor (the dashboard keeps one actor per request: app/auth/guard.py)."""
    if actor.user is None:
        return ALL if actor.source != Source.DASHBOARD else frozenset()
    held = actor.memo.get("permissions")
    if held is None:
        held = actor.memo["permissions"] = frozenset(grants_of(actor.user))
    return held


def can_manage(actor: Actor, target: User) -> bool:
    """The rule on top of permissions: admins act only on users with the role `user`."""
    staff = actor.user
    if staff is None:  # the command line and Clerk's webhook act for the system; nobody signed out does
        return actor.source != Source.DASHBOARD
    if staff.role == UserRole.SUPER_ADMIN:
        return True
    return staff.role == UserRole.ADMIN and target.role == UserRole.USER


def refusal(actor: Actor, permission: str, target: User | None = None) -> NotAllowed | None:
    """Why `actor` may not do `permission` (to `target`, when it is about a user), or None."""
    if permission not in PERMISSIONS:
        raise KeyError(f"no permission called {permission!r} in the catalogue")
    if permission not in permissions_of(actor):
        return MissingPermission(permission)
    if target is not None and not can_manage(actor, target):
        return NotAllowed(f"Admins manage users with the role 'user' only; {target.label} is {target.role.label}.")
    return None


def may(actor: Actor, permission: str, target: User | None = None) -> bool:
    """The one answer to "may this person do this (to this user)?": services and pages both ask it."""
    return refusal(actor, permission, target) is None


def ensure(actor: Actor, permission: str, target: User | None = None) -> None:
    """Raise NotAllowed (a MissingPermission when a permission is what lacks) unless `may`."""
    refused = refusal(actor, permission, target)
    if refused is not None:
        raise refused


def can_act_on(actor: Actor, target: User) -> bool:
    """Whether pages offer `actor` changes to `target` at all: someone they manage, not deleted in Clerk."""
    return target.deleted_at is None and can_manage(actor, target)


def ensure_member_change(actor: Actor, member: User | None) -> None:
    """Adding, changing or removing an organization's member; for a member who is a user here, the
    rule on top applies too (admins act on users with the role 'user' only)."""
    ensure(actor, "organizations.manage", member)


def is_self(actor: Actor, target: User) -> bool:
    return actor.user is not None and actor.user.id == target.id


def target_kind(actor: Actor, target: User) -> tuple:
    """All that the rules on whom `actor` may act read of a target: its role (the rule on top), its
    status and whether it is deleted (what may change), and whether it is the actor. Targets of one
    kind get one answer, so a page of many users asks once per kind; a rule reading more adds it here."""
    return (target.role, target.status, target.deleted_at is None, is_self(actor, target))


def ensure_not_self(actor: Actor, target: User, what: str) -> None:
    """Nobody suspends, deactivates, demotes or deletes themselves, whatever the path."""
    if is_self(actor, target):
        raise NotAllowed(f"You cannot {what}: ask another super admin.")


def can_change_roles(actor: Actor) -> bool:
    return may(actor, "roles.manage")


def roles_offered(actor: Actor) -> tuple[UserRole, ...]:
    """The roles `actor` may give: none beyond `user` without roles.manage, super admin only by one."""
    if not can_change_roles(actor):
        return (UserRole.USER,)
    if actor.user is not None and actor.user.role != UserRole.SUPER_ADMIN:
        return (UserRole.USER, UserRole.ADMIN)
    return tuple(UserRole)


def ensure_can_give_role(actor: Actor, role: UserRole) -> None:
    if role == UserRole.USER:
        return
    ensure(actor, "roles.manage")
    if role not in roles_offered(actor):
        raise NotAllowed("Only super admins make super admins.")
    if role == UserRole.ADMIN and actor.user is not None and actor.user.role != UserRole.SUPER_ADMIN:
        # A new admin joins the built-in group (app/records/staff.py): nobody hands on more than they hold.
        group = builtin_group()
        beyond = sorted(set(group.permission_names if group else ()) & ALL - permissions_of(actor))
        if beyond:
            raise NotAllowed(
                f"You cannot make someone an admin: they would join {group.name}, which grants "
                f"{', '.join(beyond)}, which you do not hold yourself."
            )


def ensure_can_change_role(actor: Actor, target: User, role: UserRole) -> None:
    if role == target.role:
        return
    ensure(actor, "roles.manage", target)
    ensure_can_give_role(actor, role)


def can_delete(actor: Actor, target: User) -> bool:
    """Deleting a user: users.delete (and the rule on top), never of oneself."""
    return target.deleted_at is None and may(actor, "users.delete", target) and not is_self(actor, target)


def ensure_can_delete(actor: Actor, target: User) -> None:
    ensure_not_self(actor, target, "delete your own account")
    ensure(actor, "users.delete", target)


def ensure_a_super_admin_remains(target: User, *, role: UserRole, status: UserStatus) -> None:
    """Refuse the change that would leave no active super admin to run the dashboard."""
    was_one = target.role == UserRole.SUPER_ADMIN and target.status == UserStatus.ACTIVE and target.deleted_at is None
    stays_one = role == UserRole.SUPER_ADMIN and status == UserStatus.ACTIVE
    if not was_one or stays_one:
        return
    # Lock the other super admins' rows, so two of them demoting each other at once cannot both pass.
    others = (
        sa.select(User.id)
        .where(
            User.role == UserRole.SUPER_ADMIN,
            User.status == UserStatus.ACTIVE,
            User.deleted_at.is_(None),
            User.id != target.id,
        )
        .with_for_update()
        .subquery()
    )
    remaining = db.session.scalar(sa.select(sa.func.count()).select_from(others))
    if not remaining:
        raise NotAllowed("There must always be at least one active super admin; make someone else one first.")
