"""Clerk organizations, memberships and organization invitations into our tables: the rules the
webhook, the backfill and the outbox's answers share (docs/clerk.md §6; docs/webhooks.md).

The users' rules, applied to three more tables: upsert by `clerk_id`, ordered by Clerk's
`updated_at`; soft deletes with tombstones, final; payloads read as tolerant dicts (the SDK's
models reject real ones). A membership embeds its organization, so one that arrives first creates
it; it names its user by Clerk id and waits for that user (`clerk_user_id`, `user_id` set once the
user is here: app/records/organizations.py). Locks are taken organization first, then the
membership or invitation (a membership's Clerk user id before all: app/records/organizations.py),
so concurrent events cannot deadlock. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.outbox import ORGANIZATION_FIELDS, member_roles_waiting, organization_fields_waiting
from app.clerk.sync import (
    MAX_ID_BYTES,
    MalformedClerkData,
    SyncOutcome,
    SyncResult,
    bounded,
    clean_text,
    json_text,
    ms,
    ms_to_datetime,
    same_value,
    text_value,
)
from app.extensions import db
from app.models import (
    ClerkIdKind,
    Membership,
    Organization,
    OrganizationInvitation,
    OrganizationInvitationStatus,
    User,
    utcnow,
)
from app.records.organizations import (
    end_live_memberships,
    insert_invitation_if_absent,
    insert_membership_if_absent,
    insert_organization_if_absent,
    lock_clerk_user_id,
    revoke_pending_invitations,
    update_invitation_fields,
    update_membership_fields,
    update_organization_fields,
)

ORGANIZATION_EVENT_TYPES: Final = (
    "organization.created",
    "organization.updated",
    "organization.deleted",
    "organizationMembership.created",
    "organizationMembership.updated",
    "organizationMembership.deleted",
    "organizationInvitation.created",
    "organizationInvitation.accepted",
    "organizationInvitation.revoked",
)
INVITATION_STATUSES: Final = tuple(status.value for status in OrganizationInvitationStatus)
# An invitation that was accepted or revoked never becomes pending again.
FINAL_INVITATION_STATUSES: Final = ("accepted", "revoked")
MAX_INT = 2**31 - 1
LOCAL = ClerkIdKind.PLACEHOLDER.value


@dataclass(frozen=True)
class Incoming:
    """One Clerk object reduced to our columns; `fields` holds only what the payload carried."""

    clerk_id: str
    updated_at: int | None
    created_at: datetime | None
    fields: dict[str, Any]


# --- Reading Clerk's JSON ---------------------------------------------------------------------------


def _object(data: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedClerkData(f"{name} is not a JSON object")
    return data


def _id(data: Mapping[str, Any], key: str, name: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedClerkData(f"{name}.{key} is missing")
    return clean_text(bounded(f"{name}.{key}", value, MAX_ID_BYTES))


def _short_text(data: Mapping[str, Any], key: str, name: str) -> str | None:
    return bounded(f"{name}.{key}", text_value(data.get(key)))


def _small_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        return None
    return value


def organization_from_dict(data: Any, name: str = "data") -> Incoming:
    """An organization object (a webhook's data, a membership's embedded one, an SDK model dump)."""
    data = _object(data, name)
    fields: dict[str, Any] = {}
    if "name" in data:
        fields["name"] = _short_text(data, "name", name) or ""
    if "slug" in data:
        fields["slug"] = _short_text(data, "slug", name)
    if "image_url" in data or "logo_url" in data:  # logo_url: older payloads
        fields["image_url"] = text_value(data.get("image_url", data.get("logo_url")))
    if "max_allowed_memberships" in data:
        fields["max_allowed_memberships"] = _small_int(data["max_allowed_memberships"])
    for key in ("public_metadata", "private_metadata"):
        if key in data:
            fields[key] = json_text(data[key])
    if isinstance(data.get("created_by"), str):
        fields["created_by"] = bounded(f"{name}.created_by", clean_text(data["created_by"]), MAX_ID_BYTES)
    return Incoming(_id(data, "id", name), ms(data.get("updated_at")), ms_to_datetime(data.get("created_at")), fields)


def _member_user_data(data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The member's Clerk user id, and what public_user_data says of them (the SDK's dump has it too)."""
    name = "data.public_user_data"
    user_data = _object(data.get("public_user_data"), name)
    shown = {
        key: _short_text(user_data, key, name) for key in ("identifier", "first_name", "last_name") if key in user_data
    }
    return _id(user_data, "user_id", name), shown


