"""Every edit of a Clerk-owned field reaches Clerk, and Clerk's webhooks do not undo it meanwhile.

The services and the outbox against the fake Clerk on loopback, driven by the real SDK: the exact
call for each action, what a refusal does, the merge patch of metadata, the pending edit a stale
webhook must not undo, "Take Clerk's value", and the live sessions read. The pages' side of the
same actions is in tests/test_users_clerk_actions.py.
"""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.live import active_sessions
from app.clerk.outbox import fields_waiting
from app.clerk.outbox.delivery import ClerkUnavailable, deliver_due, merge_patch, take_clerks_value
from app.clerk.outbox.enqueue import RetryRefused, retry_call
from app.models import AuditEvent, ClerkCall, User, UserData, UserRole, UserStatus, WebhookEvent
from app.permissions import NotAllowed
from app.users.services import (
    DeletionNotConfirmed,
    MetadataError,
    UserError,
    delete_user,
    edit_user,
    invite_user,
    set_metadata,
    sign_out_everywhere,
    unlock_user,
)
from tests.clerk_payloads import envelope, sign
from tests.fake_clerk import SECRET_KEY, FakeClerk, bapi_user, connected_fake_clerk


@pytest.fixture
def clerk_user() -> dict:
    return bapi_user(
        email="grace@example.com",
        first_name="Grace",
        last_name="Hopper",
        username="grace",
        public_metadata={"plan": "pro", "role": "user", "status": "active"},
        private_metadata={"notes": {"a": 1, "b": 2}, "old": True},
    )


@pytest.fixture
def fake(app, clerk_user):
    with connected_fake_clerk(app, [clerk_user]) as server:
        yield server


@pytest.fixture
def root(make_user) -> User:
    return make_user(email="root@staff.example", role=UserRole.SUPER_ADMIN)


@pytest.fixture
def grace(client, db, fake, clerk_user, make_user, signing_secret) -> User:
    """The local row as Clerk's user.created left it."""
    user = make_user(email="grace@example.com", clerk_id=clerk_user["id"])
    assert sign(envelope("user.created", fake.webhook_data(clerk_user["id"]))).post(client).status_code == 200
    db.session.rollback()
    return db.session.get(User, user.id, populate_existing=True)


def staff(user: User) -> Actor:
    return Actor.staff(user)


def push(db) -> None:
    deliver_due(deadline=time.monotonic() + 5, timeout_ms=2_000, user_ids=None, actor=Actor.cli())
    db.session.rollback()


def push_now(db, user: User):
    """Deliver the user's calls whatever their backoff, as right after a request."""
    report = deliver_due(deadline=time.monotonic() + 5, timeout_ms=2_000, user_ids=[user.id], actor=Actor.cli())
    db.session.rollback()
    return report


def mutations(fake: FakeClerk) -> list[tuple[str, str, object]]:
    return [(c.method, c.path, c.body) for c in fake.calls if c.method != "GET"]


def calls(db) -> list[tuple[str, str]]:
    db.session.rollback()
    return [(c.operation, c.state) for c in db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id))]


def fresh(db, user: User) -> User:
    db.session.rollback()
    return db.session.get(User, user.id, populate_existing=True)


def actions_on(db, user: User) -> list[str]:
    return list(db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.target_id == user.id)))


def webhook(client, fake, clerk_id: str, **changes) -> WebhookEvent:
    """Clerk's state now (with `changes` made in Clerk first), as a signed user.updated."""
    data = fake.webhook_data(clerk_id)
    if changes:
        data.update(changes)
    signed = sign(envelope("user.updated", data))
    assert signed.post(client).status_code == 200
    return signed


# --- profile ----------------------------------------------------------------------------------------


def test_a_profile_edit_is_one_users_update_with_the_changed_fields(db, fake, grace, root):
    edit_user(grace, {"first_name": "Amazing", "username": "amazing"}, expected_version=None, actor=staff(root))
    db.session.commit()
    assert fields_waiting([grace.id]) == {grace.id: {"first_name", "username"}}
    push_now(db, grace)
    [(method, path, body)] = mutations(fake)
    assert (method, path) == ("PATCH", f"/v1/users/{grace.clerk_id}")
    assert {k: v for k, v in body.items() if k != "notify_primary_email_address_changed"} == {
        "first_name": "Amazing",
        "username": "amazing",
    }
    assert calls(db) == [("update_user", "delivered")] and fields_waiting([grace.id]) == {}
    clerk = fake.user(grace.clerk_id)
    assert (clerk["first_name"], clerk["username"]) == ("Amazing", "amazing")
    # Clerk's answer was applied by the webhook rules: the row is at Clerk's new version.
    assert fresh(db, grace).clerk_updated_at == clerk["updated_at"]


