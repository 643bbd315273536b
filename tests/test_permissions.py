"""DESIGN §9, cell by cell, over HTTP, with the database checked after each request."""

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import StaffGroupMember, User, UserData, UserRole, UserStatus
from app.permissions import ADMINISTRATORS_PERMISSIONS, NotAllowed
from app.users.services import bulk_set_status, edit_user, set_status
from tests.conftest import csrf_token_from


def state(db):
    db.session.expire_all()
    return db.session.execute(sa.select(User.id, User.role, User.status, User.first_name).order_by(User.id)).all()


@pytest.fixture
def targets(make_user, db):
    users = {
        role: make_user(email=f"{role.value}-target@example.com", role=role, first_name="Before") for role in UserRole
    }
    for user in users.values():
        db.session.add(UserData(user_id=user.id, key="k", value="v"))
    db.session.commit()
    return users


def sign_in_as(auth, client, role):
    staff = auth.sign_in(role=role)
    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))
    return staff, token


def edit_data(user, token, **changes):
    data = {
        "csrf_token": token,
        "email": user.email,
        "first_name": "After",
        "last_name": "",
        "status": user.status.value,
        "version": str(user.version),
        "role": user.role.value,
    }
    data.update(changes)
    return data


# --- admin ---------------------------------------------------------------------------------


def test_admin_manages_users_with_role_user(auth, client, targets, db):
    _, token = sign_in_as(auth, client, UserRole.ADMIN)
    target = targets[UserRole.USER]
    assert client.post(f"/users/{target.id}/edit", data=edit_data(target, token)).status_code == 302
    assert (
        client.post(f"/users/{target.id}/status", data={"csrf_token": token, "status": "suspended"}).status_code == 302
    )
    assert (
        client.post(f"/users/{target.id}/data", data={"csrf_token": token, "key": "new", "value": "1"}).status_code
        == 302
    )
    db.session.expire_all()
    assert (target.first_name, target.status) == ("After", UserStatus.SUSPENDED)


@pytest.mark.parametrize("role", [UserRole.ADMIN, UserRole.SUPER_ADMIN])
def test_admin_cannot_touch_admins_or_super_admins(auth, client, targets, db, role):
    _, token = sign_in_as(auth, client, UserRole.ADMIN)
    target = targets[role]
    item = db.session.scalars(sa.select(UserData).where(UserData.user_id == target.id)).one()
    before = state(db)
    requests = [
        ("get", f"/users/{target.id}/edit", None),
        ("post", f"/users/{target.id}/edit", edit_data(target, token)),
        ("post", f"/users/{target.id}/status", {"csrf_token": token, "status": "suspended"}),
        ("post", f"/users/{target.id}/data", {"csrf_token": token, "key": "x", "value": "y"}),
        ("post", f"/users/{target.id}/data/{item.id}", {"csrf_token": token, "key": "k", "value": "changed"}),
        ("post", f"/users/{target.id}/data/{item.id}/delete", {"csrf_token": token}),
    ]
    for method, url, data in requests:
        response = getattr(client, method)(url, data=data)
        assert response.status_code == 403, (url, response.status_code)
        assert "Admins manage users with the role" in response.get_data(as_text=True)
    assert state(db) == before
    assert db.session.scalar(sa.select(UserData.value).where(UserData.id == item.id)) == "v"
    # And the pages do not offer those actions.
    page = client.get(f"/users/{target.id}").get_data(as_text=True)
    assert "/edit" not in page and "Suspend" not in page and 'id="data-add"' not in page


def test_admin_cannot_change_roles_even_by_forging_the_form(auth, client, targets, db):
    _, token = sign_in_as(auth, client, UserRole.ADMIN)
    target = targets[UserRole.USER]
    assert 'name="role"' not in client.get(f"/users/{target.id}/edit").get_data(as_text=True)
    response = client.post(f"/users/{target.id}/edit", data=edit_data(target, token, role="super_admin"))
    assert response.status_code == 302
    db.session.expire_all()
    assert target.role == UserRole.USER  # the field is not the admin's to send


def test_admin_invites_only_users(auth, client, db):
    _, token = sign_in_as(auth, client, UserRole.ADMIN)
    assert 'name="role"' not in client.get("/users/new").get_data(as_text=True)
    client.post("/users", data={"csrf_token": token, "email": "invitee@example.com", "role": "super_admin"})
    assert db.session.scalars(sa.select(User.role).where(User.email == "invitee@example.com")).one() == UserRole.USER


