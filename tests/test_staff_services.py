"""app/staff/services.py and the rules around staff groups: names, permissions, the built-in group,
conflicts, who may hand on what, groups following roles, and what an admin may do as a result."""

import json
import re

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.extensions import db as _db
from app.models import AuditEvent, StaffGroup, StaffGroupMember, User, UserRole, utcnow
from app.permissions import (
    ADMINISTRATORS,
    ADMINISTRATORS_PERMISSIONS,
    ALL,
    CATALOGUE,
    MissingPermission,
    NotAllowed,
    grants_of,
    may,
)
from app.records.staff import builtin_group, groups_of
from app.staff.services import (
    GroupConflict,
    StaffError,
    add_member,
    create_group,
    delete_group,
    find_staff,
    grant,
    members_of,
    remove_member,
    rename_group,
    revoke,
    set_permissions,
)
from app.users.services import create_admin, edit_user, invite_user

CLI = Actor.cli()
MANAGER_HOLDS = ["permissions.manage", "users.invite", "users.view"]


def changes_of(db, action: str, group: StaffGroup | None = None) -> list[dict]:
    query = sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.occurred_at)
    if group is not None:
        query = query.where(AuditEvent.staff_group_id == group.id)
    return [json.loads(event.changes) for event in db.session.scalars(query)]


def names_of(groups) -> list[str]:
    return [group.name for group in groups]


@pytest.fixture
def admin(make_user) -> User:
    return make_user(email="admin@example.com", role=UserRole.ADMIN)


@pytest.fixture
def boss(make_user) -> User:
    return make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)


@pytest.fixture
def manager(db, make_user) -> User:
    """An admin whose only group, Managers, lets them manage permissions, view and invite."""
    user = make_user(email="manager@example.com", role=UserRole.ADMIN)
    remove_member(builtin_group(), user, actor=CLI)
    add_member(create_group("Managers", permissions=MANAGER_HOLDS, actor=CLI), user, actor=CLI)
    db.session.commit()
    return user


@pytest.fixture
def support(db) -> StaffGroup:
    group = create_group("Support", description="Front line", permissions=["users.view", "users.invite"], actor=CLI)
    db.session.commit()
    return group


def state(db):
    db.session.expire_all()
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
    return groups, members, db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))


# --- create, rename, permissions, delete: each audited with its before and after ---------------------


def test_create_group_is_audited_and_left_to_the_caller_to_commit(db, boss):
    group = create_group(
        "  Support   desk ",
        description=" Front line ",
        permissions=["users.view", "users.invite"],
        actor=Actor.staff(boss),
    )
    assert (group.name, group.description, group.permission_names, group.builtin) == (
        "Support desk",
        "Front line",
        ["users.invite", "users.view"],
        False,
    )
    (event,) = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "staff_group.create"))
    assert (event.source, event.actor_id, event.staff_group_id, event.target_label) == (
        "dashboard",
        boss.id,
        group.id,
        "group Support desk",
    )
    assert json.loads(event.changes) == {
        "name": [None, "Support desk"],
        "description": [None, "Front line"],
        "permissions": [None, "users.invite users.view"],
    }
    db.session.rollback()  # the service never commits: the caller's rollback takes all of it back
    assert names_of(db.session.scalars(sa.select(StaffGroup))) == [ADMINISTRATORS]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0


def test_rename_group_audits_name_and_description(db, support):
    changes = rename_group(support, "Helpdesk", description="Answers the phone", actor=CLI)
    assert changes == {"name": ["Support", "Helpdesk"], "description": ["Front line", "Answers the phone"]}
    assert changes_of(db, "staff_group.update", support) == [changes]
    assert rename_group(support, "Helpdesk", description="Answers the phone", actor=CLI) == {}
    assert len(changes_of(db, "staff_group.update")) == 1
    # Its own name in another case is not taken by anyone else.
    assert rename_group(support, "HELPDESK", actor=CLI) == {"name": ["Helpdesk", "HELPDESK"]}


def test_set_permissions_audits_before_after_granted_and_revoked(db, support):
    changes = set_permissions(support, ["users.view", "audit.view"], actor=CLI)
    assert changes == {
        "permissions": ["users.invite users.view", "audit.view users.view"],
        "granted": [None, "audit.view"],
        "revoked": ["users.invite", None],
    }
    assert support.permission_names == ["audit.view", "users.view"]
    assert changes_of(db, "staff_group.permissions", support) == [changes]
    assert set_permissions(support, ["audit.view", "users.view", "users.view"], actor=CLI) == {}
    assert len(changes_of(db, "staff_group.permissions")) == 1
    assert set_permissions(support, [], actor=CLI)["permissions"] == ["audit.view users.view", None]


