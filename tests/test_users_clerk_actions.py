"""What an admin changes on a user's page reaches Clerk (issue 14), through HTTP, against the fake
Clerk on loopback driven by the real SDK: each action's exact call (method, path, body), "pending
in Clerk" by exactly the fields Clerk does not hold yet, refusals shown where the admin acted (with
Retry and "Take Clerk's value"), bad metadata refused with nothing saved, sessions shown live
whatever Clerk does, unlock, delete for super admins only, and a deleted user left read-only.
"""

from __future__ import annotations

import html
import json
import re
import time

import pytest
import sqlalchemy as sa

from app.clerk.outbox import (
    CREATE_EMAIL,
    DELETE_EMAIL,
    DELETE_USER,
    EDIT_METADATA,
    REVOKE_SESSIONS,
    UNLOCK,
    UPDATE_USER,
)
from app.clerk.outbox.enqueue import enqueue
from app.models import AuditEvent, ClerkCall, User, UserData, UserRole
from app.users.services import MAX_METADATA_BYTES, metadata_size
from tests.clerk_payloads import sign, user_updated
from tests.conftest import HX, csrf_token_from, form_values
from tests.fake_clerk import FakeClerk, bapi_user, connected_fake_clerk

PENDING = '<span class="badge badge-clerk-pending">pending in Clerk</span>'
REFUSED = '<span class="badge badge-clerk-failed">refused by Clerk</span>'


@pytest.fixture
def grace_in_clerk() -> dict:
    return bapi_user(
        email="grace@example.com",
        first_name="Grace",
        last_name="Hopper",
        username="grace",
        public_metadata={"plan": "pro", "role": "user", "status": "active"},
        private_metadata={"stripe": "cus_1", "tier": 2},
    )


@pytest.fixture
def other_in_clerk() -> dict:
    """Someone who is in Clerk only: their email and username are taken there."""
    return bapi_user(email="taken@example.com", first_name="Other", username="taken")


@pytest.fixture
def fake(app, grace_in_clerk, other_in_clerk):
    with connected_fake_clerk(app, [grace_in_clerk, other_in_clerk]) as server:
        yield server
        server.delay = 0


@pytest.fixture
def grace(make_user, grace_in_clerk) -> User:
    return make_user(
        email="grace@example.com",
        first_name="Grace",
        last_name="Hopper",
        username="grace",
        clerk_id=grace_in_clerk["id"],
        public_metadata=json.dumps({"plan": "pro", "role": "user", "status": "active"}, sort_keys=True),
        private_metadata=json.dumps({"stripe": "cus_1", "tier": 2}, sort_keys=True),
    )


def mutations(fake: FakeClerk) -> list[tuple[str, str, object]]:
    """(method, path, body) of what changed Clerk, the SDK's always-sent notify flag left out."""
    found = []
    for call in fake.calls:
        if call.method == "GET":
            continue
        body = call.body
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "notify_primary_email_address_changed"}
        found.append((call.method, call.path, body))
    return found


def calls(db) -> list[ClerkCall]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ClerkCall).order_by(ClerkCall.id)))


def states(db) -> list[tuple[str, str]]:
    return [(c.operation, c.state) for c in calls(db)]


def state_of(db, user: User) -> tuple:
    """What a refused request must leave as it was: the user's row, their data, the audit trail, the outbox."""
    db.session.expire_all()
    row = db.session.execute(sa.select(User.__table__).where(User.id == user.id)).one()
    data = db.session.execute(sa.select(UserData.key, UserData.value).where(UserData.user_id == user.id)).all()
    audits = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    outbox = db.session.scalar(sa.select(sa.func.count()).select_from(ClerkCall))
    return tuple(row), sorted(data), audits, outbox


def edit(client, user: User, **changes):
    """Submit the edit form as a browser would, with `changes` typed in."""
    values = form_values(client.get(f"/users/{user.id}/edit").get_data(as_text=True), f"/users/{user.id}/edit")
    return client.post(f"/users/{user.id}/edit", data={**values, **changes})


def metadata_url(user: User, kind: str) -> str:
    return f"/users/{user.id}/metadata/{kind}"


def metadata_form(client, user: User, kind: str) -> dict:
    page = client.get(f"/users/{user.id}").get_data(as_text=True)
    return form_values(page, metadata_url(user, kind))


def dd_of(page: str, label: str) -> str:
    """The <dd> after <dt>label</dt> on the user's page."""
    match = re.search(rf"<dt>{re.escape(label)}</dt><dd>(.*?)</dd>", page, re.S)
    assert match, f"no field {label}"
    return match.group(1)


def row_of(listing: str, user: User) -> str:
    match = re.search(rf'<tr id="user-{user.id}">(.*?)</tr>', listing, re.S)
    assert match, f"no row for {user.email}"
    return match.group(1)


def cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)


def history(db, user: User) -> list[str]:
    return list(
        db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.target_id == user.id).order_by(AuditEvent.occurred_at)
        )
    )


