"""The dashboard's operations on users, called directly (no HTTP): what each one changes, the audit
event it writes in the caller's transaction, and that a refusal raises before anything is written.
The rules every path shares (read-only tombstones, `invited`, nobody acts on themselves, the
version of a pair) are in test_users_rules.py; the HTTP side is in test_users_actions.py.
"""

import json

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import AuditEvent, ClerkCall, User, UserData, UserRole, UserStatus
from app.permissions import NotAllowed
from app.records.users import update_user_fields
from app.users import services
from app.users.services import (
    DuplicateEmail,
    DuplicateKey,
    EditConflict,
    UserError,
    add_user_data,
    bulk_set_status,
    delete_user_data,
    edit_user,
    invite_user,
    preview_bulk_status,
    resend_invitation,
    revoke_invitation,
    set_status,
    update_user_data,
)

CLI = Actor.cli()


@pytest.fixture
def boss(make_user) -> User:
    """A super admin, acting directly (not signed in anywhere)."""
    return make_user(email="boss@staff.example", role=UserRole.SUPER_ADMIN)


@pytest.fixture
def admin(make_user) -> User:
    return make_user(email="admin@staff.example", role=UserRole.ADMIN)


@pytest.fixture
def clerk_connected(app) -> None:
    """Services then queue calls for Clerk; nothing is delivered without a request or `clerk push`."""
    app.config["CLERK_SECRET_KEY"] = "sk_test_never_used"


def state(db) -> tuple:
    """Every row a refused operation must leave as it was."""
    db.session.expire_all()
    users = db.session.execute(
        sa.select(
            User.id, User.email, User.first_name, User.last_name, User.role, User.status, User.clerk_id, User.version
        ).order_by(User.id)
    ).all()
    data = db.session.execute(
        sa.select(UserData.id, UserData.key, UserData.value, UserData.version).order_by(UserData.id)
    ).all()
    events = db.session.scalars(sa.select(AuditEvent.id).order_by(AuditEvent.id)).all()
    calls = db.session.execute(sa.select(ClerkCall.id, ClerkCall.state).order_by(ClerkCall.id)).all()
    return users, data, events, calls


def refused(db, error, operation, match: str | None = None) -> None:
    """`operation` raises `error`, and even a commit after it stores nothing."""
    before = state(db)
    with pytest.raises(error, match=match):
        operation()
    db.session.commit()
    assert state(db) == before


def events(db, action: str | None = None) -> list[AuditEvent]:
    query = sa.select(AuditEvent).order_by(AuditEvent.occurred_at, AuditEvent.id)
    if action:
        query = query.where(AuditEvent.action == action)
    return list(db.session.scalars(query))


def pending_calls(db) -> list[str]:
    return list(
        db.session.scalars(sa.select(ClerkCall.operation).where(ClerkCall.state == "pending").order_by(ClerkCall.id))
    )


# --- update_user_fields, the one write path -----------------------------------------------------


def test_update_user_fields_audits_only_real_changes(make_user, db):
    user = make_user(email="a@example.com", first_name="Ann")
    changed = update_user_fields(
        user,
        {"first_name": "Anna", "email": "a@example.com", "status": UserStatus.SUSPENDED},
        actor=Actor.cli(),
    )
    db.session.commit()
    assert changed == {"first_name": ["Ann", "Anna"], "status": ["active", "suspended"]}
    event = db.session.scalars(sa.select(AuditEvent)).one()
    assert (event.action, event.source, event.target_id) == ("user.update", "cli", user.id)
    assert json.loads(event.changes) == changed
    assert user.version == 2


def test_update_user_fields_with_nothing_new_writes_nothing(make_user, db):
    user = make_user(first_name="Same")
    assert update_user_fields(user, {"first_name": "Same"}, actor=Actor.cli()) == {}
    db.session.commit()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0
    assert user.version == 1


# --- edit_user ---------------------------------------------------------------------------------


def test_edit_user_saves_the_change_and_its_audit_event_in_one_transaction(boss, ada, db):
    edit = {"first_name": "Augusta", "email": " Ada.King@EXAMPLE.com "}

    edit_user(ada, edit, expected_version=ada.version, actor=Actor.staff(boss))
    db.session.rollback()  # the caller gives up: neither the change nor its trail remains
    assert (ada.first_name, ada.email, events(db)) == ("Ada", "ada@example.com", [])

    changed = edit_user(ada, edit, expected_version=ada.version, actor=Actor.staff(boss))
    db.session.commit()
    assert changed == {"email": ["ada@example.com", "ada.king@example.com"], "first_name": ["Ada", "Augusta"]}
    db.session.expire_all()
    assert (ada.first_name, ada.email, ada.version) == ("Augusta", "ada.king@example.com", 2)
    [event] = events(db)
    assert (event.action, event.source, event.actor_id, event.target_id) == (
        "user.update",
        "dashboard",
        boss.id,
        ada.id,
    )
    assert json.loads(event.changes) == changed


