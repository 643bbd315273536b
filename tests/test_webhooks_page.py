"""GET /webhooks (filters, keyset pages, fragments), the detail page, and re-applying events."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import AuditEvent, User, UserRole, WebhookEvent, utcnow
from app.permissions import NotAllowed
from app.webhooks.services import record_failed_delivery, replay_event
from tests.clerk_payloads import (
    BASE_MS,
    clerk_user,
    envelope,
    sign,
    user_created,
    user_deleted,
    user_updated,
)
from tests.conftest import csrf_token_from

pytestmark = pytest.mark.usefixtures("signing_secret")


@pytest.fixture
def staff(auth):
    return auth.sign_in(role=UserRole.ADMIN)


@pytest.fixture
def boss(auth):
    """Replaying forces an old state past the ordering guard: super admins only (DESIGN §9)."""
    return auth.sign_in(role=UserRole.SUPER_ADMIN)


def deliver(client, payload, **kwargs):
    signed = sign(payload, **kwargs)
    response = signed.post(client)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    return signed


def failed_event(db, payload) -> str:
    """A delivery that failed on the database (as the receiver records it after a rollback)."""
    signed = sign(payload)
    record_failed_delivery(signed.msg_id, signed.body.decode(), payload, "OperationalError: connection lost")
    db.session.commit()
    return signed.msg_id


def user_with(db, clerk_id: str) -> User:
    db.session.expire_all()
    return db.session.scalar(sa.select(User).where(User.clerk_id == clerk_id))


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="webhook-([^"]+)"', html)


def test_the_page_needs_a_signed_in_admin(client, db, auth):
    assert client.get("/webhooks").status_code == 302
    demoted = auth.sign_in(role=UserRole.ADMIN)
    demoted.role = UserRole.USER  # the session ends with the role
    db.session.commit()
    assert client.get("/webhooks").status_code == 302


def test_the_page_lists_deliveries_newest_first_with_outcome_and_reason(client, db, staff):
    data = clerk_user(email="listed@example.com", updated_at=BASE_MS + 10)
    created = deliver(client, user_created(data))
    stale = deliver(client, user_updated(data, updated_at=BASE_MS))
    ignored = deliver(client, envelope("email.created", {"id": "ema_1"}))
    malformed = deliver(client, {"type": "user.created", "data": []})

    response = client.get("/webhooks")
    html = response.get_data(as_text=True)

    assert response.status_code == 200 and "<h1>Webhooks</h1>" in html
    assert row_ids(html) == [malformed.msg_id, ignored.msg_id, stale.msg_id, created.msg_id]
    for outcome in ("applied", "stale", "ignored", "failed"):
        assert f"outcome-{outcome}" in html
    assert "is older than" in html and "malformed: data is not a JSON object" in html
    assert (
        f'href="/users/{user_with(db, data["id"]).id}"><span class="long-value">listed@example.com</span></a>' in html
    )
    assert ">Apply anyway<" not in html and ">Retry<" not in html  # a plain admin may not replay
    assert 'aria-current="page">Webhooks</a>' in html


def test_super_admins_are_offered_replay_and_admins_are_not(client, db, auth):
    data = clerk_user(updated_at=BASE_MS + 10)
    deliver(client, user_created(data))
    stale = deliver(client, user_updated(data, updated_at=BASE_MS))
    failed = failed_event(db, user_created(clerk_user()))
    pages = ("/webhooks", f"/webhooks/{stale.msg_id}", f"/webhooks/{failed}")

    auth.sign_in(role=UserRole.ADMIN)
    for url in pages:
        html = client.get(url).get_data(as_text=True)
        assert ">Apply anyway<" not in html and ">Retry<" not in html and "/replay" not in html, url
    fragment = client.get("/webhooks", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "/replay" not in fragment

    auth.sign_in(role=UserRole.SUPER_ADMIN)
    html = client.get("/webhooks").get_data(as_text=True)
    assert html.count(">Apply anyway<") == 1 and html.count(">Retry<") == 1
    assert ">Apply anyway<" in client.get(f"/webhooks/{stale.msg_id}").get_data(as_text=True)
    assert ">Retry<" in client.get(f"/webhooks/{failed}").get_data(as_text=True)


def test_the_pages_say_why_a_staff_row_was_not_claimed(client, db, make_user, staff):
    make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, clerk_id="local_boss")
    signed = deliver(client, user_created(clerk_user(email="boss@example.com", email_verified=False)))
    reason = "not claimed: boss@example.com belongs to a staff account and Clerk does not report it verified"

    listed = client.get("/webhooks").get_data(as_text=True)
    detail = client.get(f"/webhooks/{signed.msg_id}").get_data(as_text=True)

    assert "outcome-applied" in listed and reason in listed
    assert "outcome-applied" in detail and reason in detail


def test_filters_by_outcome_and_type_and_ignores_nonsense(client, db, staff):
    data = clerk_user(updated_at=BASE_MS + 10)
    created = deliver(client, user_created(data))
    stale = deliver(client, user_updated(data, updated_at=BASE_MS))
    ignored = deliver(client, envelope("organization.created", {"id": "org_1"}))

    assert row_ids(client.get("/webhooks?outcome=stale").get_data(as_text=True)) == [stale.msg_id]
    assert row_ids(client.get("/webhooks?type=user.created&outcome=applied").get_data(as_text=True)) == [created.msg_id]
    filtered = client.get("/webhooks?type=organization.created").get_data(as_text=True)
    assert row_ids(filtered) == [ignored.msg_id]
    assert '<option selected value="organization.created">' in filtered
    assert len(row_ids(client.get("/webhooks?outcome=exploded&type=" + "x" * 500).get_data(as_text=True))) == 3
    assert "No deliveries match" in client.get("/webhooks?outcome=failed").get_data(as_text=True)


def test_htmx_gets_the_results_fragment(client, db, staff):
    deliver(client, user_created(clerk_user()))
    response = client.get("/webhooks?outcome=applied", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html and "<table" in html and len(row_ids(html)) == 1
    assert "HX-Request" in response.headers["Vary"]


def test_keyset_pages_walk_every_delivery_once(app, client, db, staff):
    app.config["WEBHOOKS_PER_PAGE"] = 3
    start = utcnow() - timedelta(hours=1)
    for i in range(7):
        db.session.add(
            WebhookEvent(
                id=f"msg_{i}",
                type="user.updated",
                outcome="applied",
                payload="{}",
                received_at=start + timedelta(minutes=i // 2),
            )
        )  # ties on the time
    db.session.commit()

    seen, url, pages = [], "/webhooks?outcome=applied", 0
    while url:
        html = client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
        seen += row_ids(html)
        pages += 1
        older = re.search(r'href="(/webhooks\?[^"]*after=[^"]+)" hx-get', html)
        url = older.group(1).replace("&amp;", "&") if older else None
        assert url is None or "outcome=applied" in url

    assert pages == 3
    assert seen == sorted(seen, key=lambda i: (int(i[4:]) // 2, i), reverse=True) and len(set(seen)) == 7
    assert len(row_ids(client.get("/webhooks?after=%%%garbage").get_data(as_text=True))) == 3


def test_the_detail_page_shows_the_payload_as_text(client, db, staff):
    signed = deliver(client, user_created(clerk_user(first_name="<script>alert(1)</script>")))
    response = client.get(f"/webhooks/{signed.msg_id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert '"primary_email_address_id"' in html.replace("&#34;", '"')
    assert client.get("/webhooks/msg_nope").status_code == 404


def test_a_payload_with_lone_surrogate_escapes_still_shows(client, db, staff):
    # Issue 12.7: JSON may escape a lone surrogate; parsed, it cannot be encoded as UTF-8.
    body = json.dumps(user_created(clerk_user(first_name="x", public_metadata={"k": "y"})), separators=(",", ":"))
    body = body.replace('"first_name":"x"', '"first_name":"\\ud800"').replace('{"k":"y"}', '{"\\udfff":"\\ud83d"}')
    signed = sign(body)
    assert signed.post(client).get_json()["outcome"] == "applied"
    assert db.session.get(WebhookEvent, signed.msg_id).payload == body

    response = client.get(f"/webhooks/{signed.msg_id}")

    html = response.get_data(as_text=True)
    assert response.status_code == 200
    # Shown as the escapes they arrived as, so the pretty text still reads back as the same JSON.
    assert '"first_name": "\\ud800"' in html.replace("&#34;", '"')
    assert '"\\udfff": "\\ud83d"' in html.replace("&#34;", '"')
    assert client.get("/webhooks").status_code == 200


def test_long_ids_and_types_are_shortened_in_the_list_and_whole_on_hover_and_in_detail(client, db, staff):
    long_id, long_type, long_user = "msg_" + "m" * 251, "t" * 255, "user_" + "u" * 250
    deliver(client, envelope(long_type, {"id": long_user}), msg_id=long_id)

    listed = client.get("/webhooks").get_data(as_text=True)
    detail = client.get(f"/webhooks/{long_id}").get_data(as_text=True)

    long_email = "e" * 300 + "@example.com"
    deliver(client, user_created(clerk_user(email=long_email)))
    listed = client.get("/webhooks").get_data(as_text=True)
    assert f'title="{long_email}">{long_email[:47]}…<' in listed

    for value in (long_id, long_type, long_user):
        assert f'title="{value}">{value[:47]}…<' in listed
        assert f">{value}<" not in listed
    assert f"<code>{long_id}</code>" in detail and f'<code class="long-value">{long_type}</code>' in detail
    assert f"<dd>{long_user}</dd>" in detail


def replay_from_the_page(client, msg_id: str, **kwargs):
    page = client.get(f"/webhooks/{msg_id}").get_data(as_text=True)
    return client.post(f"/webhooks/{msg_id}/replay", data={"csrf_token": csrf_token_from(page)}, **kwargs)


def test_a_failed_event_is_retried_from_the_page(client, db, boss):
    data = clerk_user(first_name="Retried")
    msg_id = failed_event(db, user_created(data))

    response = replay_from_the_page(client, msg_id, follow_redirects=True)

    html = response.get_data(as_text=True)
    assert response.status_code == 200 and f"Event {msg_id} re-applied: applied." in html
    assert user_with(db, data["id"]).first_name == "Retried"
    row = db.session.get(WebhookEvent, msg_id)
    assert (row.outcome, row.error, row.attempts) == ("applied", None, 2)
    audit = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.create")).one()
    assert (audit.source, audit.actor_id) == ("dashboard", boss.id)
    # Applied now: a second replay is refused, and so is a delivery of the same message.
    assert replay_from_the_page(client, msg_id).status_code == 409
    assert sign(user_created(data), msg_id=msg_id).post(client).get_json()["outcome"] == "duplicate"


def test_a_stale_event_is_applied_anyway_when_a_super_admin_asks(client, db, boss):
    data = clerk_user(first_name="Newer", updated_at=BASE_MS + 10)
    deliver(client, user_created(data))
    stale = deliver(client, user_updated(data, first_name="Older", updated_at=BASE_MS))
    assert user_with(db, data["id"]).first_name == "Newer"

    response = replay_from_the_page(client, stale.msg_id)

    assert response.status_code == 302
    user = user_with(db, data["id"])
    assert (user.first_name, user.clerk_updated_at) == ("Older", BASE_MS)
    assert db.session.get(WebhookEvent, stale.msg_id).outcome == "applied"


def test_replay_never_brings_a_deleted_user_back(client, db, boss):
    data = clerk_user(updated_at=BASE_MS + 10)
    deliver(client, user_created(data))
    stale = deliver(client, user_updated(data, first_name="Ghost", updated_at=BASE_MS))
    deliver(client, user_deleted(data["id"]))

    replay_from_the_page(client, stale.msg_id)

    user = user_with(db, data["id"])
    assert user.deleted_at is not None and user.first_name != "Ghost"
    row = db.session.get(WebhookEvent, stale.msg_id)
    assert row.outcome == "ignored" and "deleted" in row.error


def test_replay_needs_the_csrf_token(client, db, boss):
    msg_id = failed_event(db, user_created(clerk_user()))
    assert client.post(f"/webhooks/{msg_id}/replay").status_code == 400
    assert db.session.get(WebhookEvent, msg_id).outcome == "failed"


def test_replay_of_an_unknown_event_is_404(client, boss):
    page = client.get("/webhooks").get_data(as_text=True)
    response = client.post("/webhooks/msg_nope/replay", data={"csrf_token": csrf_token_from(page)})
    assert response.status_code == 404


def test_a_plain_admin_cannot_rewrite_a_super_admin_through_replay(client, db, make_user, staff):
    # Issue 12.2: a super admin whose Clerk user sent a newer version, then an older one (stale).
    data = clerk_user(email="boss@example.com", first_name="Current", updated_at=BASE_MS + 10)
    boss = make_user(clerk_id=data["id"], email="boss@example.com", role=UserRole.SUPER_ADMIN)
    deliver(client, user_updated(data, updated_at=BASE_MS + 10))
    older = clerk_user(id=data["id"], email="old@example.com", first_name="Old", updated_at=BASE_MS)
    stale = deliver(client, user_updated(older, updated_at=BASE_MS))
    assert db.session.get(WebhookEvent, stale.msg_id).outcome == "stale"
    page = client.get("/webhooks").get_data(as_text=True)

    response = client.post(f"/webhooks/{stale.msg_id}/replay", data={"csrf_token": csrf_token_from(page)})

    assert response.status_code == 403
    assert "webhooks.replay" in response.get_data(as_text=True)
    user = user_with(db, data["id"])
    assert (user.id, user.email, user.first_name, user.clerk_updated_at) == (
        boss.id,
        "boss@example.com",
        "Current",
        BASE_MS + 10,
    )
    row = db.session.get(WebhookEvent, stale.msg_id)
    assert (row.outcome, row.attempts) == ("stale", 1)


def test_replay_tells_a_plain_admin_nothing_about_which_ids_exist(client, db, auth):
    auth.sign_in(role=UserRole.ADMIN)
    page = client.get("/users/new").get_data(as_text=True)
    token = csrf_token_from(page)
    assert client.post("/webhooks/no-such-id/replay", data={"csrf_token": token}).status_code == 403


@pytest.mark.parametrize("role", [UserRole.ADMIN, UserRole.USER])
def test_the_replay_service_refuses_anyone_but_super_admins_and_the_cli(client, db, make_user, role):
    data = clerk_user(first_name="Newer", updated_at=BASE_MS + 10)
    deliver(client, user_created(data))
    stale = deliver(client, user_updated(data, first_name="Older", updated_at=BASE_MS))
    person = make_user(role=role)

    with pytest.raises(NotAllowed):
        replay_event(stale.msg_id, actor=Actor.staff(person))
    db.session.rollback()
    assert user_with(db, data["id"]).first_name == "Newer"

    assert replay_event(stale.msg_id, actor=Actor.cli()).outcome == "applied"
    db.session.commit()
    assert user_with(db, data["id"]).first_name == "Older"


# --- flask clerk replay -------------------------------------------------------------------------


def test_cli_replay_applies_a_failed_event(runner, db):
    data = clerk_user(first_name="From CLI")
    msg_id = failed_event(db, user_created(data))

    result = runner.invoke(args=["clerk", "replay", msg_id])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{msg_id}: applied"
    assert user_with(db, data["id"]).first_name == "From CLI"
    audit = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.create")).one()
    assert audit.source == "cli"


def test_cli_replay_applies_a_stale_event(runner, client, db):
    data = clerk_user(first_name="Newer", updated_at=BASE_MS + 10)
    deliver(client, user_created(data))
    stale = deliver(client, user_updated(data, first_name="Older", updated_at=BASE_MS))

    result = runner.invoke(args=["clerk", "replay", stale.msg_id])

    assert result.exit_code == 0, result.output
    assert user_with(db, data["id"]).first_name == "Older"


def test_cli_replay_refuses_what_it_cannot_replay(runner, client, db):
    applied = deliver(client, user_created(clerk_user()))
    unknown = runner.invoke(args=["clerk", "replay", "msg_missing"])
    done = runner.invoke(args=["clerk", "replay", applied.msg_id])
    assert unknown.exit_code == 1 and "no webhook event with id 'msg_missing'" in unknown.output
    assert done.exit_code == 1 and "only failed or stale events can be re-applied" in done.output


def test_cli_replay_of_a_malformed_event_fails_again(runner, client, db):
    malformed = deliver(client, {"type": "user.deleted", "data": {}})
    result = runner.invoke(args=["clerk", "replay", malformed.msg_id])
    assert result.exit_code == 1 and "failed (malformed: data.id is missing)" in result.output
    assert db.session.get(WebhookEvent, malformed.msg_id).attempts == 2
    assert json.loads(db.session.get(WebhookEvent, malformed.msg_id).payload)["type"] == "user.deleted"
