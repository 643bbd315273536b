"""The one audit trail: every change, from the dashboard, a webhook or the command line."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from app.extensions import db
from app.models import AuditEvent, Organization, StaffGroup, User


class Source(enum.StrEnum):
    DASHBOARD = "dashboard"
    WEBHOOK = "webhook"
    CLI = "cli"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in staff member, the command line, or Clerk's webhook."""

    source: Source
    label: str
    user: User | None = None
    remote_addr: str | None = None
    # What is worked out once per actor (their permissions: app/permissions.py); not part of who they are.
    memo: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    @classmethod
    def staff(cls, user: User, remote_addr: str | None = None) -> Actor:
        return cls(Source.DASHBOARD, user.email, user, remote_addr)

    @classmethod
    def anonymous(cls, remote_addr: str | None) -> Actor:
        """Someone not signed in (a refused sign-in attempt)."""
        return cls(Source.DASHBOARD, "anonymous", None, remote_addr)

    @classmethod
    def cli(cls) -> Actor:
        return cls(Source.CLI, "command line")

    @classmethod
    def webhook(cls) -> Actor:
        return cls(Source.WEBHOOK, "Clerk webhook")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """The fields whose value changed, as {field: [before, after]}."""
    return {
        field: [_jsonable(before.get(field)), _jsonable(after.get(field))]
        for field in sorted(set(before) | set(after))
        if before.get(field) != after.get(field)
    }


def _values(
    action: str,
    *,
    actor: Actor,
    target: User | None,
    changes: dict[str, Any] | None,
    organization: Organization | None,
    staff_group: StaffGroup | None,
) -> dict[str, Any]:
    if target is not None:
        target_label = target.email
    elif organization is not None:
        target_label = organization.label
    else:
        target_label = f"group {staff_group.name}" if staff_group is not None else None
    return {
        "source": actor.source.value,
        "actor_id": actor.user.id if actor.user is not None else None,
        "actor_label": actor.label,
        "action": action,
        "target_id": target.id if target is not None else None,
        "target_label": target_label,
        "changes": json.dumps(changes, sort_keys=True) if changes else None,
        "remote_addr": actor.remote_addr,
        "organization_id": organization.id if organization is not None else None,
        "staff_group_id": staff_group.id if staff_group is not None else None,
    }


def record(
    action: str,
    *,
    actor: Actor,
    target: User | None = None,
    changes: dict[str, Any] | None = None,
    organization: Organization | None = None,
    staff_group: StaffGroup | None = None,
) -> AuditEvent:
    """Add an audit event to the current transaction; the caller commits it with the change.

    A change to an organization, one of its memberships or invitations names the organization
    (its page shows its history); a membership's change names the member as its target too. A change
    to a staff group names the group (and the member, for a member added or removed)."""
    values = _values(
        action, actor=actor, target=target, changes=changes, organization=organization, staff_group=staff_group
    )
    event = AuditEvent(**values)
    db.session.add(event)
    return event


_INSERT = sa.insert(AuditEvent.__table__)  # id and occurred_at take their defaults


def record_now(action: str, *, actor: Actor, target: User, changes: dict[str, Any] | None = None) -> None:
    """record() a change to a user whose row is written already, by one INSERT now rather than by
    the next flush: for the paths every webhook takes (a unit of work costs more than the INSERT)."""
    values = _values(action, actor=actor, target=target, changes=changes, organization=None, staff_group=None)
    db.session.execute(_INSERT, values)