# --- 1. profile edits: the call, and "pending in Clerk" by exactly the fields ----------------------


def test_a_profile_edit_patches_the_clerk_user_with_the_changed_fields_only(client, staff, grace, fake, db):
    response = edit(client, grace, first_name="Amazing", username="amazing_grace")

    assert response.status_code == 302
    assert mutations(fake) == [
        ("PATCH", f"/v1/users/{grace.clerk_id}", {"first_name": "Amazing", "username": "amazing_grace"})
    ]
    assert states(db) == [(UPDATE_USER, "delivered")]
    clerk = fake.user(grace.clerk_id)
    assert (clerk["first_name"], clerk["last_name"], clerk["username"]) == ("Amazing", "Hopper", "amazing_grace")
    assert PENDING not in client.get(f"/users/{grace.id}").get_data(as_text=True)


def test_with_clerk_down_exactly_the_edited_fields_say_pending(client, staff, grace, fake, db):
    fake.stop()
    assert edit(client, grace, last_name="Murray", external_id="ext-7").status_code == 302

    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    for label in ("Last name", "External id"):
        assert PENDING in dd_of(page, label), label
    for label in ("Email", "First name", "Username", "Status", "Locked"):
        assert PENDING not in dd_of(page, label), label
    assert "Update profile: last_name, external_id" in page

    row = row_of(client.get("/users", headers=HX).get_data(as_text=True), grace)
    user_cell, name_cell, _role, status_cell = cells(row)[1:5]
    assert PENDING in name_cell
    assert PENDING not in user_cell and PENDING not in status_cell


def test_a_suspension_marks_the_status_pending_and_nothing_else(client, staff, token, grace, fake, db):
    fake.stop()
    client.post(f"/users/{grace.id}/status", data={"csrf_token": token, "status": "suspended"})

    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert PENDING in dd_of(page, "Status")
    assert all(PENDING not in dd_of(page, label) for label in ("Email", "First name", "Last name", "Username"))
    status_cell = cells(row_of(client.get("/users", headers=HX).get_data(as_text=True), grace))[4]
    assert PENDING in status_cell


# --- 2. email ----------------------------------------------------------------------------------------


def test_an_email_change_adds_the_new_address_as_primary_then_removes_the_old(
    client, staff, grace, fake, db, grace_in_clerk
):
    old_id = grace_in_clerk["primary_email_address_id"]
    response = edit(client, grace, email="grace.hopper@example.com")

    assert response.status_code == 302
    added, removed = mutations(fake)
    assert added == (
        "POST",
        "/v1/email_addresses",
        {"user_id": grace.clerk_id, "email_address": "grace.hopper@example.com", "verified": True, "primary": True},
    )
    assert removed == ("DELETE", f"/v1/email_addresses/{old_id}", None)
    clerk = fake.user(grace.clerk_id)
    assert [a["email_address"] for a in clerk["email_addresses"]] == ["grace.hopper@example.com"]
    assert states(db) == [(CREATE_EMAIL, "delivered"), (DELETE_EMAIL, "delivered")]
    db.session.expire_all()
    assert grace.email == "grace.hopper@example.com"


def test_an_email_taken_in_clerk_is_refused_on_the_page_and_the_old_one_comes_back(client, staff, grace, fake, db):
    response = edit(client, grace, email="taken@example.com")

    assert response.status_code == 302
    assert mutations(fake) == [
        (
            "POST",
            "/v1/email_addresses",
            {"user_id": grace.clerk_id, "email_address": "taken@example.com", "verified": True, "primary": True},
        )
    ]  # the old address is not removed
    db.session.expire_all()
    assert grace.email == "grace@example.com"
    assert states(db) == [(CREATE_EMAIL, "failed"), (DELETE_EMAIL, "superseded")]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "That email address is taken" in page
    assert "Add email taken@example.com as primary" in page
    failed = calls(db)[0]
    assert f"/clerk/calls/{failed.id}/retry" not in page  # Retry refuses it: the email was put back
    assert "edit the user to change the email again" in page
    assert PENDING not in dd_of(page, "Email")
    assert "clerk.email_refused" in history(db, grace)
    assert "Email change refused by Clerk" in page


# --- 3. metadata -------------------------------------------------------------------------------------


def test_a_metadata_edit_sends_clerk_the_merge_patch_a_removed_key_as_null(
    client, staff, grace, fake, db, grace_in_clerk
):
    values = metadata_form(client, grace, "private")
    assert json.loads(values["value"]) == {"stripe": "cus_1", "tier": 2}  # prefilled, pretty
    fake.calls.clear()

    response = client.post(metadata_url(grace, "private"), data={**values, "value": '{"tier": 3, "note": "vip"}'})

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/users/{grace.id}#metadata-private")
    assert [(c.method, c.path) for c in fake.calls] == [
        ("GET", f"/v1/users/{grace.clerk_id}"),
        ("PATCH", f"/v1/users/{grace.clerk_id}/metadata"),
    ]
    assert fake.calls[1].body == {"private_metadata": {"stripe": None, "tier": 3, "note": "vip"}}
    assert grace_in_clerk["private_metadata"] == {"tier": 3, "note": "vip"}
    db.session.expire_all()
    assert json.loads(grace.private_metadata) == {"tier": 3, "note": "vip"}
    assert states(db) == [(EDIT_METADATA, "delivered")]
    assert "user.metadata" in history(db, grace)
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert "Saved the private metadata." in page and "Metadata edited" in page


