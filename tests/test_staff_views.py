"""The staff pages over HTTP: /staff (the staff and their groups, the groups, a new group), a group's
page (name and description, the permissions grid, members, deletion, history), and what a person
may do (/staff/people/<id>, /staff/me). Each change is audited with its before and after; refusals
answer 4xx by the field, or 409 for a group changed meanwhile, and change nothing; a plain admin
gets 403 on every /staff endpoint but their own page."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import AuditEvent, StaffGroup, StaffGroupMember, User, UserRole, utcnow
from app.permissions import CATALOGUE
from app.records.staff import builtin_group
from app.staff.services import add_member, create_group, set_permissions
from tests.conftest import HX, csrf_token_from, form_values


def html_of(response) -> str:
    return response.get_data(as_text=True)


def fresh(db) -> None:
    db.session.rollback()  # SQLite: the test's read transaction would not see the server's writes
    db.session.expire_all()


def assert_page(response, status: int = 200) -> str:
    assert response.status_code == status, html_of(response)[:3000]
    assert "HX-Request" in response.headers.get("Vary", "")
    assert response.headers["Cache-Control"] == "no-store"
    html = html_of(response)
    assert "<html" in html
    return html


def assert_fragment(response, status: int = 200) -> str:
    assert response.status_code == status, html_of(response)[:3000]
    assert "HX-Request" in response.headers.get("Vary", "")
    assert response.headers["Cache-Control"] == "no-store"
    html = html_of(response)
    assert "<html" not in html
    return html


def snapshot(db) -> tuple:
    """Every row a staff page could change."""
    fresh(db)
    groups = db.session.execute(
        sa.select(
            StaffGroup.id, StaffGroup.name, StaffGroup.description, StaffGroup.permissions, StaffGroup.version
        ).order_by(StaffGroup.id)
    ).all()
    members = db.session.execute(
        sa.select(StaffGroupMember.group_id, StaffGroupMember.user_id).order_by(
            StaffGroupMember.group_id, StaffGroupMember.user_id
        )
    ).all()
    events = db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.occurred_at, AuditEvent.id)).all()
    return groups, members, events


def events_of(db, action: str) -> list[AuditEvent]:
    fresh(db)
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def changes_of(event: AuditEvent) -> dict:
    return json.loads(event.changes or "{}")


@pytest.fixture
def token(client, staff) -> str:
    """A CSRF token of the signed-in super admin's session."""
    return csrf_token_from(html_of(client.get("/staff")))


@pytest.fixture
def support(db, staff) -> StaffGroup:
    group = create_group(
        "Support", description="Front line", permissions=["users.view", "users.suspend"], actor=Actor.cli()
    )
    db.session.commit()
    return group


@pytest.fixture
def grace(make_user) -> User:
    return make_user(email="grace@example.com", role=UserRole.ADMIN, first_name="Grace", last_name="Hopper")


# --- /staff ------------------------------------------------------------------------------------------


def test_staff_page_lists_staff_with_their_groups_and_the_groups(client, staff, make_user, support, grace, db):
    add_member(support, grace, actor=Actor.cli())
    db.session.commit()
    make_user(email="zed@example.com", role=UserRole.ADMIN)
    make_user(email="plain@example.com")  # not staff
    make_user(email="gone@example.com", role=UserRole.ADMIN, deleted_at=utcnow())
    html = assert_page(client.get("/staff"))
    assert "<h1>Staff</h1>" in html
    # Super admins first, then admins by email.
    assert html.find(staff.email) < html.find("grace@example.com") < html.find("zed@example.com")
    assert "plain@example.com" not in html and "gone@example.com" not in html
    assert "every permission, by role" in html
    row = html[html.find(f'id="staff-{grace.id}"') :]
    row = row[: row.find("</tr>")]
    assert "Administrators" in row and "Support" in row
    assert f'href="/staff/people/{grace.id}"' in row
    # The groups: the built-in one first, with its badge; counts of permissions and members.
    groups = html[html.find('id="groups"') :]
    assert groups.find("Administrators") < groups.find("Support")
    assert "built in" in groups
    support_row = groups[groups.find(f'id="group-{support.id}"') :]
    support_row = support_row[: support_row.find("</tr>")]
    assert f'href="/staff/groups/{support.id}"' in support_row
    assert re.findall(r'class="numeric">(\d+)<', support_row) == ["2", "1"]
    assert 'action="/staff/groups"' in html


