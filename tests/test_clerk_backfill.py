"""`flask clerk sync` against a fake Clerk over real HTTP, driven by the real SDK."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from app.clerk.client import api_server_url, bounded_retry, clerk_client
from app.models import AuditEvent, User, UserData, UserRole, UserStatus, utcnow
from tests.clerk_payloads import BASE_MS
from tests.fake_clerk import SECRET_KEY, FakeClerk, bapi_user

N_USERS = 1_234  # three pages of 500


@pytest.fixture(scope="module")
def clerk_users() -> list[dict]:
    return [
        bapi_user(
            email=f"member{i:04d}@example.com",
            first_name=f"Member{i}",
            created_at=BASE_MS + i,
            public_metadata={"n": i},
        )
        for i in range(N_USERS)
    ]


@pytest.fixture
def fake(app):
    """A small Clerk (120 users, pages of 50 in the tests that use it) for the rules; big_fake has the pages."""
    users = [
        bapi_user(email=f"member{i:04d}@example.com", first_name=f"Member{i}", created_at=BASE_MS + i)
        for i in range(120)
    ]
    with FakeClerk(users) as server:
        app.config.update(CLERK_SECRET_KEY=SECRET_KEY, CLERK_API_URL=server.url, CLERK_API_RETRY_MAX_MS=0)
        yield server


@pytest.fixture
def big_fake(app, clerk_users):
    with FakeClerk([dict(u) for u in clerk_users]) as server:
        app.config.update(CLERK_SECRET_KEY=SECRET_KEY, CLERK_API_URL=server.url, CLERK_API_RETRY_MAX_MS=0)
        yield server


def sync(runner, *args: str):
    return runner.invoke(args=["clerk", "sync", *args])


def count(db, model, *where) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def list_calls(fake: FakeClerk) -> list[str]:
    return [r for r in fake.requests if r.startswith("GET /v1/users?")]


def test_sync_creates_every_user_in_pages_of_500_and_a_rerun_changes_nothing(runner, db, big_fake, clerk_users):
    fake = big_fake
    result = sync(runner)

    assert result.exit_code == 0, result.output
    assert f"{N_USERS} created, 0 updated, 0 unchanged" in result.output
    assert "Syncing users from Clerk" in result.output
    assert count(db, User) == N_USERS
    calls = list_calls(fake)
    assert len(calls) == 3
    assert all("limit=500" in c and "order_by=%2Bcreated_at" in c for c in calls)
    assert [c.split("offset=")[1].split("&")[0] for c in calls] == ["0", "500", "1000"]

    sample = clerk_users[777]
    user = db.session.scalar(sa.select(User).where(User.clerk_id == sample["id"]))
    assert (user.email, user.first_name, user.last_name) == ("member0777@example.com", "Member777", "Lovelace")
    assert json.loads(user.public_metadata) == {"n": 777}
    assert (user.role, user.status, user.clerk_updated_at) == (UserRole.USER, UserStatus.ACTIVE, sample["updated_at"])
    audit = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.target_id == user.id)).one()
    assert (audit.action, audit.source) == ("user.create", "cli")

    audits = count(db, AuditEvent)
    again = sync(runner)
    assert again.exit_code == 0, again.output
    assert f"0 created, 0 updated, {N_USERS} unchanged" in again.output
    assert count(db, User) == N_USERS and count(db, AuditEvent) == audits


def test_a_second_sync_counts_what_changed(runner, db, fake):
    assert sync(runner, "--page-size", "50").exit_code == 0
    audits = count(db, AuditEvent)
    fake.users[0] = {**fake.users[0], "first_name": "Renamed", "updated_at": BASE_MS + 10**7}
    fake.users[1] = {**fake.users[1], "first_name": "Old news", "updated_at": BASE_MS - 1}  # older: skipped
    fake.users.append(bapi_user(email="late@example.com", created_at=BASE_MS + 10**8))

    result = sync(runner, "--page-size", "50")

    assert result.exit_code == 0, result.output
    assert "1 created, 1 updated, 118 unchanged; 1 skipped (newer data already here)" in result.output
    assert count(db, User) == 121
    assert count(db, AuditEvent) == audits + 2
    assert count(db, User, User.first_name == "Renamed") == 1 and count(db, User, User.first_name == "Old news") == 0


def test_sync_backfills_clerks_locked_flag(runner, db, fake):
    assert sync(runner, "--page-size", "50").exit_code == 0
    assert count(db, User, User.locked.is_(True)) == 0
    fake.users[3] = {**fake.users[3], "locked": True, "updated_at": fake.users[3]["updated_at"] + 1}
    assert sync(runner, "--page-size", "50").exit_code == 0
    locked = db.session.scalars(sa.select(User).where(User.locked.is_(True))).all()
    assert [user.clerk_id for user in locked] == [fake.users[3]["id"]]


def test_sync_claims_invited_rows_and_leaves_deleted_users_deleted(runner, db, fake, make_user):
    clerk_users = fake.users
    invited = make_user(email="member0005@example.com", status=UserStatus.INVITED, clerk_id="inv_123")
    db.session.add(UserData(user_id=invited.id, key="plan", value="gold"))
    make_user(email="", clerk_id=clerk_users[6]["id"], deleted_at=utcnow())
    db.session.commit()

    result = sync(runner)

    assert result.exit_code == 0, result.output
    assert "1 claimed from invitations" in result.output and "1 skipped (deleted here)" in result.output
    assert count(db, User) == 120
    claimed = db.session.get(User, invited.id)
    assert (claimed.clerk_id, claimed.status, claimed.first_name) == (
        clerk_users[5]["id"],
        UserStatus.ACTIVE,
        "Member5",
    )
    assert [d.key for d in claimed.data] == ["plan"]
    assert count(db, User, User.deleted_at.is_not(None)) == 1


def test_sync_claims_a_staff_row_only_for_a_verified_email(runner, db, fake, make_user):
    admin = make_user(email="member0007@example.com", role=UserRole.ADMIN, clerk_id="local_admin7")
    boss = make_user(email="member0008@example.com", role=UserRole.SUPER_ADMIN, clerk_id="local_boss8")
    fake.users[7] = bapi_user(email="member0007@example.com", email_verified=False, created_at=BASE_MS + 7)

    result = sync(runner)

    assert result.exit_code == 0, result.output
    assert "1 claimed from invitations" in result.output
    assert "1 created apart from a staff account (email not verified in Clerk)" in result.output
    assert count(db, User) == 121
    assert db.session.get(User, boss.id).clerk_id == fake.users[8]["id"]
    assert db.session.get(User, admin.id).clerk_id == "local_admin7"
    separate = db.session.scalar(sa.select(User).where(User.clerk_id == fake.users[7]["id"]))
    assert (separate.email, separate.role) == ("member0007@example.com", UserRole.USER)


def test_an_interrupted_sync_keeps_its_pages_and_resumes_from_the_offset(runner, db, fake):
    fake.fail_list_calls = {2: 422}

    failed = sync(runner, "--page-size", "50")

    assert failed.exit_code == 1
    assert "resume with: flask clerk sync --offset 50" in failed.output
    assert "50 created" in failed.output and "Traceback" not in failed.output
    assert count(db, User) == 50

    fake.fail_list_calls = {}
    resumed = sync(runner, "--page-size", "50", "--offset", "50")
    assert resumed.exit_code == 0, resumed.output
    assert "70 created, 0 updated, 0 unchanged" in resumed.output
    assert count(db, User) == 120
    assert [c.split("offset=")[1].split("&")[0] for c in list_calls(fake)] == ["0", "50", "50", "100"]


def test_small_pages_are_honoured(runner, db, fake):
    result = sync(runner, "--page-size", "50")
    assert result.exit_code == 0, result.output
    assert len(list_calls(fake)) == 3 and count(db, User) == 120


def test_a_server_error_is_reported_not_retried_for_an_hour(runner, db, fake):
    fake.fail_list_calls = {1: 503}
    started = time.monotonic()
    result = sync(runner)
    assert result.exit_code == 1 and "SDKError" in result.output
    assert time.monotonic() - started < 5
    assert count(db, User) == 0


def test_an_unreachable_clerk_is_reported(app, runner, db):
    with FakeClerk() as gone:
        url = gone.url
    app.config.update(CLERK_SECRET_KEY=SECRET_KEY, CLERK_API_URL=url, CLERK_API_RETRY_MAX_MS=0)
    result = sync(runner)
    assert result.exit_code == 1 and "ConnectError" in result.output


def test_a_wrong_secret_key_is_reported(app, runner, db, fake):
    app.config["CLERK_SECRET_KEY"] = "sk_test_wrong"
    result = sync(runner)
    assert result.exit_code == 1 and "Invalid secret key" in result.output


def test_sync_without_a_secret_key_says_what_to_set(app, runner):
    app.config["CLERK_SECRET_KEY"] = None
    result = sync(runner)
    assert result.exit_code == 1 and "CLERK_SECRET_KEY is not set" in result.output


def test_the_client_retries_within_bounds_and_adds_the_api_version(app):
    retry = bounded_retry(30_000)
    assert retry.strategy == "backoff" and retry.backoff.max_elapsed_time == 30_000
    assert retry.retry_connection_errors is True
    assert bounded_retry(0) is None
    assert api_server_url("https://api.clerk.com") == "https://api.clerk.com/v1"
    assert api_server_url("https://api.clerk.com/v1/") == "https://api.clerk.com/v1"
    app.config.update(CLERK_SECRET_KEY="sk_test_x", CLERK_API_URL="https://api.clerk.com/v1")
    with clerk_client() as clerk:
        configured = clerk.sdk_configuration
        assert configured.retry_config.backoff.max_elapsed_time == 30_000
        assert configured.timeout_ms == 10_000
        assert configured.server_url == "https://api.clerk.com/v1"