def test_public_metadata_keeps_the_role_and_status_the_dashboard_wrote(client, staff, grace, fake, db, grace_in_clerk):
    values = metadata_form(client, grace, "public")
    fake.calls.clear()
    typed = '{"plan": "team", "role": "super_admin"}'  # the role key is not the editor's to change

    response = client.post(metadata_url(grace, "public"), data={**values, "value": typed}, headers=HX)

    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<html" not in body and 'id="metadata-public"' in body and "Saved the public metadata." in body
    assert "HX-Request" in response.headers["Vary"]
    db.session.expire_all()
    assert json.loads(grace.public_metadata) == {"plan": "team", "role": "user", "status": "active"}
    (patch,) = mutations(fake)
    assert patch == ("PATCH", f"/v1/users/{grace.clerk_id}/metadata", {"public_metadata": {"plan": "team"}})
    assert grace_in_clerk["public_metadata"] == {"plan": "team", "role": "user", "status": "active"}


def test_the_metadata_editor_says_which_keys_the_dashboard_keeps(client, staff, grace):
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert "role and status keys are written by the dashboard and kept" in page
    assert page.count('<form method="post" action="/users/') >= 3
    for kind in ("public", "private", "unsafe"):
        assert f'action="{metadata_url(grace, kind)}"' in page


EIGHT_KIB_AND_ONE = json.dumps({"k": "x" * (MAX_METADATA_BYTES - 8 + 1)})


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("{not json", "Not valid JSON"),
        ("[1, 2]", "an array was given"),
        ('"plan"', "a string was given"),
        ("42", "a number was given"),
        ("null", "null was given"),
        (EIGHT_KIB_AND_ONE, "8 KiB"),
        ('{"a": NaN}', "NaN is not standard JSON"),
        ('{"a": -Infinity}', "Infinity is not standard JSON"),
        ('{"a": 1e999}', "too large a number"),
        ('{"a": ' + "9" * 5000 + "}", "Not valid JSON"),
        ('{"k": ' + "[" * 40 + "1" + "]" * 40 + "}", "Nested more than 32 levels"),
        ("[" * 5000 + "]" * 5000, "Nested more than 32 levels"),
        ('{"k": "a\\u0000b"}', "contains a NUL character"),
        ('{"\\u0000": 1}', "contains a NUL character"),
        ('{"k": "\\ud800"}', "is not valid text"),
    ],
    ids=[
        "invalid",
        "array",
        "string",
        "number",
        "null",
        "8KiB+1",
        "NaN",
        "Infinity",
        "1e999",
        "5000 digits",
        "33 levels",
        "5000 levels",
        "escaped NUL",
        "NUL key",
        "lone surrogate",
    ],
)
def test_bad_metadata_is_refused_by_the_field_with_the_text_kept_and_nothing_saved(
    client, staff, grace, fake, db, typed, message
):
    assert metadata_size(json.loads(EIGHT_KIB_AND_ONE)) == MAX_METADATA_BYTES + 1
    values = metadata_form(client, grace, "private")
    before = state_of(db, grace)
    fake.calls.clear()

    response = client.post(metadata_url(grace, "private"), data={**values, "value": typed})

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    error = re.search(r'<small id="metadata-value-private-error" class="field-error">(.*?)</small>', page, re.S)
    assert error and message in html.unescape(error.group(1))
    assert 'aria-invalid="true"' in page
    assert form_values(page, metadata_url(grace, "private"))["value"] == typed  # kept as typed
    assert state_of(db, grace) == before
    assert fake.calls == []


@pytest.mark.parametrize(
    ("typed", "path"),
    [('{"tier": 3, "plan": null}', "plan"), ('{"tier": 2, "billing": {"card": null}}', "billing.card")],
    ids=["key", "nested key"],
)
def test_a_key_set_to_null_is_refused_because_clerk_would_remove_it(client, staff, grace, fake, db, typed, path):
    # Clerk's metadata update is a deep merge in which null removes a key: saved here as null, the
    # key would be gone in Clerk, and the dashboard and Clerk would disagree from then on.
    values = metadata_form(client, grace, "private")
    before = state_of(db, grace)
    fake.calls.clear()

    response = client.post(metadata_url(grace, "private"), data={**values, "value": typed})

    assert response.status_code == 422
    page = html.unescape(response.get_data(as_text=True))
    assert f'"{path}" is null: Clerk removes a key set to null, so it would not be kept.' in page
    assert form_values(response.get_data(as_text=True), metadata_url(grace, "private"))["value"] == typed
    assert state_of(db, grace) == before
    assert fake.calls == []