def test_grant_and_revoke_add_to_and_take_from_what_is_granted(db, support):
    assert grant(support, ["users.suspend", "users.view"], actor=CLI) == {
        "permissions": ["users.invite users.view", "users.invite users.suspend users.view"],
        "granted": [None, "users.suspend"],
    }
    assert grant(support, ["users.view"], actor=CLI) == {}
    assert revoke(support, ["users.invite", "users.export"], actor=CLI) == {
        "permissions": ["users.invite users.suspend users.view", "users.suspend users.view"],
        "revoked": ["users.invite", None],
    }
    assert revoke(support, ["users.export"], actor=CLI) == {}
    assert len(changes_of(db, "staff_group.permissions", support)) == 2


def test_delete_group_removes_its_members_and_keeps_its_history(db, support, admin):
    add_member(support, admin, actor=CLI)
    db.session.commit()
    group_id = support.id
    delete_group(support, actor=CLI)
    db.session.commit()
    assert db.session.get(StaffGroup, group_id) is None
    assert names_of(groups_of(admin)) == [ADMINISTRATORS]
    events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.staff_group_id == group_id)).all()
    assert [e.action for e in sorted(events, key=lambda e: e.action)] == [
        "staff_group.create",
        "staff_group.delete",
        "staff_group.member_add",
        "staff_group.member_remove",
    ]
    (deleted,) = [e for e in events if e.action == "staff_group.delete"]
    assert json.loads(deleted.changes) == {
        "name": ["Support", None],
        "description": ["Front line", None],
        "permissions": ["users.invite users.view", None],
    }
    (removed,) = [e for e in events if e.action == "staff_group.member_remove"]
    assert (removed.target_id, json.loads(removed.changes)) == (admin.id, {"group": ["Support", None]})


def test_add_and_remove_member_are_audited(db, support, admin):
    add_member(support, admin, actor=CLI)
    assert names_of(groups_of(admin)) == [ADMINISTRATORS, "Support"]
    assert members_of(support) == [admin]
    remove_member(support, admin, actor=CLI)
    assert names_of(groups_of(admin)) == [ADMINISTRATORS]
    events = db.session.scalars(
        sa.select(AuditEvent).where(AuditEvent.staff_group_id == support.id, AuditEvent.target_id == admin.id)
    ).all()
    assert sorted((e.action, e.changes) for e in events) == [
        ("staff_group.member_add", json.dumps({"group": [None, "Support"]})),
        ("staff_group.member_remove", json.dumps({"group": ["Support", None]})),
    ]


# --- names and permissions refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "needs a name"),
        ("   \t ", "needs a name"),
        ("x" * 101, "at most 100"),
        ("Sup\x00port", "control"),
        ("Sup\x1bport", "control"),
        ("Sup\u202eport", "control"),  # right-to-left override: a name that reads as another
        ("Sup\u2066port", "control"),  # left-to-right isolate
        ("Sup\u200bport", "control"),  # zero-width space
        ("administrators", "already a group called Administrators"),
        ("ADMINISTRATORS", "already a group called Administrators"),
        ("  Administrators ", "already a group called Administrators"),
    ],
)
def test_names_refused(db, name, message):
    before = state(db)
    with pytest.raises(StaffError, match=message) as refused:
        create_group(name, actor=CLI)
    assert refused.value.field == "name"
    db.session.rollback()
    assert state(db) == before


def test_a_name_of_exactly_100_characters_is_fine(db):
    assert create_group("x" * 100, actor=CLI).name == "x" * 100


def test_rename_to_a_name_taken_in_another_case_is_refused(db, support):
    with pytest.raises(StaffError, match="already a group called Support") as refused:
        rename_group(create_group("Other", actor=CLI), "SUPPORT", actor=CLI)
    assert refused.value.field == "name"


def test_a_description_too_long_is_refused(db):
    with pytest.raises(StaffError, match="at most 500") as refused:
        create_group("Long", description="x" * 501, actor=CLI)
    assert refused.value.field == "description"


