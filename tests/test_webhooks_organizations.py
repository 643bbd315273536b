"""Organization, membership and organization invitation events through POST /webhooks/clerk:
signed as Svix signs, shaped as Clerk sends them (docs/clerk.md §6), exactly once, in any order."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from app.models import (
    AuditEvent,
    Membership,
    Organization,
    OrganizationInvitation,
    User,
    WebhookEvent,
)
from app.records import counts
from tests.clerk_payloads import (
    BASE_MS,
    clerk_id,
    clerk_membership,
    clerk_org_invitation,
    clerk_organization,
    clerk_user,
    envelope,
    organization_deleted,
    sign,
    user_created,
    user_deleted,
)

pytestmark = pytest.mark.usefixtures("signing_secret")


def deliver(client, payload, **kwargs):
    signed = sign(payload, **kwargs)
    response = signed.post(client)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    return response


def outcome(client, payload) -> str:
    response = deliver(client, payload)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"]


def org_row(db, clerk_org_id: str) -> Organization | None:
    db.session.rollback()
    db.session.expire_all()
    return db.session.scalar(sa.select(Organization).where(Organization.clerk_id == clerk_org_id))


def memberships(db, organization: Organization, *, live: bool = True) -> list[Membership]:
    db.session.expire_all()
    query = sa.select(Membership).where(Membership.organization_id == organization.id)
    if live:
        query = query.where(Membership.deleted_at.is_(None))
    return list(db.session.scalars(query.order_by(Membership.created_at)))


def assert_counts_exact(db) -> None:
    db.session.rollback()
    stored = counts.read_counts([counts.ORGANIZATIONS, counts.MEMBERSHIPS])
    actual = {key: n for key, n in counts.recount().items() if key[0] in (counts.ORGANIZATIONS, counts.MEMBERSHIPS)}
    assert dict(stored) == actual
    for organization in db.session.scalars(sa.select(Organization)):
        live = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Membership)
            .where(Membership.organization_id == organization.id, Membership.deleted_at.is_(None))
        )
        assert organization.members_count == live, organization.label


def created(kind: str, data: dict) -> dict:
    return envelope(f"{kind}.created", data)


def updated(kind: str, data: dict) -> dict:
    return envelope(f"{kind}.updated", data)


# --- Organizations ---------------------------------------------------------------------------------


def test_organization_created_stores_what_clerk_sent(client, db):
    org = clerk_organization(name="Acme <b>Inc</b>", slug="acme", public_metadata={"plan": "pro"}, created_at=BASE_MS)
    assert outcome(client, created("organization", org)) == "applied"
    row = org_row(db, org["id"])
    assert (row.name, row.slug, row.max_allowed_memberships, row.created_by) == (
        "Acme <b>Inc</b>",
        "acme",
        5,
        org["created_by"],
    )
    assert json.loads(row.public_metadata) == {"plan": "pro"} and row.clerk_updated_at == BASE_MS
    assert row.members_count == 0 and row.deleted_at is None
    assert row.created_at.year == 2025  # Clerk's created_at, not the time of arrival
    audit = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.organization_id == row.id)).all()
    assert [a.action for a in audit] == ["organization.create"] and audit[0].source == "webhook"
    assert_counts_exact(db)


def test_an_older_organization_update_is_stale_and_a_newer_one_applies(client, db):
    org = clerk_organization(name="Acme")
    assert (
        outcome(client, updated("organization", {**org, "name": "Acme 2", "updated_at": BASE_MS + 2000})) == "applied"
    )
    assert outcome(client, updated("organization", {**org, "name": "Acme 1", "updated_at": BASE_MS + 1000})) == "stale"
    assert outcome(client, created("organization", org)) == "stale"
    assert org_row(db, org["id"]).name == "Acme 2"


def test_payload_drift_old_logo_url_and_missing_fields_are_tolerated(client, db):
    data = {
        "id": clerk_id("org"),
        "name": "Old",
        "slug": "old",
        "logo_url": "https://x/logo.png",
        "created_at": BASE_MS,
    }
    assert outcome(client, created("organization", data)) == "applied"
    row = org_row(db, data["id"])
    assert row.image_url == "https://x/logo.png" and row.max_allowed_memberships is None and row.public_metadata is None


def test_organization_deleted_is_final_and_ends_its_memberships(client, db):
    org = clerk_organization()
    for n in range(3):
        outcome(client, created("organizationMembership", clerk_membership(org, clerk_id(), created_at=BASE_MS + n)))
    invitation = clerk_org_invitation(org, "invitee@example.com")
    outcome(client, created("organizationInvitation", invitation))
    assert org_row(db, org["id"]).members_count == 3
    assert outcome(client, organization_deleted(org["id"], timestamp=BASE_MS + 10_000)) == "applied"
    row = org_row(db, org["id"])
    assert row.deleted_at is not None and row.members_count == 0 and memberships(db, row) == []
    assert db.session.scalar(sa.select(OrganizationInvitation.status)) == "revoked"
    # Nothing brings it back: neither a late update nor a late membership.
    later = {**org, "name": "Zombie", "updated_at": BASE_MS + 99_000}
    assert outcome(client, updated("organization", later)) == "ignored"
    assert outcome(client, created("organizationMembership", clerk_membership(later, clerk_id()))) == "ignored"
    assert org_row(db, org["id"]).name == "Acme" and memberships(db, row) == []
    assert outcome(client, organization_deleted(org["id"], timestamp=BASE_MS + 20_000)) == "ignored"
    assert_counts_exact(db)


def test_deletion_of_an_organization_never_seen_leaves_a_tombstone(client, db):
    org = clerk_organization(slug="ghost")
    assert outcome(client, organization_deleted(org["id"], slug="ghost")) == "applied"
    assert outcome(client, created("organization", org)) == "ignored"
    assert outcome(client, created("organizationMembership", clerk_membership(org, clerk_id()))) == "ignored"
    row = org_row(db, org["id"])
    assert row.deleted_at is not None and row.slug == "ghost" and row.members_count == 0
    assert_counts_exact(db)


# --- Memberships -----------------------------------------------------------------------------------


def test_a_membership_before_its_organization_and_user_creates_the_one_and_waits_for_the_other(client, db):
    org = clerk_organization(name="Early")
    user = clerk_user(email="member@example.com")
    membership = clerk_membership(org, user["id"], role="org:admin", identifier="member@example.com")
    assert outcome(client, created("organizationMembership", membership)) == "applied"
    row = org_row(db, org["id"])
    (waiting,) = memberships(db, row)
    assert (row.name, row.members_count) == ("Early", 1)
    assert (waiting.user_id, waiting.clerk_user_id, waiting.role, waiting.identifier) == (
        None,
        user["id"],
        "org:admin",
        "member@example.com",
    )
    assert json.loads(waiting.permissions) == membership["permissions"]
    # The user arrives: the same row is claimed, never a second user.
    assert outcome(client, user_created(user)) == "applied"
    assert outcome(client, created("organization", org)) == "applied"  # same version: harmless
    db.session.expire_all()
    (member,) = memberships(db, row)
    users = db.session.scalars(sa.select(User)).all()
    assert len(users) == 1 and member.user_id == users[0].id
    assert_counts_exact(db)


def test_a_membership_after_its_user_links_at_once(client, db):
    user = clerk_user()
    outcome(client, user_created(user))
    org = clerk_organization()
    outcome(client, created("organizationMembership", clerk_membership(org, user["id"])))
    (member,) = memberships(db, org_row(db, org["id"]))
    assert member.user_id == db.session.scalar(sa.select(User.id))


def test_membership_role_changes_are_ordered_and_deletion_is_final(client, db):
    org = clerk_organization()
    user_id = clerk_id()
    first = clerk_membership(org, user_id, role="org:member")
    assert (
        outcome(client, updated("organizationMembership", {**first, "role": "org:admin", "updated_at": BASE_MS + 2}))
        == "applied"
    )
    assert outcome(client, created("organizationMembership", first)) == "stale"
    (member,) = memberships(db, org_row(db, org["id"]))
    assert member.role == "org:admin"
    # The deletion carries the whole membership (maybe an older version of it): final either way.
    assert outcome(client, envelope("organizationMembership.deleted", first)) == "applied"
    assert outcome(client, updated("organizationMembership", {**first, "updated_at": BASE_MS + 9})) == "ignored"
    row = org_row(db, org["id"])
    assert memberships(db, row) == [] and row.members_count == 0
    assert_counts_exact(db)


def test_a_deletion_before_its_creation_leaves_a_tombstone(client, db):
    org = clerk_organization()
    membership = clerk_membership(org, clerk_id())
    assert outcome(client, envelope("organizationMembership.deleted", membership)) == "applied"
    assert outcome(client, created("organizationMembership", membership)) == "ignored"
    row = org_row(db, org["id"])
    assert memberships(db, row) == [] and len(memberships(db, row, live=False)) == 1 and row.members_count == 0
    assert_counts_exact(db)


def test_a_member_who_left_and_rejoined_has_one_live_membership_whatever_the_order(client, db):
    org = clerk_organization()
    user_id = clerk_id()
    old = clerk_membership(org, user_id, created_at=BASE_MS, role="org:admin")
    new = clerk_membership(org, user_id, created_at=BASE_MS + 5_000)
    # The new membership first, then the old one's creation, then its deletion.
    assert outcome(client, created("organizationMembership", new)) == "applied"
    assert outcome(client, created("organizationMembership", old)) == "applied"
    row = org_row(db, org["id"])
    assert [m.clerk_id for m in memberships(db, row)] == [new["id"]]
    assert outcome(client, envelope("organizationMembership.deleted", old)) == "ignored"
    # The other way round: the old one live, then the new one replaces it.
    org2 = clerk_organization(slug="acme-2")
    old2, new2 = (
        clerk_membership(org2, user_id, created_at=BASE_MS),
        clerk_membership(org2, user_id, created_at=BASE_MS + 5),
    )
    outcome(client, created("organizationMembership", old2))
    outcome(client, created("organizationMembership", new2))
    row2 = org_row(db, org2["id"])
    assert [m.clerk_id for m in memberships(db, row2)] == [new2["id"]] and row2.members_count == 1
    assert_counts_exact(db)


def test_a_deleted_user_is_no_ones_member(client, db):
    org = clerk_organization()
    user = clerk_user()
    outcome(client, user_created(user))
    outcome(client, created("organizationMembership", clerk_membership(org, user["id"])))
    waiting_for = clerk_id()  # a member whose user never arrives: deleted first
    outcome(client, created("organizationMembership", clerk_membership(org, waiting_for, created_at=BASE_MS + 1)))
    assert org_row(db, org["id"]).members_count == 2
    outcome(client, user_deleted(user["id"]))
    outcome(client, user_deleted(waiting_for))
    row = org_row(db, org["id"])
    assert memberships(db, row) == [] and row.members_count == 0
    # A membership of a deleted user arriving late is stored, ended.
    assert (
        outcome(client, created("organizationMembership", clerk_membership(org, user["id"], created_at=BASE_MS + 7)))
        == "applied"
    )
    assert memberships(db, org_row(db, org["id"])) == []
    assert_counts_exact(db)


def test_a_repeated_membership_delivery_is_a_duplicate(client, db):
    org = clerk_organization()
    signed = sign(created("organizationMembership", clerk_membership(org, clerk_id())))
    assert signed.post(client).get_json()["outcome"] == "applied"
    assert signed.post(client).get_json()["outcome"] == "duplicate"
    assert org_row(db, org["id"]).members_count == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 1
    # Filed under the member, so the deliveries page links their user.
    membership = json.loads(signed.body)["data"]
    assert db.session.scalar(sa.select(WebhookEvent.clerk_user_id)) == membership["public_user_data"]["user_id"]


# --- Invitations -----------------------------------------------------------------------------------


def test_invitations_move_from_pending_to_accepted_or_revoked_never_back(client, db):
    org = clerk_organization()
    invitation = clerk_org_invitation(org, "new@example.com", role="org:admin")
    assert outcome(client, created("organizationInvitation", invitation)) == "applied"
    row = db.session.scalar(sa.select(OrganizationInvitation))
    assert (row.email, row.role, row.status, row.organization.name) == (
        "new@example.com",
        "org:admin",
        "pending",
        "Acme",
    )
    accepted = {**invitation, "status": "accepted", "updated_at": BASE_MS + 10}
    assert outcome(client, envelope("organizationInvitation.accepted", accepted)) == "applied"
    assert outcome(client, created("organizationInvitation", invitation)) == "stale"
    db.session.expire_all()
    assert db.session.scalar(sa.select(OrganizationInvitation.status)) == "accepted"


def test_an_invitation_before_its_organization_makes_it_from_the_public_data(client, db):
    org = clerk_organization(name="Public Name", slug="public")
    invitation = clerk_org_invitation(org, "x@example.com")
    outcome(client, created("organizationInvitation", invitation))
    row = org_row(db, org["id"])
    assert (row.name, row.slug, row.clerk_updated_at) == ("Public Name", "public", None)
    outcome(client, updated("organization", {**org, "name": "Real Name", "updated_at": BASE_MS - 5}))
    assert org_row(db, org["id"]).name == "Real Name"  # the organization's own events fill it in


def test_a_revoked_event_without_status_is_revoked(client, db):
    org = clerk_organization()
    invitation = clerk_org_invitation(org, "y@example.com")
    del invitation["status"]
    assert outcome(client, envelope("organizationInvitation.revoked", invitation)) == "applied"
    assert db.session.scalar(sa.select(OrganizationInvitation.status)) == "revoked"


# --- Malformed events: a 400 with a reason, nothing written ----------------------------------------


@pytest.mark.parametrize(
    ("event_type", "data", "reason"),
    [
        ("organization.created", {"name": "No id"}, "data.id is missing"),
        ("organization.updated", {"id": "org_1", "name": "x" * 2000}, "longer than"),
        ("organization.deleted", {"deleted": True}, "data.id is missing"),
        ("organizationMembership.created", {"id": "orgmem_1", "role": "org:member"}, "data.organization"),
        (
            "organizationMembership.created",
            {"id": "orgmem_1", "organization": {"id": "org_1"}, "public_user_data": {}},
            "public_user_data.user_id is missing",
        ),
        (
            "organizationMembership.updated",
            {
                "id": "orgmem_1",
                "organization": {"id": "org_1"},
                "public_user_data": {"user_id": "u"},
                "permissions": "all",
            },
            "permissions is not a list",
        ),
        ("organizationInvitation.created", {"id": "orginv_1", "email_address": "a@b.c"}, "organization_id is missing"),
        ("organizationInvitation.created", {"id": "orginv_1", "organization_id": "org_1"}, "email_address is missing"),
        (
            "organizationInvitation.created",
            {"id": "orginv_1", "organization_id": "org_1", "email_address": "a@b.c", "status": "maybe"},
            "not an invitation status",
        ),
    ],
)
def test_a_malformed_organization_event_is_a_400_with_a_reason(client, db, event_type, data, reason):
    response = deliver(client, envelope(event_type, data, timestamp=BASE_MS))
    assert response.status_code == 400 and reason in response.get_json()["error"]
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Organization)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Membership)) == 0
    assert db.session.scalar(sa.select(WebhookEvent.outcome)) == "failed"


def test_an_event_type_not_used_yet_is_recorded_as_ignored(client, db):
    assert outcome(client, envelope("organizationDomain.created", {"id": "orgdmn_1"})) == "ignored"


def test_a_members_email_and_names_follow_their_user(client, db):
    """The members search reads the membership's own copy of the user's email and names: it must
    stay current when the user changes them in Clerk."""
    from tests.clerk_payloads import user_updated

    user = clerk_user(email="old@example.com", first_name="Ada", last_name="Lovelace")
    org = clerk_organization()
    outcome(client, created("organizationMembership", clerk_membership(org, user["id"], identifier="old@example.com")))
    outcome(client, user_created(user))
    outcome(client, user_updated(user, first_name="Augusta", last_name="King"))
    (member,) = memberships(db, org_row(db, org["id"]))
    assert (member.identifier, member.first_name, member.last_name) == ("old@example.com", "Augusta", "King")
