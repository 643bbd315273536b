"""POST /webhooks/clerk: signed as Svix signs, real-shaped payloads, exactly once, in any order."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.models import AuditEvent, User, UserData, UserRole, UserStatus, WebhookEvent
from tests.clerk_payloads import (
    BASE_MS,
    DOCS_EXAMPLE_USER_CREATED,
    clerk_id,
    clerk_user,
    envelope,
    session_created,
    sign,
    user_created,
    user_deleted,
    user_updated,
)

pytestmark = pytest.mark.usefixtures("signing_secret")


def count(db, model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def user_with(db, clerk_user_id: str) -> User | None:
    db.session.expire_all()
    return db.session.scalar(sa.select(User).where(User.clerk_id == clerk_user_id))


def event_row(db, msg_id: str) -> WebhookEvent:
    db.session.expire_all()
    return db.session.get(WebhookEvent, msg_id)


def deliver(client, payload, **kwargs):
    signed = sign(payload, **kwargs)
    response = signed.post(client)
    return signed, response


# --- Applying events ---------------------------------------------------------------------------


def test_user_created_stores_what_clerk_sent(client, db):
    data = clerk_user(
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        username="ada",
        external_id="567772",
        last_sign_in_at=BASE_MS + 5_000,
        updated_at=BASE_MS + 9_000,
        public_metadata={"plan": "pro", "seats": 3},
        private_metadata={"stripe": "cus_1"},
        unsafe_metadata={"theme": "dark"},
        extra_emails=("old@example.com",),
    )
    signed, response = deliver(client, user_created(data))

    assert response.status_code == 200
    assert response.get_json() == {"id": signed.msg_id, "outcome": "applied"}
    user = user_with(db, data["id"])
    assert user.email == "ada@example.com"  # the primary one, not the first listed
    assert (user.first_name, user.last_name, user.username, user.external_id) == ("Ada", "Lovelace", "ada", "567772")
    assert user.image_url == data["image_url"]
    assert json.loads(user.public_metadata) == {"plan": "pro", "seats": 3}
    assert json.loads(user.private_metadata) == {"stripe": "cus_1"}
    assert json.loads(user.unsafe_metadata) == {"theme": "dark"}
    assert user.last_sign_in_at == datetime.fromtimestamp((BASE_MS + 5_000) / 1000, tz=UTC)
    assert user.clerk_updated_at == BASE_MS + 9_000
    assert (user.role, user.status, user.deleted_at) == (UserRole.USER, UserStatus.ACTIVE, None)

    row = event_row(db, signed.msg_id)
    assert (row.type, row.outcome, row.error, row.clerk_user_id, row.attempts) == (
        "user.created",
        "applied",
        None,
        data["id"],
        1,
    )
    assert row.payload == signed.body.decode() and row.processed_at is not None
    audit = db.session.scalars(sa.select(AuditEvent)).one()
    assert (audit.action, audit.source, audit.actor_label, audit.target_id) == (
        "user.create",
        "webhook",
        "Clerk webhook",
        user.id,
    )
    assert json.loads(audit.changes)["email"] == [None, "ada@example.com"]


def test_clerks_documented_example_is_applied(client, db):
    signed, response = deliver(client, DOCS_EXAMPLE_USER_CREATED)
    assert response.status_code == 200 and response.get_json()["outcome"] == "applied"
    user = user_with(db, "user_29w83sxmDNGwOuEthce5gg56FcC")
    assert (user.email, user.first_name, user.external_id) == ("example@example.org", "Example", "567772")
    assert user.last_sign_in_at == datetime(2022, 5, 31, 15, 56, 31, 514000, tzinfo=UTC)
    assert event_row(db, signed.msg_id).payload == DOCS_EXAMPLE_USER_CREATED


def test_a_repeated_delivery_answers_duplicate_and_changes_nothing(client, db):
    data = clerk_user()
    signed, first = deliver(client, user_created(data))
    version = user_with(db, data["id"]).version

    again = signed.post(client)

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.get_json()["outcome"] == "duplicate"
    assert count(db, WebhookEvent) == 1 and count(db, User) == 1 and count(db, AuditEvent) == 1
    assert user_with(db, data["id"]).version == version


def test_a_resent_message_with_other_content_is_still_a_duplicate(client, db):
    # Svix reuses the id across retries; a changed body under an old id is not a new event.
    data = clerk_user(first_name="Ada")
    signed, _ = deliver(client, user_created(data))
    _, response = deliver(client, user_updated(data, first_name="Changed"), msg_id=signed.msg_id)
    assert response.get_json()["outcome"] == "duplicate"
    assert user_with(db, data["id"]).first_name == "Ada"


def test_user_updated_applies_changes_and_audits_them(client, db):
    data = clerk_user(first_name="Ada", public_metadata={"plan": "free"})
    deliver(client, user_created(data))
    _, response = deliver(client, user_updated(data, first_name="Augusta", public_metadata={"plan": "pro"}))

    assert response.get_json()["outcome"] == "applied"
    user = user_with(db, data["id"])
    assert user.first_name == "Augusta" and json.loads(user.public_metadata) == {"plan": "pro"}
    assert user.clerk_updated_at == data["updated_at"] + 1_000
    update = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.update")).one()
    assert json.loads(update.changes) == {
        "first_name": ["Ada", "Augusta"],
        "public_metadata": ['{"plan": "free"}', '{"plan": "pro"}'],
    }
    assert update.actor_label == "Clerk webhook"


def test_updated_before_created_upserts_and_the_late_create_is_stale(client, db):
    data = clerk_user(first_name="Old", updated_at=BASE_MS)
    _, updated = deliver(client, user_updated(data, first_name="New"))
    created, response = deliver(client, user_created(data))

    assert updated.get_json()["outcome"] == "applied"
    assert response.status_code == 200 and response.get_json()["outcome"] == "stale"
    assert user_with(db, data["id"]).first_name == "New"
    row = event_row(db, created.msg_id)
    assert row.outcome == "stale" and "older" in row.error
    assert count(db, User) == 1


def test_an_older_update_is_stale_and_an_equal_one_is_reapplied_harmlessly(client, db):
    data = clerk_user(first_name="First", updated_at=BASE_MS + 10_000)
    deliver(client, user_created(data))
    _, older = deliver(client, user_updated(data, first_name="Older", updated_at=BASE_MS + 5_000))
    _, equal = deliver(client, user_updated(data, updated_at=BASE_MS + 10_000))

    assert older.get_json()["outcome"] == "stale"
    assert equal.get_json()["outcome"] == "applied"
    user = user_with(db, data["id"])
    assert user.first_name == "First" and user.clerk_updated_at == BASE_MS + 10_000
    assert count(db, AuditEvent) == 1  # only the creation changed anything


def test_deletion_soft_deletes_and_nothing_brings_the_user_back(client, db):
    data = clerk_user(first_name="Ada")
    deliver(client, user_created(data))
    _, deleted = deliver(client, user_deleted(data["id"]))
    late = [
        deliver(client, user_updated(data, first_name="Zombie", updated_at=BASE_MS + 99_000))[1],
        deliver(client, user_created(data))[1],
        deliver(client, session_created(data["id"], at=BASE_MS + 99_000))[1],
        deliver(client, user_deleted(data["id"]))[1],
    ]

    assert deleted.get_json()["outcome"] == "applied"
    assert [r.status_code for r in late] == [200, 200, 200, 200]
    assert [r.get_json()["outcome"] for r in late] == ["ignored"] * 4
    user = user_with(db, data["id"])
    assert user.deleted_at is not None and user.first_name == "Ada" and user.last_sign_in_at is None
    assert db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.occurred_at)).all() == [
        "user.create",
        "user.delete",
    ]


def test_deletion_of_an_unknown_user_leaves_a_tombstone(client, db, auth):
    ghost = clerk_user(email="ghost@example.com")
    _, deleted = deliver(client, user_deleted(ghost["id"]))
    _, created = deliver(client, user_created(ghost))

    assert deleted.get_json()["outcome"] == "applied"
    assert created.get_json()["outcome"] == "ignored"
    assert "deleted" in created.get_json()["reason"]
    tombstone = user_with(db, ghost["id"])
    assert tombstone.deleted_at is not None and tombstone.email == ""
    assert count(db, User) == 1
    auth.sign_in()
    assert ghost["id"] not in client.get("/users").get_data(as_text=True)


def test_session_created_moves_last_sign_in_forward_only(client, db):
    data = clerk_user(last_sign_in_at=BASE_MS)
    deliver(client, user_created(data))
    _, newer = deliver(client, session_created(data["id"], at=BASE_MS + 60_000))
    _, older = deliver(client, session_created(data["id"], at=BASE_MS + 30_000))
    # A user.updated that still carries the older sign-in does not move it back either.
    _, update = deliver(client, user_updated(data, first_name="Later"))

    assert [r.get_json()["outcome"] for r in (newer, older, update)] == ["applied"] * 3
    user = user_with(db, data["id"])
    assert user.last_sign_in_at == datetime.fromtimestamp((BASE_MS + 60_000) / 1000, tz=UTC)
    assert user.first_name == "Later"
    actions = db.session.scalars(sa.select(AuditEvent.action)).all()
    assert actions.count("user.sign_in") == 1


def test_session_created_for_an_unknown_user_is_ignored_unless_it_carries_the_user(client, db):
    _, bare = deliver(client, session_created(clerk_id(), at=BASE_MS))
    data = clerk_user(email="early@example.com")
    _, embedded = deliver(client, session_created(data["id"], at=BASE_MS + 1_000, user=data))

    assert bare.status_code == 200 and bare.get_json()["outcome"] == "ignored"
    assert embedded.get_json()["outcome"] == "applied"
    user = user_with(db, data["id"])
    assert user.email == "early@example.com"
    assert user.last_sign_in_at == datetime.fromtimestamp((BASE_MS + 1_000) / 1000, tz=UTC)
    assert count(db, User) == 1


def test_user_created_claims_the_invited_row(client, db, make_user):
    invited = make_user(
        email="new.hire@example.com",
        status=UserStatus.INVITED,
        role=UserRole.ADMIN,
        clerk_id="local_0123456789abcdef",
        first_name="Nu",
    )
    db.session.add(UserData(user_id=invited.id, key="team", value="support"))
    db.session.commit()
    data = clerk_user(email="New.Hire@example.com", first_name="Nadia", last_name="Hire")

    _, response = deliver(client, user_created(data))

    assert response.get_json()["outcome"] == "applied"
    assert count(db, User) == 1
    user = user_with(db, data["id"])
    assert user.id == invited.id
    assert (user.status, user.role) == (UserStatus.ACTIVE, UserRole.ADMIN)
    assert (user.email, user.first_name, user.last_name) == ("New.Hire@example.com", "Nadia", "Hire")
    assert [(d.key, d.value) for d in user.data] == [("team", "support")]
    claim = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.claimed")).one()
    changes = json.loads(claim.changes)
    assert changes["clerk_id"] == ["local_0123456789abcdef", data["id"]]
    assert changes["status"] == ["invited", "active"]


def test_a_deleted_invited_row_is_not_claimed(client, db, make_user):
    make_user(email="x@example.com", status=UserStatus.INVITED, clerk_id="inv_abc", deleted_at=datetime.now(UTC))
    data = clerk_user(email="x@example.com")
    deliver(client, user_created(data))
    assert count(db, User) == 2
    assert user_with(db, data["id"]).status == UserStatus.ACTIVE


NOT_CLAIMED = "not claimed: {} belongs to a staff account and Clerk does not report it verified"


def test_an_unverified_email_does_not_take_over_a_super_admin_made_on_the_command_line(client, db, runner):
    # Issue 12.4: user.created for ADMIN@EXAMPLE.COM claimed the super admin (role kept).
    assert runner.invoke(args=["users", "create-admin", "admin@example.com"]).exit_code == 0
    staff = db.session.scalar(sa.select(User).where(User.email == "admin@example.com"))
    staff_clerk_id = staff.clerk_id
    data = clerk_user(email="ADMIN@EXAMPLE.COM", first_name="Mallory", email_verified=False)

    signed, response = deliver(client, user_created(data))

    reason = NOT_CLAIMED.format("ADMIN@EXAMPLE.COM")
    assert response.status_code == 200
    assert response.get_json() == {"id": signed.msg_id, "outcome": "applied", "reason": reason}
    assert count(db, User) == 2
    db.session.expire_all()
    staff = db.session.get(User, staff.id)
    assert (staff.clerk_id, staff.role, staff.first_name) == (staff_clerk_id, UserRole.SUPER_ADMIN, None)
    separate = user_with(db, data["id"])
    assert separate.id != staff.id
    assert (separate.email, separate.role, separate.first_name) == ("ADMIN@EXAMPLE.COM", UserRole.USER, "Mallory")
    row = event_row(db, signed.msg_id)
    assert (row.outcome, row.error) == ("applied", reason)
    assert db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.target_id == staff.id)).all() == [
        "user.create_admin"
    ]


def test_the_command_line_picks_the_staff_row_when_clerk_kept_a_user_apart(client, db, runner):
    """Two live rows share the address: create-admin and sign-in-link must act on the staff account."""
    assert runner.invoke(args=["users", "create-admin", "admin@example.com", "--role", "admin"]).exit_code == 0
    deliver(client, user_created(clerk_user(email="admin@example.com", email_verified=False)))
    assert count(db, User) == 2
    for _ in range(3):  # whatever order the database returns rows in
        assert runner.invoke(args=["users", "create-admin", "admin@example.com"]).exit_code == 0
    roles = db.session.scalars(sa.select(User.role).order_by(User.created_at)).all()
    assert roles == [UserRole.SUPER_ADMIN, UserRole.USER]
    assert runner.invoke(args=["users", "sign-in-link", "admin@example.com"]).exit_code == 0


@pytest.mark.parametrize("role", [UserRole.ADMIN, UserRole.SUPER_ADMIN])
@pytest.mark.parametrize("status", [UserStatus.INVITED, UserStatus.ACTIVE])
def test_a_staff_row_is_claimed_only_with_a_verified_email(client, db, make_user, role, status):
    waiting = make_user(email="staff@example.com", role=role, status=status, clerk_id=f"inv_{role.value}")
    unverified = clerk_user(email="Staff@example.com", email_verified=False)
    verified = clerk_user(email="Staff@example.com")

    _, refused = deliver(client, user_created(unverified))
    _, claimed = deliver(client, user_created(verified))

    assert refused.get_json()["reason"] == NOT_CLAIMED.format("Staff@example.com")
    assert claimed.get_json() == {"id": claimed.get_json()["id"], "outcome": "applied"}
    assert count(db, User) == 2
    assert user_with(db, unverified["id"]).id != waiting.id
    owner = user_with(db, verified["id"])
    assert (owner.id, owner.role, owner.status) == (waiting.id, role, UserStatus.ACTIVE)


def test_a_user_row_is_claimed_with_an_unverified_email_as_before(client, db, make_user):
    invited = make_user(email="plain@example.com", status=UserStatus.INVITED, clerk_id="inv_plain")
    data = clerk_user(email="plain@example.com", email_verified=False)
    _, response = deliver(client, user_created(data))
    assert response.get_json()["outcome"] == "applied" and "reason" not in response.get_json()
    assert user_with(db, data["id"]).id == invited.id and count(db, User) == 1


def test_a_sign_in_that_brings_an_unverified_user_says_why_it_claimed_nothing(client, db, make_user):
    staff = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, clerk_id="local_boss")
    data = clerk_user(email="boss@example.com", email_verified=False)
    signed, response = deliver(client, session_created(data["id"], at=BASE_MS + 1_000, user=data))
    assert response.get_json()["reason"] == NOT_CLAIMED.format("boss@example.com")
    assert event_row(db, signed.msg_id).error == NOT_CLAIMED.format("boss@example.com")
    assert user_with(db, data["id"]).id != staff.id


def test_the_separate_user_and_the_staff_row_both_live_on(client, db, runner, auth):
    assert runner.invoke(args=["users", "create-admin", "admin@example.com"]).exit_code == 0
    data = clerk_user(email="admin@example.com", email_verified=False)
    deliver(client, user_created(data))
    # Clerk may send the separate user again, verified this time: it stays separate (its own Clerk id).
    verified = clerk_user(id=data["id"], email="admin@example.com", updated_at=data["updated_at"])
    _, again = deliver(client, user_updated(verified, first_name="Later"))
    assert again.get_json()["outcome"] == "applied" and count(db, User) == 2
    assert user_with(db, data["id"]).first_name == "Later"

    link = runner.invoke(args=["users", "sign-in-link", "admin@example.com"])
    assert link.exit_code == 0, link.output
    auth.sign_in()
    listed = client.get("/users?q=admin%40example.com").get_data(as_text=True)
    assert listed.count(">admin@example.com<") == 2


def test_role_and_status_are_never_taken_from_clerk(client, db, make_user):
    data = clerk_user(public_metadata={"role": "super_admin"}, banned=True)
    make_user(clerk_id=data["id"], email="s@example.com", role=UserRole.USER, status=UserStatus.SUSPENDED)
    _, response = deliver(client, user_updated(data, public_metadata={"role": "super_admin", "status": "active"}))

    assert response.get_json()["outcome"] == "applied"
    user = user_with(db, data["id"])
    assert (user.role, user.status) == (UserRole.USER, UserStatus.SUSPENDED)
    assert json.loads(user.public_metadata) == {"role": "super_admin", "status": "active"}


def test_data_that_breaks_a_dashboard_rule_is_stored_as_clerk_sent_it(client, db):
    data = clerk_user(first_name="A", last_name="<script>alert(1)</script>", username="x")
    deliver(client, user_created(data))
    user = user_with(db, data["id"])
    assert (user.first_name, user.last_name, user.username) == ("A", "<script>alert(1)</script>", "x")


def test_a_user_without_email_or_names_is_still_stored(client, db):
    data = clerk_user(first_name=None, last_name=None, email_addresses=[], primary_email_address_id=None)
    deliver(client, user_created(data))
    user = user_with(db, data["id"])
    assert (user.email, user.first_name, user.last_name) == ("", None, None)


def test_payload_drift_is_tolerated(client, db):
    data = clerk_user(first_name="Drift", birthday="", gender="", brand_new_field={"x": [1, 2]})
    for key in ("private_metadata", "unsafe_metadata", "image_url", "username"):
        del data[key]
    payload = user_created(data)
    payload["instance_id"] = "ins_123"
    payload.pop("event_attributes")
    _, response = deliver(client, payload)
    assert response.get_json()["outcome"] == "applied"
    user = user_with(db, data["id"])
    assert user.first_name == "Drift" and user.image_url == data["profile_image_url"]


def test_unknown_event_types_are_recorded_as_ignored(client, db):
    signed, response = deliver(client, envelope("role.created", {"id": "role_1", "object": "role"}))
    assert response.status_code == 200 and response.get_json()["outcome"] == "ignored"
    assert event_row(db, signed.msg_id).outcome == "ignored" and count(db, User) == 0


# --- Refusals: a 4xx with one line, and nothing written --------------------------------------------


def assert_refused(response, status: int, reason: str, db) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    assert text.count("\n") == 1 and reason in response.get_json()["error"]
    assert count(db, WebhookEvent) == 0 and count(db, User) == 0 and count(db, AuditEvent) == 0


def test_no_signing_secret_configured_is_503(app, client, db):
    app.config["CLERK_WEBHOOK_SIGNING_SECRET"] = None
    response = sign(user_created(clerk_user())).post(client)
    assert_refused(response, 503, "CLERK_WEBHOOK_SIGNING_SECRET is not set", db)


def test_an_unusable_signing_secret_is_503(app, client, db):
    app.config["CLERK_WEBHOOK_SIGNING_SECRET"] = "whsec_@@@not-base64"
    response = sign(user_created(clerk_user())).post(client)
    assert_refused(response, 503, "not a valid", db)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"svix-id": None}, "Missing required headers"),
        ({"svix-timestamp": None}, "Missing required headers"),
        ({"svix-signature": None}, "Missing required headers"),
        ({"svix-signature": "garbage"}, "garbled svix-signature"),
        ({"svix-signature": "v1,abc"}, "garbled svix-signature"),
        ({"svix-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, "No matching signature"),
        ({"svix-signature": "v2,AAAA"}, "No matching signature"),
        ({"svix-timestamp": "yesterday"}, "Invalid Signature Headers"),
        ({"svix-id": "msg_other"}, "No matching signature"),
    ],
)
def test_missing_or_garbled_headers_are_refused(client, db, headers, reason):
    response = sign(user_created(clerk_user())).post(client, **headers)
    assert_refused(response, 400, reason, db)


def test_no_headers_at_all_is_refused(client, db):
    response = client.post("/webhooks/clerk", data=json.dumps(user_created(clerk_user())))
    assert_refused(response, 400, "Missing required headers", db)


def test_a_body_changed_after_signing_is_refused(client, db):
    signed = sign(user_created(clerk_user(first_name="Ada")))
    response = client.post("/webhooks/clerk", data=signed.body.replace(b"Ada", b"Eve"), headers=signed.headers)
    assert_refused(response, 400, "No matching signature", db)


def test_a_reserialised_body_is_refused(client, db):
    # What a JSON middleware (or the test client's json=) would do: same data, other bytes.
    signed = sign(user_created(clerk_user()))
    response = client.post("/webhooks/clerk", json=json.loads(signed.body), headers=signed.headers)
    assert_refused(response, 400, "No matching signature", db)


def test_another_secret_is_refused(client, db):
    other = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ=="
    response = sign(user_created(clerk_user()), secret=other).post(client)
    assert_refused(response, 400, "No matching signature", db)


@pytest.mark.parametrize(("offset", "reason"), [(-301, "too old"), (301, "too new")])
def test_a_timestamp_outside_the_tolerance_is_refused(client, db, offset, reason):
    response = sign(user_created(clerk_user()), at=int(time.time()) + offset).post(client)
    assert_refused(response, 400, reason, db)


def test_a_timestamp_inside_the_tolerance_is_accepted(client, db):
    response = sign(user_created(clerk_user()), at=int(time.time()) - 240).post(client)
    assert response.status_code == 200


@pytest.mark.parametrize("body", ["not json", '{"type": "user.created",', "[" * 100_000 + "]" * 100_000, ""])
def test_a_signed_body_that_is_not_json_is_refused(client, db, body):
    response = sign(body).post(client)
    assert_refused(response, 400, "not JSON", db)
    assert response.headers["webhook-delivery"] == "abort-message"


def test_a_body_that_is_not_utf8_is_refused(client, db):
    signed = sign("{}")
    response = client.post("/webhooks/clerk", data=b"\xff\xfe{}", headers=signed.headers)
    assert_refused(response, 400, "not UTF-8", db)


def test_a_body_over_one_mebibyte_is_refused_before_it_is_read(client, db):
    payload = user_created(clerk_user(unsafe_metadata={"blob": "x" * (1024 * 1024)}))
    response = sign(payload).post(client)
    assert_refused(response, 413, "over 1048576 bytes", db)


def test_a_chunked_body_over_one_mebibyte_is_refused_while_reading(client, db):
    signed = sign(user_created(clerk_user(unsafe_metadata={"blob": "x" * (1024 * 1024)})))
    response = client.post(
        "/webhooks/clerk",
        input_stream=io.BytesIO(signed.body),
        headers={**signed.headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_refused(response, 413, "over 1048576 bytes", db)


def test_a_body_of_exactly_one_mebibyte_is_read(client, db):
    payload = user_created(clerk_user(unsafe_metadata={"blob": ""}))
    filler = 1024 * 1024 - len(json.dumps(payload, separators=(",", ":")))
    payload["data"]["unsafe_metadata"]["blob"] = "x" * filler
    signed = sign(payload)
    assert len(signed.body) == 1024 * 1024
    assert signed.post(client).status_code == 200


# --- Signed but not a Clerk event: 400, recorded as failed, Svix told not to retry -------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1, 2, 3], "not a JSON object"),
        ({"data": {"id": "user_1"}, "object": "event"}, "type is missing"),
        ({"type": "user.created", "data": "user_1"}, "data is not a JSON object"),
        ({"type": "user.created", "data": {"first_name": "No id"}}, "data.id"),
        ({"type": "user.updated", "data": {"id": 42}}, "data.id"),
        ({"type": "user.deleted", "data": {"deleted": True}}, "data.id"),
        ({"type": "session.created", "data": {"id": "sess_1"}}, "data.user_id"),
        ({"type": "session.created", "data": {"user_id": "user_1", "created_at": "noon"}}, "created_at"),
        ({"type": "user.created", "data": {"id": "user_" + "x" * 300}}, "data.id is longer than 255 bytes"),
        ({"type": "user.deleted", "data": {"id": "user_" + "x" * 300}}, "data.id is longer than 255 bytes"),
        ({"type": "x" * 300, "data": {}}, "type is longer than 255 bytes"),
        ({"type": "user.created", "data": clerk_user(first_name="é" * 600)}, "data.first_name is longer than 1024"),
        ({"type": "user.created", "data": clerk_user(email="a" * 1100 + "@example.com")}, "primary email address"),
    ],
)
def test_malformed_but_signed_payloads_are_recorded_as_failed(client, db, payload, reason):
    signed = sign(payload)
    response = signed.post(client)
    again = signed.post(client)

    assert (response.status_code, again.status_code) == (400, 400)
    assert reason in response.get_json()["error"]
    assert response.headers["webhook-delivery"] == "abort-message"
    row = event_row(db, signed.msg_id)
    assert row.outcome == "failed" and reason in row.error and row.attempts == 2
    assert count(db, User) == 0 and count(db, AuditEvent) == 0


def test_an_overlong_svix_id_is_refused_before_anything_is_written(client, db):
    response = sign(user_created(clerk_user()), msg_id="msg_" + "x" * 300).post(client)
    assert_refused(response, 400, "svix-id is longer than 255 bytes", db)


def test_odd_values_are_read_defensively(client, db):
    data = clerk_user(
        first_name="Nul\x00l",
        last_name=12,
        username=["a"],
        last_sign_in_at="yesterday",
        updated_at=True,
        public_metadata="not an object",
        image_url=None,
    )
    data["email_addresses"] = [
        None,
        "x",
        {"id": data["primary_email_address_id"], "email_address": 7},
        {"email_address": "fallback@example.com"},
    ]
    _signed, response = deliver(client, user_created(data))
    assert response.status_code == 200
    user = user_with(db, data["id"])
    assert (user.first_name, user.last_name, user.username) == ("Null", "12", '["a"]')
    assert user.email == "fallback@example.com" and user.last_sign_in_at is None
    assert user.public_metadata == '"not an object"' and user.clerk_updated_at is None


def test_lone_surrogates_cannot_break_the_insert(client, db):
    body = json.dumps(user_created(clerk_user(first_name="x"))).replace('"first_name": "x"', '"first_name": "\\ud800"')
    assert "\\ud800" in body
    response = sign(body).post(client)
    assert response.status_code == 200


# --- Failures: rolled back, recorded apart, answered 5xx, applied on the retry ---------------------


def test_a_database_failure_answers_503_and_the_retry_applies(client, db, monkeypatch):
    import app.clerk.sync as sync

    real = sync.update_user_fields

    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("UPDATE users ...", {}, Exception("server closed the connection"))

    data = clerk_user(first_name="Ada")
    deliver(client, user_created(data))
    monkeypatch.setattr(sync, "update_user_fields", broken)
    signed, response = deliver(client, user_updated(data, first_name="Augusta"))

    assert response.status_code == 503
    assert response.get_json() == {
        "id": signed.msg_id,
        "outcome": "failed",
        "error": "database unavailable; retry later",
    }
    row = event_row(db, signed.msg_id)
    assert row.outcome == "failed" and "OperationalError" in row.error
    assert user_with(db, data["id"]).first_name == "Ada"

    monkeypatch.setattr(sync, "update_user_fields", real)
    retry = signed.post(client)
    assert retry.status_code == 200 and retry.get_json()["outcome"] == "applied"
    assert user_with(db, data["id"]).first_name == "Augusta"
    assert event_row(db, signed.msg_id).attempts == 2
    assert signed.post(client).get_json()["outcome"] == "duplicate"


def test_a_bug_is_recorded_and_answered_500_so_svix_retries(client, db, monkeypatch):
    import app.webhooks.services as services

    def bug(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(services, "upsert_clerk_user", bug)
    signed, response = deliver(client, user_created(clerk_user()))
    assert response.status_code == 500 and response.get_json()["outcome"] == "failed"
    assert "KeyError" in event_row(db, signed.msg_id).error
    assert count(db, User) == 0


# --- Whatever Clerk might sign: answered 200 or 400, never 5xx ---------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
_json = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8
)
_user_data = st.fixed_dictionaries(
    {"id": st.sampled_from(["user_fuzz_a", "user_fuzz_b"]) | _json},
    optional={
        key: _json
        for key in (
            "first_name",
            "last_name",
            "username",
            "email_addresses",
            "updated_at",
            "primary_email_address_id",
            "public_metadata",
            "last_sign_in_at",
            "image_url",
            "external_id",
            "user_id",
            "created_at",
            "user",
        )
    },
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    event_type=st.sampled_from(["user.created", "user.updated", "user.deleted", "session.created", "other"]) | _json,
    data=_user_data | _json,
)
def test_signed_payloads_of_any_shape_never_answer_5xx(client, db, event_type, data):
    response = sign({"type": event_type, "data": data, "object": "event"}).post(client)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
