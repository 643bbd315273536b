"""`flask clerk sync` brings organizations, their memberships and pending invitations after users,
against the fake Clerk over real HTTP, driven by the real SDK: each stage paged and resumable,
idempotent, and Clerk's 429 waited out."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from app.clerk import backfill
from app.models import AuditEvent, Membership, Organization, OrganizationInvitation, User
from tests.clerk_payloads import BASE_MS
from tests.fake_clerk import SECRET_KEY, FakeClerk, bapi_user

N_ORGANIZATIONS = 7  # pages of 3: 3 + 3 + 1


@pytest.fixture
def fake(app):
    """Clerk with 5 users and 7 organizations: the first has 7 members (three pages of 3), the others
    one or none; one member is no user of this instance's list (they arrive later); 3 invitations,
    2 of them pending."""
    users = [bapi_user(email=f"member{i}@example.com", created_at=BASE_MS + i) for i in range(5)]
    with FakeClerk(users) as server:
        organizations = [
            server.add_organization(f"Org {i}", f"org-{i}", created_at=BASE_MS + 1_000 * i, public_metadata={"n": i})
            for i in range(N_ORGANIZATIONS)
        ]
        big = organizations[0]["id"]
        for i, user in enumerate(users):
            server.add_membership(big, user["id"], role="org:admin" if i == 0 else "org:member", created_at=BASE_MS + i)
        server.add_membership(big, "user_elsewhere1", public_user_data={"identifier": "e1@example.com"})
        server.add_membership(big, "user_elsewhere2", public_user_data={"identifier": "e2@example.com"})
        for organization in organizations[1:4]:
            server.add_membership(organization["id"], users[1]["id"])
        server.add_organization_invitation(organizations[1]["id"], "invited1@example.com", role="org:admin")
        server.add_organization_invitation(organizations[2]["id"], "invited2@example.com")
        server.add_organization_invitation(organizations[2]["id"], "done@example.com", status="accepted")
        app.config.update(CLERK_SECRET_KEY=SECRET_KEY, CLERK_API_URL=server.url, CLERK_API_RETRY_MAX_MS=0)
        yield server


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """Retry-After waits, recorded instead of slept."""
    seen: list[float] = []
    monkeypatch.setattr(backfill, "pause", seen.append)
    return seen


def sync(runner, *args: str):
    return runner.invoke(args=["clerk", "sync", "--page-size", "3", *args])


def count(db, model, *where) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def requested(fake: FakeClerk, prefix: str) -> list[str]:
    return [r for r in fake.requests if r.startswith(prefix)]


def test_sync_brings_organizations_memberships_and_pending_invitations_after_users(runner, db, fake):
    result = sync(runner)

    assert result.exit_code == 0, result.output
    for stage in ("users", "organizations", "memberships", "invitations"):
        assert f"Syncing {stage} from Clerk" in result.output
    assert "organizations: 7 created, 0 updated, 0 unchanged" in result.output
    assert "memberships: 10 created, 0 updated, 0 unchanged" in result.output
    assert "invitations: 2 created, 0 updated, 0 unchanged" in result.output
    assert count(db, User) == 5 and count(db, Organization) == N_ORGANIZATIONS
    # Oldest first, three at a time; the memberships of every organization in one list likewise
    # (users.get_instance_organization_memberships), never one request per organization.
    pages = requested(fake, "GET /v1/organizations?order_by=%2Bcreated_at")
    assert [p.split("offset=")[1] for p in pages] == ["0", "3", "6"]
    member_pages = requested(fake, "GET /v1/organization_memberships?order_by=%2Bcreated_at")
    assert [p.split("offset=")[1] for p in member_pages] == ["0", "3", "6", "9"]
    assert requested(fake, "GET /v1/organizations/") == []
    big = fake.organizations[0]

    organization = db.session.scalars(sa.select(Organization).where(Organization.clerk_id == big["id"])).one()
    assert (organization.name, organization.slug, organization.members_count) == ("Org 0", "org-0", 7)
    assert json.loads(organization.public_metadata) == {"n": 0}
    members = db.session.scalars(
        sa.select(Membership).where(Membership.organization_id == organization.id).order_by(Membership.identifier)
    ).all()
    assert len(members) == 7 and all(m.deleted_at is None for m in members)
    linked = {m.identifier: m.user is not None for m in members}
    assert linked["member0@example.com"] and not linked["e1@example.com"]  # that user is not here (yet)
    assert {m.identifier: m.role for m in members}["member0@example.com"] == "org:admin"
    pending = db.session.scalars(sa.select(OrganizationInvitation).order_by(OrganizationInvitation.email)).all()
    assert [(i.email, i.role, i.status) for i in pending] == [
        ("invited1@example.com", "org:admin", "pending"),
        ("invited2@example.com", "org:member", "pending"),
    ]
    sources = set(db.session.scalars(sa.select(AuditEvent.source).where(AuditEvent.organization_id.is_not(None))))
    assert sources == {"cli"}


def test_a_second_sync_changes_nothing_and_then_only_what_changed(runner, db, fake):
    assert sync(runner).exit_code == 0
    audits = count(db, AuditEvent)

    again = sync(runner)

    assert again.exit_code == 0, again.output
    assert "organizations: 0 created, 0 updated, 7 unchanged" in again.output
    assert "memberships: 0 created, 0 updated, 10 unchanged" in again.output
    assert "invitations: 0 created, 0 updated, 2 unchanged" in again.output
    assert count(db, AuditEvent) == audits and count(db, Membership) == 10

    first = fake.organizations[0]
    with fake._lock:
        first.update(name="Renamed", updated_at=first["updated_at"] + 1)
        stored = fake.memberships[1]
        stored.update(role="org:admin", updated_at=stored["updated_at"] + 1)
    third = sync(runner)
    assert "organizations: 0 created, 1 updated, 6 unchanged" in third.output
    assert "memberships: 0 created, 1 updated, 9 unchanged" in third.output
    assert count(db, Organization, Organization.name == "Renamed") == 1
    assert count(db, Membership, Membership.clerk_id == stored["id"], Membership.role == "org:admin") == 1


def test_a_429_is_waited_out_for_its_retry_after(runner, db, fake, waits):
    fake.fail_calls = {
        ("GET /v1/organizations?order_by=%2Bcreated_at", 2): (429, {"Retry-After": "2"}),
        ("GET /v1/organization_memberships?order_by", 1): (429, {"Retry-After": "1"}),
        ("GET /v1/organization_invitations?order_by", 1): (429, {}),
    }

    result = sync(runner)

    assert result.exit_code == 0, result.output
    assert waits == [2.0, 1.0, 10.0]  # no Retry-After: the outbox's first backoff
    assert "Clerk asks us to slow down (429): waiting 2 s." in result.output
    assert count(db, Organization) == N_ORGANIZATIONS and count(db, Membership) == 10
    assert count(db, OrganizationInvitation) == 2


def test_clerk_limiting_without_end_stops_the_run_with_a_place_to_resume(runner, db, fake, waits):
    fake.fail_calls = {
        ("GET /v1/organizations?order_by=%2Bcreated_at", n): (429, {"Retry-After": "1"}) for n in range(2, 2 + 30)
    }

    result = sync(runner)

    assert result.exit_code == 1
    assert len(waits) == backfill.MAX_RATE_LIMIT_WAITS
    assert "sync stopped at organization 3 (SDKError" in result.output
    assert "Organizations before it are saved (3 created, 0 updated, 0 unchanged)" in result.output
    assert "resume with: flask clerk sync --from organizations --offset 3" in result.output
    assert count(db, Organization) == 3 and count(db, User) == 5


def test_an_interrupted_memberships_stage_resumes_from_its_offset(runner, db, fake):
    fake.fail_calls = {("GET /v1/organization_memberships?order_by", 3): (500, {})}

    failed = sync(runner)

    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert "sync stopped at membership 6" in failed.output
    assert "Memberships before it are saved (6 created" in failed.output
    assert "resume with: flask clerk sync --from memberships --offset 6" in failed.output
    assert count(db, Membership) == 6 and count(db, OrganizationInvitation) == 0
    before = len(fake.requests)

    resumed = sync(runner, "--from", "memberships", "--offset", "6")

    assert resumed.exit_code == 0, resumed.output
    assert "memberships: 4 created, 0 updated, 0 unchanged" in resumed.output
    assert "invitations: 2 created" in resumed.output and "Syncing users" not in resumed.output
    later = fake.requests[before:]
    assert not any(r.startswith(("GET /v1/users", "GET /v1/organizations")) for r in later)
    pages = [r for r in later if r.startswith("GET /v1/organization_memberships?order_by")]
    assert [p.split("offset=")[1] for p in pages] == ["6", "9"]
    assert count(db, Membership) == 10


def test_an_organization_deleted_in_clerk_meanwhile_ends_nothing_here(runner, db, fake):
    assert sync(runner).exit_code == 0
    gone = fake.organizations[3]
    with fake._lock:
        fake.organizations.remove(gone)
        fake.deleted_organizations.append(gone)
        fake.memberships[:] = [m for m in fake.memberships if m["organization_id"] != gone["id"]]

    result = sync(runner, "--from", "memberships")

    assert result.exit_code == 0, result.output
    # Its deletion is the webhook's to apply (organization.deleted): the sync ends nothing.
    assert count(db, Membership, Membership.deleted_at.is_(None)) == 10


def test_a_membership_waiting_for_its_user_is_claimed_when_the_user_arrives(runner, db, fake):
    assert sync(runner).exit_code == 0
    with fake._lock:
        fake.users.append(bapi_user(id="user_elsewhere1", email="e1@example.com", created_at=BASE_MS + 100))

    assert sync(runner).exit_code == 0

    membership = db.session.scalars(sa.select(Membership).where(Membership.clerk_user_id == "user_elsewhere1")).one()
    assert membership.user is not None and membership.user.email == "e1@example.com"
    assert count(db, Membership) == 10
