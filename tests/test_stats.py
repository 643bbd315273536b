"""The overview's counters stay equal to a recount, whatever path changes users, on both databases."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.sync import clerk_user_from_dict, delete_clerk_user, record_sign_in, upsert_clerk_user
from app.models import User, UserCount, UserStatus
from app.records import counts as user_counts
from app.users.services import DuplicateKey, add_user_data, invite_user, revoke_invitation, set_status
from tests.clerk_payloads import (
    BASE_MS,
    SECRET,
    clerk_user,
    session_created,
    sign,
    user_created,
    user_deleted,
    user_updated,
)
from tests.conftest import HX, csrf_token_from

CLI = Actor.cli()


def stored(db) -> Counter:
    db.session.rollback()
    return user_counts.read_counts()


def assert_exact(db, context: str = "") -> None:
    db.session.rollback()  # a fresh transaction: see what the others committed
    user_counts.snapshot_isolation()
    found = user_counts.differences(user_counts.read_counts(), user_counts.recount())
    db.session.rollback()
    assert found == {}, f"counters differ from a recount {context}: {found}"


def at(days_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days_ago)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


# --- The buckets of one user -------------------------------------------------------------------


def test_a_live_user_counts_by_status_role_and_days_a_deleted_one_once():
    created, signed_in = datetime(2026, 3, 1, 23, 30, tzinfo=UTC), datetime(2026, 3, 2, 0, 15, tzinfo=UTC)
    live = user_counts.Counted("active", "admin", created, signed_in, None)
    assert user_counts.buckets(live) == Counter(
        {("status", "active"): 1, ("role", "admin"): 1, ("signup", "2026-03-01"): 1, ("signin", "2026-03-02"): 1}
    )
    never = user_counts.Counted("invited", "user", created, None, None)
    assert ("signin", "2026-03-02") not in user_counts.buckets(never)
    gone = user_counts.Counted("active", "admin", created, signed_in, created)
    assert user_counts.buckets(gone) == Counter({("deleted", "all"): 1})


def test_days_are_utc_dates():
    from zoneinfo import ZoneInfo

    late_in_new_york = datetime(2026, 3, 1, 21, 0, tzinfo=ZoneInfo("America/New_York"))
    assert user_counts.day(late_in_new_york) == "2026-03-02"


# --- Deltas ride the transaction ------------------------------------------------------------------


def test_an_invite_adds_its_buckets_at_commit_and_a_rollback_adds_nothing(app, db):
    invite_user("one@example.com", actor=CLI)
    today = datetime.now(UTC).date().isoformat()
    expected = Counter({("status", "invited"): 1, ("role", "user"): 1, ("signup", today): 1})
    assert user_counts.pending() == expected
    db.session.rollback()
    assert user_counts.pending() == Counter() and stored(db) == Counter()

    invite_user("two@example.com", actor=CLI)
    db.session.commit()
    assert user_counts.pending() == Counter() and stored(db) == expected


def test_a_change_moves_the_user_between_buckets(app, db):
    user = invite_user("mover@example.com", actor=CLI)
    db.session.commit()
    record_sign_in(user.clerk_id, at(3), actor=CLI)  # an invited row with a placeholder id: a sign-in still counts
    revoke_invitation(user, actor=CLI)  # an invited user leaves that status only this way (or by Clerk's claim)
    set_status(user, UserStatus.SUSPENDED, actor=CLI)
    db.session.commit()
    counts = stored(db)
    assert counts[("status", "suspended")] == 1 and counts[("status", "invited")] == 0
    assert counts[("signin", at(3).date().isoformat())] == 1
    assert_exact(db)


def test_a_rolled_back_savepoint_takes_only_its_own_deltas(app, db):
    user = invite_user("saver@example.com", actor=CLI)
    add_user_data(user, "plan", "pro", actor=CLI)
    revoke_invitation(user, actor=CLI)
    db.session.commit()

    set_status(user, UserStatus.SUSPENDED, actor=CLI)  # outside the savepoint: kept
    with pytest.raises(DuplicateKey):
        add_user_data(user, "plan", "free", actor=CLI)  # its savepoint rolls back
    try:
        with db.session.begin_nested():
            set_status(user, UserStatus.ACTIVE, actor=CLI)
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    with db.session.begin_nested():  # a savepoint that is released keeps its deltas
        record_sign_in(user.clerk_id, at(1), actor=CLI)
    db.session.expire_all()
    db.session.commit()
    assert_exact(db)
    counts = stored(db)
    assert counts[("status", "suspended")] == 1 and counts[("status", "active")] == 0
    assert counts[("signin", at(1).date().isoformat())] == 1


def test_clerk_paths_count_creations_claims_tombstones_and_deletions(app, db):
    invited = invite_user("claim@example.com", actor=CLI)
    db.session.commit()
    upsert_clerk_user(clerk_user_from_dict(clerk_user(email="claim@example.com", last_sign_in_at=ms(at(2)))), actor=CLI)
    created = upsert_clerk_user(clerk_user_from_dict(clerk_user(email="new@example.com")), actor=CLI).user
    delete_clerk_user("user_never_seen", actor=CLI)  # a tombstone
    db.session.commit()
    db.session.refresh(invited)
    assert invited.status == UserStatus.ACTIVE
    assert_exact(db)
    delete_clerk_user(created.clerk_id, actor=CLI)
    delete_clerk_user(created.clerk_id, actor=CLI)  # again: nothing more
    db.session.commit()
    assert_exact(db)
    counts = stored(db)
    assert counts[("deleted", "all")] == 2 and counts[("status", "active")] == 1


# --- Rebuild and the command line ------------------------------------------------------------------


def test_rebuild_corrects_drift_and_the_cli_reports_it(app, db, runner, make_user):
    make_user(email="bypass@example.com")  # the fixture writes the row directly, around the services
    db.session.add(UserCount(dimension="status", bucket="suspended", n=7))
    db.session.commit()

    result = runner.invoke(args=["stats", "check"])
    assert result.exit_code == 1 and "status:suspended  stored 7, actual 0" in result.output

    result = runner.invoke(args=["stats", "rebuild"])
    assert result.exit_code == 0, result.output
    assert "Corrected" in result.output and "status:active  stored 0, actual 1" in result.output
    assert_exact(db)
    assert runner.invoke(args=["stats", "check"]).output.startswith("The counters equal a recount")
    assert "were exact" in runner.invoke(args=["stats", "rebuild"]).output


def test_the_demo_seeder_leaves_exact_counters(app, db, runner):
    result = runner.invoke(args=["demo", "--users", "40"])
    assert result.exit_code == 0, result.output
    assert_exact(db)
    assert sum(n for (d, _b), n in stored(db).items() if d == "status") == 40


def test_the_migration_fills_the_counters_from_existing_rows(database_url, tmp_path):
    """Migrate a fresh database to 0005, add users, then upgrade: the counters match."""
    import os

    from flask_migrate import downgrade, upgrade

    from app.extensions import db as _db
    from tests.conftest import TEST_SECRET, _scratch_postgres_database, make_app

    if os.environ.get("TEST_DATABASE_URL"):
        url, admin, name = _scratch_postgres_database(os.environ["TEST_DATABASE_URL"])
    else:
        url, admin, name = f"sqlite:///{tmp_path / 'migrate.sqlite3'}", None, None
    try:
        app = make_app(url, SECRET_KEY=TEST_SECRET)
        with app.app_context():
            upgrade(revision="0005_short_search_indexes")
            now = datetime(2026, 5, 1, 12, tzinfo=UTC)
            rows = [
                {
                    "id": str(uuid.uuid4()),
                    "email": f"m{i}@example.com",
                    "clerk_id": f"user_m{i}",
                    "role": ("user", "admin")[i % 2],
                    "status": ("active", "suspended", "invited")[i % 3],
                    "created_at": (now - timedelta(days=i % 4)).replace(tzinfo=None),
                    "updated_at": now.replace(tzinfo=None),
                    "last_sign_in_at": None if i % 5 == 0 else (now - timedelta(days=i % 3)).replace(tzinfo=None),
                    "deleted_at": now.replace(tzinfo=None) if i % 7 == 0 else None,
                }
                for i in range(30)
            ]
            users = sa.table("users", *(sa.column(k) for k in rows[0]))
            with _db.engine.begin() as connection:
                connection.execute(users.insert(), rows)
            upgrade()
            assert user_counts.differences(user_counts.read_counts(), user_counts.recount()) == {}
            assert user_counts.read_counts()[("deleted", "all")] == 5
            _db.session.rollback()  # its read of user_counts would hold off the DROP TABLE
            downgrade(revision="0005_short_search_indexes")
            assert not sa.inspect(_db.engine).has_table("user_counts")
            _db.session.remove()
            _db.engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


# --- Every path at random ----------------------------------------------------------------------------


class Mix:
    """Random changes through the webhook, the dashboard (forms, status, bulk) and the command line."""

    def __init__(self, app, db, client, runner, rng: random.Random):
        self.app, self.db, self.client, self.runner, self.rng = app, db, client, runner, rng
        self.clerk_users: list[dict] = []  # Clerk's view of the users it sent us
        self.n = 0
        app.config["CLERK_WEBHOOK_SIGNING_SECRET"] = SECRET
        result = runner.invoke(args=["users", "create-admin", "boss@example.com"])
        assert result.exit_code == 0, result.output
        self.db.session.rollback()
        boss = db.session.scalars(sa.select(User).where(User.email == "boss@example.com")).one()
        from tests.conftest import AuthActions

        AuthActions(app, client, None).sign_in(boss)
        self.token = csrf_token_from(client.get("/users/new").get_data(as_text=True))

    def live_users(self) -> list[User]:
        self.db.session.rollback()
        return list(
            self.db.session.scalars(
                sa.select(User).where(User.deleted_at.is_(None), User.email != "boss@example.com").order_by(User.id)
            )
        )

    def next_email(self) -> str:
        self.n += 1
        return f"mix{self.n}@example.com"

    def post_webhook(self, payload) -> None:
        response = sign(payload).post(self.client)
        assert response.status_code == 200, response.get_data(as_text=True)

    # Each operation changes users one way.

    def clerk_creates(self):
        invited = [u for u in self.live_users() if u.status == UserStatus.INVITED]
        email = self.rng.choice(invited).email if invited and self.rng.random() < 0.5 else self.next_email()
        signed_in = ms(at(self.rng.uniform(0, 100))) if self.rng.random() < 0.7 else None
        data = clerk_user(email=email, last_sign_in_at=signed_in, updated_at=BASE_MS + self.n)
        self.clerk_users.append(data)
        self.post_webhook(user_created(data))

    def clerk_updates(self):
        if not self.clerk_users:
            return self.clerk_creates()
        data = self.rng.choice(self.clerk_users)
        changed = user_updated(
            data, first_name=f"Name{self.rng.randrange(99)}", last_sign_in_at=ms(at(self.rng.uniform(0, 100)))
        )
        data.update(changed["data"])
        self.post_webhook(changed)

    def clerk_signs_in(self):
        if not self.clerk_users:
            return self.clerk_creates()
        data = self.rng.choice(self.clerk_users)
        self.post_webhook(session_created(data["id"], at=ms(at(self.rng.uniform(0, 100)))))

    def clerk_deletes(self):
        if self.clerk_users and self.rng.random() < 0.8:
            data = self.clerk_users.pop(self.rng.randrange(len(self.clerk_users)))
            self.post_webhook(user_deleted(data["id"]))
        else:
            self.post_webhook(user_deleted(f"user_unseen{self.rng.randrange(10**9)}"))  # a tombstone

    def dashboard_invites(self):
        role = self.rng.choice(["user", "admin"])
        response = self.client.post(
            "/users",
            data={
                "csrf_token": self.token,
                "email": self.next_email(),
                "first_name": "In",
                "last_name": "Vited",
                "role": role,
            },
        )
        assert response.status_code == 302, response.get_data(as_text=True)

    def dashboard_edits(self):
        users = self.live_users()
        if not users:
            return self.dashboard_invites()
        user = self.rng.choice(users)
        form = {
            "csrf_token": self.token,
            "email": user.email,
            "first_name": user.first_name or "",
            "last_name": user.last_name or "",
            "username": user.username or "",
            "role": self.rng.choice(["user", "admin", "super_admin"]),
            "status": self.rng.choice([s.value for s in UserStatus]),
            "image_url": user.image_url or "",
            "external_id": user.external_id or "",
            "public_metadata": user.public_metadata or "",
            "private_metadata": user.private_metadata or "",
            "unsafe_metadata": user.unsafe_metadata or "",
            "version": str(user.version),
        }
        response = self.client.post(f"/users/{user.id}/edit", data=form)
        assert response.status_code in (302, 200, 409, 422), response.status_code

    def dashboard_sets_status(self):
        users = self.live_users()
        if not users:
            return self.dashboard_invites()
        user = self.rng.choice(users)
        status = self.rng.choice(["suspended", "active", "inactive"])
        response = self.client.post(f"/users/{user.id}/status", data={"csrf_token": self.token, "status": status})
        assert response.status_code in (302, 403, 409), response.status_code

    def bulk_action(self):
        users = self.live_users()
        chosen = self.rng.sample(users, min(len(users), self.rng.randint(1, 6))) if users else []
        response = self.client.post(
            "/users/bulk",
            headers=HX,
            data={
                "csrf_token": self.token,
                "action": self.rng.choice(["suspended", "active", "inactive"]),
                "confirm": "y",
                "ids": [u.id for u in chosen],
            },
        )
        assert response.status_code == 200

    def cli_create_admin(self):
        users = self.live_users()
        email = self.rng.choice(users).email if users and self.rng.random() < 0.5 else self.next_email()
        if not email:
            email = self.next_email()
        role = self.rng.choice(["admin", "super_admin"])
        result = self.runner.invoke(args=["users", "create-admin", email, "--role", role])
        assert result.exit_code in (0, 1), result.output

    def run(self, steps: int) -> None:
        operations = [
            self.clerk_creates,
            self.clerk_updates,
            self.clerk_signs_in,
            self.clerk_deletes,
            self.dashboard_invites,
            self.dashboard_edits,
            self.dashboard_sets_status,
            self.bulk_action,
            self.cli_create_admin,
        ]
        for step in range(steps):
            operation = self.rng.choice(operations)
            operation()
            assert_exact(self.db, f"after step {step}, {operation.__name__}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_random_mix_of_changes_through_every_path_keeps_the_counters_exact(app, db, client, runner, seed):
    mix = Mix(app, db, client, runner, random.Random(seed))
    assert_exact(db, "after the first admin")
    mix.run(45)
    counts = stored(db)
    assert sum(n for (d, _b), n in counts.items() if d == "status") == len(mix.live_users()) + 1
    # And the demo seeder, which writes with COPY, recounts within its own transaction.
    assert runner.invoke(args=["demo", "--users", "15"]).exit_code == 0
    assert_exact(db, "after the demo seed")
    mix.run(10)