def test_the_edit_form_refuses_a_key_set_to_null_by_its_field(client, staff, grace, fake, db):
    before = state_of(db, grace)
    fake.calls.clear()

    response = edit(client, grace, unsafe_metadata='{"theme": null}', first_name="Amazing Grace")

    assert response.status_code == 422
    page = html.unescape(response.get_data(as_text=True))
    assert '"theme" is null: Clerk removes a key set to null' in page
    assert "Amazing Grace" in page  # what was typed is kept
    assert state_of(db, grace) == before
    assert fake.calls == []


def test_a_null_clerk_already_holds_is_kept_and_the_rest_saved(client, staff, grace, fake, db, grace_in_clerk):
    grace_in_clerk["private_metadata"] = {"legacy": None, "tier": 2}  # written by a full replace, long ago
    grace.private_metadata = json.dumps({"legacy": None, "tier": 2}, sort_keys=True)
    db.session.commit()
    values = metadata_form(client, grace, "private")
    fake.calls.clear()

    response = client.post(metadata_url(grace, "private"), data={**values, "value": '{"legacy": null, "tier": 3}'})

    assert response.status_code == 302
    assert mutations(fake) == [("PATCH", f"/v1/users/{grace.clerk_id}/metadata", {"private_metadata": {"tier": 3}})]
    assert grace_in_clerk["private_metadata"] == {"legacy": None, "tier": 3}
    db.session.expire_all()
    assert json.loads(grace.private_metadata) == grace_in_clerk["private_metadata"]


def test_bad_metadata_over_htmx_answers_the_block_with_the_error(client, staff, grace, fake, db):
    values = metadata_form(client, grace, "unsafe")
    before = state_of(db, grace)

    response = client.post(metadata_url(grace, "unsafe"), data={**values, "value": "[]"}, headers=HX)

    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith('<div id="metadata-unsafe"')
    assert "an array was given" in body and "open" in body
    assert state_of(db, grace) == before


def test_a_nul_byte_typed_into_metadata_is_refused_at_the_door(client, staff, grace, fake, db):
    values = metadata_form(client, grace, "private")
    before = state_of(db, grace)
    response = client.post(metadata_url(grace, "private"), data={**values, "value": '{"a": "x\x00y"}'})
    assert response.status_code == 400 and "NUL" in response.get_data(as_text=True)
    assert state_of(db, grace) == before and mutations(fake) == []


def test_metadata_changed_since_the_form_opened_is_a_conflict_showing_both(client, staff, grace, fake, db):
    values = metadata_form(client, grace, "private")
    grace.private_metadata = json.dumps({"stripe": "cus_2"})  # a webhook, or another admin, meanwhile
    db.session.commit()
    before = state_of(db, grace)
    fake.calls.clear()

    response = client.post(metadata_url(grace, "private"), data={**values, "value": '{"mine": true}'})

    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "changed after you opened it" in page
    assert "cus_2" in page  # what is saved now
    again = form_values(page, metadata_url(grace, "private"))
    assert again["value"] == '{"mine": true}'  # what was typed
    assert state_of(db, grace) == before and fake.calls == []

    assert client.post(metadata_url(grace, "private"), data=again).status_code == 302  # saving again replaces it
    db.session.expire_all()
    assert json.loads(grace.private_metadata) == {"mine": True}


@pytest.mark.parametrize("original", ["not json", '{"a": 1}', "[" * 3000])
def test_an_unreadable_starting_point_is_a_conflict_not_a_blind_overwrite(client, staff, grace, fake, db, original):
    values = metadata_form(client, grace, "private")
    before = state_of(db, grace)
    response = client.post(metadata_url(grace, "private"), data={**values, "original": original, "value": "{}"})
    assert response.status_code == 409
    assert state_of(db, grace) == before and mutations(fake) == []


def test_line_breaks_in_the_stored_text_do_not_make_a_conflict(client, staff, grace, fake, db):
    grace.unsafe_metadata = '{\r\n  "theme": "dark"\n}'  # typed in the edit form, by whatever client
    db.session.commit()
    values = metadata_form(client, grace, "unsafe")
    assert "\n" not in values["original"] and "\r" not in values["original"]
    response = client.post(metadata_url(grace, "unsafe"), data={**values, "value": '{"theme": "light"}'})
    assert response.status_code == 302
    db.session.expire_all()
    assert json.loads(grace.unsafe_metadata) == {"theme": "light"}


