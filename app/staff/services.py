"""Staff groups and who is in them: the operations the /staff pages and `flask staff` share.

Each checks permissions.manage, refuses what would let someone give more than they hold (only a
super admin grants a permission they could not use themselves, or changes their own groups), is
audited with its before and after in the caller's transaction, and never commits."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from app.audit.services import Actor, record
from app.extensions import db
from app.models import StaffGroup, StaffGroupMember, User, UserRole
from app.permissions import (
    ADMINISTRATORS,
    ADMINISTRATORS_DESCRIPTION,
    ADMINISTRATORS_PERMISSIONS,
    ALL,
    PERMISSIONS,
    NotAllowed,
    ensure,
    is_self,
    permissions_of,
)
from app.records.staff import add_to_group, builtin_group, groups_of, remove_from_group
from app.records.users import find_live_user_by_email

MAX_NAME = 100
MAX_DESCRIPTION = 500


class StaffError(ValueError):
    """A rule refused the change; the message is fit to show, `field` names the form field it is about."""

    field: str | None = None

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field or self.field


class GroupConflict(StaffError):
    """Someone changed the group after the form was opened; nothing was overwritten."""


def clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise StaffError("A group needs a name.", "name")
    if len(name) > MAX_NAME:
        raise StaffError(f"A group's name is at most {MAX_NAME} characters.", "name")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
        raise StaffError("A group's name cannot hold control, format or invisible characters.", "name")
    return name


def clean_description(description: str | None) -> str:
    description = (description or "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise StaffError(f"A description is at most {MAX_DESCRIPTION} characters.", "description")
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\t" for c in description):
        raise StaffError("A description cannot hold control characters.", "description")
    return description


def clean_permissions(names) -> list[str]:
    names = list(dict.fromkeys(n for n in names if isinstance(n, str)))
    unknown = [n for n in names if n not in PERMISSIONS]
    if unknown:
        raise StaffError(
            f"No such permission: {', '.join(unknown[:5])}. `flask staff permissions` lists them.", "permissions"
        )
    return sorted(names)


def _ensure_name_free(name: str, *, except_group: StaffGroup | None = None) -> None:
    taken = db.session.scalar(sa.select(StaffGroup).where(sa.func.lower(StaffGroup.name) == name.lower()))
    if taken is not None and taken is not except_group:
        raise StaffError(f"There is already a group called {taken.name}.", "name")


def _ensure_within_own(actor: Actor, names, what: str) -> None:
    """Only a super admin (or the command line) hands on a permission they do not hold themselves."""
    beyond = sorted((set(names) & ALL) - permissions_of(actor))  # a name since removed grants nothing
    if beyond:
        raise NotAllowed(f"You cannot {what}: it would give {', '.join(beyond)}, which you do not hold yourself.")


def _ensure_version(group: StaffGroup, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != group.version:
        raise GroupConflict(f"Someone else changed {group.name} after you opened it; nothing was overwritten.")


def _save(group: StaffGroup, change: Callable[[], None]) -> None:
    """Make `change` and flush it inside a savepoint, so a concurrent edit (the version moved on) or
    a name taken at the same moment is refused alone, with the session still usable."""
    try:
        with db.session.begin_nested():
            change()
            db.session.flush()
    except StaleDataError as exc:
        raise GroupConflict("Someone else changed this group at the same moment; nothing was overwritten.") from exc
    except IntegrityError as exc:
        raise StaffError("There is already a group with this name.", "name") from exc


def known_permissions(group: StaffGroup) -> list[str]:
    """The group's permissions still in the catalogue (one since removed from the code grants nothing)."""
    return [n for n in group.permission_names if n in PERMISSIONS]


def create_group(name: str, *, description: str = "", permissions=(), actor: Actor) -> StaffGroup:
    ensure(actor, "permissions.manage")
    name, description, names = clean_name(name), clean_description(description), clean_permissions(permissions)
    _ensure_within_own(actor, names, f"create {name}")
    _ensure_name_free(name)
    group = StaffGroup(name=name, description=description, permissions=json.dumps(names))
    _save(group, lambda: db.session.add(group))
    changes = {"name": [None, name], "description": [None, description or None]}
    if names:
        changes["permissions"] = [None, " ".join(names)]
    record("staff_group.create", actor=actor, staff_group=group, changes=changes)
    return group


def rename_group(
    group: StaffGroup, name: str, *, description: str | None = None, actor: Actor, expected_version: int | None = None
) -> dict:
    """A new name and description; the built-in group keeps its name (its description may change)."""
    ensure(actor, "permissions.manage")
    _ensure_version(group, expected_version)
    name = clean_name(name)
    description = group.description if description is None else clean_description(description)
    if group.builtin and name != group.name:
        raise StaffError(f"{group.name} is built in: it keeps its name.", "name")
    _ensure_within_own(actor, group.permission_names, f"change {group.name}")
    changes = {}
    if name != group.name:
        _ensure_name_free(name, except_group=group)
        changes["name"] = [group.name, name]
    if description != group.description:
        changes["description"] = [group.description or None, description or None]
    if not changes:
        return {}

    def change() -> None:
        group.name, group.description = name, description

    _save(group, change)
    record("staff_group.update", actor=actor, staff_group=group, changes=changes)
    return changes