def membership_from_dict(data: Any) -> tuple[Incoming, Incoming, str]:
    """(the membership, its embedded organization, the member's Clerk user id)."""
    data = _object(data, "data")
    organization = organization_from_dict(data.get("organization"), "data.organization")
    clerk_user_id, fields = _member_user_data(data)
    if "role" in data:
        fields["role"] = _short_text(data, "role", "data") or ""
    if "permissions" in data:
        permissions = data["permissions"]
        if permissions is not None and not isinstance(permissions, list):
            raise MalformedClerkData("data.permissions is not a list")
        fields["permissions"] = json_text(permissions)
    if "public_metadata" in data:
        fields["public_metadata"] = json_text(data["public_metadata"])
    membership = Incoming(
        _id(data, "id", "data"), ms(data.get("updated_at")), ms_to_datetime(data.get("created_at")), fields
    )
    return membership, organization, clerk_user_id


def invitation_from_dict(data: Any) -> tuple[Incoming, str, Mapping[str, Any] | None]:
    """(the invitation, its organization's Clerk id, the organization's public data if sent)."""
    data = _object(data, "data")
    public = data.get("public_organization_data")
    public = public if isinstance(public, Mapping) else None
    if isinstance(data.get("organization_id"), str):
        organization_id = _id(data, "organization_id", "data")
    elif public is not None:
        organization_id = _id(public, "id", "data.public_organization_data")
    else:
        raise MalformedClerkData("data.organization_id is missing")
    email = data.get("email_address")
    if not isinstance(email, str) or not email.strip():
        raise MalformedClerkData("data.email_address is missing")
    fields: dict[str, Any] = {"email": bounded("data.email_address", clean_text(email.strip()))}
    if "role" in data:
        fields["role"] = _short_text(data, "role", "data") or ""
    if "status" in data:
        status = data["status"]
        status = getattr(status, "value", status)  # an SDK dump holds an enum
        if status not in INVITATION_STATUSES:
            raise MalformedClerkData(f"data.status {str(status)[:40]!r} is not an invitation status")
        fields["status"] = status
    if "expires_at" in data:
        fields["expires_at"] = ms_to_datetime(data["expires_at"])
    invitation = Incoming(
        _id(data, "id", "data"), ms(data.get("updated_at")), ms_to_datetime(data.get("created_at")), fields
    )
    return invitation, organization_id, public


# --- Ordering -----------------------------------------------------------------------------------------


def _locked(model: type, clerk_id: str) -> Any:
    return db.session.scalars(
        sa.select(model).where(model.clerk_id == clerk_id).with_for_update().execution_options(populate_existing=True)
    ).first()


def _stale(incoming: Incoming, row: Any) -> str | None:
    """Why this version must not be applied over the stored one, or None when it may be."""
    if row.clerk_updated_at is None:
        return None
    if incoming.updated_at is None:
        return "the event has no updated_at to order it by, and a dated version is already applied"
    if incoming.updated_at < row.clerk_updated_at:
        return f"updated_at {incoming.updated_at} is older than the {row.clerk_updated_at} already applied"
    return None


def _advance(row: Any, updated_at: int | None, *, force: bool = False) -> None:
    if updated_at is not None and (force or row.clerk_updated_at is None or updated_at > row.clerk_updated_at):
        row.clerk_updated_at = updated_at
        db.session.flush()


def _kept(row: Any, changes: dict[str, Any], editable: tuple[str, ...], waiting: Callable[[], set[str]]) -> list[str]:
    """Drop the fields an admin changed that Clerk has not taken yet (as the users' rule). The
    outbox is asked only when an event would change one of the `editable` fields: most do not."""
    differing = {n for n in editable if n in changes and not same_value(n, getattr(row, n), changes[n])}
    kept = sorted(differing & waiting()) if differing else []
    for name in kept:
        del changes[name]
    return kept


def _updated(outcome_changes: dict, row: Any, kept: list[str]) -> SyncResult:
    outcome = SyncOutcome.UPDATED if outcome_changes else SyncOutcome.UNCHANGED
    if kept:
        reason = f"{outcome.value}; kept the dashboard's {', '.join(kept)}: not in Clerk yet"
        return SyncResult(outcome, None, outcome_changes, reason=reason, noteworthy=True, row=row)
    return SyncResult(outcome, None, outcome_changes, reason=outcome.value, row=row)