def test_hostile_metadata_is_shown_as_text(client, staff, make_user):
    hostile = make_user(private_metadata=json.dumps({"<script>alert(1)</script>": "</textarea><b>x</b>" * 500}))
    page = client.get(f"/users/{hostile.id}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "</textarea><b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- 5. sessions ---------------------------------------------------------------------------------------


def test_the_sessions_panel_lists_the_active_sessions_and_signs_out_everywhere(
    client, staff, token, grace, fake, db, other_in_clerk
):
    first = fake.add_session(grace.clerk_id)
    second = fake.add_session(grace.clerk_id, latest_activity={"browser_name": "Firefox", "city": "Oslo"})
    fake.add_session(grace.clerk_id, status="ended")
    fake.add_session(other_in_clerk["id"])
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert f'hx-get="/users/{grace.id}/sessions"' in page and f'href="/users/{grace.id}/sessions"' in page

    fragment = client.get(f"/users/{grace.id}/sessions", headers=HX)
    body = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and "<html" not in body
    assert "Firefox 126.0.0.0 on Macintosh, Oslo PT" in body and "Chrome 126.0.0.0 on Macintosh, Lisbon PT" in body
    assert body.index(second["id"]) < body.index(first["id"])  # most recently active first
    assert "2 active sessions" in body and "Sign out everywhere" in body
    full = client.get(f"/users/{grace.id}/sessions").get_data(as_text=True)
    assert "<html" in full and second["id"] in full
    fake.calls.clear()

    response = client.post(f"/users/{grace.id}/sessions/revoke", data={"csrf_token": token})

    assert response.status_code == 302 and response.headers["Location"].endswith("#sessions")
    assert sorted(mutations(fake)) == sorted(
        [("POST", f"/v1/sessions/{first['id']}/revoke", None), ("POST", f"/v1/sessions/{second['id']}/revoke", None)]
    )
    assert [s["status"] for s in fake.sessions] == ["revoked", "revoked", "ended", "active"]
    assert states(db) == [(REVOKE_SESSIONS, "delivered")]
    assert "user.sessions_revoke" in history(db, grace)
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert "Signed out everywhere" in page and "Clerk ended their active sessions" in page
    assert "No active sessions" in client.get(f"/users/{grace.id}/sessions", headers=HX).get_data(as_text=True)


def test_the_sessions_panel_without_clerk_says_so_and_offers_nothing(client, staff, token, grace, db):
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert 'id="sessions"' not in page and "Clerk is not connected" in page  # said once, by the Clerk section
    response = client.get(f"/users/{grace.id}/sessions", headers=HX)
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "Clerk is not connected" in body
    assert "Sign out everywhere" not in body
    before = state_of(db, grace)
    refused = client.post(f"/users/{grace.id}/sessions/revoke", data={"csrf_token": token})
    assert refused.status_code == 409 and "Clerk is not connected" in refused.get_data(as_text=True)
    assert state_of(db, grace) == before


def test_the_sessions_panel_with_clerk_down_answers_at_once_and_still_offers_sign_out(
    client, staff, token, grace, fake, db
):
    fake.stop()
    started = time.monotonic()
    body = client.get(f"/users/{grace.id}/sessions", headers=HX).get_data(as_text=True)
    assert time.monotonic() - started < 1.5
    assert "cannot be shown now" in body and "unreachable" in body
    assert "Sign out everywhere" in body  # it goes through the outbox

    response = client.post(f"/users/{grace.id}/sessions/revoke", data={"csrf_token": token})
    assert response.status_code == 302
    assert states(db) == [(REVOKE_SESSIONS, "pending")]
    assert "pending in Clerk" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_the_sessions_panel_with_clerk_slow_gives_up_after_its_short_timeout(client, staff, grace, fake):
    fake.add_session(grace.clerk_id)
    fake.delay = 3
    started = time.monotonic()
    response = client.get(f"/users/{grace.id}/sessions", headers=HX)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and elapsed < 2.5
    assert "did not answer within 1.5 s" in response.get_data(as_text=True)
    started = time.monotonic()
    assert client.get(f"/users/{grace.id}").status_code == 200  # the page itself never asks Clerk
    assert time.monotonic() - started < 1


# --- 6. unlock -----------------------------------------------------------------------------------------


def test_a_locked_user_is_badged_filtered_and_unlocked_in_clerk(
    client, staff, token, grace, make_user, fake, db, grace_in_clerk
):
    grace.locked = True
    grace_in_clerk.update(locked=True, lockout_expires_in_seconds=1800)
    db.session.commit()
    free = make_user(email="free@example.com")

    listing = client.get("/users?locked=1", headers=HX).get_data(as_text=True)
    assert grace.email in listing and free.email not in listing
    assert '<span class="badge badge-locked"' in row_of(listing, grace)
    full = client.get("/users?locked=1").get_data(as_text=True)
    assert 'name="locked" value="1" checked' in full
    assert free.email in client.get("/users", headers=HX).get_data(as_text=True)
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert "badge-locked" in page and f'action="/users/{grace.id}/unlock"' in page

    response = client.post(f"/users/{grace.id}/unlock", data={"csrf_token": token})

    assert response.status_code == 302
    assert mutations(fake) == [("POST", f"/v1/users/{grace.clerk_id}/unlock", None)]
    assert grace_in_clerk["locked"] is False
    db.session.expire_all()
    assert grace.locked is False
    assert states(db) == [(UNLOCK, "delivered")]
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert "Unlocked grace@example.com" in page and "badge-locked" not in page
    assert "Unlocked" in page  # the history's label


def test_unlocking_a_user_who_is_not_locked_is_a_conflict(client, staff, token, grace, fake, db):
    before = state_of(db, grace)
    response = client.post(f"/users/{grace.id}/unlock", data={"csrf_token": token})
    assert response.status_code == 409 and "is not locked" in response.get_data(as_text=True)
    assert state_of(db, grace) == before and mutations(fake) == []


def test_an_unlock_while_clerk_is_down_says_pending_by_locked(client, staff, token, grace, fake, db):
    grace.locked = True
    db.session.commit()
    fake.stop()
    assert client.post(f"/users/{grace.id}/unlock", data={"csrf_token": token}).status_code == 302
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert PENDING in dd_of(page, "Locked")
    assert "unlock pending in Clerk" in row_of(client.get("/users", headers=HX).get_data(as_text=True), grace)


# --- 7. delete -----------------------------------------------------------------------------------------


def test_a_super_admin_deletes_a_user_after_typing_the_email(client, staff, grace, fake, db):
    db.session.add(UserData(user_id=grace.id, key="plan", value="pro"))
    db.session.commit()
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert f'href="/users/{grace.id}/delete"' in page

    confirm = client.get(f"/users/{grace.id}/delete")
    assert confirm.status_code == 200
    values = form_values(confirm.get_data(as_text=True), f"/users/{grace.id}/delete")
    assert "Type grace@example.com to confirm" in confirm.get_data(as_text=True)

    response = client.post(f"/users/{grace.id}/delete", data={**values, "confirm": " Grace@Example.com "})

    assert response.status_code == 302 and response.headers["Location"].endswith(f"/users/{grace.id}")
    assert mutations(fake) == [("DELETE", f"/v1/users/{grace.clerk_id}", None)]
    assert fake.user(grace.clerk_id) is None
    assert states(db) == [(DELETE_USER, "delivered")]
    db.session.expire_all()
    assert grace.deleted_at is not None and grace.data == []
    assert {"user.delete", "user_data.delete"} <= set(history(db, grace))
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert "badge-deleted" in page and "read-only" in page
    assert f"/users/{grace.id}/edit" not in page and f"/users/{grace.id}/delete" not in page
    assert grace.email not in client.get("/users", headers=HX).get_data(as_text=True)
    assert grace.email in client.get("/users?deleted=1", headers=HX).get_data(as_text=True)


def test_a_wrong_confirmation_changes_nothing_and_says_why(client, staff, grace, fake, db):
    values = form_values(client.get(f"/users/{grace.id}/delete").get_data(as_text=True), f"/users/{grace.id}/delete")
    before = state_of(db, grace)

    response = client.post(f"/users/{grace.id}/delete", data={**values, "confirm": "grace@example.org"})

    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'<small id="confirm-error" class="field-error">Type grace@example.com exactly', page)
    assert form_values(page, f"/users/{grace.id}/delete")["confirm"] == "grace@example.org"
    assert state_of(db, grace) == before and mutations(fake) == []


