"""Changing users from the dashboard: invite, edit, status, bulk, key-value data.

Every refused request leaves the database as it was, and every accepted one writes the audit
trail in the same transaction.
"""

import json
import re

import pytest
import sqlalchemy as sa

from app.models import AuditEvent, User, UserData, UserRole, UserStatus
from tests.conftest import HX, form_values


def table_state(db) -> tuple:
    """Everything a refused request must leave untouched."""
    db.session.expire_all()
    users = db.session.execute(
        sa.select(User.id, User.email, User.first_name, User.last_name, User.role, User.status, User.version).order_by(
            User.id
        )
    ).all()
    data = db.session.execute(sa.select(UserData.id, UserData.key, UserData.value).order_by(UserData.id)).all()
    audits = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))
    return users, data, audits


def audit_actions(db, user) -> list[str]:
    return list(
        db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.target_id == user.id).order_by(AuditEvent.occurred_at)
        )
    )


# --- invite ------------------------------------------------------------------------------------


def test_invite_creates_an_invited_user_and_audits_it(client, token, staff, db):
    response = client.post(
        "/users",
        data={
            "csrf_token": token,
            "email": "New.Person@Example.com",
            "first_name": "New",
            "last_name": "Person",
            "role": "admin",
        },
    )
    assert response.status_code == 302
    user = db.session.scalars(sa.select(User).where(User.email == "new.person@example.com")).one()
    assert (user.status, user.role, user.first_name) == (UserStatus.INVITED, UserRole.ADMIN, "New")
    assert user.clerk_id.startswith("local_")
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.invite")).one()
    assert (event.actor_id, event.target_id, event.source) == (staff.id, user.id, "dashboard")
    assert response.headers["Location"] == f"/users/{user.id}"


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "Enter a valid email address."),
        ({"email": ""}, "email", "Email is required."),
        ({"email": "ok@example.com", "first_name": "A"}, "first_name", "Must be between 2 and 100 characters."),
        ({"email": "ok@example.com", "last_name": "B"}, "last_name", "Must be between 2 and 100 characters."),
        ({"email": "ok@example.com", "role": "owner"}, "role", "Not a valid choice"),
        ({"email": "ADA@example.com"}, "email", "already belongs to another user"),
    ],
)
def test_invite_refusals_show_by_the_field_keep_input_and_change_nothing(client, token, ada, db, form, field, message):
    before = table_state(db)
    data = {"csrf_token": token, "role": "user", "first_name": "<b>Typed</b>", **form}
    response = client.post("/users", data=data)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true"|aria-invalid="true"[^>]*id="{field}"', html)
    assert message in html
    assert "&lt;b&gt;Typed&lt;/b&gt;" in html or field == "first_name"  # what was typed is kept, as text
    assert table_state(db) == before


def test_a_post_without_csrf_is_refused(client, staff, ada, db):
    before = table_state(db)
    for url, data in [
        ("/users", {"email": "x@example.com"}),
        (f"/users/{ada.id}/status", {"status": "suspended"}),
        (f"/users/{ada.id}/edit", {"email": "y@example.com"}),
        (f"/users/{ada.id}/data", {"key": "k", "value": "v"}),
        ("/users/bulk", {"ids": ada.id, "action": "suspended"}),
    ]:
        response = client.post(url, data=data)
        assert response.status_code == 400, url
        assert "CSRF" in response.get_data(as_text=True)
    assert table_state(db) == before


# --- edit --------------------------------------------------------------------------------------


def edit_form(user, token, **changes) -> dict:
    form = {
        "csrf_token": token,
        "email": user.email,
        "first_name": user.first_name or "",
        "last_name": user.last_name or "",
        "username": user.username or "",
        "role": user.role.value,
        "status": user.status.value,
        "image_url": user.image_url or "",
        "external_id": user.external_id or "",
        "public_metadata": user.public_metadata or "",
        "private_metadata": user.private_metadata or "",
        "unsafe_metadata": user.unsafe_metadata or "",
        "version": str(user.version),
    }
    form.update(changes)
    return form