# --- Organizations ------------------------------------------------------------------------------------


def _created_values(incoming: Incoming) -> dict[str, Any]:
    values = {"clerk_id": incoming.clerk_id, **incoming.fields, "clerk_updated_at": incoming.updated_at}
    if incoming.created_at is not None:
        values["created_at"] = incoming.created_at
    return values


def _organization_row(incoming: Incoming, *, actor: Actor) -> tuple[Organization, bool]:
    """The organization for this Clerk id, locked; made from `incoming` when absent (True then)."""
    organization = _locked(Organization, incoming.clerk_id)
    if organization is not None:
        return organization, False
    values = {"name": "", **_created_values(incoming)}
    organization = insert_organization_if_absent(values, actor=actor, action="organization.create")
    if organization is not None:
        return organization, True
    organization = _locked(Organization, incoming.clerk_id)  # a concurrent event inserted it first
    if organization is None:  # pragma: no cover - a conflict on clerk_id means the row exists
        raise RuntimeError(f"organization {incoming.clerk_id} conflicted but cannot be found")
    return organization, False


def upsert_organization(
    incoming: Incoming, *, actor: Actor, ignore_order: bool = False, action: str = "organization.update"
) -> SyncResult:
    organization, created = _organization_row(incoming, actor=actor)
    if created:
        return SyncResult(SyncOutcome.CREATED, None, reason="created", row=organization)
    if organization.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, None, reason="the organization was deleted in Clerk", row=organization)
    stale = None if ignore_order else _stale(incoming, organization)
    if stale:
        return SyncResult(SyncOutcome.STALE, None, reason=stale, row=organization)
    changes = dict(incoming.fields)
    if incoming.created_at is not None:
        changes["created_at"] = incoming.created_at
    kept = _kept(organization, changes, ORGANIZATION_FIELDS, lambda: organization_fields_waiting(organization.id))
    applied = update_organization_fields(organization, changes, actor=actor, action=action)
    _advance(organization, incoming.updated_at, force=ignore_order)
    return _updated(applied, organization, kept)


def apply_organization(
    data: Any, *, actor: Actor, ignore_order: bool = False, action: str = "organization.update"
) -> SyncResult:
    """organization.created / .updated, or Clerk's answer to organizations.update."""
    return upsert_organization(organization_from_dict(data), actor=actor, ignore_order=ignore_order, action=action)


def delete_organization(data: Any, timestamp: int | None, *, actor: Actor) -> SyncResult:
    """organization.deleted: a tombstone `{id, deleted}` ordered by the envelope's timestamp; final.

    Its live memberships end here (Clerk does not say whether it sends their deletions), and its
    pending invitations are revoked. An id never seen keeps a tombstone, so it cannot appear later.
    """
    data = _object(data, "data")
    clerk_id = _id(data, "id", "data")
    organization = _locked(Organization, clerk_id)
    if organization is None:
        slug = data.get("slug") if isinstance(data.get("slug"), str) else None
        values = {"clerk_id": clerk_id, "name": "", "slug": slug, "deleted_at": utcnow(), "clerk_updated_at": timestamp}
        organization = insert_organization_if_absent(values, actor=actor, action="organization.delete")
        if organization is not None:
            return SyncResult(
                SyncOutcome.DELETED, None, reason="tombstone for an organization not seen before", row=organization
            )
        organization = _locked(Organization, clerk_id)
        if organization is None:  # pragma: no cover
            raise RuntimeError(f"organization {clerk_id} conflicted but cannot be found")
    if organization.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, None, reason="the organization was already deleted", row=organization)
    changes = update_organization_fields(
        organization, {"deleted_at": utcnow()}, actor=actor, action="organization.delete"
    )
    _advance(organization, timestamp)
    end_live_memberships(organization, actor=actor, action="membership.organization_deleted")
    revoke_pending_invitations(organization, actor=actor, action="organization_invitation.organization_deleted")
    return SyncResult(SyncOutcome.DELETED, None, changes, reason="deleted", row=organization)


# --- Memberships --------------------------------------------------------------------------------------


