"""The basic organization, membership and invitation records every path shares.

Clerk's sync (app/clerk/organizations.py), the dashboard's operations (app/organizations/services.py)
and the outbox's delivery write through these, which keep `members_count`, the overview's counters
and the audit trail in the same transaction. Nothing here checks permissions or commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.audit.services import Actor, diff, record
from app.extensions import db
from app.models import Membership, Organization, OrganizationInvitation, OrganizationInvitationStatus, User, utcnow
from app.records import counts


def dialect_insert(model: Any, dialect: str | None = None) -> Any:
    """INSERT with ON CONFLICT support, for `dialect` ("postgresql" or "sqlite"; by default the
    database this session talks to). A model or a table."""
    if (dialect or db.session.get_bind().dialect.name) == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def snapshot(row: Any, fields: Iterable[str]) -> dict:
    return {field: getattr(row, field) for field in fields}


def live_organizations() -> sa.Select:
    return sa.select(Organization).where(Organization.deleted_at.is_(None))


# --- Organizations ----------------------------------------------------------------------------------


def insert_organization_if_absent(values: dict[str, Any], *, actor: Actor, action: str) -> Organization | None:
    """Insert an organization unless its clerk_id exists; None when another transaction got there first."""
    statement = (
        dialect_insert(Organization)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Organization.clerk_id])
        .returning(Organization)
    )
    organization = db.session.scalars(statement, execution_options={"populate_existing": True}).first()
    if organization is not None:
        counts.note(counts.ORGANIZATIONS, counts.DELETED if organization.deleted_at else counts.LIVE, 1)
        audited = {k: v for k, v in values.items() if k not in ("clerk_updated_at", "id")}
        record(action, actor=actor, organization=organization, changes=diff({}, audited))
    return organization


def update_organization_fields(
    organization: Organization, changes: dict[str, Any], *, actor: Actor, action: str = "organization.update"
) -> dict:
    """Set the given columns and audit the ones that really changed; {field: [before, after]}."""
    changed = diff(snapshot(organization, changes), changes)
    if not changed:
        return {}
    was_live = organization.deleted_at is None
    for name in changed:
        setattr(organization, name, changes[name])
    db.session.flush()
    if was_live != (organization.deleted_at is None):
        counts.note(counts.ORGANIZATIONS, counts.LIVE, -1 if was_live else 1)
        counts.note(counts.ORGANIZATIONS, counts.DELETED, 1 if was_live else -1)
    record(action, actor=actor, organization=organization, changes=changed)
    return changed


def _adjust_members_count(organization_id: str, delta: int) -> None:
    """members_count moves with each live membership, in the same transaction; an UPDATE of the
    column alone, so an admin's rename (checked by version) never conflicts with a member joining."""
    if not delta:
        return
    db.session.execute(
        sa.update(Organization)
        .where(Organization.id == organization_id)
        .values(members_count=Organization.members_count + delta)
        .execution_options(synchronize_session=False)
    )
    organization = db.session.identity_map.get(db.session.identity_key(Organization, organization_id))
    if organization is not None:
        db.session.expire(organization, ["members_count"])
    counts.note(counts.MEMBERSHIPS, counts.LIVE, delta)


def end_live_memberships(organization: Organization, *, actor: Actor, action: str) -> int:
    """End every live membership of an organization (its deletion): one statement, one audit event."""
    ended = db.session.execute(
        sa.update(Membership)
        .where(Membership.organization_id == organization.id, Membership.deleted_at.is_(None))
        .values(deleted_at=utcnow())
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if ended:
        _adjust_members_count(organization.id, -ended)
        record(action, actor=actor, organization=organization, changes={"live memberships": [ended, 0]})
    return ended


def revoke_pending_invitations(organization: Organization, *, actor: Actor, action: str) -> None:
    """Revoke every pending invitation of an organization (its deletion), each audited."""
    pending = db.session.scalars(
        sa.select(OrganizationInvitation)
        .where(
            OrganizationInvitation.organization_id == organization.id,
            OrganizationInvitation.status == OrganizationInvitationStatus.PENDING.value,
        )
        .order_by(OrganizationInvitation.id)
        .with_for_update()
    ).all()
    for invitation in pending:
        update_invitation_fields(
            invitation, {"status": OrganizationInvitationStatus.REVOKED.value}, actor=actor, action=action
        )


# --- Memberships ------------------------------------------------------------------------------------


def insert_membership_if_absent(
    values: dict[str, Any], *, organization: Organization, actor: Actor, action: str
) -> Membership | None:
    """Insert a membership unless its clerk_id exists (None then); counted when it is live."""
    statement = (
        dialect_insert(Membership)
        .values(organization_id=organization.id, **values)
        .on_conflict_do_nothing(index_elements=[Membership.clerk_id])
        .returning(Membership)
    )
    membership = db.session.scalars(statement, execution_options={"populate_existing": True}).first()
    if membership is None:
        return None
    if membership.deleted_at is None:
        _adjust_members_count(organization.id, 1)
    audited = {k: v for k, v in values.items() if k in ("role", "identifier", "clerk_user_id", "deleted_at")}
    record(action, actor=actor, target=membership.user, organization=organization, changes=diff({}, audited))
    return membership


def update_membership_fields(
    membership: Membership, changes: dict[str, Any], *, actor: Actor, action: str = "membership.update"
) -> dict:
    """Set the given columns and audit what changed; ending or reviving it moves members_count."""
    changed = diff(snapshot(membership, changes), changes)
    if not changed:
        return {}
    was_live = membership.deleted_at is None
    for name in changed:
        setattr(membership, name, changes[name])
    db.session.flush()
    if was_live != (membership.deleted_at is None):
        _adjust_members_count(membership.organization_id, -1 if was_live else 1)
    audited = {"member": [membership.label, membership.label], **changed} if "role" not in changed else changed
    record(action, actor=actor, target=membership.user, organization=membership.organization, changes=audited)
    return changed


MEMBER_FIELDS = {"email": "identifier", "first_name": "first_name", "last_name": "last_name"}


def has_memberships(user_id: Any) -> sa.Exists:
    """Whether any membership row (live or ended) names this user: a column for the user's look-up,
    so that a change of name or email refreshes memberships only for those who have some."""
    return sa.exists().where(Membership.user_id == user_id)


def refresh_member_details(user: User, changed: Iterable[str]) -> None:
    """The user's email or names changed: their memberships show (and are searched by) the new ones."""
    values = {column: getattr(user, field) for field, column in MEMBER_FIELDS.items() if field in changed}
    if values and user.id:
        db.session.execute(
            sa.update(Membership)
            .where(Membership.user_id == user.id)
            .values(**values)
            .execution_options(synchronize_session="fetch")
        )


# Built once (the webhook runs them for every new user): bind parameters, not values.
_LOCK_CLERK_USER_ID = sa.select(
    sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(sa.bindparam("clerk_user_id", type_=sa.Text), 0))
)
_MEMBERSHIPS = Membership.__table__
_ATTACH_WAITING = (
    sa.update(_MEMBERSHIPS)
    .where(_MEMBERSHIPS.c.clerk_user_id == sa.bindparam("b_clerk_user_id"), _MEMBERSHIPS.c.user_id.is_(None))
    .values(
        user_id=sa.bindparam("b_user_id"),
        identifier=sa.bindparam("b_identifier"),
        first_name=sa.bindparam("b_first_name"),
        last_name=sa.bindparam("b_last_name"),
    )
)