def test_edit_form_names_fields_as_columns(client, staff, ada):
    html = client.get(f"/users/{ada.id}/edit").get_data(as_text=True)
    for name in (
        "email",
        "first_name",
        "last_name",
        "username",
        "role",
        "status",
        "external_id",
        "public_metadata",
        "private_metadata",
        "unsafe_metadata",
        "version",
    ):
        assert f'name="{name}"' in html


def test_the_profile_image_is_clerks_and_not_editable_here(client, token, staff, ada, db):
    """Clerk has no call to set an image by address: an edit here would revert at the next webhook."""
    before = ada.image_url
    assert 'name="image_url"' not in client.get(f"/users/{ada.id}/edit").get_data(as_text=True)
    form = edit_form(ada, token, first_name="Augusta", image_url="https://evil.example/x.png")
    assert client.post(f"/users/{ada.id}/edit", data=form).status_code == 302
    db.session.expire_all()
    assert (ada.first_name, ada.image_url) == ("Augusta", before)


def test_edit_saves_audits_before_and_after(client, token, staff, ada, db):
    response = client.post(
        f"/users/{ada.id}/edit",
        data=edit_form(ada, token, first_name="Augusta", public_metadata='{"plan": "pro"}', role="admin"),
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert (ada.first_name, ada.role, ada.public_metadata, ada.version) == (
        "Augusta",
        UserRole.ADMIN,
        '{"plan": "pro"}',
        2,
    )
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.update")).one()
    assert json.loads(event.changes) == {
        "first_name": ["Ada", "Augusta"],
        "public_metadata": [None, '{"plan": "pro"}'],
        "role": ["user", "admin"],
    }
    page = client.get(f"/users/{ada.id}").get_data(as_text=True)
    assert "Augusta" in page and "Edited" in page and staff.email in page


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"email": "nope"}, "email", "Enter a valid email address."),
        ({"first_name": "A"}, "first_name", "Must be between 2 and 100 characters."),
        ({"status": "banned"}, "status", "Not a valid choice"),
        ({"role": "root"}, "role", "Not a valid choice"),
        ({"public_metadata": "{not json"}, "public_metadata", "Not valid JSON"),
        ({"private_metadata": "[1, 2]"}, "private_metadata", "must be a JSON object"),
    ],
)
def test_edit_refusals_keep_what_was_typed_and_change_nothing(client, token, ada, db, changes, field, message):
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/edit", data=edit_form(ada, token, last_name="Typed-Kept", **changes))
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert message in html
    assert f'aria-describedby="{field}-error"' in html
    assert 'value="Typed-Kept"' in html
    assert table_state(db) == before


def test_edit_to_an_email_of_another_user_is_refused(client, token, ada, make_user, db):
    make_user(email="taken@example.com")
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/edit", data=edit_form(ada, token, email="TAKEN@example.com"))
    assert response.status_code == 422
    assert "already belongs to another user" in response.get_data(as_text=True)
    assert table_state(db) == before


def test_two_admins_saving_the_same_user_cannot_overwrite_each_other(client, token, ada, db):
    url = f"/users/{ada.id}/edit"
    first, second = (form_values(client.get(url).text, url) for _ in range(2))
    assert client.post(url, data={**first, "first_name": "First-Save"}).status_code == 302
    before = table_state(db)
    response = client.post(url, data={**second, "first_name": "Second-Save"})
    html = response.get_data(as_text=True)
    assert response.status_code == 409
    assert "Someone else saved this user" in html
    assert "First-Save" in html  # the current value is shown
    assert 'value="Second-Save"' in html  # and what the second admin typed is kept
    assert table_state(db) == before
    # Saving again from the conflict page (it carries the current version) goes through.
    again = client.post(url, data=form_values(html, url))
    assert again.status_code == 302
    db.session.expire_all()
    assert ada.first_name == "Second-Save"


def test_htmx_boosted_edit_page_is_a_full_page(client, staff, ada):
    assert "<html" in client.get(f"/users/{ada.id}/edit").get_data(as_text=True)


# --- status ------------------------------------------------------------------------------------