def test_staff_page_reads_staff_and_groups_in_a_fixed_number_of_queries(client, staff, make_user, count_queries, db):
    def queries() -> int:
        db.session.expire_all()  # as in a new request: the signed-in person is read again too
        with count_queries() as statements:
            assert client.get("/staff").status_code == 200
        return len(statements)

    make_user(email="first@example.com", role=UserRole.ADMIN)
    few = queries()
    for n in range(12):
        make_user(email=f"admin{n}@example.com", role=UserRole.ADMIN)
    assert queries() == few <= 3  # the person signed in, the staff with their groups, the groups


def test_staff_page_as_htmx_is_the_groups_fragment(client, staff):
    html = assert_fragment(client.get("/staff", headers=HX))
    assert 'id="groups"' in html


# --- creating a group ------------------------------------------------------------------------------


def test_create_group_goes_to_its_page_and_is_audited(client, staff, token, db):
    response = client.post("/staff/groups", data={"csrf_token": token, "name": "  Read-only ", "description": "Look"})
    assert response.status_code == 302
    fresh(db)
    group = db.session.scalars(sa.select(StaffGroup).where(StaffGroup.name == "Read-only")).one()
    assert response.headers["Location"] == f"/staff/groups/{group.id}#permissions"
    assert (group.description, group.permission_names, group.builtin) == ("Look", [], False)
    (event,) = events_of(db, "staff_group.create")
    assert event.staff_group_id == group.id and event.actor_id == staff.id
    assert changes_of(event) == {"name": [None, "Read-only"], "description": [None, "Look"]}
    html = assert_page(client.get(response.headers["Location"]))
    assert "Created the group Read-only." in html


def test_create_group_with_htmx_answers_the_groups_with_a_notice(client, staff, token, db):
    html = assert_fragment(client.post("/staff/groups", data={"csrf_token": token, "name": "Engineers"}, headers=HX))
    assert "Created the group Engineers." in html
    assert "Engineers</a>" in html


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "A group needs a name."),
        ("x" * 5000, "at most 100"),
        ("evil\u202egroup", "control, format or invisible"),
        ("administrators", "There is already a group called Administrators."),
    ],
)
def test_create_group_refused_by_the_name_keeps_what_was_typed(client, staff, token, db, name, message):
    before = snapshot(db)
    response = client.post("/staff/groups", data={"csrf_token": token, "name": name, "description": "Kept <b>here</b>"})
    html = assert_page(response, 422)
    assert 'id="group-name-error"' in html
    error = html[html.find('id="group-name-error"') :]
    assert message in error[: error.find("</small>")]
    assert "Kept &lt;b&gt;here&lt;/b&gt;</textarea>" in html
    assert snapshot(db) == before


def test_create_group_refused_with_htmx_is_the_fragment(client, staff, token, db):
    html = assert_fragment(client.post("/staff/groups", data={"csrf_token": token, "name": ""}, headers=HX), 422)
    assert 'aria-invalid="true"' in html


def test_a_too_long_description_is_refused_by_its_field(client, staff, token, db):
    before = snapshot(db)
    html = assert_page(
        client.post("/staff/groups", data={"csrf_token": token, "name": "Ok", "description": "d" * 501}), 422
    )
    assert 'id="group-description-error"' in html
    assert snapshot(db) == before


def test_create_group_without_csrf_is_refused(client, staff, db):
    before = snapshot(db)
    assert client.post("/staff/groups", data={"name": "Sneaky"}).status_code == 400
    assert snapshot(db) == before


def test_nul_in_a_name_is_a_400_not_a_500(client, staff, token, db):
    before = snapshot(db)
    assert client.post("/staff/groups", data={"csrf_token": token, "name": "a\x00b"}).status_code == 400
    assert snapshot(db) == before


# --- a group's page ----------------------------------------------------------------------------------


