"""The dashboard's operations on organizations (rename), their members (add, change the role,
remove) and their invitations (invite, revoke), with their rules.

They check permissions, write through app/records/organizations.py (which keeps members_count, the
counters and the audit trail in the same transaction), enqueue the matching call to Clerk in that
transaction, and never commit. Rows made here carry a `local_` clerk_id until Clerk's answer or
webhook claims them (app/clerk/organizations.py).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from app.audit.services import Actor
from app.clerk.client import clerk_connected
from app.clerk.outbox import CREATE_MEMBERSHIP, DELETE_MEMBERSHIP, UPDATE_MEMBERSHIP
from app.clerk.outbox.enqueue import (
    enqueue_membership_call,
    enqueue_organization_deletion,
    enqueue_organization_invitation,
    enqueue_organization_invitation_revocation,
    enqueue_organization_update,
)
from app.config import DEFAULT_ORGANIZATION_ROLES
from app.database import line_problem
from app.extensions import db
from app.models import (
    Membership,
    Organization,
    OrganizationInvitation,
    OrganizationInvitationStatus,
    User,
    utcnow,
)
from app.permissions import ensure, ensure_member_change
from app.records.organizations import (
    end_live_memberships,
    insert_invitation_if_absent,
    insert_membership_if_absent,
    lock_clerk_user_id,
    revoke_pending_invitations,
    update_invitation_fields,
    update_membership_fields,
    update_organization_fields,
)
from app.records.users import email_spellings, normalise_email, placeholder_clerk_id

NAME_MIN, NAME_MAX = 2, 256  # an organization's name, trimmed (Clerk refuses longer)
SLUG_MAX = 256
# Clerk's rule for slugs: lowercase letters, digits and hyphens, with at least one letter or digit.
SLUG_PATTERN = re.compile(r"^(?=.*[a-z0-9])[a-z0-9-]+\Z")
EMAIL_MAX = 320

PENDING = OrganizationInvitationStatus.PENDING.value
REVOKED = OrganizationInvitationStatus.REVOKED.value


class OrganizationError(ValueError):
    """A rule refused the operation. `field` names the form field the message belongs by (None: the
    operation as a whole); the message is fit to show to the person who asked."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class StaleOrganization(OrganizationError):
    """Someone saved the organization (or the membership) after the form was opened; nothing was
    overwritten. `current` holds the values saved now, to show next to the ones this admin sent."""

    def __init__(self, message: str, current: dict[str, Any]) -> None:
        super().__init__(None, message)
        self.current = current


# --- Rules every path shares (the forms use them too) ---------------------------------------------------


def organization_roles() -> list[str]:
    """The role keys an admin may give, from CLERK_ORGANIZATION_ROLES (a list, or comma separated text)."""
    configured = current_app.config.get("CLERK_ORGANIZATION_ROLES") or DEFAULT_ORGANIZATION_ROLES
    if isinstance(configured, str):
        configured = configured.split(",")
    roles = [r.strip() for r in configured if isinstance(r, str) and r.strip()]
    return list(dict.fromkeys(roles)) or list(DEFAULT_ORGANIZATION_ROLES)


def roles_for(current: str | None = None) -> list[str]:
    """The roles offered for a member: the configured ones, plus the one they already hold."""
    roles = organization_roles()
    return [*roles, current] if current and current not in roles else roles


def role_label(role: str) -> str:
    """org:admin -> Admin, org:billing_manager -> Billing manager (the key itself when it has no org: prefix)."""
    if not role.startswith("org:") or len(role) == len("org:"):
        return role
    return role.removeprefix("org:").replace("_", " ").replace("-", " ").capitalize()


def name_problem(name: str | None) -> str | None:
    """Why an organization's name (already trimmed) is refused, or None."""
    if not name or not NAME_MIN <= len(name) <= NAME_MAX:
        return f"Must be between {NAME_MIN} and {NAME_MAX} characters."
    return line_problem(name)


def slug_problem(slug: str) -> str | None:
    """Why a slug is refused by Clerk's rule, or None."""
    if len(slug) > SLUG_MAX:
        return f"At most {SLUG_MAX} characters."
    if not SLUG_PATTERN.match(slug):
        return "Lowercase letters, digits and hyphens only (like acme-corp), with at least one letter or digit."
    return None


def _ensure_role(role: str, allowed: list[str]) -> None:
    if role not in allowed:
        offered = ", ".join(allowed)
        raise OrganizationError("role", f"{role!r} is not a role offered here; choose one of {offered}.")


def _ensure_live(organization: Organization) -> None:
    if organization.deleted_at is not None:
        raise OrganizationError(None, f"{organization.label} was deleted: it is read-only here.")


def _ensure_live_membership(membership: Membership) -> None:
    _ensure_live(membership.organization)
    if membership.deleted_at is not None:
        raise OrganizationError(None, f"{membership.label} is no longer a member of {membership.organization.label}.")
    if membership.user is not None and membership.user.deleted_at is not None:
        raise OrganizationError(None, f"{membership.label} was deleted: the membership is read-only here.")


# --- Organizations ----------------------------------------------------------------------------------