def test_status_change_asks_for_confirmation_first(client, staff, ada, db):
    page = client.get(f"/users/{ada.id}/status?to=suspended")
    assert page.status_code == 200 and "Suspend ada@example.com?" in page.get_data(as_text=True)
    fragment = client.get(f"/users/{ada.id}/status?to=suspended&view=row", headers=HX).get_data(as_text=True)
    assert fragment.startswith('<tr id="user-') and 'name="status" value="suspended"' in fragment
    db.session.expire_all()
    assert ada.status == UserStatus.ACTIVE  # asking changes nothing


def test_suspend_from_the_list_returns_the_updated_row(client, token, ada, db):
    response = client.post(
        f"/users/{ada.id}/status", data={"csrf_token": token, "status": "suspended", "view": "row"}, headers=HX
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.strip().startswith(f'<tr id="user-{ada.id}">') and "badge-status-suspended" in html
    assert "Reactivate" in html
    db.session.expire_all()
    assert ada.status == UserStatus.SUSPENDED
    assert audit_actions(db, ada) == ["user.suspend"]


def test_reactivate_from_the_detail_page_without_htmx(client, token, make_user, db):
    user = make_user(status=UserStatus.SUSPENDED)
    response = client.post(f"/users/{user.id}/status", data={"csrf_token": token, "status": "active"})
    assert response.status_code == 302
    db.session.expire_all()
    assert user.status == UserStatus.ACTIVE
    assert audit_actions(db, user) == ["user.reactivate"]


@pytest.mark.parametrize("status", ["invited", "banned", ""])
def test_status_refuses_values_it_cannot_set(client, token, ada, db, status):
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/status", data={"csrf_token": token, "status": status})
    assert response.status_code == 400
    assert table_state(db) == before


def test_confirm_with_an_unknown_target_is_400(client, staff, ada):
    assert client.get(f"/users/{ada.id}/status?to=deleted").status_code == 400


# --- bulk --------------------------------------------------------------------------------------


def test_bulk_suspend_in_one_transaction_re_renders_the_results(client, token, make_user, db):
    users = [make_user(email=f"b{i}@example.com") for i in range(3)]
    spared = make_user(email="spared@example.com")
    response = client.post(
        "/users/bulk",
        data={
            "csrf_token": token,
            "action": "suspended",
            "confirm": "y",
            "ids": [u.id for u in users] + ["no-such-id"],
        },
        headers=HX,
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "3 of 4 selected users changed (suspend)." in html
    assert "<table" in html and "<html" not in html
    db.session.expire_all()
    assert [u.status for u in users] == [UserStatus.SUSPENDED] * 3
    assert spared.status == UserStatus.ACTIVE
    assert all(audit_actions(db, u) == ["user.suspend"] for u in users)


def test_bulk_without_selection_or_action_changes_nothing(client, token, ada, db):
    before = table_state(db)
    for data in ({"action": "suspended"}, {"ids": ada.id, "action": "delete"}, {"ids": ada.id}):
        response = client.post("/users/bulk", data={"csrf_token": token, **data}, headers=HX)
        assert response.status_code == 422
        assert "Choose an action" in response.text or "Select at least one user" in response.text
    assert table_state(db) == before


def test_bulk_keeps_the_filters_of_the_view(client, token, make_user):
    make_user(email="keep@example.com", role=UserRole.ADMIN)
    make_user(email="hidden@example.com")
    html = client.post(
        "/users/bulk?role=admin", data={"csrf_token": token, "action": "suspended", "confirm": "y"}, headers=HX
    ).get_data(as_text=True)
    assert "keep@example.com" in html and "hidden@example.com" not in html


# --- key-value data ----------------------------------------------------------------------------


def test_add_edit_delete_key_value_data(client, token, ada, db):
    added = client.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"}, headers=HX)
    assert added.status_code == 200 and "<code>plan</code>" in added.get_data(as_text=True)
    item = db.session.scalars(sa.select(UserData)).one()

    form = client.get(f"/users/{ada.id}/data/{item.id}/edit", headers=HX).get_data(as_text=True)
    assert 'value="plan"' in form
    saved = client.post(
        f"/users/{ada.id}/data/{item.id}", data={"csrf_token": token, "key": "plan", "value": "team"}, headers=HX
    )
    assert saved.status_code == 200 and "team" in saved.get_data(as_text=True)

    deleted = client.post(f"/users/{ada.id}/data/{item.id}/delete", data={"csrf_token": token}, headers=HX)
    assert deleted.status_code == 200 and deleted.get_data(as_text=True) == ""
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserData)) == 0
    assert audit_actions(db, ada) == ["user_data.add", "user_data.update", "user_data.delete"]