def test_an_admin_cannot_delete_and_is_not_offered_to(client, auth, grace, fake, db):
    auth.sign_in(role=UserRole.ADMIN)
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert f"/users/{grace.id}/delete" not in page
    token = csrf_token_from(page)
    before = state_of(db, grace)

    assert client.get(f"/users/{grace.id}/delete").status_code == 403
    refused = client.post(f"/users/{grace.id}/delete", data={"csrf_token": token, "confirm": grace.email})
    assert refused.status_code == 403 and "users.delete" in refused.get_data(as_text=True)
    assert state_of(db, grace) == before and mutations(fake) == []


def test_nobody_deletes_themselves(client, staff, make_user, db):
    make_user(email="other-boss@example.com", role=UserRole.SUPER_ADMIN)
    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))
    before = state_of(db, staff)
    assert f"/users/{staff.id}/delete" not in client.get(f"/users/{staff.id}").get_data(as_text=True)
    assert client.get(f"/users/{staff.id}/delete").status_code == 403
    response = client.post(f"/users/{staff.id}/delete", data={"csrf_token": token, "confirm": staff.email})
    assert response.status_code == 403 and "delete your own account" in response.get_data(as_text=True)
    assert state_of(db, staff) == before


def test_an_admin_acting_on_staff_gets_403_and_changes_nothing(client, auth, make_user, fake, db, grace_in_clerk):
    auth.sign_in(role=UserRole.ADMIN)
    colleague = make_user(email="colleague@staff.example", role=UserRole.ADMIN, clerk_id=grace_in_clerk["id"])
    colleague.locked = True
    db.session.commit()
    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))
    page = client.get(f"/users/{colleague.id}").get_data(as_text=True)
    assert f"/users/{colleague.id}/unlock" not in page and 'id="sessions"' not in page
    assert f"/users/{colleague.id}/metadata/" not in page
    before = state_of(db, colleague)

    for path, data in [
        (f"/users/{colleague.id}/unlock", {}),
        (f"/users/{colleague.id}/sessions/revoke", {}),
        (f"/users/{colleague.id}/metadata/public", {"value": '{"a": 1}', "original": colleague.public_metadata or ""}),
    ]:
        response = client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 403, path
    assert client.get(f"/users/{colleague.id}/sessions").status_code == 403
    assert state_of(db, colleague) == before and mutations(fake) == []