def test_what_clerks_answer_brings_is_audited_as_clerks(db, fake, grace, root):
    with fake._lock:  # changed in Clerk, its webhook not here yet
        clerk = fake.user(grace.clerk_id)
        clerk.update(last_name="Hopper-Murray", updated_at=clerk["updated_at"] + 1)
    edit_user(grace, {"first_name": "Amazing"}, expected_version=None, actor=staff(root))
    db.session.commit()
    push_now(db, grace)
    assert fresh(db, grace).last_name == "Hopper-Murray"
    event = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.target_id == grace.id, AuditEvent.action == "clerk.answer")
    ).one()
    assert json.loads(event.changes) == {"last_name": ["Hopper", "Hopper-Murray"]}


def test_a_stale_webhook_keeps_a_pending_edit_and_says_so(client, db, fake, grace, root):
    fake.stop()
    edit_user(grace, {"first_name": "Amazing"}, expected_version=None, actor=staff(root))
    db.session.commit()
    assert push_now(db, grace).stopped  # Clerk is down: pending
    # Meanwhile the user changed their last name in Clerk: its webhook carries the old first name.
    with fake._lock:
        clerk = fake.user(grace.clerk_id)
        clerk.update(last_name="Hopper-Murray", updated_at=clerk["updated_at"] + 1)
    signed = webhook(client, fake, grace.clerk_id)
    user = fresh(db, grace)
    assert (user.first_name, user.last_name) == ("Amazing", "Hopper-Murray")  # the rest applied
    event = db.session.get(WebhookEvent, signed.msg_id)
    assert "kept the dashboard's first_name" in event.error
    fake.start()
    push_now(db, grace)
    assert fake.user(grace.clerk_id)["first_name"] == "Amazing"
    assert fresh(db, grace).clerk_updated_at == fake.user(grace.clerk_id)["updated_at"]
    # The same stale delivery again (Svix retries) changes nothing now: older than Clerk's answer.
    assert signed.post(client).status_code == 200
    assert fresh(db, grace).first_name == "Amazing"
    # Once Clerk has it, Clerk's value rules again: a newer change made in Clerk applies.
    with fake._lock:
        clerk = fake.user(grace.clerk_id)
        clerk.update(first_name="Gracie", updated_at=clerk["updated_at"] + 1)
    webhook(client, fake, grace.clerk_id)
    assert fresh(db, grace).first_name == "Gracie"


def test_a_newer_profile_edit_supersedes_only_the_fields_it_sends_again(db, fake, grace, root):
    fake.stop()
    edit_user(grace, {"first_name": "A", "last_name": "B"}, expected_version=None, actor=staff(root))
    db.session.commit()
    edit_user(fresh(db, grace), {"first_name": "C"}, expected_version=None, actor=staff(root))
    db.session.commit()
    db.session.rollback()
    first, second = db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id))
    assert json.loads(first.payload)["fields"] == {"last_name": "B"} and first.state == "pending"
    assert json.loads(second.payload)["fields"] == {"first_name": "C"}
    fake.start()
    push_now(db, grace)
    assert (fake.user(grace.clerk_id)["first_name"], fake.user(grace.clerk_id)["last_name"]) == ("C", "B")