def test_duplicate_key_is_refused_with_a_message(client, token, ada, db):
    db.session.add(UserData(user_id=ada.id, key="plan", value="pro"))
    db.session.commit()
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "x"}, headers=HX)
    assert response.status_code == 422
    assert "already has a key named" in response.get_data(as_text=True)
    assert table_state(db) == before


def test_renaming_a_key_onto_another_is_refused(client, token, ada, db):
    db.session.add_all([UserData(user_id=ada.id, key="a", value="1"), UserData(user_id=ada.id, key="b", value="2")])
    db.session.commit()
    item = db.session.scalars(sa.select(UserData).where(UserData.key == "b")).one()
    before = table_state(db)
    response = client.post(
        f"/users/{ada.id}/data/{item.id}", data={"csrf_token": token, "key": "a", "value": "2"}, headers=HX
    )
    assert response.status_code == 422 and "already has a key named" in response.get_data(as_text=True)
    assert table_state(db) == before


def test_a_racing_duplicate_key_hits_the_constraint_and_gets_the_same_message(client, token, ada, db, monkeypatch):
    db.session.add(UserData(user_id=ada.id, key="plan", value="pro"))
    db.session.commit()
    # As if another request inserted the key between our check and our insert.
    monkeypatch.setattr("app.users.services._ensure_key_free", lambda user, key: None)
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "x"})
    assert response.status_code == 422
    assert "already has a key named" in response.get_data(as_text=True)
    assert table_state(db) == before


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("", "v", "Key is required."),
        ("k", "", "Value is required."),
        ("bad key!", "v", "Letters, digits and _ . : - only"),
        ("k" * 256, "v", "At most 255 characters."),
        ("k", "v" * 10_001, "At most 10,000 characters."),
    ],
)
def test_key_value_rules(client, token, ada, db, key, value, message):
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/data", data={"csrf_token": token, "key": key, "value": value}, headers=HX)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert table_state(db) == before


def test_key_value_limits_are_accepted_at_the_edge(client, token, ada, db):
    response = client.post(
        f"/users/{ada.id}/data", data={"csrf_token": token, "key": "k" * 255, "value": "v" * 10_000}, headers=HX
    )
    assert response.status_code == 200
    assert db.session.scalar(sa.select(sa.func.length(UserData.value))) == 10_000


def test_data_of_another_user_is_404(client, token, ada, make_user, db):
    other = make_user()
    db.session.add(UserData(user_id=other.id, key="k", value="v"))
    db.session.commit()
    item = db.session.scalars(sa.select(UserData)).one()
    assert client.post(f"/users/{ada.id}/data/{item.id}/delete", data={"csrf_token": token}).status_code == 404
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserData)) == 1


# --- unknown ids and markup ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/users/nope", "/users/nope/edit", "/users/nope/status?to=active", "/users/nope/row"])
def test_unknown_ids_are_404(client, staff, url):
    assert client.get(url).status_code == 404


def test_unknown_ids_are_404_on_post(client, token):
    for url in ("/users/nope/status", "/users/nope/edit", "/users/nope/data", "/users/nope/data/x/delete"):
        assert client.post(url, data={"csrf_token": token, "status": "active"}).status_code == 404


def test_markup_typed_into_data_is_shown_as_text(client, token, ada):
    client.post(
        f"/users/{ada.id}/data", data={"csrf_token": token, "key": "note", "value": "<img src=x onerror=alert(1)>"}
    )
    html = client.get(f"/users/{ada.id}").get_data(as_text=True)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
