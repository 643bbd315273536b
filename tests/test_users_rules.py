"""The rules that must agree on every path (issue 12): deleted users are read-only, `invited` is
left only by revocation or Clerk's claim, the rules bind what an admin changed, key-value pairs
and users have the same optimistic check, bulk actions are confirmed, nobody acts on themselves,
and what admins type is clean (one spelling per email, no control or bidi characters, metadata a
standard JSON object of at most 8 KiB).
"""

import json

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import User, UserData, UserRole, UserStatus, utcnow
from app.users.services import (
    DataConflict,
    ReadOnlyUser,
    UserError,
    add_user_data,
    bulk_set_status,
    delete_user_data,
    edit_user,
    invite_user,
    next_statuses,
    preview_bulk_status,
    revoke_invitation,
    set_status,
    update_user_data,
)
from tests.conftest import HX, form_values
from tests.test_users_actions import table_state

CLI = Actor.cli()


@pytest.fixture
def ghost(make_user, db):
    """A user deleted in Clerk, with a key-value pair."""
    user = make_user(email="ghost@example.com", first_name="Gone", deleted_at=utcnow())
    db.session.add(UserData(user_id=user.id, key="plan", value="pro"))
    db.session.commit()
    return user


def edit_page_values(client, user) -> dict:
    return form_values(client.get(f"/users/{user.id}/edit").text, f"/users/{user.id}/edit")


# --- 9. a user deleted in Clerk is read-only everywhere ----------------------------------------


def test_a_deleted_user_is_read_only_on_every_path(client, token, ghost, db):
    item = ghost.data[0]
    before = table_state(db)
    attempts = [
        client.get(f"/users/{ghost.id}/edit"),
        client.post(
            f"/users/{ghost.id}/edit",
            data={"csrf_token": token, "email": "ghost@example.com", "first_name": "Back", "status": "active"},
        ),
        client.post(f"/users/{ghost.id}/status", data={"csrf_token": token, "status": "suspended"}),
        client.post(f"/users/{ghost.id}/data", data={"csrf_token": token, "key": "new", "value": "v"}),
        client.post(f"/users/{ghost.id}/data/{item.id}", data={"csrf_token": token, "key": "plan", "value": "x"}),
        client.post(f"/users/{ghost.id}/data/{item.id}/delete", data={"csrf_token": token}),
        client.get(f"/users/{ghost.id}/data/{item.id}/edit"),
    ]
    for response in attempts:
        assert response.status_code == 409, response.request.path
        assert "was deleted" in response.text
    assert table_state(db) == before


def test_a_deleted_users_page_says_so_and_offers_no_change(client, staff, ghost):
    html = client.get(f"/users/{ghost.id}").text
    assert "this account is read-only here" in html
    assert f"/users/{ghost.id}/edit" not in html
    assert 'name="to"' not in html and 'id="data-add"' not in html and ">Delete<" not in html


def test_services_refuse_a_deleted_user(ghost, db):
    for change in (
        lambda: edit_user(ghost, {"first_name": "Back"}, expected_version=None, actor=CLI),
        lambda: set_status(ghost, UserStatus.SUSPENDED, actor=CLI),
        lambda: add_user_data(ghost, "k", "v", actor=CLI),
        lambda: update_user_data(ghost.data[0], "plan", "x", actor=CLI),
        lambda: delete_user_data(ghost.data[0], actor=CLI),
    ):
        with pytest.raises(ReadOnlyUser):
            change()
    assert next_statuses(ghost) == ()
    result = bulk_set_status([ghost.id], UserStatus.SUSPENDED, actor=CLI)
    assert result.changed == [] and "read-only" in result.refused["ghost@example.com"]


# --- 10. invited users leave that status only by revocation or Clerk's claim --------------------


def test_the_edit_form_never_offers_invited_to_a_user_who_is_not(client, token, ada, db):
    html = client.get(f"/users/{ada.id}/edit").text
    assert '<option value="invited"' not in html
    values = {**edit_page_values(client, ada), "status": "invited"}
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/edit", data=values)
    assert response.status_code == 422 and "Not a valid choice" in response.text
    assert table_state(db) == before