def test_a_refused_username_is_shown_and_take_clerks_value_restores_it(db, fake, grace, root, clerk_user):
    fake.users.append(bapi_user(email="other@example.com", username="taken"))
    edit_user(grace, {"username": "taken"}, expected_version=None, actor=staff(root))
    db.session.commit()
    push_now(db, grace)
    call = db.session.scalars(sa.select(ClerkCall)).one()
    assert call.state == "failed" and "That username is taken" in call.last_error
    assert fresh(db, grace).username == "taken"  # kept until someone decides
    assert fields_waiting([grace.id]) == {grace.id: {"username"}}

    fake.stop()
    with pytest.raises(ClerkUnavailable):
        take_clerks_value(db.session.get(ClerkCall, call.id), actor=staff(root))
    db.session.rollback()
    assert fresh(db, grace).username == "taken" and db.session.get(ClerkCall, call.id).state == "failed"

    fake.start()
    changed = take_clerks_value(db.session.get(ClerkCall, call.id), actor=staff(root))
    db.session.commit()
    assert changed == {"username": ["taken", "grace"]}
    assert fresh(db, grace).username == "grace" and db.session.get(ClerkCall, call.id).state == "superseded"
    assert "clerk.take_value" in actions_on(db, grace)
    assert fields_waiting([grace.id]) == {}


def test_an_admin_cannot_take_clerks_value_for_a_staff_member(db, fake, make_user, root):
    colleague = make_user(email="colleague@staff.example", role=UserRole.ADMIN, clerk_id="user_colleague")
    admin = make_user(email="admin@staff.example", role=UserRole.ADMIN)
    call = ClerkCall(user_id=colleague.id, operation="update_user", payload='{"fields": {"username": "x"}}')
    call.state = "failed"
    db.session.add(call)
    db.session.commit()
    with pytest.raises(NotAllowed):
        take_clerks_value(call, actor=staff(admin))


# --- email ---------------------------------------------------------------------------------------------


def test_an_email_change_adds_the_new_primary_then_removes_the_old(db, fake, grace, root):
    old_id = fake.user(grace.clerk_id)["primary_email_address_id"]
    edit_user(grace, {"email": "grace.hopper@example.com"}, expected_version=None, actor=staff(root))
    db.session.commit()
    push_now(db, grace)
    (create_method, create_path, create_body), (delete_method, delete_path, _) = mutations(fake)
    assert (create_method, create_path) == ("POST", "/v1/email_addresses")
    assert {k: create_body[k] for k in ("user_id", "email_address", "verified", "primary")} == {
        "user_id": grace.clerk_id,
        "email_address": "grace.hopper@example.com",
        "verified": True,
        "primary": True,
    }
    assert (delete_method, delete_path) == ("DELETE", f"/v1/email_addresses/{old_id}")
    assert calls(db) == [("create_email", "delivered"), ("delete_email", "delivered")]
    clerk = fake.user(grace.clerk_id)
    assert [e["email_address"] for e in clerk["email_addresses"]] == ["grace.hopper@example.com"]
    assert fresh(db, grace).email == "grace.hopper@example.com"


def test_a_call_of_several_requests_keeps_within_one_budget_when_clerk_is_slow(db, fake, grace, root):
    """Signing out of five sessions makes seven requests: together they take no longer than the budget."""
    sessions = [fake.add_session(grace.clerk_id) for _ in range(5)]
    sign_out_everywhere(grace, actor=staff(root))
    db.session.commit()
    fake.delay = 0.5
    started = time.monotonic()
    report = deliver_due(deadline=time.monotonic() + 1.2, timeout_ms=1200, user_ids=[grace.id], actor=Actor.cli())
    elapsed = time.monotonic() - started
    db.session.rollback()
    assert report.stopped and "timed out" in report.stopped
    # Each request given the whole 1.2 s would take 3.5 s; the margin either side absorbs a busy machine.
    assert elapsed < 2.4, f"{elapsed:.2f} s for a budget of 1.2 s"
    fake.delay = 0
    push_now(db, grace)  # the rest, the next time: what was revoked already is not asked again
    assert calls(db) == [("revoke_sessions", "delivered")]
    assert {s["status"] for s in fake.sessions if s["id"] in {x["id"] for x in sessions}} == {"revoked"}


def test_an_email_taken_in_clerk_is_refused_and_the_local_email_returns(db, fake, grace, root):
    fake.users.append(bapi_user(email="taken@example.com"))
    edit_user(grace, {"email": "taken@example.com"}, expected_version=None, actor=staff(root))
    db.session.commit()
    report = push_now(db, grace)
    assert report.failed == 1 and "That email address is taken" in report.errors[-1]
    assert calls(db) == [("create_email", "failed"), ("delete_email", "superseded")]
    assert fresh(db, grace).email == "grace@example.com"  # back to Clerk's
    assert [e["email_address"] for e in fake.user(grace.clerk_id)["email_addresses"]] == ["grace@example.com"]
    assert "clerk.email_refused" in actions_on(db, grace)
    failed = db.session.scalars(sa.select(ClerkCall).where(ClerkCall.state == "failed")).one()
    with pytest.raises(RetryRefused, match="put back"):
        retry_call(failed, actor=staff(root))
    assert fields_waiting([grace.id]) == {}


