"""The dashboard's operations on organizations, members and invitations, called directly (no HTTP):
what each changes, the audit event and the outbox call it writes in the caller's transaction, and
that a refusal (bad input, a deleted organization or user, a duplicate, a stale form, someone not
allowed) raises before anything is written, even when the caller commits after it.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.outbox import (
    CREATE_MEMBERSHIP,
    CREATE_ORGANIZATION_INVITATION,
    DELETE_MEMBERSHIP,
    REVOKE_ORGANIZATION_INVITATION,
    UPDATE_MEMBERSHIP,
    UPDATE_ORGANIZATION,
)
from app.clerk.outbox.delivery import deliver_due
from app.models import (
    AuditEvent,
    ClerkCall,
    Membership,
    Organization,
    OrganizationInvitation,
    User,
    UserRole,
    UserStatus,
    utcnow,
)
from app.organizations import services
from app.organizations.services import (
    OrganizationError,
    StaleOrganization,
    add_member,
    change_member_role,
    invite_to_organization,
    remove_member,
    rename_organization,
    revoke_organization_invitation,
)
from app.permissions import NotAllowed, may
from app.records import counts
from app.records.organizations import update_organization_fields
from app.records.users import placeholder_clerk_id
from tests.fake_clerk import bapi_user, connected_fake_clerk
from tests.org_factories import make_invitation, make_membership, make_organization

CLI = Actor.cli()


@pytest.fixture
def boss(make_user) -> User:
    return make_user(email="boss@staff.example", role=UserRole.SUPER_ADMIN)


@pytest.fixture
def admin(make_user) -> User:
    return make_user(email="admin@staff.example", role=UserRole.ADMIN)


@pytest.fixture
def clerk_connected(app) -> None:
    """Services then queue calls for Clerk; nothing is delivered without a request or `clerk push`."""
    app.config["CLERK_SECRET_KEY"] = "sk_test_never_used"


@pytest.fixture
def acme(db) -> Organization:
    return make_organization(clerk_id="org_acme", name="Acme", slug="acme")


@pytest.fixture
def grace(make_user) -> User:
    return make_user(email="grace@example.com", first_name="Grace")


def staff(user: User) -> Actor:
    return Actor.staff(user)


def state(db) -> tuple:
    """Every row a refused operation must leave as it was."""
    db.session.expire_all()
    organizations = db.session.execute(
        sa.select(
            Organization.id,
            Organization.name,
            Organization.slug,
            Organization.members_count,
            Organization.version,
            Organization.deleted_at,
        ).order_by(Organization.id)
    ).all()
    memberships = db.session.execute(
        sa.select(
            Membership.id, Membership.clerk_id, Membership.role, Membership.deleted_at, Membership.version
        ).order_by(Membership.id)
    ).all()
    invitations = db.session.execute(
        sa.select(OrganizationInvitation.id, OrganizationInvitation.email, OrganizationInvitation.status).order_by(
            OrganizationInvitation.id
        )
    ).all()
    events = db.session.scalars(sa.select(AuditEvent.id).order_by(AuditEvent.id)).all()
    calls = db.session.execute(sa.select(ClerkCall.id, ClerkCall.state).order_by(ClerkCall.id)).all()
    return organizations, memberships, invitations, events, calls, org_counts(db)


def org_counts(db) -> dict:
    return dict(counts.read_counts([counts.ORGANIZATIONS, counts.MEMBERSHIPS]))


def refused(db, error, operation, *, field: str | None = "unset", match: str | None = None):
    """`operation` raises `error` (on `field`, when given), and even a commit after it stores nothing."""
    before = state(db)
    with pytest.raises(error, match=match) as raised:
        operation()
    if field != "unset":
        assert raised.value.field == field
    db.session.commit()
    assert state(db) == before
    return raised.value


def events(db, action: str) -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def open_calls(db) -> list[ClerkCall]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ClerkCall).where(ClerkCall.state == "pending").order_by(ClerkCall.id)))


def exact(db, organization: Organization) -> None:
    """members_count and the counters agree with the rows."""
    db.session.expire_all()
    live = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Membership)
        .where(Membership.organization_id == organization.id, Membership.deleted_at.is_(None))
    )
    assert db.session.get(Organization, organization.id).members_count == live
    stored = counts.read_counts([counts.ORGANIZATIONS, counts.MEMBERSHIPS])
    actual = {k: n for k, n in counts.recount().items() if k[0] in (counts.ORGANIZATIONS, counts.MEMBERSHIPS)}
    assert counts.differences(stored, actual) == {}


# --- permissions ------------------------------------------------------------------------------------


def test_staff_and_the_command_line_manage_organizations_others_do_not(boss, admin, make_user, grace):
    assert may(staff(boss), "organizations.manage") and may(staff(admin), "organizations.manage")
    assert may(CLI, "organizations.manage") and may(Actor.webhook(), "organizations.manage")
    assert not may(staff(grace), "organizations.manage")  # role `user`
    assert not may(Actor.anonymous("127.0.0.1"), "organizations.manage")
    other_admin = make_user(email="other@staff.example", role=UserRole.ADMIN)
    assert may(staff(admin), "organizations.manage", grace) and may(staff(admin), "organizations.manage")
    assert not may(staff(admin), "organizations.manage", other_admin)  # admins act on users with the role `user` only
    assert may(staff(boss), "organizations.manage", other_admin)


def test_someone_not_staff_changes_nothing(db, acme, grace, make_user):
    bob = make_user(email="bob@example.com")
    membership = make_membership(acme, bob)
    for operation in (
        lambda: add_member(acme, bob, "org:member", actor=staff(grace)),
        lambda: change_member_role(membership, "org:admin", actor=staff(grace)),
        lambda: remove_member(membership, actor=staff(grace)),
        lambda: invite_to_organization(acme, "new@example.com", "org:member", actor=staff(grace)),
        lambda: rename_organization(acme, name="Acme 2", slug="acme", version=None, actor=staff(grace)),
        lambda: add_member(acme, grace, "org:member", actor=Actor.anonymous("127.0.0.1")),
    ):
        refused(db, NotAllowed, operation)


def test_an_admin_acts_on_members_with_the_role_user_only(db, acme, admin, boss, make_user):
    other_admin = make_user(email="other@staff.example", role=UserRole.ADMIN)
    refused(db, NotAllowed, lambda: add_member(acme, other_admin, "org:member", actor=staff(admin)))
    membership = add_member(acme, other_admin, "org:member", actor=staff(boss))
    db.session.commit()
    refused(db, NotAllowed, lambda: change_member_role(membership, "org:admin", actor=staff(admin)))
    refused(db, NotAllowed, lambda: remove_member(membership, actor=staff(admin)))
    # A member whose user is not here yet is anyone's to manage among the staff.
    waiting = make_membership(acme, None, clerk_user_id="user_elsewhere")
    change_member_role(waiting, "org:admin", actor=staff(admin))
    db.session.commit()
    assert waiting.role == "org:admin"


# --- add_member ---------------------------------------------------------------------------------


def test_add_member_makes_a_live_membership_counted_audited_and_sent(db, clerk_connected, acme, grace, admin):
    membership = add_member(acme, grace, "org:admin", actor=staff(admin))
    db.session.commit()
    db.session.expire_all()
    assert membership.clerk_id.startswith("local_")
    assert (membership.user_id, membership.clerk_user_id, membership.identifier, membership.role) == (
        grace.id,
        grace.clerk_id,
        "grace@example.com",
        "org:admin",
    )
    assert membership.deleted_at is None
    assert acme.members_count == 1
    assert org_counts(db)[counts.MEMBERSHIPS, counts.LIVE] == 1
    exact(db, acme)
    [event] = events(db, "membership.create")
    assert (event.source, event.actor_id, event.target_id, event.organization_id) == (
        "dashboard",
        admin.id,
        grace.id,
        acme.id,
    )
    assert json.loads(event.changes)["role"] == [None, "org:admin"]
    [call] = open_calls(db)
    assert (call.operation, call.organization_id) == (CREATE_MEMBERSHIP, acme.id)
    payload = json.loads(call.payload)
    assert payload["organization_id"] == "org_acme"
    assert payload["user_id"] == grace.clerk_id
    assert payload["role"] == "org:admin"


def test_add_member_without_clerk_keeps_the_membership_here_and_sends_nothing(db, acme, grace, boss):
    membership = add_member(acme, grace, "org:member", actor=staff(boss))
    db.session.commit()
    assert membership.deleted_at is None and acme.members_count == 1
    assert open_calls(db) == []


def test_add_member_rolled_back_leaves_nothing(db, clerk_connected, acme, grace, boss):
    before = state(db)
    add_member(acme, grace, "org:member", actor=staff(boss))
    db.session.rollback()
    assert state(db) == before


def test_adding_a_live_member_twice_is_the_user_fields_error(db, clerk_connected, acme, grace, boss):
    add_member(acme, grace, "org:member", actor=staff(boss))
    db.session.commit()
    error = refused(
        db, OrganizationError, lambda: add_member(acme, grace, "org:admin", actor=staff(boss)), field="user"
    )
    assert "already a member" in error.message
    # A member who arrived from Clerk (same Clerk user, another row id) counts too.
    beta = make_organization(name="Beta", slug="beta")
    make_membership(beta, None, clerk_user_id=grace.clerk_id)
    refused(db, OrganizationError, lambda: add_member(beta, grace, "org:member", actor=staff(boss)), field="user")


def test_a_twin_the_check_missed_is_refused_by_the_index_alone(db, acme, grace, boss, monkeypatch):
    make_membership(acme, grace)
    monkeypatch.setattr(services, "live_membership_of", lambda organization, user: None)
    refused(db, OrganizationError, lambda: add_member(acme, grace, "org:member", actor=staff(boss)), field="user")
    exact(db, acme)


def test_a_former_member_can_be_added_again(db, acme, grace, boss):
    make_membership(acme, grace, deleted_at=utcnow())
    membership = add_member(acme, grace, "org:member", actor=staff(boss))
    db.session.commit()
    assert membership.deleted_at is None and acme.members_count == 1
    exact(db, acme)


@pytest.mark.parametrize("role", ["org:owner", "admin", "", "org:admin "])
def test_an_unknown_role_is_the_role_fields_error(db, clerk_connected, acme, grace, boss, role):
    refused(db, OrganizationError, lambda: add_member(acme, grace, role, actor=staff(boss)), field="role")


def test_configured_roles_are_offered(app, db, acme, grace, boss):
    app.config["CLERK_ORGANIZATION_ROLES"] = "org:admin, org:billing"
    assert services.organization_roles() == ["org:admin", "org:billing"]
    refused(db, OrganizationError, lambda: add_member(acme, grace, "org:member", actor=staff(boss)), field="role")
    assert add_member(acme, grace, "org:billing", actor=staff(boss)).role == "org:billing"


def test_nothing_is_added_to_a_deleted_organization(db, clerk_connected, acme, grace, boss):
    update_organization_fields(acme, {"deleted_at": utcnow()}, actor=CLI, action="organization.delete")
    db.session.commit()
    error = refused(db, OrganizationError, lambda: add_member(acme, grace, "org:member", actor=staff(boss)))
    assert error.field is None and "deleted" in error.message


def test_a_deleted_user_is_not_added(db, clerk_connected, acme, boss, make_user):
    gone = make_user(email="gone@example.com", deleted_at=utcnow())
    refused(db, OrganizationError, lambda: add_member(acme, gone, "org:member", actor=staff(boss)), field="user")


def test_an_invited_user_waits_for_clerk_before_joining_while_clerk_is_connected(app, db, acme, boss, make_user):
    invited = make_user(email="invited@example.com", status=UserStatus.INVITED, clerk_id=placeholder_clerk_id())
    app.config["CLERK_SECRET_KEY"] = "sk_test_never_used"
    error = refused(
        db, OrganizationError, lambda: add_member(acme, invited, "org:member", actor=staff(boss)), field="user"
    )
    assert "no user in Clerk" in error.message
    app.config["CLERK_SECRET_KEY"] = None  # without Clerk, the dashboard's own record may hold them
    membership = add_member(acme, invited, "org:member", actor=staff(boss))
    db.session.commit()
    assert membership.user_id == invited.id and open_calls(db) == []


# --- change_member_role ---------------------------------------------------------------------------


def test_change_member_role_is_audited_and_sent(db, clerk_connected, acme, grace, admin):
    membership = make_membership(acme, grace)
    changed = change_member_role(membership, "org:admin", actor=staff(admin), version=membership.version)
    db.session.commit()
    assert changed == {"role": ["org:member", "org:admin"]}
    db.session.expire_all()
    assert (membership.role, membership.version) == ("org:admin", 2)
    [event] = events(db, "membership.role")
    assert (event.target_id, event.organization_id, json.loads(event.changes)) == (grace.id, acme.id, changed)
    [call] = open_calls(db)
    assert (call.operation, call.organization_id) == (UPDATE_MEMBERSHIP, acme.id)
    payload = json.loads(call.payload)
    assert (payload["organization_id"], payload["user_id"], payload["role"]) == (
        "org_acme",
        grace.clerk_id,
        "org:admin",
    )


def test_the_same_role_again_changes_and_sends_nothing(db, clerk_connected, acme, grace, boss):
    membership = make_membership(acme, grace)
    before = state(db)
    assert change_member_role(membership, "org:member", actor=staff(boss)) == {}
    db.session.commit()
    assert state(db) == before


def test_a_members_custom_role_from_clerk_is_kept_or_left_but_not_given(db, acme, grace, boss, make_user):
    membership = make_membership(acme, grace, role="org:billing")
    assert change_member_role(membership, "org:billing", actor=staff(boss)) == {}  # the role they hold
    bob = make_user(email="bob@example.com")
    other = make_membership(acme, bob)
    refused(db, OrganizationError, lambda: change_member_role(other, "org:billing", actor=staff(boss)), field="role")
    change_member_role(membership, "org:member", actor=staff(boss))
    db.session.commit()
    assert membership.role == "org:member"
    refused(
        db, OrganizationError, lambda: change_member_role(membership, "org:billing", actor=staff(boss)), field="role"
    )


def test_a_role_change_on_a_stale_form_is_refused_with_the_current_role(db, acme, grace, boss):
    membership = make_membership(acme, grace)
    opened = membership.version
    change_member_role(membership, "org:admin", actor=CLI)
    db.session.commit()
    error = refused(
        db, StaleOrganization, lambda: change_member_role(membership, "org:member", actor=staff(boss), version=opened)
    )
    assert error.current == {"role": "org:admin"}


def test_no_role_change_on_an_ended_membership_or_a_deleted_organization(db, acme, grace, boss, make_user):
    ended = make_membership(acme, grace, deleted_at=utcnow())
    refused(db, OrganizationError, lambda: change_member_role(ended, "org:admin", actor=staff(boss)), field=None)
    bob = make_user(email="bob@example.com")
    live = make_membership(acme, bob)
    update_organization_fields(acme, {"deleted_at": utcnow()}, actor=CLI, action="organization.delete")
    db.session.commit()
    refused(db, OrganizationError, lambda: change_member_role(live, "org:admin", actor=staff(boss)), field=None)
    refused(db, OrganizationError, lambda: remove_member(live, actor=staff(boss)), field=None)


# --- remove_member ----------------------------------------------------------------------------------


def test_remove_member_ends_it_counts_it_audits_it_and_sends_it(db, clerk_connected, acme, grace, admin, make_user):
    membership = make_membership(acme, grace)
    make_membership(acme, make_user(email="bob@example.com"))
    assert acme.members_count == 2
    remove_member(membership, actor=staff(admin))
    db.session.commit()
    db.session.expire_all()
    assert membership.deleted_at is not None
    assert acme.members_count == 1
    assert org_counts(db)[counts.MEMBERSHIPS, counts.LIVE] == 1
    exact(db, acme)
    [event] = events(db, "membership.remove")
    assert (event.actor_id, event.target_id, event.organization_id) == (admin.id, grace.id, acme.id)
    [call] = open_calls(db)
    assert (call.operation, call.organization_id) == (DELETE_MEMBERSHIP, acme.id)
    payload = json.loads(call.payload)
    assert (payload["organization_id"], payload["user_id"]) == ("org_acme", grace.clerk_id)
    refused(db, OrganizationError, lambda: remove_member(membership, actor=staff(admin)), field=None)


def test_a_member_whose_user_was_deleted_is_read_only(db, acme, grace, boss):
    membership = make_membership(acme, grace)
    grace.deleted_at = utcnow()  # as if the ending had not reached this membership yet
    db.session.commit()
    refused(db, OrganizationError, lambda: remove_member(membership, actor=staff(boss)), field=None)
    refused(db, OrganizationError, lambda: change_member_role(membership, "org:admin", actor=staff(boss)), field=None)


# --- invitations ------------------------------------------------------------------------------------


def test_invite_stores_a_pending_invitation_audits_it_and_sends_it(db, clerk_connected, acme, admin):
    invitation = invite_to_organization(acme, "  New.Person@EXAMPLE.com ", "org:admin", actor=staff(admin))
    db.session.commit()
    db.session.expire_all()
    assert invitation.clerk_id.startswith("local_")
    assert (invitation.email, invitation.role, invitation.status) == ("new.person@example.com", "org:admin", "pending")
    assert invitation.organization_id == acme.id
    [event] = events(db, "organization_invitation.create")
    assert (event.actor_id, event.organization_id) == (admin.id, acme.id)
    assert json.loads(event.changes)["email"] == [None, "new.person@example.com"]
    [call] = open_calls(db)
    assert (call.operation, call.organization_id) == (CREATE_ORGANIZATION_INVITATION, acme.id)
    payload = json.loads(call.payload)
    assert "new.person@example.com" in json.dumps(payload) and "org:admin" in json.dumps(payload)


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        "",
        "   ",
        "a@b",
        "two@@example.com",
        "new\n@example.com",
        "new@exa\u202emple.com",
        "x" * 330 + "@example.com",
    ],
)
def test_an_address_that_is_not_one_is_the_email_fields_error(db, clerk_connected, acme, boss, email):
    refused(
        db,
        OrganizationError,
        lambda: invite_to_organization(acme, email, "org:member", actor=staff(boss)),
        field="email",
    )


def test_an_invitation_is_refused_for_a_member_or_a_pending_address(db, clerk_connected, acme, grace, boss):
    make_membership(acme, grace)
    refused(
        db,
        OrganizationError,
        lambda: invite_to_organization(acme, "GRACE@example.com", "org:member", actor=staff(boss)),
        field="email",
        match="already a member",
    )
    make_invitation(acme, "pending@example.com")
    refused(
        db,
        OrganizationError,
        lambda: invite_to_organization(acme, "Pending@Example.com", "org:member", actor=staff(boss)),
        field="email",
        match="pending invitation",
    )
    refused(
        db,
        OrganizationError,
        lambda: invite_to_organization(acme, "x@example.com", "org:owner", actor=staff(boss)),
        field="role",
    )


def test_a_member_known_only_by_clerks_identifier_counts_as_a_member(db, acme, boss):
    make_membership(acme, None, clerk_user_id="user_elsewhere", identifier="far@example.com")
    refused(
        db,
        OrganizationError,
        lambda: invite_to_organization(acme, "far@example.com", "org:member", actor=staff(boss)),
        field="email",
    )


def test_an_expired_revoked_or_accepted_invitation_allows_a_new_one(db, acme, boss):
    make_invitation(acme, "late@example.com", expires_at=utcnow() - timedelta(days=1))
    make_invitation(acme, "late@example.com", status="revoked")
    make_invitation(acme, "late@example.com", status="accepted")
    invitation = invite_to_organization(acme, "late@example.com", "org:member", actor=staff(boss))
    db.session.commit()
    assert invitation.status == "pending"


def test_nobody_is_invited_to_a_deleted_organization(db, acme, boss):
    update_organization_fields(acme, {"deleted_at": utcnow()}, actor=CLI, action="organization.delete")
    db.session.commit()
    refused(
        db,
        OrganizationError,
        lambda: invite_to_organization(acme, "x@example.com", "org:member", actor=staff(boss)),
        field=None,
    )


def test_revoke_marks_the_invitation_revoked_audits_it_and_sends_it(db, clerk_connected, acme, admin):
    invitation = make_invitation(acme, "someone@example.com")
    revoke_organization_invitation(invitation, actor=staff(admin))
    db.session.commit()
    db.session.expire_all()
    assert invitation.status == "revoked"
    [event] = events(db, "organization_invitation.revoke")
    assert (event.actor_id, event.organization_id) == (admin.id, acme.id)
    assert json.loads(event.changes)["status"] == ["pending", "revoked"]
    [call] = open_calls(db)
    assert (call.operation, call.organization_id) == (REVOKE_ORGANIZATION_INVITATION, acme.id)
    refused(db, OrganizationError, lambda: revoke_organization_invitation(invitation, actor=staff(admin)), field=None)


def test_only_a_pending_invitation_is_revoked(db, acme, boss):
    expired = make_invitation(acme, "old@example.com", expires_at=utcnow() - timedelta(hours=1))
    accepted = make_invitation(acme, "in@example.com", status="accepted")
    for invitation in (expired, accepted):
        refused(db, OrganizationError, lambda i=invitation: revoke_organization_invitation(i, actor=staff(boss)))


def test_revoking_a_dashboard_invitation_before_clerk_has_it_still_sends_a_revocation(db, clerk_connected, acme, boss):
    invitation = invite_to_organization(acme, "quick@example.com", "org:member", actor=staff(boss))
    db.session.commit()
    revoke_organization_invitation(invitation, actor=staff(boss))
    db.session.commit()
    db.session.expire_all()
    assert invitation.status == "revoked"
    operations = [c.operation for c in db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id))]
    assert operations[-1] == REVOKE_ORGANIZATION_INVITATION


# --- rename_organization ----------------------------------------------------------------------------


def test_rename_changes_name_and_slug_audits_and_sends_them(db, clerk_connected, acme, admin):
    changed = rename_organization(acme, name="  Acme Corp ", slug="acme-corp", version=acme.version, actor=staff(admin))
    db.session.commit()
    assert changed == {"name": ["Acme", "Acme Corp"], "slug": ["acme", "acme-corp"]}
    db.session.expire_all()
    assert (acme.name, acme.slug, acme.version) == ("Acme Corp", "acme-corp", 2)
    [event] = events(db, "organization.rename")
    assert (event.actor_id, event.organization_id, json.loads(event.changes)) == (admin.id, acme.id, changed)
    [call] = open_calls(db)
    assert (call.operation, call.organization_id) == (UPDATE_ORGANIZATION, acme.id)
    assert json.loads(call.payload)["fields"] == {"name": "Acme Corp", "slug": "acme-corp"}


def test_rename_sends_only_what_changed_and_nothing_when_nothing_did(db, clerk_connected, acme, boss):
    before = state(db)
    assert rename_organization(acme, name="Acme", slug="acme", version=acme.version, actor=staff(boss)) == {}
    db.session.commit()
    assert state(db) == before
    rename_organization(acme, name="Acme", slug="acme-2", version=acme.version, actor=staff(boss))
    db.session.commit()
    [call] = open_calls(db)
    assert json.loads(call.payload)["fields"] == {"slug": "acme-2"}


@pytest.mark.parametrize(
    "name",
    ["A", " A ", "", "   ", "x" * 257, "Acme\nCorp", "Acme\tCorp", "Acme\x00", "Acme\u202eproC", "Acme\u2066"],
)
def test_a_bad_name_is_the_name_fields_error(db, clerk_connected, acme, boss, name):
    refused(
        db,
        OrganizationError,
        lambda: rename_organization(acme, name=name, slug="acme", version=acme.version, actor=staff(boss)),
        field="name",
    )


def test_names_of_2_and_256_characters_are_taken(db, acme, boss):
    rename_organization(acme, name="AB", slug="acme", version=None, actor=staff(boss))
    rename_organization(acme, name="é" * 256, slug="acme", version=None, actor=staff(boss))
    db.session.commit()
    assert acme.name == "é" * 256


@pytest.mark.parametrize(
    "slug", ["Acme", "acme corp", "acme_corp", "---", "acmé", "acme.corp", "acme/corp", "ac\nme", "a" * 257]
)
def test_a_malformed_slug_is_the_slug_fields_error(db, clerk_connected, acme, boss, slug):
    refused(
        db,
        OrganizationError,
        lambda: rename_organization(acme, name="Acme", slug=slug, version=acme.version, actor=staff(boss)),
        field="slug",
    )


def test_a_slug_is_changed_not_removed_but_one_can_be_given(db, acme, boss):
    refused(
        db,
        OrganizationError,
        lambda: rename_organization(acme, name="Acme", slug="", version=None, actor=staff(boss)),
        field="slug",
    )
    bare = make_organization(slug=None)
    rename_organization(bare, name=bare.name, slug=None, version=None, actor=staff(boss))
    rename_organization(bare, name=bare.name, slug="-a-", version=None, actor=staff(boss))
    db.session.commit()
    assert bare.slug == "-a-"


def test_a_slug_another_live_organization_holds_is_refused(db, acme, boss):
    other = make_organization(name="Other", slug="other")
    refused(
        db,
        OrganizationError,
        lambda: rename_organization(acme, name="Acme", slug="other", version=None, actor=staff(boss)),
        field="slug",
        match="already has the slug",
    )
    update_organization_fields(other, {"deleted_at": utcnow()}, actor=CLI, action="organization.delete")
    db.session.commit()
    rename_organization(acme, name="Acme", slug="other", version=None, actor=staff(boss))  # Clerk has the last word
    db.session.commit()
    assert acme.slug == "other"


def test_a_rename_on_a_stale_form_is_refused_with_the_current_values(db, acme, boss):
    opened = acme.version
    rename_organization(acme, name="Acme Webhook", slug="acme", version=None, actor=CLI)
    db.session.commit()
    error = refused(
        db,
        StaleOrganization,
        lambda: rename_organization(acme, name="Mine", slug="mine", version=opened, actor=staff(boss)),
        field=None,
    )
    assert error.current == {"name": "Acme Webhook", "slug": "acme"}


def test_a_deleted_organization_is_not_renamed(db, acme, boss):
    update_organization_fields(acme, {"deleted_at": utcnow()}, actor=CLI, action="organization.delete")
    db.session.commit()
    refused(
        db,
        OrganizationError,
        lambda: rename_organization(acme, name="Back", slug="back", version=None, actor=staff(boss)),
        field=None,
    )


def test_a_member_joining_does_not_make_a_rename_stale(db, acme, grace, boss):
    opened = acme.version
    add_member(acme, grace, "org:member", actor=staff(boss))
    db.session.commit()
    rename_organization(acme, name="Acme 2", slug="acme", version=opened, actor=staff(boss))
    db.session.commit()
    db.session.expire_all()
    assert (acme.name, acme.members_count) == ("Acme 2", 1)


# --- at the same moment (PostgreSQL: real concurrency) -----------------------------------------------


@pytest.mark.postgresql
def test_two_admins_adding_one_user_at_once_make_one_membership(app, db, acme, grace, boss):
    barrier = threading.Barrier(2, timeout=20)  # a thread that fails first must not hold the other
    outcomes: list[str] = []
    ids = (acme.id, grace.id, boss.id)  # read here: the test's session is not the threads'

    def add() -> None:
        with app.app_context():
            organization = db.session.get(Organization, ids[0])
            user = db.session.get(User, ids[1])
            actor = staff(db.session.get(User, ids[2]))
            barrier.wait()
            try:
                add_member(organization, user, "org:member", actor=actor)
                db.session.commit()
                outcomes.append("added")
            except OrganizationError as error:
                db.session.rollback()
                outcomes.append(error.field)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=add, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["added", "user"]
    exact(db, acme)
    assert acme.members_count == 1


@pytest.mark.postgresql
def test_two_renames_at_once_one_wins_the_other_is_stale(app, db, acme, boss):
    barrier = threading.Barrier(2, timeout=20)  # a thread that fails first must not hold the other
    outcomes: list[str] = []
    ids = (acme.id, boss.id)

    def rename(name: str) -> None:
        with app.app_context():
            organization = db.session.get(Organization, ids[0])
            actor = staff(db.session.get(User, ids[1]))
            opened = organization.version
            barrier.wait()
            try:
                rename_organization(organization, name=name, slug="acme", version=opened, actor=actor)
                db.session.commit()
                outcomes.append("saved")
            except StaleOrganization as error:
                db.session.rollback()
                outcomes.append(f"stale:{error.current['name'] in ('One', 'Two')}")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=rename, args=(name,), daemon=True) for name in ("One", "Two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["saved", "stale:True"]
    db.session.expire_all()
    assert len(events(db, "organization.rename")) == 1


# --- the whole way to the fake Clerk and back -------------------------------------------------------


@pytest.fixture
def clerk_world(app, db, make_user):
    """A fake Clerk holding Grace and Acme, and their local rows as Clerk's sync left them."""
    clerk_grace = bapi_user(email="grace@example.com", first_name="Grace")
    with connected_fake_clerk(app, [clerk_grace]) as fake:
        remote = fake.add_organization("Acme", "acme")
        organization = make_organization(clerk_id=remote["id"], name="Acme", slug="acme")
        user = make_user(email="grace@example.com", clerk_id=clerk_grace["id"])
        yield fake, organization, user