def test_group_page_shows_the_grid_by_area_members_and_history(client, staff, support, grace, db):
    add_member(support, grace, actor=Actor.cli())
    db.session.commit()
    html = assert_page(client.get(f"/staff/groups/{support.id}"))
    assert "<h1>Support</h1>" in html
    # One fieldset per area, each with its legend; a labelled box per permission, with its description.
    assert html.count('<fieldset class="permission-area">') == 8
    for legend in ("Users", "Roles", "Organizations", "Webhooks", "Calls to Clerk", "Audit trail", "Permissions"):
        assert f"<legend>{legend}</legend>" in html
    box = re.search(r'<label for="permission-users-suspend"><input type="checkbox"[^>]*>', html).group(0)
    assert 'value="users.suspend"' in box and "checked" in box
    assert 'aria-describedby="permission-users-suspend-description"' in box
    assert 'id="permission-users-suspend-description"' in html
    assert "Suspend, reactivate or deactivate users" in html
    unticked = re.search(r'<input type="checkbox" id="permission-users-export"[^>]*>', html).group(0)
    assert "checked" not in unticked
    values = form_values(html, f"/staff/groups/{support.id}/permissions")
    assert values["version"] == str(support.version)
    # Members with Remove, the add form, the history.
    assert "grace@example.com" in html and "Remove grace@example.com from Support" in html
    assert f'action="/staff/groups/{support.id}/members"' in html
    assert "Staff group created" in html and "Added to a staff group" in html
    assert f'href="/staff/groups/{support.id}/delete"' in html


@pytest.mark.parametrize("group_id", ["999999", "99999999999999999999", "2147483648", "-1", "abc", "1.5", "%E2%80%AE"])
def test_unknown_or_malformed_group_ids_are_404(client, staff, group_id):
    for path in ("", "/delete"):
        response = client.get(f"/staff/groups/{group_id}{path}")
        assert response.status_code == 404, (group_id, path)
    assert "There is no staff group with this id" in html_of(client.get("/staff/groups/999999"))


def test_builtin_group_shows_its_name_read_only_and_no_delete(client, staff):
    group = builtin_group()
    html = assert_page(client.get(f"/staff/groups/{group.id}"))
    name = re.search(r'<input[^>]*id="name"[^>]*>', html).group(0)
    assert "readonly" in name
    assert f"/staff/groups/{group.id}/delete" not in html
    assert "built in" in html


# --- name and description ---------------------------------------------------------------------------


