"""`flask staff ...`: each command's output and effect, each refusal exiting 1 with nothing changed,
and each change in the audit trail as the command line's."""

import json

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import AuditEvent, StaffGroup, StaffGroupMember, User, UserRole, UserStatus, utcnow
from app.permissions import ADMINISTRATORS_PERMISSIONS, CATALOGUE
from app.records.staff import builtin_group, groups_of
from app.staff.services import add_member, create_group

CLI = Actor.cli()


@pytest.fixture
def people(make_user):
    """A plain user, an admin (in Administrators), an admin also in Support, and a super admin."""
    return {
        "plain": make_user(email="plain@example.com"),
        "admin": make_user(email="admin@example.com", role=UserRole.ADMIN),
        "member": make_user(email="member@example.com", role=UserRole.ADMIN),
        "boss": make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN),
    }


@pytest.fixture
def support(db, people) -> StaffGroup:
    group = create_group("Support", description="Front line", permissions=["users.view", "users.invite"], actor=CLI)
    add_member(group, people["member"], actor=CLI)
    db.session.commit()
    return group


def staff(runner, *args: str):
    return runner.invoke(args=["staff", *args])


def state(db):
    """Everything the commands could change, as committed (a change left uncommitted is rolled back)."""
    db.session.rollback()
    groups = db.session.execute(
        sa.select(
            StaffGroup.id,
            StaffGroup.name,
            StaffGroup.description,
            StaffGroup.permissions,
            StaffGroup.builtin,
            StaffGroup.version,
        ).order_by(StaffGroup.id)
    ).all()
    members = db.session.execute(
        sa.select(StaffGroupMember.group_id, StaffGroupMember.user_id).order_by(
            StaffGroupMember.group_id, StaffGroupMember.user_id
        )
    ).all()
    events = db.session.execute(sa.select(AuditEvent.id, AuditEvent.action).order_by(AuditEvent.id)).all()
    return groups, members, events


def events(db, action: str) -> list[AuditEvent]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))


def group_named(db, name: str) -> StaffGroup | None:
    db.session.rollback()
    return db.session.scalar(sa.select(StaffGroup).where(StaffGroup.name == name))


def assert_from_cli(event: AuditEvent, group_id: int) -> dict:
    assert event.source == "cli" and event.actor_id is None and event.actor_label == "command line"
    assert event.staff_group_id == group_id
    return json.loads(event.changes)


def assert_ok(result) -> str:
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


# --- reading -----------------------------------------------------------------------------------


def test_permissions_lists_the_catalogue_one_per_line(runner):
    out = assert_ok(runner.invoke(args=["staff", "permissions"]))
    lines = out.splitlines()
    assert len(lines) == len(CATALOGUE)
    for line, permission in zip(lines, CATALOGUE, strict=True):
        name, description = line.split(maxsplit=1)
        assert (name, description) == (permission.name, permission.description)


def test_groups_shows_built_in_marker_permissions_and_members(runner, people, support):
    out = assert_ok(staff(runner, "groups"))
    administrators = ", ".join(sorted(ADMINISTRATORS_PERMISSIONS))
    assert out == (
        "Administrators (built in)\n"
        "  description: Everything an admin could do before staff groups: all but deleting users, roles, "
        "replays and permissions.\n"
        f"  permissions: {administrators}\n"
        "  members: admin@example.com, member@example.com\n"
        "Support\n"
        "  description: Front line\n"
        "  permissions: users.invite, users.view\n"
        "  members: member@example.com\n"
    )
    assert "boss@example.com" not in out and "plain@example.com" not in out


def test_groups_says_none_and_marks_members_who_are_not_plain_active_admins(runner, db, people):
    create_group("Empty", actor=CLI)
    db.session.commit()
    admin = people["admin"]
    admin.status = UserStatus.SUSPENDED
    db.session.commit()
    out = assert_ok(staff(runner, "groups"))
    assert "Empty\n  permissions: none\n  members: none\n" in out
    assert "members: admin@example.com (suspended), member@example.com\n" in out


def test_show_says_what_a_person_may_do_and_which_group_grants_it(runner, people, support):
    out = assert_ok(staff(runner, "show", "MEMBER@example.com"))
    lines = out.splitlines()
    assert lines[0] == "member@example.com (admin, active)"
    assert lines[1] == "  groups: Administrators, Support"
    assert [line.split()[0] for line in lines[2:]] == [
        p.name for p in CATALOGUE if p.name in ADMINISTRATORS_PERMISSIONS
    ]
    assert any(line.split() == ["users.view", "from", "Administrators,", "Support"] for line in lines)
    assert any(line.split() == ["users.export", "from", "Administrators"] for line in lines)


def test_show_a_super_admin_and_a_plain_user(runner, people):
    out = assert_ok(staff(runner, "show", "boss@example.com"))
    assert out.splitlines()[0] == "boss@example.com (super admin, active)"
    assert out.count("from the super admin role") == len(CATALOGUE)
    out = assert_ok(staff(runner, "show", "plain@example.com"))
    assert "may do nothing here: not staff." in out