def test_an_address_added_before_a_lost_answer_is_made_primary_on_the_retry(db, fake, grace, root):
    edit_user(grace, {"email": "new@example.com"}, expected_version=None, actor=staff(root))
    db.session.commit()
    # The first attempt got through, but its answer was lost: Clerk holds the address, not primary.
    lost = {"user_id": grace.clerk_id, "email_address": "new@example.com", "verified": True}
    assert fake.respond("POST", "/v1/email_addresses", lost, f"Bearer {SECRET_KEY}")[0] == 200
    push_now(db, grace)
    clerk = fake.user(grace.clerk_id)
    primary = next(e for e in clerk["email_addresses"] if e["id"] == clerk["primary_email_address_id"])
    assert primary["email_address"] == "new@example.com"
    assert [e["email_address"] for e in clerk["email_addresses"]] == ["new@example.com"]
    assert calls(db) == [("create_email", "delivered"), ("delete_email", "delivered")]


# --- metadata ------------------------------------------------------------------------------------------


def test_merge_patch_removes_keys_with_null_and_leaves_equal_ones_out():
    current = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1], "gone": True, "t": 1}
    wanted = {"a": 1, "b": {"x": 1}, "c": [1, 2], "new": {"n": 1}, "t": True}
    assert merge_patch(current, wanted) == {"b": {"y": None}, "c": [1, 2], "gone": None, "new": {"n": 1}, "t": True}
    assert merge_patch(None, {"a": 1}) == {"a": 1}
    assert merge_patch({"a": {"b": 1}}, {"a": {"b": 1}}) == {}


def test_a_metadata_edit_sends_the_difference_and_removes_a_key(db, fake, grace, root):
    set_metadata(grace, "private_metadata", {"notes": {"a": 1}, "plan": "gold"}, actor=staff(root))
    db.session.commit()
    push_now(db, grace)
    [(method, path, body)] = mutations(fake)
    assert (method, path) == ("PATCH", f"/v1/users/{grace.clerk_id}/metadata")
    assert body == {"private_metadata": {"notes": {"b": None}, "old": None, "plan": "gold"}}
    assert fake.user(grace.clerk_id)["private_metadata"] == {"notes": {"a": 1}, "plan": "gold"}
    assert json.loads(fresh(db, grace).private_metadata) == {"notes": {"a": 1}, "plan": "gold"}


def test_public_metadata_edits_keep_the_dashboards_role_and_status(db, fake, grace, root):
    typed = {"plan": "team", "role": "super_admin", "status": "whatever"}  # an admin cannot set these here
    set_metadata(grace, "public_metadata", typed, actor=staff(root))
    db.session.commit()
    assert json.loads(fresh(db, grace).public_metadata) == {"plan": "team", "role": "user", "status": "active"}
    push_now(db, grace)
    [(_, _, body)] = mutations(fake)
    assert body == {"public_metadata": {"plan": "team"}}


def test_metadata_changed_in_the_edit_form_goes_the_same_way(db, fake, grace, root):
    typed = json.dumps({"plan": "team", "role": "super_admin"})
    edit_user(grace, {"public_metadata": typed, "first_name": "Amazing"}, expected_version=None, actor=staff(root))
    db.session.commit()
    assert json.loads(fresh(db, grace).public_metadata) == {"plan": "team", "role": "user", "status": "active"}
    assert fields_waiting([grace.id]) == {grace.id: {"first_name", "public_metadata"}}
    push_now(db, grace)
    assert [(method, body) for method, _, body in mutations(fake) if "public_metadata" in body] == [
        ("PATCH", {"public_metadata": {"plan": "team"}})
    ]
    assert fake.user(grace.clerk_id)["public_metadata"] == {"plan": "team", "role": "user", "status": "active"}
    edit_user(fresh(db, grace), {"private_metadata": None}, expected_version=None, actor=staff(root))  # emptied
    db.session.commit()
    push_now(db, grace)
    assert fake.user(grace.clerk_id)["private_metadata"] == {}