def test_an_invited_users_status_cannot_be_changed_by_edit_row_or_bulk(client, token, staff, db):
    invited = invite_user("newbie@example.com", actor=Actor.staff(staff))
    db.session.commit()
    html = client.get(f"/users/{invited.id}/edit").text
    assert "status-readonly" in html and '<select id="status"' not in html
    before = table_state(db)
    edit = client.post(f"/users/{invited.id}/edit", data={**edit_page_values(client, invited), "status": "active"})
    assert edit.status_code == 422
    status = client.post(f"/users/{invited.id}/status", data={"csrf_token": token, "status": "inactive"})
    assert status.status_code == 409 and "is invited" in status.text
    bulk = client.post(
        "/users/bulk", headers=HX, data={"csrf_token": token, "action": "inactive", "confirm": "y", "ids": [invited.id]}
    )
    assert "newbie@example.com: not changed." in bulk.text and "is invited" in bulk.text
    assert table_state(db) == before
    # Its row offers no status action either; the invitation can still be revoked.
    assert 'name="to"' not in client.get("/users?status=invited").text
    revoke_invitation(invited, actor=Actor.staff(staff))
    assert invited.status == UserStatus.INACTIVE


def test_services_keep_invited_for_revocation_and_claim(make_user, db):
    invited = invite_user("waiting@example.com", actor=CLI)
    for status in (UserStatus.ACTIVE, UserStatus.SUSPENDED, UserStatus.INACTIVE):
        with pytest.raises(UserError, match="is invited"):
            set_status(invited, status, actor=CLI)
        with pytest.raises(UserError, match="is invited"):
            edit_user(invited, {"status": status}, expected_version=None, actor=CLI)
    active = make_user()
    with pytest.raises(UserError):
        set_status(active, UserStatus.INVITED, actor=CLI)
    with pytest.raises(UserError):
        edit_user(active, {"status": UserStatus.INVITED}, expected_version=None, actor=CLI)
    assert next_statuses(invited) == ()


def test_create_admin_does_not_take_an_invited_row_past_its_invitation(runner, db):
    invite_user("pending@example.com", actor=CLI)
    db.session.commit()
    result = runner.invoke(args=["users", "create-admin", "pending@example.com"])
    assert result.exit_code != 0 and "revoke the invitation first" in result.output
    user = db.session.scalars(sa.select(User).where(User.email == "pending@example.com")).one()
    assert (user.status, user.role) == (UserStatus.INVITED, UserRole.USER)


# --- 11. rules bind the fields an admin changed -------------------------------------------------


def test_a_user_as_clerk_sent_it_stays_editable(client, staff, make_user, db):
    odd = make_user(email="j@example.com", first_name="J", username="u" * 80, external_id="x" * 300)
    values = edit_page_values(client, odd)
    response = client.post(f"/users/{odd.id}/edit", data={**values, "email": "j.new@example.com"})
    assert response.status_code == 302, response.text
    db.session.expire_all()
    assert (odd.email, odd.first_name, odd.username) == ("j.new@example.com", "J", "u" * 80)
    # A field the admin does change must pass its rule.
    values = edit_page_values(client, odd)
    refused = client.post(f"/users/{odd.id}/edit", data={**values, "first_name": "K"})
    assert refused.status_code == 422 and "Must be between 2 and 100 characters." in refused.text


# --- 12. key-value pairs have the optimistic check users have ------------------------------------


def pair_form(client, user, item) -> dict:
    html = client.get(f"/users/{user.id}/data/{item.id}/edit", headers=HX).text
    return form_values(html, f"/users/{user.id}/data/{item.id}")


def test_two_tabs_saving_one_pair_cannot_overwrite_each_other(client, token, ada, db):
    item = add_user_data(ada, "plan", "pro", actor=CLI)
    db.session.commit()
    first, second = pair_form(client, ada, item), pair_form(client, ada, item)
    assert (
        client.post(f"/users/{ada.id}/data/{item.id}", data={**first, "value": "team"}, headers=HX).status_code == 200
    )
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/data/{item.id}", data={**second, "value": "free"}, headers=HX)
    assert response.status_code == 409
    assert response.text.startswith(f'<tr id="data-{item.id}"')  # in its row, not an error card
    assert "Someone else changed plan" in response.text and "team" in response.text and "free" in response.text
    assert table_state(db) == before
    # Saving again from the row (it now carries the saved version) goes through.
    again = form_values(response.text, f"/users/{ada.id}/data/{item.id}")
    assert client.post(f"/users/{ada.id}/data/{item.id}", data=again, headers=HX).status_code == 200
    db.session.expire_all()
    assert db.session.get(UserData, item.id).value == "free"


def test_deleting_a_pair_changed_in_another_tab_is_refused(client, token, ada, db):
    item = add_user_data(ada, "plan", "pro", actor=CLI)
    db.session.commit()
    row = client.get(f"/users/{ada.id}").text
    stale = form_values(row, f"/users/{ada.id}/data/{item.id}/delete")
    update_user_data(item, "plan", "team", actor=CLI)
    db.session.commit()
    response = client.post(f"/users/{ada.id}/data/{item.id}/delete", data=stale, headers=HX)
    assert response.status_code == 409 and "team" in response.text
    assert db.session.get(UserData, item.id) is not None


