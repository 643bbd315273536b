"""`flask staff ...`: staff groups and their permissions from the command line.

Each command acts as the command line (Actor.cli(), which holds every permission) through
app/staff/services.py, so the rules and the audit trail are the dashboard's; it commits on success
and, on any refusal, rolls back and exits 1 with one line on stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from app.audit.services import Actor
from app.extensions import db
from app.models import StaffGroup, User, UserRole, UserStatus
from app.permissions import CATALOGUE, NotAllowed, grants_of
from app.records.staff import groups_of
from app.staff import services
from app.staff.services import StaffError

staff_cli = AppGroup("staff", help="Staff groups: which permissions they grant, and which admins are in them.")


@contextmanager
def refusals() -> Iterator[None]:
    """A rule's refusal becomes `Error: <why>` on stderr and exit code 1, with nothing changed."""
    try:
        yield
    except (StaffError, NotAllowed, LookupError) as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error


def find_group(name: str) -> StaffGroup:
    """The group with this name, whatever its case."""
    wanted = " ".join(name.split()).lower()  # spaces as the services store them
    group = db.session.scalar(sa.select(StaffGroup).where(sa.func.lower(StaffGroup.name) == wanted))
    if group is None:
        raise LookupError(f"There is no staff group called {name!r}; `flask staff groups` lists them.")
    return group


def describe_member(user: User) -> str:
    """An email, with what makes the membership unusual (a group grants nothing to these)."""
    notes = []
    if user.deleted_at is not None:
        notes.append("deleted")
    elif user.status != UserStatus.ACTIVE:
        notes.append(user.status.label)
    if user.role != UserRole.ADMIN:
        notes.append(user.role.label)
    return user.label + (f" ({', '.join(notes)})" if notes else "")


def listed(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


@staff_cli.command("permissions")
def permissions_command() -> None:
    """List every permission a group can grant, with what it allows."""
    width = max(len(permission.name) for permission in CATALOGUE)
    for permission in CATALOGUE:
        click.echo(f"{permission.name:<{width}}  {permission.description}")


@staff_cli.command("groups")
def groups_command() -> None:
    """List the staff groups: their permissions and their members."""
    groups = db.session.scalars(sa.select(StaffGroup).order_by(sa.func.lower(StaffGroup.name))).all()
    if not groups:
        click.echo("No staff groups (the migrations make Administrators: run `flask db upgrade`).")
    for group in groups:
        click.echo(group.name + (" (built in)" if group.builtin else ""))
        if group.description:
            click.echo(f"  description: {group.description}")
        click.echo(f"  permissions: {listed(group.permission_names)}")
        click.echo(f"  members: {listed([describe_member(user) for user in services.members_of(group)])}")


@staff_cli.command("create")
@click.argument("name")
@click.argument("permissions", nargs=-1)
@click.option("--description", default="", help="One line on what the group is for.")
def create_command(name: str, permissions: tuple[str, ...], description: str) -> None:
    """Create the group NAME, granting the PERMISSIONS given (see `flask staff permissions`)."""
    with refusals():
        group = services.create_group(name, description=description, permissions=permissions, actor=Actor.cli())
    db.session.commit()
    click.echo(f"Created group {group.name}, granting {listed(group.permission_names)}.")


@staff_cli.command("delete")
@click.argument("name")
def delete_command(name: str) -> None:
    """Delete the group NAME (not a built-in one); its members lose what it granted."""
    with refusals():
        group = find_group(name)
        label, members = group.name, services.members_of(group)
        services.delete_group(group, actor=Actor.cli())
    db.session.commit()
    count = f"{len(members)} member" + ("" if len(members) == 1 else "s")
    click.echo(f"Deleted group {label}" + (f": {count} no longer in it." if members else "."))


@staff_cli.command("grant")
@click.argument("group_name", metavar="GROUP")
@click.argument("permissions", nargs=-1, required=True)
def grant_command(group_name: str, permissions: tuple[str, ...]) -> None:
    """Let the group GROUP grant the PERMISSIONS too."""
    with refusals():
        group = find_group(group_name)
        changes = services.grant(group, permissions, actor=Actor.cli())
    db.session.commit()
    if "granted" in changes:
        granted = changes["granted"][1].split()
        already = [name for name in dict.fromkeys(permissions) if name not in granted]
        note = f" (it granted {', '.join(already)} already)" if already else ""
        click.echo(f"{group.name} now grants {', '.join(granted)}{note}.")
    else:
        click.echo(f"{group.name} already grants {', '.join(dict.fromkeys(permissions))}: nothing changed.")


@staff_cli.command("revoke")
@click.argument("group_name", metavar="GROUP")
@click.argument("permissions", nargs=-1, required=True)
def revoke_command(group_name: str, permissions: tuple[str, ...]) -> None:
    """Stop the group GROUP granting the PERMISSIONS."""
    with refusals():
        group = find_group(group_name)
        changes = services.revoke(group, permissions, actor=Actor.cli())
    db.session.commit()
    if "revoked" in changes:
        revoked = changes["revoked"][0].split()
        absent = [name for name in dict.fromkeys(permissions) if name not in revoked]
        note = f" (it did not grant {', '.join(absent)})" if absent else ""
        click.echo(f"{group.name} no longer grants {', '.join(revoked)}{note}.")
    else:
        click.echo(f"{group.name} does not grant {', '.join(dict.fromkeys(permissions))}: nothing changed.")


@staff_cli.command("add")
@click.argument("email")
@click.argument("group_name", metavar="GROUP")
def add_command(email: str, group_name: str) -> None:
    """Put the admin with EMAIL in the group GROUP."""
    with refusals():
        group = find_group(group_name)
        user = services.find_staff(email)
        services.add_member(group, user, actor=Actor.cli())
    db.session.commit()
    click.echo(f"Added {user.label} to {group.name}.")


@staff_cli.command("remove")
@click.argument("email")
@click.argument("group_name", metavar="GROUP")
def remove_command(email: str, group_name: str) -> None:
    """Take the person with EMAIL out of the group GROUP."""
    with refusals():
        group = find_group(group_name)
        user = services.find_staff(email)
        services.remove_member(group, user, actor=Actor.cli())
    db.session.commit()
    click.echo(f"Removed {user.label} from {group.name}.")


@staff_cli.command("show")
@click.argument("email")
def show_command(email: str) -> None:
    """What the person with EMAIL may do, and which group grants each permission."""
    with refusals():
        user = services.find_staff(email)
    grants = grants_of(user)
    click.echo(f"{user.label} ({user.role.label}, {'deleted' if user.deleted_at else user.status.label})")
    if user.role != UserRole.SUPER_ADMIN:
        click.echo(f"  groups: {listed([group.name for group in groups_of(user)])}")
    if not grants:
        reason = "not staff" if user.role == UserRole.USER else "in no group that grants anything"
        click.echo(f"  may do nothing here: {reason}.")
    width = max((len(name) for name in grants), default=0)
    for name, sources in grants.items():
        click.echo(f"  {name:<{width}}  from {', '.join(sources)}")