def test_an_unchanged_metadata_edit_sends_nothing(db, fake, grace, root):
    set_metadata(grace, "private_metadata", {"notes": {"a": 1, "b": 2}, "old": True}, actor=staff(root))
    db.session.commit()
    assert calls(db) == [] and mutations(fake) == []


@pytest.mark.parametrize("value", [[1, 2], "text", 3, None])
def test_metadata_must_be_an_object(db, grace, root, value):
    with pytest.raises(MetadataError, match="JSON object"):
        set_metadata(grace, "private_metadata", value, actor=staff(root))


def test_metadata_over_8_kib_is_refused_and_nothing_is_saved(db, fake, grace, root):
    before = fresh(db, grace).private_metadata
    with pytest.raises(MetadataError, match="8 KiB"):
        set_metadata(grace, "private_metadata", {"x": "é" * 4095}, actor=staff(root))  # 8,198 bytes serialised
    db.session.rollback()
    assert fresh(db, grace).private_metadata == before and calls(db) == []


# --- unlock, sessions, delete --------------------------------------------------------------------------------


def test_locked_comes_from_clerk_and_unlock_reaches_it(client, db, fake, grace, root):
    with fake._lock:
        fake.user(grace.clerk_id).update(locked=True, updated_at=fake.user(grace.clerk_id)["updated_at"] + 1)
    stale_locked = webhook(client, fake, grace.clerk_id)
    assert fresh(db, grace).locked is True
    fake.stop()
    unlock_user(fresh(db, grace), actor=staff(root))
    db.session.commit()
    assert fresh(db, grace).locked is False
    webhook_data = {**json.loads(stale_locked.body)["data"], "updated_at": fake.user(grace.clerk_id)["updated_at"] + 1}
    assert sign(envelope("user.updated", webhook_data)).post(client).status_code == 200
    assert fresh(db, grace).locked is False  # Clerk does not have the unlock yet: kept
    fake.start()
    push_now(db, grace)
    assert mutations(fake)[-1][:2] == ("POST", f"/v1/users/{grace.clerk_id}/unlock")
    assert fake.user(grace.clerk_id)["locked"] is False and fresh(db, grace).locked is False
    with pytest.raises(UserError, match="not locked"):
        unlock_user(fresh(db, grace), actor=staff(root))


def test_sign_out_everywhere_revokes_each_active_session(db, fake, grace, root):
    first = fake.add_session(grace.clerk_id)
    second = fake.add_session(grace.clerk_id)
    ended = fake.add_session(grace.clerk_id, status="revoked")
    other = fake.add_session("user_someone_else")
    sign_out_everywhere(grace, actor=staff(root))
    db.session.commit()
    push_now(db, grace)
    revoked = sorted(path for method, path, _ in mutations(fake) if method == "POST")
    assert revoked == sorted(f"/v1/sessions/{s['id']}/revoke" for s in (first, second))
    assert {s["id"]: s["status"] for s in fake.sessions} == {
        first["id"]: "revoked",
        second["id"]: "revoked",
        ended["id"]: "revoked",
        other["id"]: "active",
    }
    assert calls(db) == [("revoke_sessions", "delivered")]
    assert "user.sessions_revoke" in actions_on(db, grace)


def test_signing_a_staff_member_out_everywhere_ends_their_dashboard_sessions(client, db, fake, auth, root, make_user):
    in_clerk = bapi_user(email="colleague@staff.example")
    fake.users.append(in_clerk)
    colleague = make_user(email="colleague@staff.example", role=UserRole.ADMIN, clerk_id=in_clerk["id"])
    auth.sign_in(colleague)
    assert client.get("/users").status_code == 200
    sign_out_everywhere(fresh(db, colleague), actor=staff(root))
    db.session.commit()
    response = client.get("/users")
    assert response.status_code == 302 and response.headers["Location"].startswith("/auth/sign-in")
    assert {"user.sessions_revoke", "auth.signed_out"} <= set(actions_on(db, colleague))


