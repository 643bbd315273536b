"""The demo seeder behind `flask demo`: realistic, complete for small N, idempotent, one audit event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.demo import load
from app.demo.generate import MAX_DEMO_USERS, build_pools, make_chunk
from app.demo.load import seed_demo
from app.models import AuditEvent, User, UserData, UserRole, UserStatus


def seed(db, n_users: int, **options) -> dict[str, int]:
    counts = seed_demo(n_users, actor=Actor.cli(), **options)
    db.session.commit()
    return counts


def count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_twenty_users_show_every_role_and_status(db):
    counts = seed(db, 20)

    users = db.session.scalars(sa.select(User)).all()
    assert counts == {"users_created": 20, "users_existing": 0, "user_data_created": count(db, UserData)}
    assert len(users) == 20
    assert {u.role for u in users} == set(UserRole)
    assert {u.status for u in users} == set(UserStatus)
    assert all(u.clerk_id.startswith("user_demo_") and u.version == 1 for u in users)


def test_users_look_real(db):
    seed(db, 200)
    users = db.session.scalars(sa.select(User)).all()

    assert sum(u.role == UserRole.USER for u in users) > 150
    assert sum(u.status == UserStatus.ACTIVE for u in users) > 120
    assert sum(u.first_name is not None and u.last_name is not None for u in users) > 180
    assert sum(u.username is not None for u in users) > 50
    assert all(u.image_url.startswith("https://") for u in users if u.image_url)
    assert any(u.external_id for u in users)
    for column in ("public_metadata", "private_metadata", "unsafe_metadata"):
        values = [getattr(u, column) for u in users if getattr(u, column)]
        assert values and all(isinstance(json.loads(v), dict) for v in values)


def test_emails_are_unique_and_lower_case(db):
    seed(db, 200)
    emails = db.session.scalars(sa.select(User.email)).all()

    assert len(set(emails)) == len(emails) == 200
    assert all(e == e.lower() and e.count("@") == 1 for e in emails)


def test_sign_ins_follow_creation_and_invited_users_never_signed_in(db):
    before = datetime.now(UTC)
    seed(db, 200)
    after = datetime.now(UTC)
    users = db.session.scalars(sa.select(User)).all()

    signed_in = [u for u in users if u.last_sign_in_at is not None]
    assert len(signed_in) > 100
    for user in users:
        assert before - timedelta(days=3 * 366) <= user.created_at <= after
        assert user.created_at <= user.updated_at <= after
    for user in signed_in:
        assert user.created_at <= user.last_sign_in_at <= after
        assert user.last_sign_in_at >= before - timedelta(days=366)
    assert all(u.last_sign_in_at is None for u in users if u.status == UserStatus.INVITED)


def test_user_data_belongs_to_demo_users_with_unique_keys(db):
    seed(db, 200)
    user_ids = set(db.session.scalars(sa.select(User.id)))
    rows = db.session.execute(sa.select(UserData.user_id, UserData.key, UserData.value)).all()

    assert 40 <= len({r.user_id for r in rows}) <= 100  # about 30% of users have some
    assert {r.user_id for r in rows} <= user_ids
    assert len({(r.user_id, r.key) for r in rows}) == len(rows)
    assert all(r.value for r in rows)
    per_user = sa.select(sa.func.count()).select_from(UserData).group_by(UserData.user_id)
    assert set(db.session.scalars(per_user)) <= {1, 2, 3, 4}


def test_seeding_again_creates_nothing(db):
    first = seed(db, 60)
    second = seed(db, 60)

    assert first["users_created"] == 60
    assert second == {"users_created": 0, "users_existing": 60, "user_data_created": 0}
    assert count(db, User) == 60
    assert count(db, UserData) == first["user_data_created"]


def test_a_larger_n_adds_exactly_the_difference(db):
    seed(db, 60, chunk_size=25)
    data_before = count(db, UserData)
    counts = seed(db, 150, chunk_size=25)

    assert counts["users_created"] == 90
    assert counts["users_existing"] == 60
    assert count(db, User) == 150
    assert count(db, UserData) == data_before + counts["user_data_created"]
    assert seed(db, 100)["users_created"] == 0  # a smaller N removes nothing
    assert count(db, User) == 150


def test_the_same_users_whatever_n_and_chunking():
    pools, now_ts = build_pools(), 1.8e9
    whole = make_chunk(0, 250, pools, now_ts, set())
    pieces = [make_chunk(start, min(start + 7, 250), pools, now_ts, set()) for start in range(0, 250, 7)]

    assert [u for users, _ in pieces for u in users] == whole[0]
    assert [d for _, data in pieces for d in data] == whole[1]
    assert make_chunk(0, 30, pools, now_ts, set())[0] == whole[0][:30]


def test_existing_demo_users_and_other_users_are_left_alone(db, make_user):
    other = make_user(email="Someone@Elsewhere.example", clerk_id="user_demo_0000005x", first_name="Kept")
    seed(db, 20)
    # An admin edits a demo user and deletes one of its key-value rows; seeding again keeps that.
    edited = db.session.scalars(sa.select(User).where(User.clerk_id == "user_demo_0000003")).one()
    edited.first_name = "Edited"
    item = db.session.scalars(sa.select(UserData).order_by(UserData.id).limit(1)).one()
    item_user_id, item_key = item.user_id, item.key
    db.session.delete(item)
    db.session.commit()

    counts = seed(db, 20)

    assert counts["users_created"] == 0
    assert count(db, User) == 21
    db.session.expire_all()
    assert db.session.get(User, other.id).first_name == "Kept"
    assert db.session.get(User, other.id).email == "Someone@Elsewhere.example"
    assert db.session.get(User, edited.id).first_name == "Edited"
    assert (
        db.session.scalar(sa.select(UserData).where(UserData.user_id == item_user_id, UserData.key == item_key)) is None
    )


def test_one_audit_event_per_call(db):
    seed(db, 30)
    seed(db, 30)
    seed(db, 0)

    events = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.occurred_at)).all()
    assert [e.action for e in events] == ["demo.seed"] * 3
    assert all(e.source == "cli" and e.target_id is None for e in events)
    assert json.loads(events[0].changes)["users_created"] == [0, 30]
    assert json.loads(events[1].changes)["users_created"] == [0, 0]


def test_progress_is_reported_per_chunk(db):
    calls: list[tuple[int, int]] = []
    seed(db, 20, chunk_size=8, progress=lambda done, total: calls.append((done, total)))

    assert calls == [(8, 20), (16, 20), (20, 20)]


def test_nothing_is_committed_by_the_seeder(db):
    seed_demo(10, actor=Actor.cli())
    db.session.rollback()

    assert count(db, User) == 0
    assert count(db, AuditEvent) == 0


def test_refuses_a_negative_or_huge_n(db):
    with pytest.raises(ValueError):
        seed_demo(-1, actor=Actor.cli())
    with pytest.raises(ValueError):
        seed_demo(MAX_DEMO_USERS + 1, actor=Actor.cli())


@pytest.mark.postgresql
def test_a_big_seed_rebuilds_the_indexes_it_dropped(db, monkeypatch):
    indexes = sa.text("SELECT indexdef FROM pg_indexes WHERE tablename = 'users' ORDER BY indexname")
    before = db.session.scalars(indexes).all()
    monkeypatch.setattr(load, "REBUILD_INDEXES_FROM", 10)

    counts = seed(db, 40, chunk_size=15)

    assert counts["users_created"] == 40
    assert db.session.scalars(indexes).all() == before
    assert len(before) > 2  # the plain indexes really were dropped and built again


def test_every_command_group_is_registered_by_the_factory(app):
    assert set(app.cli.commands) == {
        "users",
        "demo",
        "clerk",
        "stats",
        "staff",
        "maintenance",
        "db",
    }  # db: Flask-Migrate


def test_making_records_needs_no_database():
    import subprocess
    import sys

    code = "import sys, app.demo.generate; sys.exit(any(m.startswith(('sqlalchemy', 'psycopg', 'app.extensions')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_demo_makes_example_staff_groups_and_places_every_admin_once(db, runner):
    from app.models import StaffGroup, StaffGroupMember
    from app.permissions import grants_of

    result = runner.invoke(args=["demo", "--users", "120"])
    assert result.exit_code == 0, result.output
    groups = {g.name: g for g in db.session.scalars(sa.select(StaffGroup))}
    assert set(groups) == {"Administrators", "Support", "Read-only", "Engineer"}
    assert groups["Support"].permission_names == [
        "users.invite",
        "users.sessions",
        "users.suspend",
        "users.unlock",
        "users.view",
    ]
    admins = db.session.scalars(sa.select(User).where(User.role == UserRole.ADMIN)).all()
    placed = db.session.execute(sa.select(StaffGroupMember.user_id, StaffGroupMember.group_id)).all()
    # Every admin is in exactly one group: a few in the examples, the rest in the built-in one.
    assert sorted(user_id for user_id, _ in placed) == sorted(admin.id for admin in admins)
    support = [user_id for user_id, group_id in placed if group_id == groups["Support"].id]
    assert 1 <= len(support) <= 3  # up to three of the active demo admins
    assert "users.export" not in grants_of(db.session.get(User, support[0]))

    again = runner.invoke(args=["demo", "--users", "120"])
    assert again.exit_code == 0, again.output
    assert "Demo staff groups: 0 created; 0 admins placed" in again.output
    assert db.session.execute(sa.select(sa.func.count()).select_from(StaffGroupMember)).scalar() == len(placed)