def test_edit_user_changes_a_role_for_a_super_admin(boss, ada, db):
    assert edit_user(ada, {"role": UserRole.ADMIN}, expected_version=None, actor=Actor.staff(boss)) == {
        "role": ["user", "admin"]
    }


def test_edit_user_refusals_raise_and_write_nothing(boss, admin, ada, make_user, db):
    other_admin = make_user(email="other-admin@staff.example", role=UserRole.ADMIN)
    make_user(email="taken@example.com")
    as_boss, as_admin = Actor.staff(boss), Actor.staff(admin)

    refused(
        db,
        EditConflict,
        lambda: edit_user(ada, {"first_name": "Late"}, expected_version=ada.version + 1, actor=as_boss),
    )
    refused(
        db, DuplicateEmail, lambda: edit_user(ada, {"email": "TAKEN@example.com"}, expected_version=None, actor=as_boss)
    )
    refused(
        db,
        NotAllowed,
        lambda: edit_user(other_admin, {"first_name": "X"}, expected_version=None, actor=as_admin),
        match="role 'user' only",
    )
    refused(
        db,
        NotAllowed,
        lambda: edit_user(ada, {"role": UserRole.ADMIN}, expected_version=None, actor=as_admin),
        match="roles.manage",
    )
    # The command line may do anything but leave the dashboard without an active super admin.
    refused(
        db,
        NotAllowed,
        lambda: edit_user(boss, {"role": UserRole.ADMIN}, expected_version=None, actor=CLI),
        match="at least one active super admin",
    )


def test_an_admin_edits_a_user_with_the_role_user(admin, ada, db):
    edit_user(ada, {"last_name": "King"}, expected_version=None, actor=Actor.staff(admin))
    db.session.commit()
    assert [(e.action, e.actor_id) for e in events(db)] == [("user.update", admin.id)]


# --- set_status --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "status", "action"),
    [
        (UserStatus.ACTIVE, UserStatus.SUSPENDED, "user.suspend"),
        (UserStatus.SUSPENDED, UserStatus.ACTIVE, "user.reactivate"),
        (UserStatus.ACTIVE, UserStatus.INACTIVE, "user.deactivate"),
        (UserStatus.INACTIVE, UserStatus.SUSPENDED, "user.suspend"),
    ],
)
def test_set_status_names_its_audit_event_after_the_change(boss, make_user, db, start, status, action):
    user = make_user(status=start)
    assert set_status(user, status, actor=Actor.staff(boss)) == {"status": [start.value, status.value]}
    db.session.commit()
    [event] = events(db)
    assert (event.action, event.actor_id, event.target_id) == (action, boss.id, user.id)
    assert user.status == status and user.version == 2


def test_set_status_to_the_same_status_writes_nothing(boss, ada, db):
    assert set_status(ada, UserStatus.ACTIVE, actor=Actor.staff(boss)) == {}
    db.session.commit()
    assert events(db) == [] and ada.version == 1


def test_set_status_refusals_raise_and_write_nothing(boss, admin, make_user, db):
    other_admin = make_user(email="other-admin@staff.example", role=UserRole.ADMIN)
    refused(db, NotAllowed, lambda: set_status(other_admin, UserStatus.SUSPENDED, actor=Actor.staff(admin)))
    refused(db, NotAllowed, lambda: set_status(boss, UserStatus.INACTIVE, actor=CLI), match="at least one active")


def test_set_status_queues_the_ban_for_a_clerk_user(boss, make_user, db, clerk_connected):
    member = make_user(clerk_id="user_2member")
    set_status(member, UserStatus.SUSPENDED, actor=Actor.staff(boss))
    db.session.commit()
    assert pending_calls(db) == ["ban", "update_metadata"]


# --- invite_user, revoke_invitation, resend_invitation --------------------------------------------