def test_the_sessions_panel_reads_clerk_live_and_says_when_it_cannot(app, db, fake, grace):
    fake.add_session(grace.clerk_id, latest_activity={"browser_name": "Firefox", "city": "Berlin"})
    answer = active_sessions(grace)
    assert answer.unavailable is None and len(answer.sessions) == 1
    assert "Firefox" in answer.sessions[0].device and "Berlin" in answer.sessions[0].device
    fake.stop()
    assert "unreachable" in active_sessions(grace).unavailable
    fake.start()
    fake.delay = 1.0
    started = time.monotonic()
    assert "did not answer" in active_sessions(grace, timeout_ms=200).unavailable
    assert time.monotonic() - started < 0.9
    fake.delay = 0
    app.config["CLERK_SECRET_KEY"] = ""
    assert "not connected" in active_sessions(grace).unavailable


def test_delete_is_for_super_admins_and_leaves_a_tombstone_nothing_revives(client, db, fake, grace, root, make_user):
    admin = make_user(email="admin@staff.example", role=UserRole.ADMIN)
    db.session.add(UserData(user_id=grace.id, key="plan", value="gold"))
    db.session.commit()
    fake.stop()
    edit_user(fresh(db, grace), {"first_name": "Pending"}, expected_version=None, actor=staff(root))
    db.session.commit()
    with pytest.raises(NotAllowed, match=r"users\.delete"):
        delete_user(fresh(db, grace), "grace@example.com", actor=staff(admin))
    with pytest.raises(DeletionNotConfirmed):
        delete_user(fresh(db, grace), "grace@example.org", actor=staff(root))
    db.session.rollback()
    assert fresh(db, grace).deleted_at is None
    with pytest.raises(NotAllowed, match="your own"):
        delete_user(fresh(db, root), root.email, actor=staff(root))

    delete_user(fresh(db, grace), " Grace@Example.com ", actor=staff(root))
    db.session.commit()
    user = fresh(db, grace)
    assert user.deleted_at is not None and user.data == []
    assert {"user_data.delete", "user.delete"} <= set(actions_on(db, grace))
    assert calls(db) == [("update_user", "superseded"), ("delete_user", "pending")]
    fake.start()
    push_now(db, grace)
    assert mutations(fake) == [("DELETE", f"/v1/users/{grace.clerk_id}", None)]
    assert fake.user(grace.clerk_id) is None
    # A late user.updated (from before the deletion) does not bring the user back.
    late = {**fake.deleted_users[0], "updated_at": fake.deleted_users[0]["updated_at"] + 100}
    assert sign(envelope("user.updated", late)).post(client).status_code == 200
    assert fresh(db, grace).deleted_at is not None
    with pytest.raises(UserError, match="was deleted"):
        edit_user(fresh(db, grace), {"first_name": "X"}, expected_version=None, actor=staff(root))


def test_deleting_an_invited_user_revokes_the_invitation_and_deletes_no_clerk_user(db, fake, root):
    invited = invite_user("newcomer@example.com", actor=staff(root))
    db.session.commit()
    push_now(db, invited)
    invitation_id = fresh(db, invited).clerk_id
    assert invitation_id.startswith("inv_")
    delete_user(fresh(db, invited), "newcomer@example.com", actor=staff(root))
    db.session.commit()
    push_now(db, invited)
    assert calls(db) == [("create_invitation", "delivered"), ("revoke_invitation", "delivered")]
    assert [(m, p) for m, p, _ in mutations(fake)][-1] == ("POST", f"/v1/invitations/{invitation_id}/revoke")
    assert not any(m == "DELETE" for m, _, _ in mutations(fake))


def test_deleting_a_user_never_in_clerk_sends_nothing(db, fake, root, make_user):
    local = make_user(email="local@example.com", clerk_id="local_only_1")
    delete_user(local, "local@example.com", actor=staff(root))
    db.session.commit()
    assert calls(db) == [] and fresh(db, local).deleted_at is not None


def test_deleting_a_user_clerk_deleted_already_is_delivered(db, fake, grace, root):
    with fake._lock:
        fake.users.clear()
    delete_user(grace, "grace@example.com", actor=staff(root))
    db.session.commit()
    push_now(db, grace)
    assert calls(db) == [("delete_user", "delivered")]


def test_the_last_active_super_admin_cannot_be_deleted(db, make_user, root):
    other = make_user(email="other-root@staff.example", role=UserRole.SUPER_ADMIN, status=UserStatus.SUSPENDED)
    with pytest.raises(NotAllowed):
        delete_user(root, root.email, actor=staff(other))
