"""Dashboard actions reach Clerk through the outbox: a fake Clerk on loopback, the real SDK.

Each action's call (path, body, secret key); Clerk down (refused, 500, 429, slow): the local
change is kept, the page answers fast and says "pending in Clerk", and `flask clerk push`
delivers later; answers that mean "never" are shown and not retried; the echo changes nothing.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.outbox import BAN, METADATA, delivery
from app.clerk.outbox.enqueue import enqueue, retry_call
from app.models import AuditEvent, ClerkCall, User, UserRole, UserStatus, utcnow
from app.permissions import NotAllowed
from tests.clerk_payloads import sign, user_updated
from tests.conftest import HX, csrf_token_from
from tests.fake_clerk import SECRET_KEY, FakeClerk, bapi_user, connected_fake_clerk

BEARER = f"Bearer {SECRET_KEY}"


@pytest.fixture
def member_in_clerk() -> dict:
    return bapi_user(email="grace@example.com", first_name="Grace", last_name="Hopper", public_metadata={"plan": "pro"})


@pytest.fixture
def fake(app, member_in_clerk):
    with connected_fake_clerk(app, [member_in_clerk]) as server:
        yield server


@pytest.fixture
def member(make_user, member_in_clerk) -> User:
    return make_user(email="grace@example.com", first_name="Grace", last_name="Hopper", clerk_id=member_in_clerk["id"])


def calls(db, **where) -> list[ClerkCall]:
    db.session.expire_all()
    query = sa.select(ClerkCall).order_by(ClerkCall.id)
    for name, value in where.items():
        query = query.where(getattr(ClerkCall, name) == value)
    return list(db.session.scalars(query))


def states(db) -> list[tuple[str, str]]:
    return [(c.operation, c.state) for c in calls(db)]


def mutations(fake: FakeClerk):
    return [c for c in fake.calls if c.method != "GET"]


def set_status(client, token, user, status, **headers):
    return client.post(f"/users/{user.id}/status", data={"csrf_token": token, "status": status}, headers=headers)


def push(runner, *args):
    return runner.invoke(args=["clerk", "push", *args])


def make_due(db) -> None:
    """Skip the backoff: every pending call is due now."""
    db.session.execute(sa.update(ClerkCall).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()


# --- each action's call ---------------------------------------------------------------------------


def test_suspend_bans_and_sets_metadata_in_clerk(client, token, member, fake, db, member_in_clerk):
    response = set_status(client, token, member, "suspended")

    assert response.status_code == 302
    ban, metadata = mutations(fake)
    assert (ban.method, ban.path, ban.body, ban.authorization) == (
        "POST",
        f"/v1/users/{member.clerk_id}/ban",
        None,
        BEARER,
    )
    assert (metadata.method, metadata.path, metadata.authorization) == (
        "PATCH",
        f"/v1/users/{member.clerk_id}/metadata",
        BEARER,
    )
    assert metadata.body == {"public_metadata": {"role": "user", "status": "suspended"}}
    assert member_in_clerk["banned"] is True
    # A deep merge: what else Clerk holds in public_metadata stays.
    assert member_in_clerk["public_metadata"] == {"plan": "pro", "role": "user", "status": "suspended"}
    assert states(db) == [("ban", "delivered"), ("update_metadata", "delivered")]
    assert all(c.delivered_at is not None and c.attempts == 1 for c in calls(db))
    assert "pending in Clerk" not in client.get(f"/users/{member.id}").get_data(as_text=True)


def test_reactivate_unbans_and_mark_inactive_only_updates_metadata(client, token, member, fake, db, member_in_clerk):
    set_status(client, token, member, "suspended")
    fake.calls.clear()

    set_status(client, token, member, "active")
    assert [(c.method, c.path) for c in mutations(fake)] == [
        ("POST", f"/v1/users/{member.clerk_id}/unban"),
        ("PATCH", f"/v1/users/{member.clerk_id}/metadata"),
    ]
    assert member_in_clerk["banned"] is False

    fake.calls.clear()
    set_status(client, token, member, "inactive")
    (only,) = mutations(fake)
    assert only.path.endswith("/metadata") and only.body == {"public_metadata": {"role": "user", "status": "inactive"}}


def test_a_role_change_from_the_edit_form_updates_metadata(client, token, member, fake, db, member_in_clerk):
    form = {
        "csrf_token": token,
        "email": member.email,
        "first_name": "Grace",
        "last_name": "Hopper",
        "role": "admin",
        "status": "active",
        "version": str(member.version),
    }
    response = client.post(f"/users/{member.id}/edit", data=form)

    assert response.status_code == 302
    (call,) = mutations(fake)
    assert call.body == {"public_metadata": {"role": "admin", "status": "active"}}
    assert member_in_clerk["public_metadata"]["role"] == "admin"


def test_a_name_edit_sends_users_update_with_the_changed_fields_only(client, token, member, fake, db):
    form = {
        "csrf_token": token,
        "email": member.email,
        "first_name": "Amazing",
        "last_name": "Hopper",
        "role": "user",
        "status": "active",
        "version": str(member.version),
    }
    assert client.post(f"/users/{member.id}/edit", data=form).status_code == 302
    [update] = mutations(fake)
    assert (update.method, update.path) == ("PATCH", f"/v1/users/{member.clerk_id}")
    assert update.body == {"first_name": "Amazing", "notify_primary_email_address_changed": False}
    assert [(c.operation, c.state) for c in calls(db)] == [("update_user", "delivered")]
    assert fake.user(member.clerk_id)["first_name"] == "Amazing"


def test_bulk_suspend_bans_each_user_in_clerk(client, token, member, fake, db, make_user):
    local_only = make_user(email="local@example.com", clerk_id="local_abc")  # never in Clerk: nothing sent
    response = client.post(
        "/users/bulk",
        data={"csrf_token": token, "action": "suspended", "confirm": "y", "ids": [member.id, local_only.id]},
    )
    assert response.status_code == 302
    assert [c.path for c in mutations(fake)] == [
        f"/v1/users/{member.clerk_id}/ban",
        f"/v1/users/{member.clerk_id}/metadata",
    ]
    assert {c.user_id for c in calls(db)} == {member.id}


def test_invite_creates_a_clerk_invitation_with_the_role_and_keeps_its_id(client, token, fake, db):
    response = client.post(
        "/users",
        data={
            "csrf_token": token,
            "email": "New@Example.com",
            "first_name": "New",
            "last_name": "Person",
            "role": "admin",
        },
    )

    assert response.status_code == 302
    (call,) = mutations(fake)
    assert (call.method, call.path, call.authorization) == ("POST", "/v1/invitations", BEARER)
    assert call.body["email_address"] == "new@example.com"
    assert call.body["public_metadata"] == {"role": "admin"}
    assert call.body["notify"] is True
    user = db.session.scalars(sa.select(User).where(User.email == "new@example.com")).one()
    assert user.clerk_id == fake.invitations[0]["id"] and user.clerk_id.startswith("inv_")
    assert user.status == UserStatus.INVITED
    actions = db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.target_id == user.id)).all()
    assert "user.invitation_sent" in actions


def test_revoke_and_resend_an_invitation_from_the_users_page(client, token, fake, db):
    client.post("/users", data={"csrf_token": token, "email": "inv@example.com", "role": "user"})
    user = db.session.scalars(sa.select(User).where(User.email == "inv@example.com")).one()
    first = user.clerk_id
    page = client.get(f"/users/{user.id}").get_data(as_text=True)
    assert "Revoke invitation" in page and "Resend invitation" in page

    fake.calls.clear()
    response = client.post(f"/users/{user.id}/invitation/resend", data={"csrf_token": token})
    assert response.status_code == 302
    assert [(c.method, c.path) for c in mutations(fake)] == [
        ("POST", f"/v1/invitations/{first}/revoke"),
        ("POST", "/v1/invitations"),
    ]
    db.session.expire_all()
    second = user.clerk_id
    assert second != first and second.startswith("inv_")
    assert [i["status"] for i in fake.invitations] == ["revoked", "pending"]

    fake.calls.clear()
    response = client.post(f"/users/{user.id}/invitation/revoke", data={"csrf_token": token})
    assert response.status_code == 302
    assert [(c.method, c.path) for c in mutations(fake)] == [("POST", f"/v1/invitations/{second}/revoke")]
    db.session.expire_all()
    assert user.status == UserStatus.INACTIVE
    assert fake.invitations[1]["status"] == "revoked"
    assert "Invite again" in client.get(f"/users/{user.id}").get_data(as_text=True)


def test_revoke_refuses_a_user_who_is_not_invited_and_needs_csrf(client, token, member, fake, db):
    assert client.post(f"/users/{member.id}/invitation/revoke", data={"csrf_token": token}).status_code == 409
    assert client.post(f"/users/{member.id}/invitation/revoke", data={}).status_code == 400
    assert calls(db) == []


# --- Clerk down -----------------------------------------------------------------------------------


def test_clerk_refusing_connections_keeps_the_change_and_push_delivers_it_later(
    client, token, member, fake, db, runner, member_in_clerk
):
    fake.stop()
    started = time.monotonic()
    response = set_status(client, token, member, "suspended", **{})
    assert time.monotonic() - started < 3
    assert response.status_code == 302
    db.session.expire_all()
    assert member.status == UserStatus.SUSPENDED  # the local change is kept
    (ban, metadata) = calls(db)
    assert (ban.state, ban.attempts) == ("pending", 1) and "unreachable" in ban.last_error
    assert metadata.attempts == 0  # it waits behind the ban
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "pending in Clerk" in page and "unreachable" in page
    listing = client.get("/users", headers=HX).get_data(as_text=True)
    assert "pending in Clerk" in listing

    fake.start()
    assert push(runner).exit_code == 0  # the ban is backing off: not due yet
    assert states(db) == [("ban", "pending"), ("update_metadata", "pending")]
    make_due(db)
    result = push(runner)
    assert result.exit_code == 0, result.output
    assert "2 delivered" in result.output
    assert states(db) == [("ban", "delivered"), ("update_metadata", "delivered")]
    assert member_in_clerk["banned"] is True
    assert "pending in Clerk" not in client.get(f"/users/{member.id}").get_data(as_text=True)


def test_the_htmx_status_change_says_pending_in_the_fragment(client, token, member, fake, db):
    fake.stop()
    response = set_status(client, token, member, "suspended", **HX)
    assert response.status_code == 200
    assert "Pending in Clerk" in response.get_data(as_text=True)


def test_a_500_is_retried_with_backoff(client, token, member, fake, db, runner, member_in_clerk):
    fake.fail_next = [(500, {})]
    set_status(client, token, member, "suspended")
    ban, _metadata = calls(db)
    assert ban.state == "pending" and "500" in ban.last_error
    delay = (ban.next_attempt_at - utcnow()).total_seconds()
    assert 5 < delay <= 10  # the first backoff step
    assert (
        delivery.backoff_seconds(1) == 10 and delivery.backoff_seconds(4) == 80 and delivery.backoff_seconds(30) == 3600
    )

    make_due(db)
    assert "2 delivered" in push(runner).output
    assert member_in_clerk["banned"] is True


def test_a_429_waits_as_long_as_retry_after_says(client, token, member, fake, db):
    fake.fail_next = [(429, {"Retry-After": "120"})]
    set_status(client, token, member, "suspended")
    ban = calls(db)[0]
    assert ban.state == "pending" and "429" in ban.last_error
    assert 110 < (ban.next_attempt_at - utcnow()).total_seconds() <= 120


def test_a_slow_clerk_does_not_hold_the_page(client, token, member, fake, db, runner):
    fake.delay = 2.0  # longer than the request's budget (0.8 s here, 3 s by default)
    started = time.monotonic()
    response = set_status(client, token, member, "suspended")
    elapsed = time.monotonic() - started
    fake.delay = 0
    assert response.status_code == 302 and elapsed < 1.8
    ban = calls(db)[0]
    assert ban.state == "pending" and "timed out" in ban.last_error


def test_without_a_clerk_push_fails_clearly_and_nothing_is_lost(app, client, token, member, fake, db, runner):
    fake.stop()
    set_status(client, token, member, "suspended")
    make_due(db)
    result = push(runner)
    assert result.exit_code == 0 and "0 delivered, 1 to retry" in result.output and "stopped" in result.output
    assert [c.state for c in calls(db)] == ["pending", "pending"]


# --- answers that mean "never" --------------------------------------------------------------------


def test_a_user_gone_from_clerk_fails_for_good_and_is_shown_with_retry(client, token, make_user, fake, db, runner):
    ghost = make_user(email="ghost@example.com", clerk_id="user_not_in_clerk")
    set_status(client, token, ghost, "suspended")

    ban, metadata = calls(db)
    assert ban.state == "failed" and "404" in ban.last_error and "User not found" in ban.last_error
    assert metadata.state == "failed"  # a later call is not blocked by a failed one
    page = client.get(f"/users/{ghost.id}").get_data(as_text=True)
    assert "User not found" in page and "Retry" in page and "refused by Clerk" in page

    make_due(db)
    fake.calls.clear()
    assert "0 delivered, 0 to retry, 0 failed" in push(runner).output  # failed calls are not retried
    assert mutations(fake) == []

    response = client.post(f"/clerk/calls/{ban.id}/retry", data={"csrf_token": token, "back": "user"})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/users/{ghost.id}#clerk")
    assert [c.path for c in mutations(fake)] == ["/v1/users/user_not_in_clerk/ban"]
    assert calls(db)[0].attempts == 2
    assert calls(db)[0].state == "failed"  # Clerk still says 404


def test_retrying_a_call_that_is_not_failed_is_refused(client, token, member, fake, db):
    set_status(client, token, member, "suspended")
    delivered = calls(db)[0]
    assert client.post(f"/clerk/calls/{delivered.id}/retry", data={"csrf_token": token}).status_code == 409
    assert client.post("/clerk/calls/999999/retry", data={"csrf_token": token}).status_code == 404


def test_an_invalid_invitation_fails_and_says_why(client, token, fake, db):
    fake.fail_next = [(422, {})]
    client.post("/users", data={"csrf_token": token, "email": "bad@example.com", "role": "user"})
    (call,) = calls(db)
    assert call.state == "failed" and "422" in call.last_error
    user = db.session.get(User, call.user_id)
    assert user.clerk_id.startswith("local_")  # no invitation id to keep


def test_a_repeated_invitation_adopts_the_one_clerk_already_holds(client, token, fake, db):
    # An earlier attempt reached Clerk but its answer was lost: Clerk refuses a second one.
    fake.invitations.append(
        {
            "object": "invitation",
            "id": "inv_earlier",
            "email_address": "twice@example.com",
            "public_metadata": {"role": "user"},
            "status": "pending",
            "revoked": False,
            "url": None,
            "expires_at": None,
            "created_at": 1,
            "updated_at": 1,
        }
    )
    client.post("/users", data={"csrf_token": token, "email": "twice@example.com", "role": "user"})
    (call,) = calls(db)
    assert call.state == "delivered" and "inv_earlier" in call.last_error
    assert db.session.get(User, call.user_id).clerk_id == "inv_earlier"


def test_a_second_ban_is_success(client, token, member, fake, db, member_in_clerk):
    member_in_clerk["banned"] = True  # Clerk already applied it
    set_status(client, token, member, "suspended")
    assert [c.state for c in calls(db)] == ["delivered", "delivered"]


# --- order, coalescing, several workers ------------------------------------------------------------


def test_a_newer_change_supersedes_older_pending_ones_and_order_is_kept(
    client, token, member, fake, db, runner, member_in_clerk
):
    fake.stop()
    set_status(client, token, member, "suspended")
    set_status(client, token, member, "active")
    assert states(db) == [
        ("ban", "superseded"),
        ("update_metadata", "superseded"),
        ("unban", "pending"),
        ("update_metadata", "pending"),
    ]
    member_in_clerk["banned"] = True
    fake.start()
    make_due(db)
    assert "2 delivered" in push(runner).output
    assert [c.path.rsplit("/", 1)[1] for c in mutations(fake)] == ["unban", "metadata"]
    assert member_in_clerk["banned"] is False
    assert member_in_clerk["public_metadata"]["status"] == "active"


def test_a_later_call_waits_for_an_earlier_pending_one_of_the_same_user(app, member, db, fake):
    from app.audit.services import Actor

    ban = enqueue(member, BAN, {"user_id": member.clerk_id})
    meta = enqueue(member, METADATA, {"user_id": member.clerk_id, "public_metadata": {"status": "x"}})
    ban.next_attempt_at = utcnow() + timedelta(hours=1)  # the ban is backing off
    db.session.commit()
    report = delivery.deliver_due(deadline=time.monotonic() + 5, actor=Actor.cli())
    assert report.attempted == 0
    assert [c.state for c in calls(db)] == ["pending", "pending"] and meta.id > ban.id


@pytest.mark.postgresql
def test_two_workers_never_take_the_same_call_or_a_users_later_call(app, db, make_user, fake):
    first = make_user(email="a@example.com", clerk_id="user_a")
    second = make_user(email="b@example.com", clerk_id="user_b")
    a1 = enqueue(first, BAN, {"user_id": "user_a"})
    enqueue(first, METADATA, {"user_id": "user_a", "public_metadata": {}})
    b1 = enqueue(second, BAN, {"user_id": "user_b"})
    db.session.commit()

    worker = sa.orm.Session(db.engine)
    try:
        claimed = worker.scalars(
            sa.select(ClerkCall).where(ClerkCall.id == a1.id).with_for_update(skip_locked=True)
        ).one()
        assert claimed.id == a1.id  # worker one is sending a1 now
        # Worker two skips the locked row, and user a's later call waits for it: user b's is next.
        assert delivery._claim_next(None).id == b1.id
        db.session.rollback()
    finally:
        worker.rollback()
        worker.close()


# --- the echo -------------------------------------------------------------------------------------


def test_the_echo_of_our_own_change_undoes_nothing(client, token, member, fake, db, member_in_clerk, signing_secret):
    set_status(client, token, member, "suspended")
    echo = {**member_in_clerk}  # what Clerk sends back: banned, public_metadata with our role/status
    fake.stop()
    set_status(client, token, member, "active")  # newer than the echo, not yet in Clerk
    pending = [c.id for c in calls(db, state="pending")]
    assert pending

    response = sign(user_updated(echo)).post(client)
    assert response.status_code == 200, response.get_data(as_text=True)
    db.session.expire_all()
    assert (member.status, member.role) == (UserStatus.ACTIVE, UserRole.USER)
    assert json.loads(member.public_metadata) == {"plan": "pro", "role": "user", "status": "suspended"}
    assert [c.id for c in calls(db, state="pending")] == pending  # still to be sent


# --- without Clerk ----------------------------------------------------------------------------------


def test_without_a_secret_key_the_dashboard_works_locally_and_says_so(client, token, member, db, runner):
    response = set_status(client, token, member, "suspended")
    assert response.status_code == 302
    db.session.expire_all()
    assert member.status == UserStatus.SUSPENDED and calls(db) == []
    assert "Clerk is not connected" in client.get(f"/users/{member.id}").get_data(as_text=True)
    assert "Clerk is not connected" in client.get("/users/new").get_data(as_text=True)
    assert "Clerk is not connected" in client.get("/clerk").get_data(as_text=True)
    client.post("/users", data={"csrf_token": token, "email": "solo@example.com", "role": "user"})
    assert calls(db) == []
    result = push(runner)
    assert result.exit_code != 0 and "CLERK_SECRET_KEY is not set" in result.output
    invited = db.session.scalars(sa.select(User).where(User.email == "solo@example.com")).one()
    assert client.post(f"/users/{invited.id}/invitation/resend", data={"csrf_token": token}).status_code == 409


# --- pages ------------------------------------------------------------------------------------------


def test_the_outbox_page_lists_calls_and_filters_by_state(client, token, member, fake, db, make_user):
    ghost = make_user(email="ghost@example.com", clerk_id="user_gone")
    set_status(client, token, member, "suspended")
    set_status(client, token, ghost, "suspended")

    page = client.get("/clerk").get_data(as_text=True)
    assert "Clerk outbox" in page and "ghost@example.com" in page and "grace@example.com" in page
    assert "Ban in Clerk" in page and "2</strong> failed" in page
    failed_only = client.get("/clerk?state=failed").get_data(as_text=True)
    assert "ghost@example.com" in failed_only and "grace@example.com" not in failed_only
    assert client.get("/clerk?state=nonsense").status_code == 200
    assert 'href="/clerk"' in client.get("/users").get_data(as_text=True)  # in the navigation


def test_send_due_calls_now_from_the_outbox_page(client, token, member, fake, db, member_in_clerk):
    fake.stop()
    set_status(client, token, member, "suspended")
    fake.start()
    make_due(db)
    response = client.post("/clerk/push", data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200 and "2 delivered" in response.get_data(as_text=True)
    assert member_in_clerk["banned"] is True


def test_an_admin_cannot_retry_a_call_for_a_super_admin(client, auth, make_user, fake, db):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, clerk_id="user_boss_gone")
    enqueue(boss, BAN, {"user_id": "user_boss_gone"})
    db.session.commit()
    call = calls(db)[0]
    call.state = "failed"
    db.session.commit()
    auth.sign_in(role=UserRole.ADMIN)
    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))
    assert client.post(f"/clerk/calls/{call.id}/retry", data={"csrf_token": token}).status_code == 403
    assert calls(db)[0].state == "failed"


def test_the_retry_service_refuses_an_admin_for_a_super_admins_call(make_user, fake, db):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, clerk_id="user_boss_gone")
    admin = make_user(email="admin@example.com", role=UserRole.ADMIN)
    call = enqueue(boss, BAN, {"user_id": "user_boss_gone"})
    call.state = "failed"
    db.session.commit()
    with pytest.raises(NotAllowed):
        retry_call(call, actor=Actor.staff(admin))
    assert call.state == "failed"


def test_the_list_asks_the_outbox_only_about_users_with_open_calls(
    app, client, staff, make_user, db, fake, count_queries
):
    """The page's own query says who has open calls; their details take one more query, only then."""
    people = [make_user(email=f"p{i}@example.com") for i in range(30)]
    enqueue(people[0], BAN, {"user_id": people[0].clerk_id})  # the oldest: not among the newest 10
    db.session.commit()
    db.session.expire_all()
    with count_queries() as quiet:
        quiet_html = client.get("/users?per_page=10", headers=HX).get_data(as_text=True)
    db.session.expire_all()
    with count_queries() as busy:
        busy_html = client.get("/users?per_page=50", headers=HX).get_data(as_text=True)
    details = [s for s in busy if s.lstrip().startswith("SELECT clerk_outbox.")]
    assert len(busy) == len(quiet) + 1 and len(details) == 1
    assert not any(s.lstrip().startswith("SELECT clerk_outbox.") for s in quiet)
    assert busy_html.count("pending in Clerk") == 1 and "pending in Clerk" not in quiet_html


def test_push_loop_runs_passes_until_interrupted(client, token, member, fake, db, runner, monkeypatch, member_in_clerk):
    fake.stop()
    set_status(client, token, member, "suspended")
    fake.start()
    make_due(db)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the worker's pause between passes; the second one is Ctrl-C
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    result = push(runner, "--loop", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert result.output.count("Clerk push:") == 1 and "2 delivered" in result.output  # idle passes are quiet
    assert sleeps == [0.5, 0.5] and member_in_clerk["banned"] is True


@pytest.mark.parametrize("q", ["p0@example.com", "example.com"])  # on PostgreSQL: the index's path, the window's
def test_a_search_shows_whose_calls_wait_for_clerk(client, staff, make_user, db, fake, q):
    people = [make_user(email=f"p{i}@example.com") for i in range(3)]
    enqueue(people[0], BAN, {"user_id": people[0].clerk_id})
    db.session.commit()
    html = client.get(f"/users?per_page=50&q={q}", headers=HX).get_data(as_text=True)
    assert "p0@example.com" in html and html.count("pending in Clerk") == 1