@pytest.mark.parametrize(
    "change",
    [
        lambda group: create_group("Ops", permissions=["users.view", "users.fly"], actor=CLI),
        lambda group: set_permissions(group, ["users.view", "users.fly"], actor=CLI),
        lambda group: grant(group, ["users.fly"], actor=CLI),
        lambda group: revoke(group, ["users.fly"], actor=CLI),
    ],
    ids=["create", "set_permissions", "grant", "revoke"],
)
def test_unknown_permissions_are_refused_by_name(db, support, change):
    before = state(db)
    with pytest.raises(StaffError, match=re.escape("No such permission: users.fly")) as refused:
        change(support)
    assert refused.value.field == "permissions"
    db.session.rollback()
    assert state(db) == before


# --- the built-in group -------------------------------------------------------------------------------


def test_the_built_in_group_keeps_its_name_and_stays(db, boss):
    group, actor = builtin_group(), Actor.staff(boss)
    with pytest.raises(StaffError, match="built in"):
        rename_group(group, "Admins", actor=actor)
    with pytest.raises(StaffError, match="built in"):
        delete_group(group, actor=actor)
    assert db.session.get(StaffGroup, group.id).name == ADMINISTRATORS


def test_the_built_in_groups_description_and_permissions_can_change(db, boss):
    group, actor = builtin_group(), Actor.staff(boss)
    assert rename_group(group, ADMINISTRATORS, description="Support staff", actor=actor)
    assert revoke(group, ["users.export"], actor=actor)["revoked"] == ["users.export", None]
    assert grant(group, ["webhooks.replay"], actor=actor)["granted"] == [None, "webhooks.replay"]
    assert group.permission_names == sorted(ADMINISTRATORS_PERMISSIONS - {"users.export"} | {"webhooks.replay"})


# --- two people editing one group ------------------------------------------------------------------------


def test_a_stale_expected_version_is_a_conflict(db, support):
    stale = support.version
    grant(support, ["audit.view"], actor=CLI)
    db.session.commit()
    before = state(db)
    for change in (
        lambda: set_permissions(support, ["users.view"], actor=CLI, expected_version=stale),
        lambda: rename_group(support, "Helpdesk", actor=CLI, expected_version=stale),
        lambda: delete_group(support, actor=CLI, expected_version=stale),
    ):
        with pytest.raises(GroupConflict, match="Someone else changed Support"):
            change()
    db.session.rollback()
    assert state(db) == before


def test_two_sessions_saving_one_group_do_not_overwrite_each_other(db, support):
    # Session one read the group (version 1) and keeps what it read; session two saves first.
    mine = db.session.get(StaffGroup, support.id)
    db.session.expunge(mine)
    db.session.rollback()
    with sa.orm.Session(db.engine) as theirs:
        theirs.get(StaffGroup, support.id).permissions = json.dumps(["audit.view"])
        theirs.commit()
    db.session.add(mine)
    with pytest.raises(GroupConflict, match="at the same moment"):
        set_permissions(mine, ["users.export"], actor=CLI)
    db.session.rollback()
    assert db.session.get(StaffGroup, support.id).permission_names == ["audit.view"]
    assert changes_of(db, "staff_group.permissions") == []


# --- who may hand on what --------------------------------------------------------------------------------


def test_without_permissions_manage_nothing_is_allowed(db, admin, support):
    actor = Actor.staff(admin)
    before = state(db)
    for change in (
        lambda: create_group("Mine", actor=actor),
        lambda: rename_group(support, "Mine", actor=actor),
        lambda: grant(support, ["users.view"], actor=actor),
        lambda: revoke(support, ["users.view"], actor=actor),
        lambda: delete_group(support, actor=actor),
        lambda: add_member(support, admin, actor=actor),
    ):
        with pytest.raises(MissingPermission) as refused:
            change()
        assert refused.value.permission == "permissions.manage"
    db.session.rollback()
    assert state(db) == before


def test_a_manager_grants_only_what_they_hold(db, manager, support):
    actor = Actor.staff(manager)
    before = state(db)
    with pytest.raises(NotAllowed, match=re.escape("users.export, which you do not hold")):
        grant(support, ["users.view", "users.export"], actor=actor)
    with pytest.raises(NotAllowed, match=re.escape("users.export")):
        create_group("Exporters", permissions=["users.export"], actor=actor)
    with pytest.raises(NotAllowed, match=re.escape("users.export")):
        set_permissions(builtin_group(), ["users.view"], actor=actor)  # takes away what they do not hold
    with pytest.raises(NotAllowed):
        delete_group(create_group("Auditors", permissions=["audit.view"], actor=CLI), actor=actor)
    db.session.rollback()
    assert state(db) == before
    # What they hold themselves they may hand on and take back.
    assert grant(support, ["permissions.manage"], actor=actor)["granted"] == [None, "permissions.manage"]
    assert revoke(support, ["users.invite"], actor=actor)["revoked"] == ["users.invite", None]
    assert create_group("Viewers", permissions=["users.view"], actor=actor).permission_names == ["users.view"]