def _live_membership(organization: Organization, clerk_user_id: str) -> Membership | None:
    return db.session.scalars(
        sa.select(Membership)
        .where(
            Membership.organization_id == organization.id,
            Membership.clerk_user_id == clerk_user_id,
            Membership.deleted_at.is_(None),
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def _user_for(clerk_user_id: str) -> User | None:
    """The member's row, if here (read after lock_clerk_user_id, so a concurrent arrival is seen)."""
    return db.session.scalars(
        sa.select(User).where(User.clerk_id == clerk_user_id).execution_options(populate_existing=True)
    ).first()


def _newer(incoming: Incoming, live: Membership) -> bool:
    """Of two live memberships for one user in one organization, Clerk holds the later-made one."""
    theirs = incoming.created_at or datetime.min.replace(tzinfo=live.created_at.tzinfo)
    return (theirs, incoming.clerk_id) > (live.created_at, live.clerk_id)


def apply_membership(
    data: Any,
    *,
    actor: Actor,
    deleted: bool = False,
    ignore_order: bool = False,
    action: str = "membership.update",
) -> SyncResult:
    """organizationMembership.created / .updated / .deleted (the whole membership every time), or
    Clerk's answer to a membership call. Deletion is final and needs no order."""
    incoming, embedded, clerk_user_id = membership_from_dict(data)
    # Lock order, everywhere: the Clerk user id, then the organization, then its memberships.
    lock_clerk_user_id(clerk_user_id)
    organization = upsert_organization(embedded, actor=actor).row
    if organization.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, None, reason="the organization was deleted in Clerk", row=organization)
    user = _user_for(clerk_user_id)
    member_gone = user is not None and user.deleted_at is not None
    membership = _locked(Membership, incoming.clerk_id)
    if membership is None:
        live = _live_membership(organization, clerk_user_id)
        if live is not None and live.clerk_id.startswith(LOCAL):
            return _claim_membership(live, incoming, user, deleted=deleted or member_gone, actor=actor)
        ended = deleted or member_gone
        if live is not None and not ended:
            if not _newer(incoming, live):
                ended = True  # Clerk ended this one before making the live one
            else:
                update_membership_fields(live, {"deleted_at": utcnow()}, actor=actor, action="membership.replaced")
        values = {
            "clerk_id": incoming.clerk_id,
            "clerk_user_id": clerk_user_id,
            "user_id": user.id if user is not None else None,
            "role": "",
            **incoming.fields,
            "clerk_updated_at": incoming.updated_at,
            "deleted_at": utcnow() if ended else None,
        }
        if incoming.created_at is not None:
            values["created_at"] = incoming.created_at
        made = insert_membership_if_absent(
            values, organization=organization, actor=actor, action="membership.delete" if ended else "membership.create"
        )
        if made is not None:
            outcome = SyncOutcome.DELETED if deleted else SyncOutcome.CREATED
            reason = "tombstone for a membership not seen before" if deleted else "created"
            if ended and not deleted:
                reason = "stored as ended: " + ("its user was deleted" if member_gone else "a later membership is live")
                return SyncResult(outcome, None, reason=reason, noteworthy=True, row=made)
            return SyncResult(outcome, None, reason=reason, row=made)
        membership = _locked(Membership, incoming.clerk_id)
        if membership is None:  # pragma: no cover
            raise RuntimeError(f"membership {incoming.clerk_id} conflicted but cannot be found")
    if membership.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, None, reason="the membership was removed", row=membership)
    changes = dict(incoming.fields)
    if membership.user_id is None and user is not None:
        changes["user_id"] = user.id
    if deleted or member_gone:
        changes["deleted_at"] = utcnow()
        applied = update_membership_fields(membership, changes, actor=actor, action="membership.delete")
        _advance(membership, incoming.updated_at)
        return SyncResult(SyncOutcome.DELETED, None, applied, reason="deleted", row=membership)
    stale = None if ignore_order else _stale(incoming, membership)
    if stale:
        return SyncResult(SyncOutcome.STALE, None, reason=stale, row=membership)
    kept = _kept(
        membership,
        changes,
        ("role",),
        lambda: {"role"} if clerk_user_id in member_roles_waiting(organization.id) else set(),
    )
    applied = update_membership_fields(membership, changes, actor=actor, action=action)
    _advance(membership, incoming.updated_at, force=ignore_order)
    return _updated(applied, membership, kept)


