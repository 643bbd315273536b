"""Who may do what to whom, checked by the services so no path can go around it.

The table is in README.md ("Who may do what"). The command line and Clerk's webhook act for the
system (the break-glass path and the mirror of Clerk), so only the last-super-admin rule binds them.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.audit.services import Actor, Source
from app.extensions import db
from app.models import User, UserRole, UserStatus


class NotAllowed(PermissionError):
    """The acting person may not do this; the message says why, fit to show them."""


def can_manage(actor: Actor, target: User) -> bool:
    staff = actor.user
    if staff is None:
        return True
    if staff.role == UserRole.SUPER_ADMIN:
        return True
    return staff.role == UserRole.ADMIN and target.role == UserRole.USER


def can_act_on(actor: Actor, target: User) -> bool:
    """Whether pages offer `actor` changes to `target`: someone they manage, not deleted in Clerk."""
    return target.deleted_at is None and can_manage(actor, target)


def can_manage_organizations(actor: Actor) -> bool:
    """Organizations, their members and invitations: staff (admins and super admins) and the command line."""
    staff = actor.user
    if staff is None:  # the command line and Clerk's webhook; never someone not signed in
        return actor.source != Source.DASHBOARD
    return staff.role in (UserRole.ADMIN, UserRole.SUPER_ADMIN) and staff.deleted_at is None


def ensure_can_manage_organizations(actor: Actor) -> None:
    if not can_manage_organizations(actor):
        raise NotAllowed("Only admins and super admins manage organizations.")


def can_manage_member(actor: Actor, member: User | None) -> bool:
    """Adding, changing or removing a member: organizations' staff, and for a member who is a user
    here, someone who manages that user (admins act on users with the role 'user' only)."""
    return can_manage_organizations(actor) and (member is None or can_manage(actor, member))


def ensure_can_manage_member(actor: Actor, member: User | None) -> None:
    ensure_can_manage_organizations(actor)
    if member is not None:
        ensure_can_manage(actor, member)


def can_change_roles(actor: Actor) -> bool:
    return actor.user is None or actor.user.role == UserRole.SUPER_ADMIN


def can_replay(actor: Actor) -> bool:
    # A replay forces an older Clerk version past the ordering guard, onto anyone's row.
    return actor.user is None or actor.user.role == UserRole.SUPER_ADMIN


def ensure_can_manage(actor: Actor, target: User) -> None:
    if not can_manage(actor, target):
        raise NotAllowed(f"Admins manage users with the role 'user' only; {target.email} is {target.role.label}.")


def is_self(actor: Actor, target: User) -> bool:
    return actor.user is not None and actor.user.id == target.id


def ensure_not_self(actor: Actor, target: User, what: str) -> None:
    """Nobody suspends, deactivates, demotes or deletes themselves, whatever the path."""
    if is_self(actor, target):
        raise NotAllowed(f"You cannot {what}: ask another super admin.")


def ensure_can_give_role(actor: Actor, role: UserRole) -> None:
    if role != UserRole.USER and not can_change_roles(actor):
        raise NotAllowed("Only super admins give the admin and super admin roles.")


def ensure_can_change_role(actor: Actor, target: User, role: UserRole) -> None:
    if role != target.role and not can_change_roles(actor):
        raise NotAllowed("Only super admins change roles.")


def can_delete(actor: Actor, target: User) -> bool:
    """Deleting a user is for super admins (and the command line), never of themselves."""
    return target.deleted_at is None and can_change_roles(actor) and not is_self(actor, target)


def ensure_can_delete(actor: Actor, target: User) -> None:
    ensure_not_self(actor, target, "delete your own account")
    if not can_change_roles(actor):
        raise NotAllowed("Only super admins delete users.")


def ensure_can_replay(actor: Actor) -> None:
    if not can_replay(actor):
        raise NotAllowed(
            "Only super admins re-apply webhook events: a replay can force an older version over newer data."
        )


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