def test_a_manager_adds_no_one_to_a_group_granting_more_than_they_hold(db, manager, admin, make_user, support):
    actor = Actor.staff(manager)
    newcomer = make_user(email="new@example.com", role=UserRole.ADMIN)
    remove_member(builtin_group(), newcomer, actor=CLI)
    db.session.commit()
    before = state(db)
    with pytest.raises(NotAllowed, match="which you do not hold"):
        add_member(builtin_group(), newcomer, actor=actor)
    with pytest.raises(NotAllowed, match="which you do not hold"):
        remove_member(builtin_group(), admin, actor=actor)
    db.session.rollback()
    assert state(db) == before
    add_member(support, newcomer, actor=actor)  # Support grants only what the manager holds
    assert names_of(groups_of(newcomer)) == ["Support"]


def test_a_manager_cannot_change_their_own_groups(db, manager, support):
    actor = Actor.staff(manager)
    before = state(db)
    with pytest.raises(NotAllowed, match="your own groups"):
        add_member(support, manager, actor=actor)
    managers = db.session.scalar(sa.select(StaffGroup).where(StaffGroup.name == "Managers"))
    with pytest.raises(NotAllowed, match="your own groups"):
        remove_member(managers, manager, actor=actor)
    db.session.rollback()
    assert state(db) == before


def test_a_super_admin_may_do_it_all(db, boss, admin, support):
    actor = Actor.staff(boss)
    everything = create_group("Everything", permissions=sorted(ALL), actor=actor)
    assert everything.permission_names == sorted(ALL)
    assert grant(builtin_group(), ["permissions.manage", "users.delete"], actor=actor)
    add_member(everything, admin, actor=actor)
    remove_member(builtin_group(), admin, actor=actor)
    assert names_of(groups_of(admin)) == ["Everything"]
    assert set(grants_of(admin)) == ALL
    delete_group(everything, actor=actor)
    assert grants_of(admin) == {}


def test_only_admins_join_groups(db, boss, make_user, support):
    plain = make_user(email="plain@example.com")
    gone = make_user(email="gone@example.com", role=UserRole.ADMIN, deleted_at=utcnow())
    admin = make_user(email="admin@example.com", role=UserRole.ADMIN)
    before = state(db)
    for user, message in (
        (plain, "not staff"),
        (boss, "super admin and holds every permission already"),
        (gone, "was deleted"),
    ):
        with pytest.raises(StaffError, match=message) as refused:
            add_member(support, user, actor=CLI)
        assert refused.value.field == "email"
    with pytest.raises(StaffError, match="in Administrators already"):
        add_member(builtin_group(), admin, actor=CLI)
    with pytest.raises(StaffError, match="is not in Support"):
        remove_member(support, admin, actor=CLI)
    db.session.rollback()
    assert state(db) == before


def test_find_staff_finds_live_people_by_email_in_any_case(db, admin):
    assert find_staff("ADMIN@example.com") == admin
    with pytest.raises(StaffError, match=re.escape("no user with the email 'nobody@example.com'")) as refused:
        find_staff("nobody@example.com")
    assert refused.value.field == "email"


# --- groups follow roles --------------------------------------------------------------------------------


def member_events(db, user: User) -> list[tuple[str, str]]:
    return sorted(
        (event.action, event.changes)
        for event in db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.target_id == user.id, AuditEvent.action.like("staff_group.member_%"))
        )
    )


def test_someone_made_an_admin_joins_administrators(db, boss, make_user):
    user = make_user(email="promoted@example.com")
    edit_user(user, {"role": UserRole.ADMIN}, expected_version=user.version, actor=Actor.staff(boss))
    db.session.commit()
    assert names_of(groups_of(user)) == [ADMINISTRATORS]
    assert member_events(db, user) == [("staff_group.member_add", json.dumps({"group": [None, ADMINISTRATORS]}))]
    (event,) = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "staff_group.member_add"))
    assert (event.source, event.actor_id, event.staff_group_id) == ("dashboard", boss.id, builtin_group().id)