def test_saving_a_pair_deleted_in_another_tab_says_so_in_its_row(client, token, ada, db):
    item = add_user_data(ada, "plan", "pro", actor=CLI)
    db.session.commit()
    form = pair_form(client, ada, item)
    delete_user_data(item, actor=CLI)
    db.session.commit()
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/data/{item.id}", data={**form, "value": "typed"}, headers=HX)
    assert response.status_code == 404
    assert response.text.startswith(f'<tr id="data-{item.id}"') and 'class="error' not in response.text
    assert "no longer exists" in response.text and "typed" in response.text
    assert table_state(db) == before


def test_services_check_a_pairs_version(ada, db):
    item = add_user_data(ada, "plan", "pro", actor=CLI)
    db.session.commit()
    with pytest.raises(DataConflict):
        update_user_data(item, "plan", "x", actor=CLI, expected_version=item.version + 1)
    with pytest.raises(DataConflict):
        delete_user_data(item, actor=CLI, expected_version=item.version + 1)
    update_user_data(item, "plan", "x", actor=CLI, expected_version=item.version)
    db.session.commit()
    assert item.version == 2


# --- 13. a conflict applies only the fields this admin changed -----------------------------------


def test_saving_again_after_a_conflict_keeps_the_other_persons_changes(client, staff, ada, db):
    mine, theirs = edit_page_values(client, ada), edit_page_values(client, ada)
    assert client.post(f"/users/{ada.id}/edit", data={**theirs, "last_name": "Byron"}).status_code == 302
    conflict = client.post(f"/users/{ada.id}/edit", data={**mine, "first_name": "Augusta"})
    assert conflict.status_code == 409
    html = conflict.text
    assert "Last name" in html and "Byron" in html and "not changed by you" in html
    assert "First name" not in html.split("conflict-fields")[1].split("</table>")[0]  # only what differs
    again = form_values(html, f"/users/{ada.id}/edit")
    assert (again["first_name"], again["last_name"]) == ("Augusta", "Byron")
    assert client.post(f"/users/{ada.id}/edit", data=again).status_code == 302
    db.session.expire_all()
    assert (ada.first_name, ada.last_name) == ("Augusta", "Byron")


def test_a_conflict_on_the_same_field_shows_both_values(client, staff, ada, db):
    mine, theirs = edit_page_values(client, ada), edit_page_values(client, ada)
    client.post(f"/users/{ada.id}/edit", data={**theirs, "first_name": "Theirs"})
    html = client.post(f"/users/{ada.id}/edit", data={**mine, "first_name": "Mine"}).text
    table = html.split("conflict-fields")[1].split("</table>")[0]
    assert "Theirs" in table and "Mine" in table and "you changed this too" in table


def test_a_forged_original_is_ignored(client, staff, make_user, db):
    odd = make_user(first_name="J")
    values = {**edit_page_values(client, odd), "original": "forged", "first_name": "Q"}
    response = client.post(f"/users/{odd.id}/edit", data=values)
    assert response.status_code == 422  # without a signed original, a changed field is checked


# --- 14. bulk actions: confirmation, nothing preselected, never yourself --------------------------


def test_bulk_asks_for_confirmation_with_the_count_first(client, token, staff, make_user, db):
    users = [make_user(email=f"b{i}@example.com") for i in range(3)]
    suspended = make_user(email="already@example.com", status=UserStatus.SUSPENDED)
    before = table_state(db)
    ids = [u.id for u in users] + [suspended.id, staff.id]
    response = client.post("/users/bulk", headers=HX, data={"csrf_token": token, "action": "suspended", "ids": ids})
    assert response.status_code == 200 and "<table" not in response.text
    assert "Suspend 3 users?" in response.text
    assert "1 already is suspended" in response.text
    assert f"{staff.email}</span>: You cannot change your own status" in response.text
    assert table_state(db) == before
    confirm = form_values(response.text, "/users/bulk")
    assert confirm["confirm"] == "y"
    done = client.post("/users/bulk", headers=HX, data={**confirm, "ids": ids})
    assert "3 of 5 selected users changed (suspend)." in done.text
    assert f"{staff.email}: not changed. You cannot change your own status" in done.text
    db.session.expire_all()
    assert [u.status for u in users] == [UserStatus.SUSPENDED] * 3 and staff.status == UserStatus.ACTIVE


