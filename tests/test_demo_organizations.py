"""`flask demo` seeds organizations too: members and invitations, exact counters, idempotent."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.demo import load
from app.demo.generate import build_pools
from app.demo.load import seed_demo
from app.demo.organizations import (
    ADMIN,
    MEMBER,
    Member,
    demo_organization_count,
    first_need,
    large_specs,
    make_organizations,
    regular_organization_count,
    regular_spec,
)
from app.models import AuditEvent, Membership, Organization, OrganizationInvitation, User
from app.records import counts


def seed(db, n_users: int, **options) -> dict[str, int]:
    found = seed_demo(n_users, actor=Actor.cli(), organizations=True, **options)
    db.session.commit()
    return found


def count(db, model, *where) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def assert_exact(db) -> None:
    db.session.rollback()
    assert counts.differences(counts.read_counts(), counts.recount()) == {}
    live = (
        sa.select(Membership.organization_id, sa.func.count())
        .where(Membership.deleted_at.is_(None))
        .group_by(Membership.organization_id)
    )
    per_organization = dict(db.session.execute(live).all())
    stored = dict(db.session.execute(sa.select(Organization.id, Organization.members_count)).all())
    assert stored == {org_id: per_organization.get(org_id, 0) for org_id in stored}
    # One live membership per organization and user.
    pairs = db.session.execute(
        sa.select(Membership.organization_id, Membership.clerk_user_id).where(Membership.deleted_at.is_(None))
    ).all()
    assert len(pairs) == len(set(pairs))


def test_how_many_organizations_for_how_many_users():
    assert regular_organization_count(200) == 40
    assert demo_organization_count(200) == 42  # and two large ones, of 40 and 25 members
    assert 100_000 <= demo_organization_count(1_000_000) <= 100_100
    assert large_specs(1_000_000)[0].clerk_id == "org_demo_big_00"
    assert [s.clerk_id for s in large_specs(200)] == ["org_demo_big_09", "org_demo_big_10"]
    for index in (0, 1, 59, 60, 61, 1000, 99_999):
        need = first_need(index)
        assert regular_organization_count(need) > index >= regular_organization_count(need - 1)


def test_the_default_demo_has_organizations_members_and_invitations(db):
    found = seed(db, 200)

    organizations = db.session.scalars(sa.select(Organization)).all()
    memberships = db.session.scalars(sa.select(Membership)).all()
    assert found["organizations_created"] == len(organizations) == 42
    assert found["memberships_created"] == len(memberships)
    assert found["invitations_created"] == count(db, OrganizationInvitation) > 0
    assert 300 < len(memberships) < 1500
    large = {o.name: o.members_count for o in organizations if o.clerk_id.startswith("org_demo_big_")}
    assert large == {"Dunder Mifflin": 40, "Soylent": 25}  # exactly, those who left on top
    assert all(o.clerk_id.startswith("org_demo_") and o.slug and o.created_by for o in organizations)
    assert len({o.slug for o in organizations}) == len(organizations)
    assert all(set(o.slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") for o in organizations)
    assert_exact(db)
    stored = counts.read_counts([counts.ORGANIZATIONS, counts.MEMBERSHIPS])
    assert stored[counts.MEMBERSHIPS, counts.LIVE] == sum(o.members_count for o in organizations)


def test_memberships_look_like_clerks(db):
    seed(db, 200)
    users = {u.id: u for u in db.session.scalars(sa.select(User))}
    memberships = db.session.scalars(sa.select(Membership)).all()

    for membership in memberships:
        user = users[membership.user_id]
        assert membership.clerk_id.startswith("orgmem_")
        assert membership.clerk_user_id == user.clerk_id
        assert membership.identifier == user.email
        assert membership.role in {ADMIN, MEMBER}
        assert json.loads(membership.permissions)
        assert membership.created_at >= user.created_at
        assert membership.created_at >= membership.organization.created_at
    live = [m for m in memberships if m.deleted_at is None]
    admins = Counter(m.organization_id for m in live if m.role == ADMIN)
    members = Counter(m.organization_id for m in live)
    assert set(admins.values()) <= {1, 2}
    assert set(admins) == set(members)  # every organization with members has an admin
    assert sum(m.role == MEMBER for m in live) > 3 * sum(m.role == ADMIN for m in live)
    # The creator is an admin member of a live organization.
    for organization in db.session.scalars(sa.select(Organization).where(Organization.deleted_at.is_(None))):
        creator = [
            m for m in live if m.organization_id == organization.id and m.clerk_user_id == organization.created_by
        ]
        assert [m.role for m in creator] == [ADMIN]


def test_invitations_are_mostly_pending_and_for_people_not_yet_members(db):
    seed(db, 200)
    invitations = db.session.scalars(sa.select(OrganizationInvitation)).all()
    emails = set(db.session.scalars(sa.select(User.email)))

    assert sum(i.effective_status == "pending" for i in invitations) > len(invitations) / 2
    assert all(i.clerk_id.startswith("orginv_") and i.email == i.email.lower() for i in invitations)
    assert not {i.email for i in invitations} & emails
    assert all(i.expires_at > i.created_at for i in invitations)
    per_organization = Counter((i.organization_id, i.email) for i in invitations)
    assert set(per_organization.values()) == {1}


def test_seeding_again_creates_nothing(db):
    first = seed(db, 200)
    stored = counts.read_counts()
    second = seed(db, 200)

    assert first["organizations_created"] == 42
    assert second == {
        "users_created": 0,
        "users_existing": 200,
        "user_data_created": 0,
        "organizations_created": 0,
        "memberships_created": 0,
        "invitations_created": 0,
    }
    assert counts.read_counts() == stored
    assert_exact(db)


def test_a_larger_n_adds_organizations_and_leaves_the_others_alone(db):
    seed(db, 200, chunk_size=70)
    # An admin removes a member and renames an organization; seeding again keeps both.
    membership = db.session.scalars(
        sa.select(Membership).where(Membership.deleted_at.is_(None), Membership.role == MEMBER).limit(1)
    ).one()
    membership.deleted_at = membership.created_at
    membership.organization.members_count -= 1
    membership.organization.name = "Renamed"
    counts.rebuild()
    db.session.commit()
    before = dict(db.session.execute(sa.select(Organization.clerk_id, Organization.members_count)).all())

    found = seed(db, 1200)

    assert found["organizations_created"] == demo_organization_count(1200) - 42
    after = dict(db.session.execute(sa.select(Organization.clerk_id, Organization.members_count)).all())
    assert {k: after[k] for k in before} == before
    db.session.expire_all()
    assert db.session.get(Membership, membership.id).deleted_at is not None
    assert db.session.get(Organization, membership.organization_id).name == "Renamed"
    assert_exact(db)


def test_deleted_organizations_and_members_who_left_are_kept_as_ended(db):
    seed(db, 3000)
    deleted = db.session.scalars(sa.select(Organization).where(Organization.deleted_at.is_not(None))).all()

    assert deleted  # about one in a hundred
    for organization in deleted:
        assert organization.members_count == 0
        ended = count(db, Membership, Membership.organization_id == organization.id)
        assert ended == count(
            db, Membership, Membership.organization_id == organization.id, Membership.deleted_at.is_not(None)
        )
        assert count(db, OrganizationInvitation, OrganizationInvitation.organization_id == organization.id) == 0
    assert count(db, Membership, Membership.deleted_at.is_not(None)) > sum(
        count(db, Membership, Membership.organization_id == o.id) for o in deleted
    )  # members who left live organizations too
    stored = counts.read_counts([counts.ORGANIZATIONS])
    assert stored[counts.ORGANIZATIONS, counts.DELETED] == len(deleted)
    assert_exact(db)


def test_deleted_users_are_not_made_members(db):
    seed_demo(200, actor=Actor.cli())  # users only
    gone = db.session.scalars(sa.select(User).order_by(User.clerk_id).limit(50)).all()
    for user in gone:
        user.deleted_at = user.created_at
    counts.rebuild()
    db.session.commit()

    seed(db, 200)

    ids = {u.id for u in gone}
    assert not any(m.user_id in ids for m in db.session.scalars(sa.select(Membership)))
    assert_exact(db)


def test_the_same_organizations_whatever_the_chunks():
    pools, now_ts = build_pools(), 1.8e9
    members = {
        i: Member(f"id-{i}", f"user_demo_{i:07d}", f"u{i}@example.com", "Ada", "Lovelace", 1.7e9 + i)
        for i in range(2000)
    }
    specs = [regular_spec(i) for i in range(120)]
    whole = make_organizations(specs, members, pools, now_ts)
    pieces = [make_organizations(specs[i : i + 7], members, pools, now_ts) for i in range(0, 120, 7)]

    for part in range(3):
        assert [row for piece in pieces for row in piece[part]] == whole[part]
    assert make_organizations(specs[:5], members, pools, now_ts)[0] == whole[0][:5]


def test_one_audit_event_names_what_was_made(db):
    seed(db, 100)
    events = db.session.scalars(sa.select(AuditEvent)).all()

    assert [e.action for e in events] == ["demo.seed"]
    changes = json.loads(events[0].changes)
    assert changes["organizations_created"] == [0, demo_organization_count(100)]
    assert changes["memberships_created"][1] == count(db, Membership)


def test_the_command_seeds_organizations_and_says_so(app, db, runner):
    result = runner.invoke(args=["demo", "--users", "60"])

    assert result.exit_code == 0, result.output
    n = demo_organization_count(60)
    assert f"Demo organizations: {n} created" in result.output
    assert count(db, Organization) == n
    assert_exact(db)


def test_organization_progress_is_reported_per_chunk(db, monkeypatch):
    monkeypatch.setattr(load, "ORGANIZATION_CHUNK_SIZE", 15)
    calls: list[tuple[int, int]] = []
    seed_demo(200, actor=Actor.cli(), organizations=True, organization_progress=lambda *a: calls.append(a))
    db.session.rollback()

    # The large ones first, then the regular ones in chunks.
    assert calls == [(2, 42), (17, 42), (32, 42), (42, 42)]


@pytest.mark.postgresql
def test_a_big_seed_rebuilds_the_organization_indexes_it_dropped(db, monkeypatch):
    indexes = sa.text(
        "SELECT indexdef FROM pg_indexes WHERE tablename IN ('organizations', 'memberships',"
        " 'organization_invitations') ORDER BY indexname"
    )
    before = db.session.scalars(indexes).all()
    monkeypatch.setattr(load, "REBUILD_ORGANIZATION_INDEXES_FROM", 10)

    found = seed(db, 300)

    assert found["organizations_created"] == demo_organization_count(300)
    assert db.session.scalars(indexes).all() == before
    assert any("gin_trgm_ops" in d for d in before)
    assert_exact(db)