def set_permissions(group: StaffGroup, names, *, actor: Actor, expected_version: int | None = None) -> dict:
    """The group grants exactly `names` from now on (the checkbox grid); audited as before and after."""
    ensure(actor, "permissions.manage")
    _ensure_version(group, expected_version)
    after = clean_permissions(names)
    before = group.permission_names
    if after == before:
        return {}
    _ensure_within_own(actor, set(after) ^ set(before), f"change what {group.name} grants")
    text = json.dumps(after)

    def change() -> None:
        group.permissions = text

    _save(group, change)
    changes = {"permissions": [" ".join(before) or None, " ".join(after) or None]}
    granted, revoked = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    if granted:
        changes["granted"] = [None, " ".join(granted)]
    if revoked:
        changes["revoked"] = [" ".join(revoked), None]
    record("staff_group.permissions", actor=actor, staff_group=group, changes=changes)
    return changes


def grant(group: StaffGroup, names, *, actor: Actor) -> dict:
    return set_permissions(group, [*known_permissions(group), *clean_permissions(names)], actor=actor)


def revoke(group: StaffGroup, names, *, actor: Actor) -> dict:
    """Take permissions away; a name the group still stores but the catalogue no longer has may go too."""
    names = list(names)
    clean_permissions(n for n in names if n not in group.permission_names)  # refuses unknown names
    gone = set(names)
    return set_permissions(group, [n for n in known_permissions(group) if n not in gone], actor=actor)


def delete_group(group: StaffGroup, *, actor: Actor, expected_version: int | None = None) -> None:
    """A group that is not built in; its members lose what it granted (each removal audited)."""
    ensure(actor, "permissions.manage")
    _ensure_version(group, expected_version)
    if group.builtin:
        raise StaffError(f"{group.name} is built in: it cannot be deleted (its permissions can be changed).")
    _ensure_within_own(actor, group.permission_names, f"delete {group.name}")
    for user in members_of(group):
        remove_from_group(group, user, actor=actor)
    record(
        "staff_group.delete",
        actor=actor,
        staff_group=group,
        changes={
            "name": [group.name, None],
            "description": [group.description or None, None],
            "permissions": [" ".join(group.permission_names) or None, None],
        },
    )
    _save(group, lambda: db.session.delete(group))


def members_of(group: StaffGroup) -> list[User]:
    return list(
        db.session.scalars(
            sa.select(User)
            .join(StaffGroupMember, StaffGroupMember.user_id == User.id)
            .where(StaffGroupMember.group_id == group.id)
            .order_by(User.email, User.id)
        )
    )


def find_staff(email: str) -> User:
    """The live person with this email, for the forms and the command line (a clear error otherwise)."""
    user = find_live_user_by_email(email or "")
    if user is None:
        raise StaffError(f"There is no user with the email {email!r} here.", "email")
    return user


def _ensure_member_change(group: StaffGroup, user: User, *, actor: Actor, what: str) -> None:
    ensure(actor, "permissions.manage")
    if is_self(actor, user) and actor.user.role != UserRole.SUPER_ADMIN:
        raise NotAllowed("You cannot change your own groups: ask a super admin.")
    _ensure_within_own(actor, group.permission_names, what)


def add_member(group: StaffGroup, user: User, *, actor: Actor) -> None:
    """Put an admin in a group (super admins hold everything already; users must be made admins first)."""
    _ensure_member_change(group, user, actor=actor, what=f"add {user.label} to {group.name}")
    if user.deleted_at is not None:
        raise StaffError(f"{user.label} was deleted.", "email")
    if user.role == UserRole.SUPER_ADMIN:
        raise StaffError(f"{user.label} is a super admin and holds every permission already.", "email")
    if user.role != UserRole.ADMIN:
        raise StaffError(
            f"{user.label} is not staff: only admins join groups (give them the admin role first).", "email"
        )
    if any(g.id == group.id for g in groups_of(user)):
        raise StaffError(f"{user.label} is in {group.name} already.", "email")
    try:
        with db.session.begin_nested():
            add_to_group(group, user, actor=actor)
    except IntegrityError as exc:  # added by someone else at the same moment
        raise StaffError(f"{user.label} is in {group.name} already.", "email") from exc


def remove_member(group: StaffGroup, user: User, *, actor: Actor) -> None:
    _ensure_member_change(group, user, actor=actor, what=f"remove {user.label} from {group.name}")
    if not any(g.id == group.id for g in groups_of(user)):
        raise StaffError(f"{user.label} is not in {group.name}.", "email")
    remove_from_group(group, user, actor=actor)


def ensure_builtin_group() -> StaffGroup:
    """The built-in group as the migration 0011_staff_groups made it, made again if it is missing
    (a database emptied by hand, the tests); no audit: it is the schema's, not a person's."""
    group = builtin_group()
    if group is None:
        group = StaffGroup(
            name=ADMINISTRATORS,
            description=ADMINISTRATORS_DESCRIPTION,
            permissions=json.dumps(sorted(ADMINISTRATORS_PERMISSIONS)),
            builtin=True,
        )
        db.session.add(group)
        db.session.flush()
    return group