def _claim_membership(
    membership: Membership, incoming: Incoming, user: User | None, *, deleted: bool, actor: Actor
) -> SyncResult:
    """A membership an admin added here gets Clerk's id (its answer or webhook, whichever is first)."""
    changes = {"clerk_id": incoming.clerk_id, **incoming.fields}
    if "role" in changes and incoming.clerk_id:
        waiting = member_roles_waiting(membership.organization_id)
        if membership.clerk_user_id in waiting:
            changes.pop("role")
    if membership.user_id is None and user is not None:
        changes["user_id"] = user.id
    if deleted:
        changes["deleted_at"] = utcnow()
    applied = update_membership_fields(
        membership, changes, actor=actor, action="membership.delete" if deleted else "membership.claimed"
    )
    _advance(membership, incoming.updated_at)
    outcome = SyncOutcome.DELETED if deleted else SyncOutcome.CLAIMED
    return SyncResult(outcome, None, applied, reason="claimed the membership added here", row=membership)


# --- Invitations --------------------------------------------------------------------------------------


def _invitation_organization(clerk_id: str, public: Mapping[str, Any] | None, *, actor: Actor) -> Organization:
    """The invitation's organization; when absent, made from its public data (or its id alone) and
    left undated, so the organization's own events fill it in."""
    organization = _locked(Organization, clerk_id)
    if organization is not None:
        return organization
    fields = {}
    if public is not None:
        known = organization_from_dict({**public, "id": clerk_id}, "data.public_organization_data")
        fields = {k: v for k, v in known.fields.items() if k in ("name", "slug", "image_url")}
    organization, _ = _organization_row(Incoming(clerk_id, None, None, fields), actor=actor)
    return organization


def _pending_local_invitation(organization: Organization, email: str) -> OrganizationInvitation | None:
    return db.session.scalars(
        sa.select(OrganizationInvitation)
        .where(
            OrganizationInvitation.organization_id == organization.id,
            sa.func.lower(OrganizationInvitation.email) == email.lower(),
            OrganizationInvitation.status == OrganizationInvitationStatus.PENDING.value,
            OrganizationInvitation.clerk_id.startswith(LOCAL),
        )
        .order_by(OrganizationInvitation.created_at)
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def apply_invitation(
    data: Any,
    *,
    actor: Actor,
    ignore_order: bool = False,
    status: str | None = None,
    action: str = "organization_invitation.update",
) -> SyncResult:
    """organizationInvitation.created / .accepted / .revoked (`status` from the event type when the
    payload lacks it), or Clerk's answer to an invitation call. Accepted and revoked are final."""
    incoming, organization_id, public = invitation_from_dict(data)
    if status is not None and "status" not in incoming.fields:
        incoming.fields["status"] = status
    organization = _invitation_organization(organization_id, public, actor=actor)
    if organization.deleted_at is not None:
        return SyncResult(SyncOutcome.GONE, None, reason="the organization was deleted in Clerk", row=organization)
    invitation = _locked(OrganizationInvitation, incoming.clerk_id)
    if invitation is None:
        waiting = _pending_local_invitation(organization, incoming.fields["email"])
        if waiting is not None:
            changes = {"clerk_id": incoming.clerk_id, **incoming.fields}
            applied = update_invitation_fields(waiting, changes, actor=actor, action="organization_invitation.claimed")
            _advance(waiting, incoming.updated_at)
            return SyncResult(
                SyncOutcome.CLAIMED, None, applied, reason="claimed the invitation made here", row=waiting
            )
        values = {"role": "", "status": "pending", **_created_values(incoming)}
        made = insert_invitation_if_absent(
            values, organization=organization, actor=actor, action="organization_invitation.create"
        )
        if made is not None:
            return SyncResult(SyncOutcome.CREATED, None, reason="created", row=made)
        invitation = _locked(OrganizationInvitation, incoming.clerk_id)
        if invitation is None:  # pragma: no cover
            raise RuntimeError(f"invitation {incoming.clerk_id} conflicted but cannot be found")
    changes = dict(incoming.fields)
    if invitation.status in FINAL_INVITATION_STATUSES and changes.get("status", invitation.status) != invitation.status:
        return SyncResult(
            SyncOutcome.STALE, None, reason=f"the invitation was already {invitation.status}", row=invitation
        )
    final = changes.get("status") in FINAL_INVITATION_STATUSES and invitation.status not in FINAL_INVITATION_STATUSES
    stale = None if ignore_order or final else _stale(incoming, invitation)
    if stale:
        return SyncResult(SyncOutcome.STALE, None, reason=stale, row=invitation)
    applied = update_invitation_fields(invitation, changes, actor=actor, action=action)
    _advance(invitation, incoming.updated_at, force=ignore_order)
    return _updated(applied, invitation, [])
