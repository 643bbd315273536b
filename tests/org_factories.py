"""Organizations, memberships and invitations made directly in the database, for any test.

Each goes through app/records/organizations.py, so members_count, the overview's counters and the
audit trail are as a real change leaves them (an `organization.create`, `membership.create` or
`organization_invitation.create` event by the command line). Each commits unless `commit=False`.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from app.audit.services import Actor
from app.extensions import db
from app.models import Membership, Organization, OrganizationInvitation, User
from app.records.organizations import (
    insert_invitation_if_absent,
    insert_membership_if_absent,
    insert_organization_if_absent,
)
from app.records.users import normalise_email

_numbers = itertools.count(1)
FACTORY_ACTOR = Actor.cli()


def _done(row: Any, commit: bool) -> Any:
    if commit:
        db.session.commit()
    return row


def make_organization(*, actor: Actor = FACTORY_ACTOR, commit: bool = True, **fields: Any) -> Organization:
    """An organization as Clerk would have sent it (`org_test_<n>`, "Organization <n>", slug organization-<n>)."""
    n = next(_numbers)
    fields.setdefault("clerk_id", f"org_test_{n}")
    fields.setdefault("name", f"Organization {n}")
    fields.setdefault("slug", f"organization-{n}")
    organization = insert_organization_if_absent(fields, actor=actor, action="organization.create")
    assert organization is not None, f"an organization with clerk_id {fields['clerk_id']} exists already"
    return _done(organization, commit)


def make_membership(
    organization: Organization,
    user: User | None,
    role: str = "org:member",
    *,
    actor: Actor = FACTORY_ACTOR,
    commit: bool = True,
    **fields: Any,
) -> Membership:
    """`user`'s membership (or, with user=None, one waiting for the Clerk user `clerk_user_id`);
    live unless `deleted_at` is given. members_count and the counters move with it."""
    n = next(_numbers)
    fields.setdefault("clerk_id", f"orgmem_test_{n}")
    fields.setdefault("role", role)
    if user is not None:
        fields.setdefault("user_id", user.id)
        fields.setdefault("clerk_user_id", user.clerk_id)
        fields.setdefault("identifier", user.email)
        fields.setdefault("first_name", user.first_name)
        fields.setdefault("last_name", user.last_name)
    else:
        fields.setdefault("clerk_user_id", f"user_waiting_{n}")
    membership = insert_membership_if_absent(fields, organization=organization, actor=actor, action="membership.create")
    assert membership is not None, f"a membership with clerk_id {fields['clerk_id']} exists already"
    return _done(membership, commit)


def make_invitation(
    organization: Organization,
    email: str,
    *,
    role: str = "org:member",
    status: str = "pending",
    expires_at: datetime | None = None,
    actor: Actor = FACTORY_ACTOR,
    commit: bool = True,
    **fields: Any,
) -> OrganizationInvitation:
    """An invitation of `email` (pending unless told) as Clerk would have sent it (`orginv_test_<n>`)."""
    n = next(_numbers)
    fields.setdefault("clerk_id", f"orginv_test_{n}")
    values = {"email": normalise_email(email), "role": role, "status": status, "expires_at": expires_at, **fields}
    invitation = insert_invitation_if_absent(
        values, organization=organization, actor=actor, action="organization_invitation.create"
    )
    assert invitation is not None, f"an invitation with clerk_id {fields['clerk_id']} exists already"
    return _done(invitation, commit)