def lock_clerk_user_id(clerk_user_id: str) -> None:
    """Serialise, per Clerk user id, a membership looking for its user and the user's arrival
    attaching waiting memberships: otherwise each could miss the other's uncommitted row (on
    PostgreSQL; SQLite has one writer at a time). Held until the transaction ends.

    The lock order of every path: this lock, then organizations (by id), then memberships; an
    organization's deletion locks it, then its memberships, and never asks for this one."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(_LOCK_CLERK_USER_ID, {"clerk_user_id": clerk_user_id})


def attach_waiting_memberships(user: User, *, locked: bool = False) -> int:
    """Memberships that arrived before their user now point at it (by Clerk user id).

    `locked`: the caller holds lock_clerk_user_id for the user's Clerk id already."""
    if not user.clerk_id:
        return 0
    if not locked:
        lock_clerk_user_id(user.clerk_id)
    values = {
        "b_clerk_user_id": user.clerk_id,
        "b_user_id": user.id,
        "b_identifier": user.email,
        "b_first_name": user.first_name,
        "b_last_name": user.last_name,
    }
    return db.session.execute(_ATTACH_WAITING, values).rowcount


def end_memberships_of_user(user: User, *, actor: Actor, action: str) -> int:
    """A deleted user is no one's member any more: end their live memberships (those that waited
    for them too), each audited. The caller took lock_clerk_user_id before locking the user."""
    lock_clerk_user_id(user.clerk_id)  # no membership of theirs can arrive until this transaction ends
    theirs = sa.and_(Membership.clerk_user_id == user.clerk_id, Membership.deleted_at.is_(None))
    # Their organizations first, in one order, as every other path locks them (then memberships).
    organization_ids = sorted(set(db.session.scalars(sa.select(Membership.organization_id).where(theirs))))
    if not organization_ids:
        return 0
    db.session.execute(
        sa.select(Organization.id)
        .where(Organization.id.in_(organization_ids))
        .order_by(Organization.id)
        .with_for_update()
    ).all()
    memberships = db.session.scalars(
        sa.select(Membership).where(theirs).order_by(Membership.organization_id).with_for_update()
    ).all()
    for membership in memberships:
        update_membership_fields(membership, {"user_id": user.id, "deleted_at": utcnow()}, actor=actor, action=action)
    return len(memberships)


# --- Invitations ------------------------------------------------------------------------------------


def insert_invitation_if_absent(
    values: dict[str, Any], *, organization: Organization, actor: Actor, action: str
) -> OrganizationInvitation | None:
    statement = (
        dialect_insert(OrganizationInvitation)
        .values(organization_id=organization.id, **values)
        .on_conflict_do_nothing(index_elements=[OrganizationInvitation.clerk_id])
        .returning(OrganizationInvitation)
    )
    invitation = db.session.scalars(statement, execution_options={"populate_existing": True}).first()
    if invitation is not None:
        audited = {k: v for k, v in values.items() if k in ("email", "role", "status")}
        record(action, actor=actor, organization=organization, changes=diff({}, audited))
    return invitation


def update_invitation_fields(
    invitation: OrganizationInvitation, changes: dict[str, Any], *, actor: Actor, action: str
) -> dict:
    changed = diff(snapshot(invitation, changes), changes)
    if not changed:
        return {}
    for name in changed:
        setattr(invitation, name, changes[name])
    db.session.flush()
    record(
        action,
        actor=actor,
        organization=invitation.organization,
        changes={"invitation": [None, invitation.email], **changed},
    )
    return changed