def deliver(db, organization: Organization) -> None:
    deliver_due(deadline=time.monotonic() + 5, timeout_ms=2_000, organization_ids=[organization.id], actor=CLI)
    db.session.rollback()


def test_each_action_reaches_clerk_and_clerks_answer_claims_the_local_rows(db, clerk_world, boss):
    fake, acme, grace = clerk_world
    membership = add_member(acme, grace, "org:member", actor=staff(boss))
    invitation = invite_to_organization(acme, "new@example.com", "org:admin", actor=staff(boss))
    rename_organization(acme, name="Acme Corp", slug="acme-corp", version=acme.version, actor=staff(boss))
    db.session.commit()
    deliver(db, acme)

    remote = fake.organization(acme.clerk_id)
    assert (remote["name"], remote["slug"]) == ("Acme Corp", "acme-corp")
    assert fake.membership(acme.clerk_id, grace.clerk_id)["role"] == "org:member"
    db.session.expire_all()
    assert membership.clerk_id.startswith("orgmem_") and membership.deleted_at is None
    assert invitation.clerk_id.startswith("orginv_")
    assert fake.organization_invitation(invitation.clerk_id)["email_address"] == "new@example.com"

    change_member_role(membership, "org:admin", actor=staff(boss))
    revoke_organization_invitation(invitation, actor=staff(boss))
    db.session.commit()
    deliver(db, acme)
    assert fake.membership(acme.clerk_id, grace.clerk_id)["role"] == "org:admin"
    assert fake.organization_invitation(invitation.clerk_id)["status"] == "revoked"

    remove_member(membership, actor=staff(boss))
    db.session.commit()
    deliver(db, acme)
    assert fake.membership(acme.clerk_id, grace.clerk_id) is None
    db.session.expire_all()
    assert [c.state for c in db.session.scalars(sa.select(ClerkCall))] == ["delivered"] * 6
    assert (acme.members_count, membership.deleted_at is not None) == (0, True)
    exact(db, acme)