def test_rename_saves_and_is_audited_with_before_and_after(client, staff, token, support, db):
    data = {"csrf_token": token, "name": "Support desk", "description": "Front line", "version": support.version}
    response = client.post(f"/staff/groups/{support.id}", data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/staff/groups/{support.id}#details"
    fresh(db)
    assert db.session.get(StaffGroup, support.id).name == "Support desk"
    (event,) = events_of(db, "staff_group.update")
    assert changes_of(event) == {"name": ["Support", "Support desk"]}
    assert "Saved Support desk." in html_of(client.get(response.headers["Location"]))


def test_builtin_group_keeps_its_name_but_its_description_may_change(client, staff, token, db):
    group = builtin_group()
    before = snapshot(db)
    data = {"csrf_token": token, "name": "Admins", "description": "x", "version": group.version}
    html = assert_page(client.post(f"/staff/groups/{group.id}", data=data), 422)
    assert "is built in: it keeps its name" in html
    assert snapshot(db) == before
    data = {
        "csrf_token": token,
        "name": "Administrators",
        "description": "Everyone's old powers",
        "version": group.version,
    }
    assert client.post(f"/staff/groups/{group.id}", data=data).status_code == 302
    fresh(db)
    group = builtin_group()
    assert (group.name, group.description) == ("Administrators", "Everyone's old powers")


def test_rename_to_a_taken_name_is_refused_by_the_field(client, staff, token, support, db):
    before = snapshot(db)
    data = {"csrf_token": token, "name": "ADMINISTRATORS", "description": "", "version": support.version}
    html = assert_page(client.post(f"/staff/groups/{support.id}", data=data), 422)
    assert 'id="name-error"' in html and "There is already a group called Administrators." in html
    assert 'value="ADMINISTRATORS"' in html
    assert snapshot(db) == before


def test_rename_on_a_stale_version_is_a_conflict_that_overwrites_nothing(client, staff, token, support, db):
    stale = support.version
    set_permissions(support, ["users.view"], actor=Actor.cli())
    db.session.commit()
    before = snapshot(db)
    data = {"csrf_token": token, "name": "Mine", "description": "Mine too", "version": stale}
    html = assert_page(client.post(f"/staff/groups/{support.id}", data=data), 409)
    assert "Someone else changed Support after you opened it; nothing was overwritten." in html
    assert "Saved now" in html and "Mine too" in html
    assert snapshot(db) == before
    # The form now carries the saved version: saving again replaces knowingly.
    values = form_values(html, f"/staff/groups/{support.id}")
    assert values["version"] == str(db.session.get(StaffGroup, support.id).version)
    assert values["name"] == "Mine"


def test_a_missing_or_garbage_version_is_refused(client, staff, token, support, db):
    before = snapshot(db)
    for version in ("", "abc", "1" * 5000):
        data = {"csrf_token": token, "name": "Other", "version": version}
        assert client.post(f"/staff/groups/{support.id}", data=data).status_code == 400
        data = {"csrf_token": token, "permissions": ["users.view"], "version": version}
        assert client.post(f"/staff/groups/{support.id}/permissions", data=data).status_code == 400
    assert snapshot(db) == before


# --- permissions ------------------------------------------------------------------------------------


def test_permissions_grid_saves_and_is_audited(client, staff, token, support, db):
    data = {
        "csrf_token": token,
        "version": support.version,
        "permissions": ["users.view", "users.invite", "audit.view"],
    }
    response = client.post(f"/staff/groups/{support.id}/permissions", data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/staff/groups/{support.id}#permissions"
    fresh(db)
    assert db.session.get(StaffGroup, support.id).permission_names == ["audit.view", "users.invite", "users.view"]
    (event,) = events_of(db, "staff_group.permissions")
    assert event.staff_group_id == support.id
    assert changes_of(event) == {
        "permissions": ["users.suspend users.view", "audit.view users.invite users.view"],
        "granted": [None, "audit.view users.invite"],
        "revoked": ["users.suspend", None],
    }
    html = assert_page(client.get(response.headers["Location"]))
    assert "Saved Support: granted audit.view users.invite; revoked users.suspend." in html
    assert "Staff group&#39;s permissions changed" in html or "Staff group's permissions changed" in html


def test_permissions_with_htmx_answer_the_grid_and_the_history(client, staff, token, support, db):
    data = {"csrf_token": token, "version": support.version, "permissions": []}
    html = assert_fragment(client.post(f"/staff/groups/{support.id}/permissions", data=data, headers=HX))
    assert html.lstrip().startswith('<section id="permissions"')
    assert "revoked users.suspend users.view" in html
    assert 'id="group-history" hx-swap-oob="true"' in html
    fresh(db)
    assert db.session.get(StaffGroup, support.id).permission_names == []


def test_unticking_nothing_changes_nothing(client, staff, token, support, db):
    before = snapshot(db)
    data = {"csrf_token": token, "version": support.version, "permissions": ["users.suspend", "users.view"]}
    response = client.post(f"/staff/groups/{support.id}/permissions", data=data)
    assert response.status_code == 302
    assert snapshot(db) == before


@pytest.mark.parametrize("bad", ["users.fly", "x" * 5000, "\u202eusers.view", "' OR 1=1 --"])
def test_an_unknown_permission_is_refused_by_the_grid(client, staff, token, support, db, bad):
    before = snapshot(db)
    data = {"csrf_token": token, "version": support.version, "permissions": ["users.view", bad]}
    html = assert_page(client.post(f"/staff/groups/{support.id}/permissions", data=data), 422)
    assert 'id="permissions-error"' in html and "No such permission" in html
    assert snapshot(db) == before


def test_permissions_on_a_stale_version_are_a_conflict_showing_both(client, staff, token, support, db):
    stale = support.version
    set_permissions(support, ["users.view", "users.unlock"], actor=Actor.cli())
    db.session.commit()
    before = snapshot(db)
    data = {"csrf_token": token, "version": stale, "permissions": ["audit.view"]}
    html = assert_page(client.post(f"/staff/groups/{support.id}/permissions", data=data), 409)
    assert "nothing was overwritten" in html
    conflict = html[html.find('class="conflict"') :]
    conflict = conflict[: conflict.find("</article>")]
    assert "<code>users.unlock</code>" in conflict and "<code>audit.view</code>" in conflict
    assert snapshot(db) == before
    values = form_values(html, f"/staff/groups/{support.id}/permissions")
    assert values["permissions"] == "audit.view"  # yours kept, to save again knowingly
    assert values["version"] == str(db.session.get(StaffGroup, support.id).version)
    # With htmx: the grid alone, 409.
    html = assert_fragment(client.post(f"/staff/groups/{support.id}/permissions", data=data, headers=HX), 409)
    assert "nothing was overwritten" in html


def test_the_builtin_groups_permissions_can_change(client, staff, token, db):
    group = builtin_group()
    data = {"csrf_token": token, "version": group.version, "permissions": ["users.view"]}
    assert client.post(f"/staff/groups/{group.id}/permissions", data=data).status_code == 302
    fresh(db)
    assert builtin_group().permission_names == ["users.view"]


# --- members ----------------------------------------------------------------------------------------


def test_add_and_remove_a_member_audited(client, staff, token, support, grace, db):
    response = client.post(
        f"/staff/groups/{support.id}/members", data={"csrf_token": token, "email": " Grace@Example.com "}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/staff/groups/{support.id}#members"
    fresh(db)
    assert db.session.get(StaffGroupMember, (support.id, grace.id)) is not None
    (added,) = [e for e in events_of(db, "staff_group.member_add") if e.staff_group_id == support.id]
    assert (added.target_id, changes_of(added)) == (grace.id, {"group": [None, "Support"]})
    assert "Added grace@example.com to Support." in html_of(client.get(response.headers["Location"]))

    response = client.post(f"/staff/groups/{support.id}/members/{grace.id}/delete", data={"csrf_token": token})
    assert response.status_code == 302
    fresh(db)
    assert db.session.get(StaffGroupMember, (support.id, grace.id)) is None
    (removed,) = events_of(db, "staff_group.member_remove")
    assert (removed.target_id, removed.staff_group_id, changes_of(removed)) == (
        grace.id,
        support.id,
        {"group": ["Support", None]},
    )


def test_members_with_htmx_answer_the_section_and_the_history(client, staff, token, support, grace, db):
    html = assert_fragment(
        client.post(f"/staff/groups/{support.id}/members", data={"csrf_token": token, "email": grace.email}, headers=HX)
    )
    assert html.lstrip().startswith('<section id="members"')
    assert "Added grace@example.com to Support." in html
    assert 'id="group-history" hx-swap-oob="true"' in html and "Added to a staff group" in html
    html = assert_fragment(
        client.post(f"/staff/groups/{support.id}/members/{grace.id}/delete", data={"csrf_token": token}, headers=HX)
    )
    assert "Removed grace@example.com from Support." in html


@pytest.mark.parametrize(
    ("who", "message"),
    [
        ("nobody@example.com", "There is no user with the email"),
        ("plain@example.com", "is not staff"),
        ("boss@example.com", "is a super admin and holds every permission already"),
        ("grace@example.com", "is in Support already"),
        ("", "Type the email of an admin."),
        ("x" * 5000, "Field cannot be longer than"),
        ("a\u202e@example.com", "text-direction"),
    ],
)
def test_a_refused_member_is_shown_by_the_email_field(
    client, staff, token, support, grace, make_user, db, who, message
):
    make_user(email="plain@example.com")
    make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    add_member(support, grace, actor=Actor.cli())
    db.session.commit()
    before = snapshot(db)
    html = assert_page(
        client.post(f"/staff/groups/{support.id}/members", data={"csrf_token": token, "email": who}), 422
    )
    error = html[html.find('id="member-email-error"') :]
    assert message in error[: error.find("</small>")]
    assert 'aria-invalid="true"' in html
    assert snapshot(db) == before
    html = assert_fragment(
        client.post(f"/staff/groups/{support.id}/members", data={"csrf_token": token, "email": who}, headers=HX), 422
    )
    assert message in html


def test_removing_someone_not_in_the_group_is_a_conflict(client, staff, token, support, grace, db):
    before = snapshot(db)
    response = client.post(f"/staff/groups/{support.id}/members/{grace.id}/delete", data={"csrf_token": token})
    assert response.status_code == 409
    assert "is not in Support" in html_of(response)
    assert (
        client.post(f"/staff/groups/{support.id}/members/nobody/delete", data={"csrf_token": token}).status_code == 404
    )
    assert client.post(f"/staff/groups/{support.id}/members/{grace.id}/delete", data={}).status_code == 400
    assert snapshot(db) == before


# --- deleting a group -------------------------------------------------------------------------------


def test_delete_asks_then_deletes_audited_and_members_lose_it(client, staff, token, support, grace, db):
    add_member(support, grace, actor=Actor.cli())
    db.session.commit()
    html = assert_page(client.get(f"/staff/groups/{support.id}/delete"))
    assert "Delete the group Support?" in html and "grace@example.com" in html
    values = form_values(html, f"/staff/groups/{support.id}/delete")
    response = client.post(f"/staff/groups/{support.id}/delete", data=values)
    assert response.status_code == 302 and response.headers["Location"] == "/staff"
    fresh(db)
    assert db.session.get(StaffGroup, support.id) is None
    assert db.session.get(StaffGroupMember, (support.id, grace.id)) is None
    (event,) = events_of(db, "staff_group.delete")
    assert event.staff_group_id == support.id
    assert changes_of(event) == {
        "name": ["Support", None],
        "description": ["Front line", None],
        "permissions": ["users.suspend users.view", None],
    }
    assert [e.target_id for e in events_of(db, "staff_group.member_remove")] == [grace.id]
    html = assert_page(client.get("/staff"))
    assert "Deleted the group Support" in html
    assert client.get(f"/staff/groups/{support.id}").status_code == 404


def test_delete_with_htmx_sends_the_browser_to_staff(client, staff, token, support, db):
    response = client.post(
        f"/staff/groups/{support.id}/delete", data={"csrf_token": token, "version": support.version}, headers=HX
    )
    assert response.status_code == 200 and response.headers["HX-Redirect"] == "/staff"


def test_the_builtin_group_cannot_be_deleted(client, staff, token, db):
    group = builtin_group()
    before = snapshot(db)
    assert client.get(f"/staff/groups/{group.id}/delete").status_code == 409
    response = client.post(f"/staff/groups/{group.id}/delete", data={"csrf_token": token, "version": group.version})
    assert response.status_code == 409 and "is built in: it cannot be deleted" in html_of(response)
    assert snapshot(db) == before


def test_delete_on_a_stale_version_is_a_conflict(client, staff, token, support, db):
    stale = support.version
    set_permissions(support, [], actor=Actor.cli())
    db.session.commit()
    before = snapshot(db)
    response = client.post(f"/staff/groups/{support.id}/delete", data={"csrf_token": token, "version": stale})
    assert response.status_code == 409 and "nothing was overwritten" in html_of(response)
    assert client.post(f"/staff/groups/{support.id}/delete", data={"version": support.version}).status_code == 400
    assert snapshot(db) == before


# --- what a person may do ---------------------------------------------------------------------------


def test_a_persons_page_says_what_they_may_do_and_which_group_grants_it(client, staff, support, grace, db):
    add_member(support, grace, actor=Actor.cli())
    db.session.commit()
    html = assert_page(client.get(f"/staff/people/{grace.id}"))
    assert "What grace@example.com may do" in html
    view = html[html.find('id="grant-users-view"') :]
    view = view[: view.find("</tr>")]
    assert "granted" in view and "Administrators" in view and "Support" in view
    assert f'href="/staff/groups/{support.id}"' in view
    manage = html[html.find('id="grant-permissions-manage"') :]
    manage = manage[: manage.find("</tr>")]
    assert "not granted" in manage
    assert html.count('class="grants-area"') == 8
    assert "Manage staff groups: their permissions and who is in them." in html


def test_a_super_admins_page_says_every_permission_by_role(client, staff):
    html = assert_page(client.get(f"/staff/people/{staff.id}"))
    assert "every permission by your role" in html
    assert "not granted" not in html
    assert html.count("the super admin role") == len(CATALOGUE)
    html = assert_page(client.get("/staff/me"))
    assert "What you may do" in html


def test_unknown_or_non_staff_people_are_404(client, staff, make_user):
    plain = make_user(email="plain@example.com")
    for user_id in ("nobody", plain.id, "x" * 5000, "\u202e"):
        response = client.get(f"/staff/people/{user_id}")
        assert response.status_code == 404, user_id
    assert "There is no member of staff with this id" in html_of(client.get(f"/staff/people/{plain.id}"))


# --- a plain admin ----------------------------------------------------------------------------------


def test_a_plain_admin_gets_403_on_every_staff_endpoint_and_changes_nothing(client, auth, make_user, db):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    support = create_group("Support", permissions=["users.view"], actor=Actor.staff(boss))
    other = make_user(email="other@example.com", role=UserRole.ADMIN)
    db.session.commit()
    admin = auth.sign_in(role=UserRole.ADMIN)
    token = csrf_token_from(html_of(client.get("/staff/me")))
    before = snapshot(db)
    group = f"/staff/groups/{support.id}"
    requests = [
        ("get", "/staff", None),
        ("post", "/staff/groups", {"name": "Mine"}),
        ("get", group, None),
        ("post", group, {"name": "Renamed", "version": support.version}),
        ("post", f"{group}/permissions", {"permissions": ["permissions.manage"], "version": support.version}),
        ("post", f"{group}/members", {"email": admin.email}),
        ("post", f"{group}/members/{other.id}/delete", {}),
        ("get", f"{group}/delete", None),
        ("post", f"{group}/delete", {"version": support.version}),
        ("get", f"/staff/people/{other.id}", None),
        ("get", f"/staff/people/{boss.id}", None),
        ("get", "/staff/people/nobody", None),
    ]
    for method, url, data in requests:
        for headers in ({}, HX):
            if data is not None:
                data = {"csrf_token": token, **data}
            response = getattr(client, method)(url, data=data, headers=headers)
            assert response.status_code == 403, (method, url, headers)
            html = html_of(response)
            assert "permissions.manage" in html, (method, url)
            assert 'href="/staff/me"' in html
    assert snapshot(db) == before


def test_an_admin_sees_their_own_page_and_me(client, auth, db):
    admin = auth.sign_in(role=UserRole.ADMIN)
    for url in ("/staff/me", f"/staff/people/{admin.id}"):
        html = assert_page(client.get(url))
        assert "What you may do" in html
        assert "Administrators" in html  # the group granting what they hold, not a link: not theirs to manage
        assert f'href="/staff/groups/{builtin_group().id}"' not in html
        manage = html[html.find('id="grant-permissions-manage"') :]
        assert "not granted" in manage[: manage.find("</tr>")]
    assert 'id="grants"' in assert_fragment(client.get("/staff/me", headers=HX))


def test_an_admin_in_no_group_still_sees_what_they_may_do(client, auth, make_user, db):
    admin = make_user(email="lonely@example.com", role=UserRole.ADMIN)
    db.session.execute(sa.delete(StaffGroupMember).where(StaffGroupMember.user_id == admin.id))
    db.session.commit()
    auth.sign_in(admin)
    html = assert_page(client.get("/staff/me"))
    assert "You are in no group: you hold no permission." in html
    assert "Ask a super admin" in html


def test_an_admin_with_permissions_manage_cannot_grant_beyond_what_they_hold(client, auth, make_user, db):
    managers = create_group("Managers", permissions=["users.view", "permissions.manage"], actor=Actor.cli())
    db.session.commit()
    admin = make_user(email="manager@example.com", role=UserRole.ADMIN)
    add_member(managers, admin, actor=Actor.cli())
    db.session.commit()
    auth.sign_in(admin)
    html = assert_page(client.get("/staff"))
    token = csrf_token_from(html)
    other = create_group("Other", actor=Actor.cli())
    db.session.commit()
    before = snapshot(db)
    data = {"csrf_token": token, "version": other.version, "permissions": ["users.delete"]}
    response = client.post(f"/staff/groups/{other.id}/permissions", data=data)
    assert response.status_code == 403 and "users.delete" in html_of(response)
    assert snapshot(db) == before
    data = {"csrf_token": token, "version": other.version, "permissions": ["users.view"]}
    assert client.post(f"/staff/groups/{other.id}/permissions", data=data).status_code == 302


def test_long_lists_of_staff_and_members_show_the_first_ones_and_count_the_rest(
    client, auth, db, make_user, monkeypatch
):
    """A demo of a million users has some 30,000 staff: the pages list a few hundred and count the rest."""
    from app.records.staff import builtin_group
    from app.staff import queries

    monkeypatch.setattr(queries, "LIST_LIMIT", 3)
    for n in range(5):
        make_user(email=f"admin{n}@staff.example", role=UserRole.ADMIN)  # each joins Administrators
    auth.sign_in(role=UserRole.SUPER_ADMIN)
    page = client.get("/staff").get_data(as_text=True)
    assert 'People <small class="muted">(6)</small>' in page and "The first 3 are shown" in page
    group = builtin_group()
    page = client.get(f"/staff/groups/{group.id}").get_data(as_text=True)
    assert "5 members" in page and "The first 3 by email are shown" in page
    assert "admin2@staff.example" in page and "admin3@staff.example" not in page