def rename_organization(
    organization: Organization, *, name: str, slug: str | None, version: int | None, actor: Actor
) -> dict:
    """Change the name and slug, unless someone saved the organization since the form was opened.

    A slug another live organization holds here is refused; Clerk's answer (a 422 for a slug taken
    there) remains the final word and arrives with the call's delivery. {field: [before, after]}.
    """
    ensure(actor, "organizations.manage")
    _ensure_live(organization)
    current = {"name": organization.name, "slug": organization.slug}
    if version is not None and version != organization.version:
        raise StaleOrganization("Someone else saved this organization after you opened the form.", current)
    name = (name or "").strip()
    slug = (slug or "").strip() or None
    if problem := name_problem(name):
        raise OrganizationError("name", problem)
    if slug is None and organization.slug:
        raise OrganizationError("slug", "An organization's slug can be changed, not removed.")
    if slug is not None:
        if problem := slug_problem(slug):
            raise OrganizationError("slug", problem)
        if slug != organization.slug and _slug_taken(slug, organization):
            raise OrganizationError("slug", f"Another organization already has the slug {slug!r}.")
    changes = {field: value for field, value in (("name", name), ("slug", slug)) if value != current[field]}
    if not changes:
        return {}
    try:
        with db.session.begin_nested():  # a concurrent save fails alone, with the values it left
            changed = update_organization_fields(organization, changes, actor=actor, action="organization.rename")
    except StaleDataError as exc:
        db.session.refresh(organization)
        current = {"name": organization.name, "slug": organization.slug}
        raise StaleOrganization("Someone else saved this organization at the same moment.", current) from exc
    if changed:
        enqueue_organization_update(organization, {field: changes[field] for field in changed})
    return changed


def _slug_taken(slug: str, organization: Organization) -> bool:
    return (
        db.session.scalar(
            sa.select(Organization.id)
            .where(
                sa.func.lower(Organization.slug) == slug.lower(),
                Organization.deleted_at.is_(None),
                Organization.id != organization.id,
            )
            .limit(1)
        )
        is not None
    )


def _folded(text: str) -> str:
    return " ".join(text.split()).casefold()


def deletion_word(organization: Organization) -> str:
    """What an admin types to confirm deleting an organization: its slug, or its name without one."""
    return organization.slug or organization.name


def delete_organization(organization: Organization, confirm: str, *, actor: Actor) -> dict:
    """Delete an organization here and in Clerk, as Clerk's webhook would leave it: a read-only
    tombstone whose history stays, its live memberships ended and its pending invitations revoked
    at once. The call to Clerk is enqueued first, so the organization's calls not sent yet never are."""
    ensure(actor, "organizations.delete")
    db.session.refresh(organization, with_for_update=True)  # a webhook deleting it meanwhile waits, then finds it gone
    _ensure_live(organization)
    word = deletion_word(organization)
    if _folded(confirm or "") != _folded(word):
        raise OrganizationError("confirm", f"Type {word} exactly to confirm; nothing was deleted.")
    enqueue_organization_deletion(organization)
    changed = update_organization_fields(
        organization, {"deleted_at": utcnow()}, actor=actor, action="organization.delete"
    )
    end_live_memberships(organization, actor=actor, action="membership.organization_deleted")
    revoke_pending_invitations(organization, actor=actor, action="organization_invitation.organization_deleted")
    return changed


# --- Members ----------------------------------------------------------------------------------------


def live_membership_of(organization: Organization, user: User) -> Membership | None:
    """The user's live membership of the organization (by our row or by their Clerk id), or None."""
    return db.session.scalars(
        sa.select(Membership)
        .where(
            Membership.organization_id == organization.id,
            Membership.deleted_at.is_(None),
            sa.or_(Membership.user_id == user.id, Membership.clerk_user_id == user.clerk_id),
        )
        .limit(1)
    ).first()


def add_member(organization: Organization, user: User, role: str, *, actor: Actor) -> Membership:
    """Make a user a member with a role; Clerk gets organization_memberships.create."""
    ensure_member_change(actor, user)
    _ensure_live(organization)
    if user.deleted_at is not None:
        raise OrganizationError("user", f"{user.label} was deleted: they cannot join an organization.")
    if clerk_connected() and user.waits_for_clerk_user:
        raise OrganizationError(
            "user", f"{user.label} has no user in Clerk yet (invited): add them once they have accepted."
        )
    _ensure_role(role, organization_roles())
    lock_clerk_user_id(user.clerk_id)  # with Clerk's membership events for the same user
    duplicate = OrganizationError("user", f"{user.label} is already a member of {organization.label}.")
    if live_membership_of(organization, user) is not None:
        raise duplicate
    values = {
        "clerk_id": placeholder_clerk_id(),
        "user_id": user.id,
        "clerk_user_id": user.clerk_id,
        "identifier": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": role,
    }
    try:
        with db.session.begin_nested():  # the live-membership index refuses a concurrent twin alone
            membership = insert_membership_if_absent(
                values, organization=organization, actor=actor, action="membership.create"
            )
    except IntegrityError as exc:
        raise duplicate from exc
    if membership is None:  # pragma: no cover - a fresh placeholder id cannot conflict
        raise RuntimeError("a new membership's placeholder id already exists")
    enqueue_membership_call(membership, CREATE_MEMBERSHIP)
    return membership