def test_an_admin_may_unlock_and_sign_out_a_user(client, auth, grace, fake, db, grace_in_clerk):
    auth.sign_in(role=UserRole.ADMIN)
    grace.locked = True
    db.session.commit()
    token = csrf_token_from(client.get(f"/users/{grace.id}").get_data(as_text=True))
    assert client.post(f"/users/{grace.id}/unlock", data={"csrf_token": token}).status_code == 302
    assert client.post(f"/users/{grace.id}/sessions/revoke", data={"csrf_token": token}).status_code == 302
    assert states(db) == [(UNLOCK, "delivered"), (REVOKE_SESSIONS, "delivered")]


def test_a_deleted_user_is_read_only_on_every_new_route_and_no_webhook_brings_it_back(
    client, staff, token, grace, fake, db, grace_in_clerk, signing_secret
):
    grace.locked = True
    db.session.commit()
    values = form_values(client.get(f"/users/{grace.id}/delete").get_data(as_text=True), f"/users/{grace.id}/delete")
    assert client.post(f"/users/{grace.id}/delete", data={**values, "confirm": grace.email}).status_code == 302
    before = state_of(db, grace)
    fake.calls.clear()

    for method, path, data in [
        ("POST", f"/users/{grace.id}/metadata/private", {"value": "{}", "original": ""}),
        ("GET", f"/users/{grace.id}/sessions", None),
        ("POST", f"/users/{grace.id}/sessions/revoke", {}),
        ("POST", f"/users/{grace.id}/unlock", {}),
        ("GET", f"/users/{grace.id}/delete", None),
        ("POST", f"/users/{grace.id}/delete", {"confirm": "grace@example.com"}),
    ]:
        response = client.get(path) if method == "GET" else client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 409, (method, path, response.status_code)
        assert "read-only" in response.get_data(as_text=True)
    assert state_of(db, grace) == before and fake.calls == []

    late = {**grace_in_clerk, "first_name": "Back", "updated_at": grace_in_clerk["updated_at"] + 60_000}
    assert sign(user_updated(late, updated_at=late["updated_at"])).post(client).status_code == 200
    db.session.expire_all()
    assert grace.deleted_at is not None and grace.first_name == "Grace"
    assert grace.email not in client.get("/users", headers=HX).get_data(as_text=True)


# --- 1. a permanent refusal: Retry and "Take Clerk's value" ----------------------------------------


def test_take_clerks_value_restores_the_username_clerk_refused(client, staff, grace, fake, db):
    response = edit(client, grace, username="taken")

    assert response.status_code == 302
    assert mutations(fake) == [("PATCH", f"/v1/users/{grace.clerk_id}", {"username": "taken"})]
    (failed,) = calls(db)
    assert failed.state == "failed"
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    assert "That username is taken" in page
    assert REFUSED in dd_of(page, "Username") and PENDING not in dd_of(page, "Username")
    assert REFUSED not in dd_of(page, "First name") and PENDING not in dd_of(page, "First name")
    assert f'action="/clerk/calls/{failed.id}/retry"' in page
    user_cell = cells(row_of(client.get("/users", headers=HX).get_data(as_text=True), grace))[1]
    assert REFUSED in user_cell and PENDING not in user_cell
    take = f"/clerk/calls/{failed.id}/take-clerk-value"
    assert f'action="{take}"' in page
    fake.calls.clear()

    response = client.post(take, data=form_values(page, take))

    assert response.status_code == 302 and response.headers["Location"].endswith(f"/users/{grace.id}#clerk")
    assert mutations(fake) == []  # Clerk is only read
    db.session.expire_all()
    assert grace.username == "grace"
    assert states(db) == [(UPDATE_USER, "superseded")]
    assert "clerk.take_value" in history(db, grace)
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Took Clerk&#39;s value" in page and "username: &#39;taken&#39; → &#39;grace&#39;" in page
    assert REFUSED not in dd_of(page, "Username") and PENDING not in dd_of(page, "Username")
    assert "Every change to this user has reached Clerk" in page

    again = client.post(take, data={"csrf_token": csrf_token_from(page)})
    assert again.status_code == 409 and "only a failed call" in again.get_data(as_text=True)