def test_admin_bulk_skips_users_it_may_not_change(auth, client, targets, db):
    _, token = sign_in_as(auth, client, UserRole.ADMIN)
    ids = [u.id for u in targets.values()]
    html = client.post(
        "/users/bulk",
        data={"csrf_token": token, "action": "suspended", "confirm": "y", "ids": ids},
        headers={"HX-Request": "true"},
    ).get_data(as_text=True)
    assert "1 of 3 selected users changed" in html and html.count("not changed.") == 2
    db.session.expire_all()
    assert {r: u.status for r, u in targets.items()} == {
        UserRole.USER: UserStatus.SUSPENDED,
        UserRole.ADMIN: UserStatus.ACTIVE,
        UserRole.SUPER_ADMIN: UserStatus.ACTIVE,
    }


def test_admin_list_offers_actions_only_on_users(auth, client, targets):
    sign_in_as(auth, client, UserRole.ADMIN)
    html = client.get("/users", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Suspend user-target@example.com" in html
    assert "Suspend admin-target@example.com" not in html and "Suspend super_admin-target@example.com" not in html


# --- super admin ---------------------------------------------------------------------------


def test_super_admin_manages_everyone_and_changes_roles(auth, client, targets, db):
    _, token = sign_in_as(auth, client, UserRole.SUPER_ADMIN)
    admin = targets[UserRole.ADMIN]
    assert client.post(f"/users/{admin.id}/edit", data=edit_data(admin, token, role="user")).status_code == 302
    other_super = targets[UserRole.SUPER_ADMIN]
    assert (
        client.post(f"/users/{other_super.id}/status", data={"csrf_token": token, "status": "suspended"}).status_code
        == 302
    )
    db.session.expire_all()
    assert admin.role == UserRole.USER and other_super.status == UserStatus.SUSPENDED


def test_nobody_demotes_or_suspends_themselves(auth, client, make_user, db):
    make_user(email="other-super@example.com", role=UserRole.SUPER_ADMIN)  # not the last one: still refused
    me, token = sign_in_as(auth, client, UserRole.SUPER_ADMIN)
    before = state(db)
    demote = client.post(f"/users/{me.id}/edit", data=edit_data(me, token, role="admin"))
    assert demote.status_code == 422
    assert "You cannot change your own role" in demote.get_data(as_text=True)
    for status in ("inactive", "suspended"):
        suspend = client.post(f"/users/{me.id}/status", data={"csrf_token": token, "status": status})
        assert suspend.status_code == 403 and "You cannot change your own status" in suspend.text
    assert state(db) == before


def test_one_super_admin_may_demote_another(auth, client, make_user, db):
    other = make_user(email="other-super@example.com", role=UserRole.SUPER_ADMIN)
    _, token = sign_in_as(auth, client, UserRole.SUPER_ADMIN)
    assert client.post(f"/users/{other.id}/edit", data=edit_data(other, token, role="admin")).status_code == 302
    db.session.expire_all()
    assert other.role == UserRole.ADMIN


def test_a_suspended_super_admin_does_not_count(make_user, db):
    make_user(email="sleeping@example.com", role=UserRole.SUPER_ADMIN, status=UserStatus.SUSPENDED)
    last = make_user(email="last@example.com", role=UserRole.SUPER_ADMIN)
    with pytest.raises(NotAllowed):
        set_status(last, UserStatus.SUSPENDED, actor=Actor.staff(last))


# --- the rules bind every path -------------------------------------------------------------


def test_the_command_line_cannot_remove_the_last_super_admin_either(make_user, db):
    last = make_user(role=UserRole.SUPER_ADMIN)
    with pytest.raises(NotAllowed):
        set_status(last, UserStatus.SUSPENDED, actor=Actor.cli())
    with pytest.raises(NotAllowed):
        edit_user(last, {"role": UserRole.USER}, expected_version=None, actor=Actor.cli())
    result = bulk_set_status([last.id], UserStatus.INACTIVE, actor=Actor.cli())
    assert result.changed == [] and last.email in result.refused


def test_services_refuse_an_admin_whatever_the_caller(make_user, db):
    admin = make_user(role=UserRole.ADMIN)
    other_admin = make_user(role=UserRole.ADMIN)
    with pytest.raises(NotAllowed):
        set_status(other_admin, UserStatus.SUSPENDED, actor=Actor.staff(admin))
    with pytest.raises(NotAllowed):
        edit_user(make_user(), {"role": UserRole.ADMIN}, expected_version=None, actor=Actor.staff(admin))


def test_plain_users_see_nothing(auth, client, make_user, db):
    user = make_user(role=UserRole.ADMIN)
    client.get(auth.link_for(user))
    user.role = UserRole.USER  # the session ends with the role
    db.session.commit()
    for url in ("/users", "/audit", f"/users/{user.id}", "/users/export.csv", "/webhooks"):
        response = client.get(url)
        assert response.status_code == 302 and response.headers["Location"].startswith("/auth/sign-in"), url


def test_create_admin_cannot_demote_the_last_super_admin(runner, make_user, db):
    last = make_user(email="only@example.com", role=UserRole.SUPER_ADMIN)
    result = runner.invoke(args=["users", "create-admin", "only@example.com", "--role", "admin"])
    assert result.exit_code != 0 and "at least one active super admin" in result.output
    db.session.expire_all()
    assert last.role == UserRole.SUPER_ADMIN


def test_a_staff_members_page_links_what_they_may_do_for_super_admins_and_themselves(auth, client, make_user):
    other = make_user(email="other-admin@staff.example", role=UserRole.ADMIN)
    admin = auth.sign_in(role=UserRole.ADMIN)
    own = client.get(f"/users/{admin.id}").get_data(as_text=True)
    assert f'href="/staff/people/{admin.id}"' in own and "What you may do" in own
    assert client.get(f"/staff/people/{admin.id}").status_code == 200
    theirs = client.get(f"/users/{other.id}").get_data(as_text=True)
    assert "/staff/people/" not in theirs  # only permissions.manage sees what another may do
    assert client.get(f"/staff/people/{other.id}").status_code == 403


def test_a_super_admin_sees_the_link_on_every_staff_members_page(auth, client, make_user):
    other = make_user(email="other-admin@staff.example", role=UserRole.ADMIN)
    plain = make_user(email="plain@example.com")
    auth.sign_in(role=UserRole.SUPER_ADMIN)
    page = client.get(f"/users/{other.id}").get_data(as_text=True)
    assert f'href="/staff/people/{other.id}"' in page and "What they may do" in page
    assert "/staff/people/" not in client.get(f"/users/{plain.id}").get_data(as_text=True)


def test_an_admin_with_roles_manage_cannot_make_an_admin_who_would_hold_more_than_they_do(db, make_user):
    """A new admin joins Administrators: promoting is refused to someone who lacks what it grants."""
    from app.staff.services import add_member, create_group
    from app.users.services import edit_user

    cli = Actor.cli()
    promoters = create_group("Promoters", permissions=["users.view", "users.edit", "roles.manage"], actor=cli)
    everything = create_group(
        "Everything", permissions=sorted(ADMINISTRATORS_PERMISSIONS | {"roles.manage"}), actor=cli
    )
    weak, strong = (make_user(email=f"{n}@staff.example", role=UserRole.ADMIN) for n in ("weak", "strong"))
    db.session.execute(sa.delete(StaffGroupMember))
    add_member(promoters, weak, actor=cli)
    add_member(everything, strong, actor=cli)
    target = make_user(email="target@example.com")
    db.session.commit()
    before = state(db)
    with pytest.raises(NotAllowed, match=r"users\.export"):
        edit_user(target, {"role": UserRole.ADMIN}, expected_version=None, actor=Actor.staff(weak))
    db.session.rollback()
    assert state(db) == before
    edit_user(target, {"role": UserRole.ADMIN}, expected_version=None, actor=Actor.staff(strong))
    db.session.commit()
    assert db.session.get(User, target.id).role == UserRole.ADMIN
    with pytest.raises(NotAllowed, match="super admins"):
        edit_user(
            make_user(email="t2@example.com"),
            {"role": UserRole.SUPER_ADMIN},
            expected_version=None,
            actor=Actor.staff(strong),
        )


def test_the_audit_trail_names_the_staff_group_a_change_was_about(auth, client, db):
    from app.staff.services import create_group, delete_group, set_permissions

    group = create_group("Night shift", permissions=["users.view"], actor=Actor.cli())
    set_permissions(group, ["users.view", "users.unlock"], actor=Actor.cli())
    gone = create_group("Short-lived", actor=Actor.cli())
    delete_group(gone, actor=Actor.cli())
    db.session.commit()
    auth.sign_in(role=UserRole.SUPER_ADMIN)
    page = client.get("/audit").get_data(as_text=True)
    assert f'href="/staff/groups/{group.id}" class="staff-group-link">group Night shift</a>' in page
    assert "group Short-lived" in page and f'href="/staff/groups/{gone.id}"' not in page  # deleted: no link
    assert "users.view → users.unlock users.view" in page  # the permissions before and after