def change_member_role(membership: Membership, role: str, *, actor: Actor, version: int | None = None) -> dict:
    """Give a member another role (keyed in Clerk by organization and user); {field: [before, after]}."""
    ensure_member_change(actor, membership.user)
    _ensure_live_membership(membership)
    _ensure_role(role, roles_for(membership.role))
    if version is not None and version != membership.version:
        raise StaleOrganization(
            f"Someone else changed {membership.label}'s membership after you opened the page.",
            {"role": membership.role},
        )
    try:
        with db.session.begin_nested():
            changed = update_membership_fields(membership, {"role": role}, actor=actor, action="membership.role")
    except StaleDataError as exc:
        db.session.refresh(membership)
        raise StaleOrganization(
            f"Someone else changed {membership.label}'s membership at the same moment.", {"role": membership.role}
        ) from exc
    if changed:
        enqueue_membership_call(membership, UPDATE_MEMBERSHIP)
    return changed


def remove_member(membership: Membership, *, actor: Actor) -> None:
    """End the membership here (a tombstone; members_count moves) and in Clerk."""
    ensure_member_change(actor, membership.user)
    _ensure_live_membership(membership)
    try:
        with db.session.begin_nested():
            update_membership_fields(membership, {"deleted_at": utcnow()}, actor=actor, action="membership.remove")
    except StaleDataError as exc:
        raise OrganizationError(
            None, f"{membership.label}'s membership changed at the same moment; try again."
        ) from exc
    enqueue_membership_call(membership, DELETE_MEMBERSHIP)


# --- Invitations ------------------------------------------------------------------------------------


def valid_email(email: str | None) -> str:
    """The address in its one stored spelling, or OrganizationError on the `email` field."""
    email = (email or "").strip()
    if not email:
        raise OrganizationError("email", "Email is required.")
    if len(email) > EMAIL_MAX or line_problem(email):
        raise OrganizationError("email", "Enter a valid email address.")
    try:
        validate_email(email, check_deliverability=False)
    except (EmailNotValidError, UnicodeError, ValueError) as exc:
        raise OrganizationError("email", f"Enter a valid email address ({exc}).") from exc
    return normalise_email(email)


def pending_invitation_for(organization: Organization, email: str) -> OrganizationInvitation | None:
    """A pending, unexpired invitation of this address to the organization."""
    now = utcnow()
    return db.session.scalars(
        sa.select(OrganizationInvitation)
        .where(
            OrganizationInvitation.organization_id == organization.id,
            OrganizationInvitation.status == PENDING,
            sa.func.lower(OrganizationInvitation.email).in_(email_spellings(email)),
            sa.or_(OrganizationInvitation.expires_at.is_(None), OrganizationInvitation.expires_at > now),
        )
        .limit(1)
    ).first()


def live_member_with_email(organization: Organization, email: str) -> Membership | None:
    spellings = email_spellings(email)
    return db.session.scalars(
        sa.select(Membership)
        .outerjoin(User, Membership.user_id == User.id)
        .where(
            Membership.organization_id == organization.id,
            Membership.deleted_at.is_(None),
            sa.or_(sa.func.lower(User.email).in_(spellings), sa.func.lower(Membership.identifier).in_(spellings)),
        )
        .limit(1)
    ).first()


def invite_to_organization(
    organization: Organization, email: str, role: str, *, actor: Actor
) -> OrganizationInvitation:
    """Invite an address to join with a role; Clerk gets organization_invitations.create and its
    answer gives the row Clerk's id."""
    ensure(actor, "organizations.manage")
    _ensure_live(organization)
    email = valid_email(email)
    _ensure_role(role, organization_roles())
    if live_member_with_email(organization, email) is not None:
        raise OrganizationError("email", f"{email} is already a member of {organization.label}.")
    if pending_invitation_for(organization, email) is not None:
        raise OrganizationError("email", f"{email} already has a pending invitation to {organization.label}.")
    values = {"clerk_id": placeholder_clerk_id(), "email": email, "role": role, "status": PENDING}
    invitation = insert_invitation_if_absent(
        values, organization=organization, actor=actor, action="organization_invitation.create"
    )
    if invitation is None:  # pragma: no cover - a fresh placeholder id cannot conflict
        raise RuntimeError("a new invitation's placeholder id already exists")
    enqueue_organization_invitation(invitation)
    return invitation


def revoke_organization_invitation(invitation: OrganizationInvitation, *, actor: Actor) -> None:
    """Withdraw a pending invitation here and in Clerk."""
    ensure(actor, "organizations.manage")
    _ensure_live(invitation.organization)
    status = invitation.effective_status
    if status != PENDING:
        raise OrganizationError(None, f"The invitation of {invitation.email} is {status}: there is nothing to revoke.")
    update_invitation_fields(invitation, {"status": REVOKED}, actor=actor, action="organization_invitation.revoke")
    enqueue_organization_invitation_revocation(invitation)