def test_take_clerks_value_with_clerk_down_changes_nothing_and_says_so(client, staff, grace, fake, db):
    edit(client, grace, username="taken")
    (failed,) = calls(db)
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    before = state_of(db, grace)
    fake.stop()

    response = client.post(f"/clerk/calls/{failed.id}/take-clerk-value", data={"csrf_token": csrf_token_from(page)})

    assert response.status_code == 302
    assert state_of(db, grace) == before
    assert "Could not take Clerk&#39;s value" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_take_clerks_value_is_for_those_who_manage_the_user(client, auth, make_user, fake, db, grace_in_clerk):
    boss = make_user(email="boss2@staff.example", role=UserRole.ADMIN, clerk_id=grace_in_clerk["id"])
    call = enqueue(boss, UPDATE_USER, {"user_id": boss.clerk_id, "fields": {"username": "taken"}})
    call.state = "failed"
    db.session.commit()
    auth.sign_in(role=UserRole.ADMIN)
    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))
    response = client.post(f"/clerk/calls/{call.id}/take-clerk-value", data={"csrf_token": token})
    assert response.status_code == 403
    assert states(db) == [(UPDATE_USER, "failed")]


def test_retry_of_a_refused_username_after_clerk_frees_it(client, staff, grace, fake, db, other_in_clerk):
    edit(client, grace, username="taken")
    (failed,) = calls(db)
    other_in_clerk["username"] = "someone_else"
    page = client.get(f"/users/{grace.id}").get_data(as_text=True)
    response = client.post(f"/clerk/calls/{failed.id}/retry", data=form_values(page, f"/clerk/calls/{failed.id}/retry"))
    assert response.status_code == 302
    assert fake.user(grace.clerk_id)["username"] == "taken"
    assert states(db) == [(UPDATE_USER, "delivered")]


# --- the outbox page, the suspension's confirmation, CSRF ------------------------------------------------


def test_the_outbox_page_describes_each_new_call(client, staff, grace, db):
    actor_calls = [
        (UPDATE_USER, {"user_id": "u", "fields": {"username": "x", "first_name": "A"}}),
        (EDIT_METADATA, {"user_id": "u", "kind": "private_metadata", "value": {}}),
        (CREATE_EMAIL, {"user_id": "u", "email_address": "new@example.com", "previous": "old@example.com"}),
        (DELETE_EMAIL, {"user_id": "u", "email_address": "old@example.com", "keep": "new@example.com"}),
        (REVOKE_SESSIONS, {"user_id": "u"}),
        (UNLOCK, {"user_id": "u"}),
        (DELETE_USER, {"user_id": "u"}),
    ]
    for operation, payload in actor_calls:
        db.session.add(ClerkCall(user_id=grace.id, operation=operation, payload=json.dumps(payload), state="pending"))
    db.session.commit()
    page = client.get("/clerk").get_data(as_text=True)
    for text in (
        "Update profile: first_name, username",
        "Edit private metadata",
        "Add email new@example.com as primary",
        "Remove email old@example.com",
        "Sign out everywhere",
        "Unlock",
        "Delete in Clerk",
    ):
        assert text in page, text


def test_the_suspension_confirmation_says_it_ends_every_session(client, staff, grace, fake):
    inline = client.get(f"/users/{grace.id}/status?to=suspended", headers=HX).get_data(as_text=True)
    full = client.get(f"/users/{grace.id}/status?to=suspended").get_data(as_text=True)
    assert "bans them in Clerk, which ends all their sessions" in inline
    assert "bans the user in Clerk, which ends all their sessions" in full


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/users/{id}/metadata/private", {"value": "{}", "original": ""}),
        ("/users/{id}/sessions/revoke", {}),
        ("/users/{id}/unlock", {}),
        ("/users/{id}/delete", {"confirm": "grace@example.com"}),
        ("/clerk/calls/{call}/take-clerk-value", {}),
    ],
)
def test_each_new_post_without_csrf_is_refused(client, staff, grace, fake, db, path, data):
    grace.locked = True
    call = ClerkCall(user_id=grace.id, operation=UPDATE_USER, payload='{"user_id": "x", "fields": {}}', state="failed")
    db.session.add(call)
    db.session.commit()
    before = state_of(db, grace)
    response = client.post(path.format(id=grace.id, call=call.id), data=data)
    assert response.status_code == 400 and "CSRF" in response.get_data(as_text=True)
    assert state_of(db, grace) == before and mutations(fake) == []


def test_history_labels_read_as_words(db, grace):
    from app.audit.labels import action_label

    for action, label in [
        ("user.metadata", "Metadata edited"),
        ("user.unlock", "Unlocked"),
        ("user.sessions_revoke", "Signed out everywhere"),
        ("user.delete", "Deleted"),
        ("clerk.take_value", "Took Clerk's value"),
    ]:
        assert action_label(action) == label
    assert "refused by Clerk" in action_label("clerk.email_refused")