def test_create_admin_and_invite_as_admin_join_administrators(db, boss):
    made = create_admin("made@example.com", role=UserRole.ADMIN, actor=CLI)
    invited = invite_user("invited@example.com", role=UserRole.ADMIN, actor=Actor.staff(boss))
    db.session.commit()
    for user in (made, invited):
        assert names_of(groups_of(user)) == [ADMINISTRATORS]
        assert member_events(db, user) == [("staff_group.member_add", json.dumps({"group": [None, ADMINISTRATORS]}))]
    boss_too = create_admin("boss2@example.com", actor=CLI)  # a super admin joins nothing
    assert groups_of(boss_too) == []


def test_an_admin_already_in_a_group_is_not_added_to_administrators(db, boss, admin, support):
    add_member(support, admin, actor=CLI)
    remove_member(builtin_group(), admin, actor=CLI)
    edit_user(admin, {"role": UserRole.SUPER_ADMIN}, expected_version=None, actor=Actor.staff(boss))
    assert names_of(groups_of(admin)) == ["Support"]  # kept, unused while they are a super admin
    edit_user(admin, {"role": UserRole.ADMIN}, expected_version=None, actor=Actor.staff(boss))
    assert names_of(groups_of(admin)) == ["Support"]


def test_an_admin_made_a_user_leaves_every_group(db, boss, admin, support):
    add_member(support, admin, actor=CLI)
    db.session.commit()
    edit_user(admin, {"role": UserRole.USER}, expected_version=admin.version, actor=Actor.staff(boss))
    db.session.commit()
    assert groups_of(admin) == []
    removals = [e for e in member_events(db, admin) if e[0] == "staff_group.member_remove"]
    assert removals == sorted(
        [
            ("staff_group.member_remove", json.dumps({"group": [ADMINISTRATORS, None]})),
            ("staff_group.member_remove", json.dumps({"group": ["Support", None]})),
        ]
    )
    # Made an admin again, they start from Administrators, not from what they had before.
    edit_user(admin, {"role": UserRole.ADMIN}, expected_version=None, actor=Actor.staff(boss))
    assert names_of(groups_of(admin)) == [ADMINISTRATORS]


# --- what an admin may do, and why ------------------------------------------------------------------------


def test_an_admin_in_no_group_may_do_nothing_but_a_super_admin_may_do_everything(db, admin, boss, make_user):
    remove_member(builtin_group(), admin, actor=CLI)
    db.session.commit()
    target = make_user(email="plain@example.com")
    assert grants_of(admin) == {}
    assert grants_of(boss) == {p.name: ["the super admin role"] for p in CATALOGUE}
    for permission in CATALOGUE:
        assert not may(Actor.staff(admin), permission.name)
        assert not may(Actor.staff(admin), permission.name, target)
        assert may(Actor.staff(boss), permission.name)
        assert may(Actor.staff(boss), permission.name, target)
        assert may(CLI, permission.name, target)


def test_administrators_grants_what_the_admin_role_allowed(db, admin, make_user):
    target, other = make_user(email="plain@example.com"), make_user(email="other@example.com", role=UserRole.ADMIN)
    actor = Actor.staff(admin)
    for permission in CATALOGUE:
        assert may(actor, permission.name) == (permission.name in ADMINISTRATORS_PERMISSIONS)
        assert may(actor, permission.name, target) == (permission.name in ADMINISTRATORS_PERMISSIONS)
        assert not may(actor, permission.name, other)  # admins act only on users with the role user


def test_grants_of_says_which_group_grants_what(db, admin, support, make_user):
    engineers = create_group("Engineers", permissions=["webhooks.replay", "users.view"], actor=CLI)
    add_member(engineers, admin, actor=CLI)
    grants = grants_of(admin)
    assert grants["users.view"] == [ADMINISTRATORS, "Engineers"]
    assert grants["webhooks.replay"] == ["Engineers"]
    assert grants["users.export"] == [ADMINISTRATORS]
    assert "users.delete" not in grants
    assert list(grants) == [p.name for p in CATALOGUE if p.name in grants]  # in the catalogue's order
    # A plain user holds nothing, even with a membership row left behind by hand.
    plain = make_user(email="plain@example.com")
    _db.session.add(StaffGroupMember(group_id=support.id, user_id=plain.id))
    _db.session.flush()
    assert grants_of(plain) == {}