def test_bulk_without_javascript_confirms_on_a_page(client, token, ada):
    response = client.post("/users/bulk", data={"csrf_token": token, "action": "inactive", "ids": [ada.id]})
    assert response.status_code == 200 and "<html" in response.text and "Mark inactive 1 user?" in response.text


def test_bulk_preselects_no_action(client, staff, ada):
    html = client.get("/users").text
    bar = html.split('id="bulk-action"')[1].split("</select>")[0]
    assert '<option selected value="">Choose an action…</option>' in bar


def test_nobody_acts_on_themselves_in_any_path(client, token, staff, make_user, db):
    make_user(role=UserRole.SUPER_ADMIN)  # so the last-super-admin rule is not what refuses
    me = Actor.staff(staff)
    with pytest.raises(PermissionError, match="your own status"):
        set_status(staff, UserStatus.SUSPENDED, actor=me)
    with pytest.raises(PermissionError, match="your own role"):
        edit_user(staff, {"role": UserRole.ADMIN}, expected_version=None, actor=me)
    assert "your own status" in preview_bulk_status([staff.id], UserStatus.INACTIVE, actor=me).refused[staff.email]
    assert client.get(f"/users/{staff.id}/status?to=suspended").status_code == 403
    page = client.get(f"/users/{staff.id}").text
    assert 'name="to" value="suspended"' not in page and 'name="to" value="inactive"' not in page
    other = make_user(email="other@example.com")
    assert 'name="to" value="suspended"' in client.get(f"/users/{other.id}").text  # what others' pages offer


# --- 15. what admins type is clean --------------------------------------------------------------


def test_an_idna_domain_is_one_address_whichever_way_it_is_written(client, token, db):
    first = client.post("/users", data={"csrf_token": token, "email": "User@Bücher.de", "role": "user"})
    assert first.status_code == 302
    assert db.session.scalars(sa.select(User.email).where(User.status == UserStatus.INVITED)).all() == [
        "user@bücher.de"
    ]
    second = client.post("/users", data={"csrf_token": token, "email": "user@xn--bcher-kva.de", "role": "user"})
    assert second.status_code == 422 and "already belongs to another user" in second.text


@pytest.mark.parametrize("name", ["abc\u202edef", "two\nlines", "tab\there", "nul\x00", "\u2066iso"])
def test_names_refuse_control_and_bidi_characters(client, token, ada, db, name):
    before = table_state(db)
    invite = client.post("/users", data={"csrf_token": token, "email": "x@example.com", "first_name": name})
    assert invite.status_code in (400, 422)
    edit = client.post(f"/users/{ada.id}/edit", data={**edit_page_values(client, ada), "last_name": name})
    assert edit.status_code in (400, 422)
    if edit.status_code == 422:
        assert "control or text-direction characters" in edit.text
    assert table_state(db) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (json.dumps({"big": "x" * 9000}), "At most 8 KiB"),
        ('{"n": NaN}', "not standard JSON"),
        ('{"n": Infinity}', "not standard JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("[" * 5000 + "]" * 5000, "Nested more than 32 levels"),
        ('{"a": ' + "[" * 3000 + "]" * 3000 + "}", "Nested more than 32 levels"),
        ('{"a": ' + "[" * 33 + "]" * 33 + "}", "Nested more than 32 levels"),
    ],
)
def test_metadata_is_a_standard_json_object_of_at_most_8_kib(client, staff, ada, db, text, message):
    before = table_state(db)
    response = client.post(f"/users/{ada.id}/edit", data={**edit_page_values(client, ada), "public_metadata": text})
    assert response.status_code == 422 and message in response.text
    assert table_state(db) == before


# --- 7 and 19: what Clerk stored is shown; the CLI says where its link points ---------------------


def test_a_page_shows_metadata_nested_deeper_than_python_indents(client, staff, make_user):
    deep = make_user(public_metadata="[" * 5000 + "]" * 5000)  # written by hand, or by an older version
    response = client.get(f"/users/{deep.id}")
    assert response.status_code == 200 and "[[[[" in response.text


def test_sign_in_link_says_which_address_it_assumed(runner, make_user, monkeypatch):
    make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    monkeypatch.delenv("BASE_URL", raising=False)
    result = runner.invoke(args=["users", "sign-in-link", "boss@example.com"])
    assert result.exit_code == 0 and "set BASE_URL in .env or the environment" in result.output
    monkeypatch.setenv("BASE_URL", "http://localhost")
    result = runner.invoke(args=["users", "sign-in-link", "boss@example.com"])
    assert "set BASE_URL" not in result.output