def test_show_an_admin_in_no_group(runner, db, people):
    db.session.execute(sa.delete(StaffGroupMember))
    db.session.commit()
    out = assert_ok(staff(runner, "show", "admin@example.com"))
    assert "groups: none" in out and "may do nothing here: in no group that grants anything." in out


# --- create and delete ---------------------------------------------------------------------------


def test_create_makes_the_group_and_audits_it(runner, db):
    result = staff(runner, "create", "Engineers", "webhooks.replay", "clerk.retry", "--description", "On call")
    assert assert_ok(result) == "Created group Engineers, granting clerk.retry, webhooks.replay.\n"
    group = group_named(db, "Engineers")
    assert (group.description, group.permission_names, group.builtin) == (
        "On call",
        ["clerk.retry", "webhooks.replay"],
        False,
    )
    (event,) = events(db, "staff_group.create")
    assert assert_from_cli(event, group.id) == {
        "name": [None, "Engineers"],
        "description": [None, "On call"],
        "permissions": [None, "clerk.retry webhooks.replay"],
    }


def test_create_without_permissions(runner, db):
    assert assert_ok(staff(runner, "create", "Later")) == "Created group Later, granting none.\n"
    assert group_named(db, "Later").permission_names == []


def test_delete_removes_the_group_and_its_members_audited(runner, db, people, support):
    group_id = support.id
    assert assert_ok(staff(runner, "delete", "support")) == "Deleted group Support: 1 member no longer in it.\n"
    assert group_named(db, "Support") is None
    assert groups_of(people["member"]) == [builtin_group()]
    (removed,) = events(db, "staff_group.member_remove")
    assert assert_from_cli(removed, group_id) == {"group": ["Support", None]}
    assert removed.target_id == people["member"].id
    (deleted,) = events(db, "staff_group.delete")
    assert assert_from_cli(deleted, group_id) == {
        "name": ["Support", None],
        "description": ["Front line", None],
        "permissions": ["users.invite users.view", None],
    }


# --- grant and revoke ------------------------------------------------------------------------------


def test_grant_adds_permissions_whatever_the_case_of_the_group(runner, db, support):
    out = assert_ok(staff(runner, "grant", "SUPPORT", "users.unlock", "users.suspend"))
    assert out == "Support now grants users.suspend, users.unlock.\n"
    assert group_named(db, "Support").permission_names == [
        "users.invite",
        "users.suspend",
        "users.unlock",
        "users.view",
    ]
    (event,) = events(db, "staff_group.permissions")
    assert assert_from_cli(event, support.id) == {
        "permissions": ["users.invite users.view", "users.invite users.suspend users.unlock users.view"],
        "granted": [None, "users.suspend users.unlock"],
    }


def test_grant_says_what_was_there_already(runner, db, support):
    out = assert_ok(staff(runner, "grant", "Support", "users.view", "audit.view"))
    assert out == "Support now grants audit.view (it granted users.view already).\n"


def test_grant_of_what_is_granted_changes_nothing(runner, db, support):
    before = state(db)
    out = assert_ok(staff(runner, "grant", "Support", "users.view"))
    assert out == "Support already grants users.view: nothing changed.\n"
    assert state(db) == before


def test_revoke_removes_permissions_audited(runner, db, support):
    out = assert_ok(staff(runner, "revoke", "support", "users.invite", "audit.view"))
    assert out == "Support no longer grants users.invite (it did not grant audit.view).\n"
    assert group_named(db, "Support").permission_names == ["users.view"]
    (event,) = events(db, "staff_group.permissions")
    assert assert_from_cli(event, support.id) == {
        "permissions": ["users.invite users.view", "users.view"],
        "revoked": ["users.invite", None],
    }


def test_revoke_of_what_is_not_granted_changes_nothing(runner, db, support):
    before = state(db)
    out = assert_ok(staff(runner, "revoke", "Support", "users.export"))
    assert out == "Support does not grant users.export: nothing changed.\n"
    assert state(db) == before


def test_the_built_in_groups_permissions_can_change(runner, db, people):
    assert assert_ok(staff(runner, "revoke", "administrators", "users.export"))
    assert "users.export" not in builtin_group().permission_names
    assert assert_ok(staff(runner, "grant", "Administrators", "users.export"))
    assert builtin_group().permission_names == sorted(ADMINISTRATORS_PERMISSIONS)


# --- members -----------------------------------------------------------------------------------------


def test_add_puts_an_admin_in_a_group_audited(runner, db, people, support):
    admin = people["admin"]
    assert assert_ok(staff(runner, "add", "Admin@Example.com", "support")) == "Added admin@example.com to Support.\n"
    assert [g.name for g in groups_of(admin)] == ["Administrators", "Support"]
    (event,) = [e for e in events(db, "staff_group.member_add") if e.target_id == admin.id]
    assert assert_from_cli(event, support.id) == {"group": [None, "Support"]}