def test_invite_user_creates_an_invited_row_and_its_audit_event(boss, db):
    user = invite_user(
        " Grace@Navy.MIL ", first_name="Grace", last_name="Hopper", role=UserRole.ADMIN, actor=Actor.staff(boss)
    )
    db.session.commit()
    db.session.expire_all()
    assert (user.email, user.status, user.role) == ("grace@navy.mil", UserStatus.INVITED, UserRole.ADMIN)
    assert user.clerk_id.startswith("local_")
    [event, joined] = events(db)
    assert (event.action, event.actor_id, event.target_id) == ("user.invite", boss.id, user.id)
    # An invited admin joins the built-in group, as anyone made an admin does (app/records/staff.py).
    assert (joined.action, joined.target_id, joined.target_label) == ("staff_group.member_add", user.id, user.email)
    assert json.loads(event.changes) == {
        "email": [None, "grace@navy.mil"],
        "first_name": [None, "Grace"],
        "last_name": [None, "Hopper"],
        "role": [None, "admin"],
        "status": [None, "invited"],
    }
    assert pending_calls(db) == []  # Clerk is not connected: the row waits here


def test_invite_user_queues_a_clerk_invitation_when_connected(boss, db, clerk_connected):
    invite_user("grace@navy.mil", actor=Actor.staff(boss))
    db.session.commit()
    assert pending_calls(db) == ["create_invitation"]


def test_invite_user_refusals_raise_and_write_nothing(admin, ada, db):
    refused(db, DuplicateEmail, lambda: invite_user("ADA@Example.com", actor=CLI))
    refused(
        db,
        NotAllowed,
        lambda: invite_user("new@example.com", role=UserRole.ADMIN, actor=Actor.staff(admin)),
        match="roles.manage",
    )


def test_revoke_invitation_makes_the_row_inactive_and_audits_it(boss, db, clerk_connected):
    invited = invite_user("grace@navy.mil", actor=Actor.staff(boss))
    db.session.commit()
    assert revoke_invitation(invited, actor=Actor.staff(boss)) == {"status": ["invited", "inactive"]}
    db.session.commit()
    assert invited.status == UserStatus.INACTIVE
    assert [e.action for e in events(db)] == ["user.invite", "user.invitation_revoke"]
    assert pending_calls(db) == ["create_invitation", "revoke_invitation"]


def test_revoke_invitation_refuses_a_user_without_one(boss, ada, db):
    refused(db, UserError, lambda: revoke_invitation(ada, actor=Actor.staff(boss)), match="still invited")


def test_resend_invitation_needs_clerk(boss, db):
    invited = invite_user("grace@navy.mil", actor=Actor.staff(boss))
    db.session.commit()
    refused(db, UserError, lambda: resend_invitation(invited, actor=Actor.staff(boss)), match="not connected")


def test_resending_an_open_invitation_replaces_it_in_clerk(boss, db, clerk_connected):
    invited = invite_user("grace@navy.mil", actor=Actor.staff(boss))
    db.session.commit()
    resend_invitation(invited, actor=Actor.staff(boss))
    db.session.commit()
    assert invited.status == UserStatus.INVITED
    resent = events(db, "user.invitation_resend")
    assert [(e.actor_id, e.changes) for e in resent] == [(boss.id, None)]  # nothing changed on the row
    # The first invitation is superseded by the newer one; the revocation goes first.
    assert pending_calls(db) == ["revoke_invitation", "create_invitation"]


def test_inviting_again_after_a_revocation_reopens_the_row(boss, db, clerk_connected):
    invited = invite_user("grace@navy.mil", actor=Actor.staff(boss))
    revoke_invitation(invited, actor=Actor.staff(boss))
    db.session.commit()
    resend_invitation(invited, actor=Actor.staff(boss))
    db.session.commit()
    assert invited.status == UserStatus.INVITED
    [event] = events(db, "user.invitation_resend")
    assert json.loads(event.changes) == {"status": ["inactive", "invited"]}


def test_resend_invitation_refuses_a_user_who_joined(boss, make_user, db, clerk_connected):
    member = make_user(clerk_id="user_2member", status=UserStatus.INACTIVE)
    refused(db, UserError, lambda: resend_invitation(member, actor=Actor.staff(boss)), match="invited again")


# --- bulk_set_status and preview_bulk_status -----------------------------------------------------


def test_bulk_set_status_sorts_users_into_changed_unchanged_and_refused(admin, make_user, db):
    fresh = [make_user(email=f"b{i}@example.com") for i in range(2)]
    already = make_user(email="already@example.com", status=UserStatus.SUSPENDED)
    other_admin = make_user(email="other-admin@staff.example", role=UserRole.ADMIN)
    ids = [fresh[0].id, fresh[1].id, fresh[0].id, already.id, other_admin.id, "no-such-id", ""]

    result = bulk_set_status(ids, UserStatus.SUSPENDED, actor=Actor.staff(admin))
    db.session.commit()

    assert sorted(u.email for u in result.changed) == ["b0@example.com", "b1@example.com"]
    assert result.unchanged == [already]
    assert result.refused == {
        "no-such-id": "there is no user with this id",
        "other-admin@staff.example": result.refused["other-admin@staff.example"],
    }
    assert "role 'user' only" in result.refused["other-admin@staff.example"]
    db.session.expire_all()
    assert [u.status for u in fresh] == [UserStatus.SUSPENDED] * 2 and other_admin.status == UserStatus.ACTIVE
    audited = events(db)
    assert sorted((e.action, e.target_id) for e in audited) == sorted(("user.suspend", u.id) for u in fresh)
    assert {e.actor_id for e in audited} == {admin.id}


