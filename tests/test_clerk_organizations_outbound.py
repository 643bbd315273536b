"""Every organization action reaches Clerk through the outbox, in order, and Clerk's answers come back.

The dashboard's operations (app/organizations/services.py) and the outbox against the fake Clerk
on loopback, driven by the real SDK: the exact request of each action, what a refusal does (a taken
slug is Clerk's 422, shown), the answers applied by the webhook rules (the invitation made here gets
Clerk's id), the per-organization order, Retry and "Take Clerk's value", and the pages' queries.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.outbox import (
    CREATE_MEMBERSHIP,
    UPDATE_MEMBERSHIP,
    organization_fields_waiting,
)
from app.clerk.outbox.delivery import (
    _claim_next,
    deliver_after_request,
    deliver_due,
    take_clerks_value,
)
from app.clerk.outbox.enqueue import (
    RetryRefused,
    enqueue_membership_call,
    enqueue_organization_update,
    retry_call,
)
from app.clerk.outbox.queries import describe, open_calls_for, organization_calls, waiting_in_clerk
from app.models import (
    AuditEvent,
    ClerkCall,
    Membership,
    Organization,
    OrganizationInvitation,
    User,
    UserRole,
    utcnow,
)
from app.organizations.services import (
    OrganizationError,
    add_member,
    change_member_role,
    delete_organization,
    invite_to_organization,
    remove_member,
    rename_organization,
    revoke_organization_invitation,
)
from app.permissions import NotAllowed
from app.users.services import edit_user
from tests.clerk_payloads import envelope, sign
from tests.conftest import csrf_token_from
from tests.fake_clerk import FakeClerk, bapi_user, connected_fake_clerk

# --- fixtures: Clerk holds Acme (Grace a member) and Beta; our tables hold what its webhooks sent ---


@pytest.fixture
def grace_in_clerk() -> dict:
    return bapi_user(email="grace@example.com", first_name="Grace", last_name="Hopper")


@pytest.fixture
def linus_in_clerk() -> dict:
    return bapi_user(email="linus@example.com", first_name="Linus", last_name="Torvalds")


@pytest.fixture
def fake(app, grace_in_clerk, linus_in_clerk):
    with connected_fake_clerk(app, [grace_in_clerk, linus_in_clerk]) as server:
        server.add_organization("Beta", "beta")  # never synced here: its slug is taken only in Clerk
        yield server


@pytest.fixture
def acme_in_clerk(fake, grace_in_clerk) -> dict:
    organization = fake.add_organization("Acme", "acme")
    fake.add_membership(organization["id"], grace_in_clerk["id"], role="org:member")
    return organization


def deliver(client, event_type: str, data: dict) -> None:
    assert sign(envelope(event_type, data)).post(client).status_code == 200


@pytest.fixture
def synced(client, db, fake, acme_in_clerk, grace_in_clerk, linus_in_clerk, signing_secret):
    """Users, the organization and its membership as their webhooks left them."""
    for user in (grace_in_clerk, linus_in_clerk):
        deliver(client, "user.created", fake.webhook_data(user["id"]))
    deliver(client, "organization.created", fake.organization_webhook_data(acme_in_clerk["id"]))
    (membership,) = fake.memberships
    deliver(client, "organizationMembership.created", fake.membership_webhook_data(membership["id"]))
    db.session.rollback()


@pytest.fixture
def acme(db, synced, acme_in_clerk) -> Organization:
    return db.session.scalars(sa.select(Organization).where(Organization.clerk_id == acme_in_clerk["id"])).one()


@pytest.fixture
def grace(db, synced, grace_in_clerk) -> User:
    return db.session.scalars(sa.select(User).where(User.clerk_id == grace_in_clerk["id"])).one()


@pytest.fixture
def linus(db, synced, linus_in_clerk) -> User:
    return db.session.scalars(sa.select(User).where(User.clerk_id == linus_in_clerk["id"])).one()


@pytest.fixture
def graces_membership(db, acme, grace) -> Membership:
    return db.session.scalars(
        sa.select(Membership).where(Membership.organization_id == acme.id, Membership.user_id == grace.id)
    ).one()


@pytest.fixture
def root(make_user) -> User:
    return make_user(email="root@staff.example", role=UserRole.SUPER_ADMIN)


@pytest.fixture
def staff(root) -> Actor:
    return Actor.staff(root)


def push(db, *, organizations: list[Organization] | None = None):
    """Deliver due calls (or, with `organizations`, theirs whatever their backoff, as after a request)."""
    ids = [o.id for o in organizations] if organizations is not None else None
    report = deliver_due(deadline=time.monotonic() + 5, timeout_ms=2_000, organization_ids=ids, actor=Actor.cli())
    db.session.rollback()
    return report


def mutations(fake: FakeClerk) -> list[tuple[str, str, object]]:
    return [(c.method, c.path, c.body) for c in fake.calls if c.method != "GET"]


def calls(db) -> list[tuple[str, str]]:
    db.session.rollback()
    return [(c.operation, c.state) for c in db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id))]


def fresh(db, row):
    db.session.rollback()
    return db.session.get(type(row), row.id, populate_existing=True)


def actions_on(db, organization: Organization) -> list[str]:
    return list(
        db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.organization_id == organization.id).order_by(AuditEvent.id)
        )
    )


# --- rename ------------------------------------------------------------------------------------------


def test_a_rename_is_one_organizations_update_and_clerks_answer_is_applied(db, fake, acme, staff, acme_in_clerk):
    rename_organization(acme, name="Acme Inc", slug="acme-inc", version=acme.version, actor=staff)
    db.session.commit()
    assert organization_fields_waiting(acme.id) == {"name", "slug"}

    push(db, organizations=[acme])

    assert mutations(fake) == [
        ("PATCH", f"/v1/organizations/{acme_in_clerk['id']}", {"name": "Acme Inc", "slug": "acme-inc"})
    ]
    assert calls(db) == [("update_organization", "delivered")] and organization_fields_waiting(acme.id) == set()
    assert (acme_in_clerk["name"], acme_in_clerk["slug"]) == ("Acme Inc", "acme-inc")
    row = fresh(db, acme)
    assert (row.name, row.slug, row.clerk_updated_at) == ("Acme Inc", "acme-inc", acme_in_clerk["updated_at"])


def test_a_slug_taken_in_clerk_is_refused_with_clerks_message_and_kept_from_webhooks(
    client, db, fake, acme, staff, acme_in_clerk
):
    rename_organization(acme, name="Acme", slug="beta", version=acme.version, actor=staff)
    db.session.commit()

    push(db, organizations=[acme])

    call = db.session.scalars(sa.select(ClerkCall)).one()
    assert call.state == "failed"
    assert call.last_error == "Clerk answered 422: That slug is taken. Please try another."
    assert acme_in_clerk["slug"] == "acme"
    # The refused value stays here, marked, until Retry or "Take Clerk's value": a webhook keeps it.
    assert organization_fields_waiting(acme.id) == {"slug"}
    with fake._lock:
        acme_in_clerk.update(name="Acme (renamed in Clerk)", updated_at=acme_in_clerk["updated_at"] + 1)
    deliver(client, "organization.updated", fake.organization_webhook_data(acme_in_clerk["id"]))
    row = fresh(db, acme)
    assert (row.name, row.slug) == ("Acme (renamed in Clerk)", "beta")
    page = organization_calls(row, staff)
    assert page["waiting"] == {"slug": "failed"}
    assert page["retry_ids"] == page["take_value_ids"] == {call.id}
    assert describe(call) == "Update the organization: slug 'beta'"

    changed = take_clerks_value(fresh(db, call), actor=staff)
    db.session.commit()

    assert changed == {"slug": ["beta", "acme"]}
    assert fresh(db, acme).slug == "acme" and fresh(db, call).state == "superseded"
    assert "took Clerk's value" in fresh(db, call).last_error
    assert "clerk.take_value" in actions_on(db, acme)
    assert organization_fields_waiting(acme.id) == set()


def test_retry_sends_a_refused_rename_again(db, fake, acme, staff, acme_in_clerk):
    rename_organization(acme, name="Acme", slug="beta", version=acme.version, actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    call = db.session.scalars(sa.select(ClerkCall)).one()
    with fake._lock:  # Beta gives its slug up in Clerk
        fake.organization("beta")["slug"] = "beta-old"

    retry_call(call, actor=staff)
    db.session.commit()
    report = deliver_after_request(actor=staff)

    assert report.delivered == 1 and fresh(db, call).state == "delivered"
    assert acme_in_clerk["slug"] == "beta"
    retry = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.action == "clerk.retry", AuditEvent.organization_id == acme.id)
    ).one()
    assert json.loads(retry.changes) == {f"clerk_call.{call.id}": ["failed", "pending"]}
    with pytest.raises(RetryRefused):
        retry_call(fresh(db, call), actor=staff)


def test_only_staff_may_retry_or_take_the_value_of_an_organizations_call(db, fake, acme, staff, make_user):
    rename_organization(acme, name="Acme", slug="beta", version=acme.version, actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    call = db.session.scalars(sa.select(ClerkCall)).one()
    nobody = Actor.staff(make_user(email="someone@example.com", role=UserRole.USER))

    with pytest.raises(NotAllowed):
        retry_call(call, actor=nobody)
    with pytest.raises(NotAllowed):
        take_clerks_value(call, actor=nobody)
    assert organization_calls(fresh(db, acme), nobody)["retry_ids"] == set()
    assert fresh(db, call).state == "failed"


def test_a_newer_rename_supersedes_the_fields_it_sends_again(db, fake, acme, staff, acme_in_clerk):
    fake.stop()
    rename_organization(acme, name="First", slug="first", version=acme.version, actor=staff)
    db.session.commit()
    rename_organization(fresh(db, acme), name="Second", slug="first", version=None, actor=staff)
    db.session.commit()
    first, second = db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id))
    assert (json.loads(first.payload)["fields"], first.state) == ({"slug": "first"}, "pending")
    assert json.loads(second.payload)["fields"] == {"name": "Second"}
    fake.start()

    push(db, organizations=[acme])

    assert (acme_in_clerk["name"], acme_in_clerk["slug"]) == ("Second", "first")
    assert calls(db) == [("update_organization", "delivered"), ("update_organization", "delivered")]


# --- members -----------------------------------------------------------------------------------------


def test_adding_a_member_creates_the_membership_and_clerks_id_is_claimed(
    client, db, fake, acme, linus, staff, acme_in_clerk, linus_in_clerk
):
    membership = add_member(acme, linus, "org:admin", actor=staff)
    db.session.commit()
    assert membership.clerk_id.startswith("local_")

    push(db, organizations=[acme])

    assert mutations(fake) == [
        (
            "POST",
            f"/v1/organizations/{acme_in_clerk['id']}/memberships",
            {"user_id": linus_in_clerk["id"], "role": "org:admin"},
        )
    ]
    in_clerk = fake.membership(acme_in_clerk["id"], linus_in_clerk["id"])
    row = fresh(db, membership)
    assert (row.clerk_id, row.role, row.deleted_at) == (in_clerk["id"], "org:admin", None)
    assert calls(db) == [("create_membership", "delivered")]
    assert fresh(db, acme).members_count == 2
    # Its webhook, later, changes nothing and makes no second membership.
    deliver(client, "organizationMembership.created", fake.membership_webhook_data(in_clerk["id"]))
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Membership)) == 2
    assert fresh(db, acme).members_count == 2


def test_adding_someone_clerk_has_as_a_member_already_gives_them_the_role(
    db, fake, acme, linus, staff, acme_in_clerk, linus_in_clerk
):
    fake.add_membership(acme_in_clerk["id"], linus_in_clerk["id"], role="org:member")  # its webhook not here yet
    membership = add_member(acme, linus, "org:admin", actor=staff)
    db.session.commit()

    push(db, organizations=[acme])

    assert [(m, p) for m, p, _ in mutations(fake)] == [
        ("POST", f"/v1/organizations/{acme_in_clerk['id']}/memberships"),
        ("PATCH", f"/v1/organizations/{acme_in_clerk['id']}/memberships/{linus_in_clerk['id']}"),
    ]
    in_clerk = fake.membership(acme_in_clerk["id"], linus_in_clerk["id"])
    assert in_clerk["role"] == "org:admin" and calls(db) == [("create_membership", "delivered")]
    assert fresh(db, membership).clerk_id == in_clerk["id"]


def test_a_role_change_is_kept_from_a_stale_webhook_until_clerk_has_it(
    client, db, fake, acme, graces_membership, staff, acme_in_clerk, grace_in_clerk
):
    fake.stop()
    change_member_role(graces_membership, "org:admin", actor=staff)
    db.session.commit()
    assert push(db, organizations=[acme]).stopped  # Clerk is down: pending
    fake.start()
    (stored,) = fake.memberships
    deliver(client, "organizationMembership.updated", fake.membership_webhook_data(stored["id"]))  # still org:member
    assert fresh(db, graces_membership).role == "org:admin"

    push(db, organizations=[acme])

    assert mutations(fake) == [
        ("PATCH", f"/v1/organizations/{acme_in_clerk['id']}/memberships/{grace_in_clerk['id']}", {"role": "org:admin"})
    ]
    assert stored["role"] == "org:admin"
    assert fresh(db, graces_membership).clerk_updated_at == stored["updated_at"]


def test_a_refused_role_takes_clerks_value(app, db, fake, acme, graces_membership, staff):
    app.config["CLERK_ORGANIZATION_ROLES"] = "org:admin,org:member,org:billing"  # not a role in Clerk
    change_member_role(graces_membership, "org:billing", actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    call = db.session.scalars(sa.select(ClerkCall)).one()
    assert call.state == "failed" and "role 'org:billing' does not exist" in call.last_error
    assert organization_calls(fresh(db, acme), staff)["take_value_ids"] == {call.id}

    changed = take_clerks_value(call, actor=staff)
    db.session.commit()

    assert changed == {"role": ["org:billing", "org:member"]}
    assert fresh(db, graces_membership).role == "org:member"


def test_removing_a_member_deletes_it_in_clerk_and_one_already_gone_is_delivered(
    db, fake, acme, graces_membership, linus, staff, acme_in_clerk, grace_in_clerk
):
    remove_member(graces_membership, actor=staff)
    db.session.commit()

    push(db, organizations=[acme])

    assert mutations(fake) == [
        ("DELETE", f"/v1/organizations/{acme_in_clerk['id']}/memberships/{grace_in_clerk['id']}", None)
    ]
    assert fake.membership(acme_in_clerk["id"], grace_in_clerk["id"]) is None
    assert calls(db) == [("delete_membership", "delivered")]
    row = fresh(db, graces_membership)
    assert row.deleted_at is not None and fresh(db, acme).members_count == 0

    # Linus is added and removed here while Clerk removed him already: the 404 means done.
    membership = add_member(fresh(db, acme), linus, "org:member", actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    with fake._lock:
        fake.memberships.clear()
    remove_member(fresh(db, membership), actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    last = db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id.desc())).first()
    assert (last.operation, last.state) == ("delete_membership", "delivered") and "404" in last.last_error


def test_a_removal_supersedes_the_members_pending_role_change(db, fake, acme, graces_membership, staff):
    fake.stop()
    change_member_role(graces_membership, "org:admin", actor=staff)
    db.session.commit()
    remove_member(fresh(db, graces_membership), actor=staff)
    db.session.commit()
    fake.start()

    push(db, organizations=[acme])

    assert calls(db) == [("update_membership", "superseded"), ("delete_membership", "delivered")]
    assert [m for m, _, _ in mutations(fake)] == ["DELETE"]


# --- invitations -------------------------------------------------------------------------------------


def test_an_invitation_gets_clerks_id_and_its_revocation_uses_it(db, fake, acme, staff, acme_in_clerk):
    invitation = invite_to_organization(acme, "New@Example.com", "org:member", actor=staff)
    db.session.commit()

    push(db, organizations=[acme])

    (in_clerk,) = fake.organization_invitations
    assert mutations(fake) == [
        (
            "POST",
            f"/v1/organizations/{acme_in_clerk['id']}/invitations",
            {"email_address": "new@example.com", "role": "org:member", "notify": True},
        )
    ]
    row = fresh(db, invitation)
    assert (row.clerk_id, row.status, row.role) == (in_clerk["id"], "pending", "org:member")
    assert row.expires_at is not None

    revoke_organization_invitation(row, actor=staff)
    db.session.commit()
    push(db, organizations=[acme])

    assert mutations(fake)[-1][:2] == (
        "POST",
        f"/v1/organizations/{acme_in_clerk['id']}/invitations/{in_clerk['id']}/revoke",
    )
    assert in_clerk["status"] == "revoked" and fresh(db, invitation).status == "revoked"
    assert calls(db) == [
        ("create_organization_invitation", "delivered"),
        ("revoke_organization_invitation", "delivered"),
    ]


def test_an_invitation_revoked_before_clerk_had_it_is_made_then_revoked_in_order(db, fake, acme, staff):
    fake.stop()
    invitation = invite_to_organization(acme, "later@example.com", "org:member", actor=staff)
    db.session.commit()
    revoke_organization_invitation(fresh(db, invitation), actor=staff)
    db.session.commit()
    fake.start()

    push(db, organizations=[acme])

    (in_clerk,) = fake.organization_invitations
    assert in_clerk["status"] == "revoked"
    assert [p.rsplit("/", 1)[-1] for _, p, _ in mutations(fake)] == ["invitations", "revoke"]
    row = fresh(db, invitation)
    assert (row.clerk_id, row.status) == (in_clerk["id"], "revoked")


def test_revoking_an_invitation_clerk_revoked_already_is_delivered(db, fake, acme, staff):
    invitation = invite_to_organization(acme, "x@example.com", "org:member", actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    with fake._lock:
        fake.organization_invitations[0]["status"] = "revoked"
    revoke_organization_invitation(fresh(db, invitation), actor=staff)
    db.session.commit()

    push(db, organizations=[acme])

    last = db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id.desc())).first()
    assert last.state == "delivered" and "Only pending invitations can be revoked" in last.last_error


def test_an_invitation_whose_answer_was_lost_adopts_the_pending_one(db, fake, acme, staff, acme_in_clerk):
    existing = fake.add_organization_invitation(acme_in_clerk["id"], "lost@example.com")
    invitation = invite_to_organization(acme, "lost@example.com", "org:member", actor=staff)
    db.session.commit()

    push(db, organizations=[acme])

    call = db.session.scalars(sa.select(ClerkCall)).one()
    assert call.state == "delivered" and call.last_error == f"adopted the pending invitation {existing['id']}"
    assert fresh(db, invitation).clerk_id == existing["id"] and len(fake.organization_invitations) == 1


def test_a_revocation_reaches_the_invitation_whose_webhook_came_first(client, db, fake, acme, staff, acme_in_clerk):
    fake.stop()
    invitation = invite_to_organization(acme, "race@example.com", "org:member", actor=staff)
    db.session.commit()
    revoke_organization_invitation(fresh(db, invitation), actor=staff)
    db.session.commit()
    fake.start()
    # The first attempt got through, its answer was lost, and Clerk's webhook came before the retry.
    in_clerk = fake.add_organization_invitation(acme_in_clerk["id"], "race@example.com")
    deliver(client, "organizationInvitation.created", fake.organization_invitation_webhook_data(in_clerk["id"]))

    push(db, organizations=[acme])

    assert calls(db) == [
        ("create_organization_invitation", "delivered"),
        ("revoke_organization_invitation", "delivered"),
    ]
    assert fake.organization_invitation(in_clerk["id"])["status"] == "revoked"
    from_webhook = db.session.scalars(
        sa.select(OrganizationInvitation).where(OrganizationInvitation.clerk_id == in_clerk["id"])
    ).one()
    assert from_webhook.status == "revoked" and fresh(db, invitation).status == "revoked"


# --- order, rate limits, after the request, not connected --------------------------------------------


def test_an_organizations_calls_go_in_order_and_another_organization_is_not_held_up(
    db, fake, acme, linus, graces_membership, staff, make_user
):
    fake.stop()
    membership = add_member(acme, linus, "org:member", actor=staff)
    db.session.commit()
    change_member_role(fresh(db, membership), "org:admin", actor=staff)
    db.session.commit()
    push(db)  # refused connection: the first call waits for its backoff
    first, second = db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id))
    assert (first.operation, first.attempts, second.operation, second.attempts) == (
        CREATE_MEMBERSHIP,
        1,
        UPDATE_MEMBERSHIP,
        0,
    )
    # The role change is due, but waits behind the membership it changes.
    assert first.next_attempt_at > utcnow() and second.next_attempt_at <= utcnow()
    assert _claim_next(None) is None
    db.session.rollback()
    # A pending call of the member's own account does not hold the organization's calls.
    edit_user(fresh(db, linus), {"first_name": "Lin"}, expected_version=None, actor=staff)
    db.session.commit()
    fake.start()

    push(db, organizations=[acme])

    assert calls(db) == [
        ("create_membership", "delivered"),
        ("update_membership", "delivered"),
        ("update_user", "pending"),
    ]


def test_a_429_waits_for_retry_after(db, fake, acme, staff):
    fake.fail_next = [(429, {"Retry-After": "7"})]
    rename_organization(acme, name="Acme Inc", slug="acme", version=acme.version, actor=staff)
    db.session.commit()

    report = push(db, organizations=[acme])

    call = db.session.scalars(sa.select(ClerkCall)).one()
    assert report.stopped and call.state == "pending" and call.attempts == 1
    wait = call.next_attempt_at - utcnow()
    assert timedelta(seconds=5) < wait <= timedelta(seconds=7)


def test_delivery_after_the_request_sends_the_organizations_calls(db, fake, acme, linus, staff, acme_in_clerk):
    add_member(acme, linus, "org:member", actor=staff)
    invite_to_organization(acme, "n@example.com", "org:admin", actor=staff)
    db.session.commit()

    report = deliver_after_request(actor=staff)

    assert report.delivered == 2 and calls(db) == [
        ("create_membership", "delivered"),
        ("create_organization_invitation", "delivered"),
    ]
    assert deliver_after_request(actor=staff).attempted == 0  # nothing touched since


def test_nothing_is_enqueued_without_clerk(app, db, fake, acme, graces_membership, staff):
    app.config["CLERK_SECRET_KEY"] = None
    rename_organization(acme, name="Offline", slug="offline", version=acme.version, actor=staff)
    change_member_role(graces_membership, "org:admin", actor=staff)
    invite_to_organization(acme, "o@example.com", "org:member", actor=staff)
    db.session.commit()

    assert calls(db) == []
    assert enqueue_organization_update(acme, {"name": "X"}) is None
    assert enqueue_membership_call(graces_membership, UPDATE_MEMBERSHIP) is None


def test_the_organization_page_queries_and_the_user_page_keeps_to_the_users_calls(
    db, fake, acme, graces_membership, grace, staff
):
    fake.stop()
    change_member_role(graces_membership, "org:admin", actor=staff)
    invitation = invite_to_organization(acme, "p@example.com", "org:member", actor=staff)
    db.session.commit()

    page = organization_calls(fresh(db, acme), staff)

    assert [c.operation for c in page["open_calls"]] == ["update_membership", "create_organization_invitation"]
    assert page["waiting"] == {} and page["retry_ids"] == set()
    assert [describe(c) for c in page["open_calls"]] == [
        "Change a member's role: grace@example.com as org:admin",
        "Invite to the organization: p@example.com as org:member",
    ]
    # The member's role call is the organization's: it does not mark the user's own role as waiting.
    assert open_calls_for(grace) == [] and waiting_in_clerk([grace.id]) == {}
    assert fresh(db, invitation).clerk_id.startswith("local_")


def test_a_refused_rename_is_shown_where_the_admin_acted_and_its_buttons_return_there(
    client, db, fake, acme, root, auth, staff
):
    """Over HTTP: the organization's page shows Clerk's refusal with Retry and Take Clerk's value;
    the /clerk page names the organization; both buttons bring the admin back to its page."""
    rename_organization(acme, name="Acme", slug="beta", version=acme.version, actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    call = db.session.scalars(sa.select(ClerkCall)).one()
    auth.sign_in(root)

    page = client.get(f"/organizations/{acme.id}").get_data(as_text=True)
    clerk = page[page.index('id="clerk"') :]
    assert "That slug is taken. Please try another." in clerk
    assert f"/clerk/calls/{call.id}/retry" in clerk and f"/clerk/calls/{call.id}/take-clerk-value" in clerk
    assert 'name="back" value="organization"' in clerk and '<th scope="col">Member</th>' in clerk
    outbox = client.get("/clerk").get_data(as_text=True)
    assert f'<a href="/organizations/{acme.id}">Acme</a>' in outbox

    token = csrf_token_from(page)
    retried = client.post(f"/clerk/calls/{call.id}/retry", data={"csrf_token": token, "back": "organization"})
    assert retried.status_code == 302 and retried.headers["Location"] == f"/organizations/{acme.id}#clerk"
    taken = client.post(f"/clerk/calls/{call.id}/take-clerk-value", data={"csrf_token": token})
    assert taken.status_code == 302 and taken.headers["Location"] == f"/organizations/{acme.id}#clerk"
    assert fresh(db, acme).slug == "acme"


# --- deletion ----------------------------------------------------------------------------------------


def test_deleting_an_organization_over_http_ends_it_here_and_deletes_it_in_clerk_once(
    client, db, fake, acme, graces_membership, root, auth, staff, acme_in_clerk
):
    invitation = invite_to_organization(acme, "friend@example.com", "org:member", actor=staff)
    db.session.commit()
    push(db, organizations=[acme])
    fake.calls.clear()
    auth.sign_in(root)
    page = client.get(f"/organizations/{acme.id}").get_data(as_text=True)
    assert f'href="/organizations/{acme.id}/delete"' in page

    form = client.get(f"/organizations/{acme.id}/delete").get_data(as_text=True)
    assert "Type acme to confirm." in form and "1 member lose it" in form
    token = csrf_token_from(form)
    refused = client.post(f"/organizations/{acme.id}/delete", data={"csrf_token": token, "confirm": "Acme Inc"})
    assert refused.status_code == 422
    assert "Type acme exactly to confirm; nothing was deleted." in refused.get_data(as_text=True)
    assert 'value="Acme Inc"' in refused.get_data(as_text=True)  # what was typed stays
    assert fresh(db, acme).deleted_at is None and fake.calls == []

    done = client.post(f"/organizations/{acme.id}/delete", data={"csrf_token": token, "confirm": " ACME "})

    assert done.status_code == 302 and done.headers["Location"] == f"/organizations/{acme.id}"
    assert mutations(fake) == [("DELETE", f"/v1/organizations/{acme_in_clerk['id']}", None)]
    assert fake.organization(acme_in_clerk["id"]) is None
    assert calls(db)[-1] == ("delete_organization", "delivered")
    gone = fresh(db, acme)
    assert gone.deleted_at is not None and gone.members_count == 0
    assert fresh(db, graces_membership).deleted_at is not None
    assert fresh(db, invitation).status == "revoked"
    recorded = actions_on(db, acme)  # what Clerk's own webhook would have recorded, by the admin
    assert recorded.count("organization.delete") == 1
    assert {"membership.organization_deleted", "organization_invitation.organization_deleted"} <= set(recorded)
    shown = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Deleted Acme. It is read-only here; its history stays." in shown
    assert "this organization is read-only here" in shown and f"/organizations/{acme.id}/delete" not in shown
    assert client.get(f"/organizations/{acme.id}/delete").status_code == 409

    # Clerk's webhook for the deletion comes after: nothing more happens, nothing is recorded twice.
    deliver(client, "organization.deleted", {"object": "organization", "id": acme_in_clerk["id"], "deleted": True})
    assert sorted(actions_on(db, acme)) == sorted(recorded)


def test_a_deletion_is_not_sent_after_the_organizations_calls_it_makes_pointless(
    db, fake, acme, graces_membership, staff
):
    fake.stop()
    rename_organization(acme, name="Acme Inc", slug="acme-inc", version=acme.version, actor=staff)
    change_member_role(graces_membership, "org:admin", actor=staff)
    db.session.commit()
    delete_organization(fresh(db, acme), "acme-inc", actor=staff)  # its slug here already
    db.session.commit()
    fake.start()

    push(db, organizations=[acme])

    assert calls(db) == [
        ("update_organization", "superseded"),
        ("update_membership", "superseded"),
        ("delete_organization", "delivered"),
    ]
    assert [m for m, _, _ in mutations(fake)] == ["DELETE"]
    superseded = db.session.scalars(sa.select(ClerkCall).where(ClerkCall.state == "superseded")).all()
    assert all("not sent: the organization is deleted" in c.last_error for c in superseded)


def test_deleting_an_organization_clerk_deleted_already_is_delivered(db, fake, acme, staff, acme_in_clerk):
    with fake._lock:
        fake.organizations.remove(fake.organization(acme_in_clerk["id"]))

    delete_organization(acme, "acme", actor=staff)
    db.session.commit()
    push(db, organizations=[acme])

    last = db.session.scalars(sa.select(ClerkCall)).one()
    assert (last.operation, last.state) == ("delete_organization", "delivered") and "404" in last.last_error


def test_only_a_permission_holder_deletes_an_organization_and_a_deleted_one_stays_deleted(
    db, fake, acme, staff, make_user
):
    admin = Actor.staff(make_user(email="admin@staff.example", role=UserRole.ADMIN))
    with pytest.raises(NotAllowed, match=r"organizations\.delete"):
        delete_organization(acme, "acme", actor=admin)
    db.session.rollback()
    assert fresh(db, acme).deleted_at is None and calls(db) == []

    delete_organization(fresh(db, acme), "acme", actor=staff)
    db.session.commit()
    with pytest.raises(OrganizationError, match="was deleted"):
        delete_organization(fresh(db, acme), "acme", actor=staff)


@pytest.mark.parametrize(
    ("typed", "status", "said"),
    [
        ("x" * 10_000, 422, "Type acme exactly to confirm; nothing was deleted."),  # by the field, not "expired"
        ("acme\u202e", 422, "Type acme exactly to confirm; nothing was deleted."),
        ("[[[{{{", 422, "Type acme exactly to confirm; nothing was deleted."),
        ("%00", 422, "Type acme exactly to confirm; nothing was deleted."),
        ("a\x00cme", 400, "The field “confirm” contains a NUL character."),
    ],
    ids=["10 KB", "bidi", "brackets", "percent", "NUL"],
)
def test_a_hostile_confirmation_is_refused_clearly_and_deletes_nothing(
    client, db, fake, acme, root, auth, typed, status, said
):
    auth.sign_in(root)
    token = csrf_token_from(client.get(f"/organizations/{acme.id}/delete").get_data(as_text=True))

    response = client.post(f"/organizations/{acme.id}/delete", data={"csrf_token": token, "confirm": typed})

    body = response.get_data(as_text=True)
    assert response.status_code == status and said in body, body[:300]
    assert fresh(db, acme).deleted_at is None and calls(db) == []


def test_a_plain_admin_is_refused_the_deletion_page_and_the_post(client, db, fake, acme, auth):
    admin = auth.sign_in(role=UserRole.ADMIN)
    assert f"/organizations/{acme.id}/delete" not in client.get(f"/organizations/{acme.id}").get_data(as_text=True)
    refused = client.get(f"/organizations/{acme.id}/delete")
    assert refused.status_code == 403 and "organizations.delete" in refused.get_data(as_text=True)
    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))
    forged = client.post(f"/organizations/{acme.id}/delete", data={"csrf_token": token, "confirm": "acme"})
    assert forged.status_code == 403
    assert fresh(db, acme).deleted_at is None and calls(db) == [] and admin.role == UserRole.ADMIN


def test_a_name_with_doubled_spaces_is_confirmed_as_typed(db, fake, staff, make_user):
    from tests.org_factories import make_organization

    nameless = make_organization(name="Two  Spaces", slug=None)
    delete_organization(nameless, "two spaces", actor=staff)
    db.session.commit()
    assert fresh(db, nameless).deleted_at is not None