def test_remove_takes_a_member_out_audited(runner, db, people, support):
    member = people["member"]
    assert assert_ok(staff(runner, "remove", "member@example.com", "Support")) == (
        "Removed member@example.com from Support.\n"
    )
    assert [g.name for g in groups_of(member)] == ["Administrators"]
    (event,) = events(db, "staff_group.member_remove")
    assert assert_from_cli(event, support.id) == {"group": ["Support", None]}
    assert event.target_id == member.id


def test_an_admin_taken_out_of_every_group_may_do_nothing(runner, db, people):
    assert_ok(staff(runner, "remove", "admin@example.com", "Administrators"))
    out = assert_ok(staff(runner, "show", "admin@example.com"))
    assert "may do nothing here" in out


# --- refusals: exit 1, one line on stderr, nothing changed --------------------------------------------

UNKNOWN_GROUP = "There is no staff group called 'Nobody'; `flask staff groups` lists them."

REFUSALS = {
    "create a name taken in another case": (["create", "administrators"], "already a group called Administrators"),
    "create a blank name": (["create", "  "], "A group needs a name."),
    "create a name too long": (["create", "x" * 101], "at most 100 characters"),
    "create a name with a control character": (["create", "Sup\x07port"], "cannot hold control"),
    "create with an unknown permission": (
        ["create", "Ops", "users.view", "users.fly"],
        "No such permission: users.fly. `flask staff permissions` lists them.",
    ),
    "delete a built-in group": (["delete", "Administrators"], "Administrators is built in"),
    "delete an unknown group": (["delete", "Nobody"], UNKNOWN_GROUP),
    "grant an unknown permission": (
        ["grant", "Support", "users.view", "users.fly", "audit.everything"],
        "No such permission: users.fly, audit.everything. `flask staff permissions` lists them.",
    ),
    "grant to an unknown group": (["grant", "Nobody", "users.view"], UNKNOWN_GROUP),
    "revoke an unknown permission": (["revoke", "Support", "users.fly"], "No such permission: users.fly."),
    "revoke from an unknown group": (["revoke", "Nobody", "users.view"], UNKNOWN_GROUP),
    "add an unknown person": (
        ["add", "nobody@example.com", "Support"],
        "There is no user with the email 'nobody@example.com' here.",
    ),
    "add a user with role user": (["add", "plain@example.com", "Support"], "plain@example.com is not staff"),
    "add a super admin": (["add", "boss@example.com", "Support"], "boss@example.com is a super admin"),
    "add someone twice": (["add", "member@example.com", "support"], "member@example.com is in Support already."),
    "add to an unknown group": (["add", "admin@example.com", "Nobody"], UNKNOWN_GROUP),
    "remove someone not in the group": (["remove", "admin@example.com", "Support"], "is not in Support."),
    "remove an unknown person": (["remove", "nobody@example.com", "Support"], "no user with the email"),
    "remove from an unknown group": (["remove", "member@example.com", "Nobody"], UNKNOWN_GROUP),
    "show an unknown person": (["show", "nobody@example.com"], "no user with the email"),
}


@pytest.mark.parametrize(("args", "message"), REFUSALS.values(), ids=REFUSALS.keys())
def test_refusals_exit_1_with_the_reason_and_change_nothing(runner, db, people, support, args, message):
    before = state(db)
    result = staff(runner, *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert state(db) == before


def test_a_deleted_admin_is_no_one_to_add(runner, db, people, support):
    admin = people["admin"]
    admin.deleted_at = utcnow()
    db.session.commit()
    before = state(db)
    result = staff(runner, "add", "admin@example.com", "Support")
    assert result.exit_code == 1 and "There is no user with the email" in result.stderr
    assert state(db) == before


def test_commands_need_their_arguments(runner, db, support):
    before = state(db)
    for args in (["grant", "Support"], ["revoke", "Support"], ["add", "admin@example.com"], ["delete"]):
        result = staff(runner, *args)
        assert result.exit_code == 2 and "Missing argument" in result.stderr
    assert state(db) == before


def test_the_staff_group_is_registered_with_every_command(runner):
    out = assert_ok(runner.invoke(args=["staff", "--help"]))
    for command in ("permissions", "groups", "create", "delete", "grant", "revoke", "add", "remove", "show"):
        assert f"  {command} " in out


def test_a_super_admins_kept_membership_shows_as_such(runner, db, people, support):
    member = people["member"]
    member.role = UserRole.SUPER_ADMIN  # a super admin keeps their groups, unused while they are one
    db.session.commit()
    assert "members: member@example.com (super admin)\n" in assert_ok(staff(runner, "groups"))
    assert db.session.get(User, member.id).role == UserRole.SUPER_ADMIN