def test_preview_bulk_status_says_the_same_and_writes_nothing(admin, make_user, db):
    users = [make_user(email=f"p{i}@example.com") for i in range(3)]
    other_admin = make_user(email="other-admin@staff.example", role=UserRole.ADMIN)
    ids = [u.id for u in users] + [other_admin.id]
    before = state(db)

    preview = preview_bulk_status(ids, UserStatus.INACTIVE, actor=Actor.staff(admin))
    db.session.commit()

    assert state(db) == before
    done = bulk_set_status(ids, UserStatus.INACTIVE, actor=Actor.staff(admin))
    assert ([u.id for u in preview.changed], preview.refused) == ([u.id for u in done.changed], done.refused)


def test_bulk_refuses_a_status_it_cannot_set(ada, db):
    for operation in (bulk_set_status, preview_bulk_status):
        refused(db, UserError, lambda op=operation: op([ada.id], UserStatus.INVITED, actor=CLI))


def test_bulk_takes_at_most_max_bulk_users(make_user, db, monkeypatch):
    monkeypatch.setattr(services, "MAX_BULK", 2)
    users = sorted((make_user() for _ in range(3)), key=lambda u: u.email)
    result = bulk_set_status([u.id for u in users], UserStatus.SUSPENDED, actor=CLI)
    assert {u.id for u in result.changed} == {users[0].id, users[1].id}
    assert users[2].status == UserStatus.ACTIVE


# --- key-value data ------------------------------------------------------------------------------


def test_a_pair_added_and_rolled_back_leaves_neither_the_pair_nor_its_event(boss, ada, db):
    add_user_data(ada, "plan", "pro", actor=Actor.staff(boss))
    db.session.rollback()
    assert (db.session.scalars(sa.select(UserData)).all(), events(db)) == ([], [])


def test_add_update_and_delete_a_pair_each_write_their_audit_event(boss, ada, db):
    me = Actor.staff(boss)
    item = add_user_data(ada, "plan", "pro", actor=me)
    db.session.commit()
    assert update_user_data(item, "plan", "team", actor=me) == {"data.plan": ["pro", "team"]}
    db.session.commit()
    assert item.version == 2
    assert update_user_data(item, "tier", "team", actor=me) == {
        "data.plan": ["team", None],
        "data.tier": [None, "team"],
    }
    db.session.commit()
    assert update_user_data(item, "tier", "team", actor=me) == {}  # nothing new: no event
    delete_user_data(item, actor=me)
    db.session.commit()

    assert db.session.scalars(sa.select(UserData)).all() == []
    trail = [(e.action, e.actor_id, e.target_id, json.loads(e.changes)) for e in events(db)]
    assert trail == [
        ("user_data.add", boss.id, ada.id, {"data.plan": [None, "pro"]}),
        ("user_data.update", boss.id, ada.id, {"data.plan": ["pro", "team"]}),
        ("user_data.update", boss.id, ada.id, {"data.plan": ["team", None], "data.tier": [None, "team"]}),
        ("user_data.delete", boss.id, ada.id, {"data.tier": ["team", None]}),
    ]


def test_key_value_refusals_raise_and_write_nothing(admin, ada, make_user, db):
    plan = add_user_data(ada, "plan", "pro", actor=CLI)
    add_user_data(ada, "seats", "3", actor=CLI)
    other_admin = make_user(email="other-admin@staff.example", role=UserRole.ADMIN)
    theirs = add_user_data(other_admin, "plan", "pro", actor=CLI)
    db.session.commit()
    as_admin = Actor.staff(admin)

    refused(db, DuplicateKey, lambda: add_user_data(ada, "plan", "free", actor=as_admin))
    refused(db, DuplicateKey, lambda: update_user_data(plan, "seats", "pro", actor=as_admin))
    refused(db, NotAllowed, lambda: add_user_data(other_admin, "k", "v", actor=as_admin))
    refused(db, NotAllowed, lambda: update_user_data(theirs, "plan", "free", actor=as_admin))
    refused(db, NotAllowed, lambda: delete_user_data(theirs, actor=as_admin))
