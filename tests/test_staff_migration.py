"""Upgrading an existing database to staff groups (0011_staff_groups) changes no one's access.

A fresh database is migrated to 0010_organizations, filled with raw SQL as that revision knew it
(a super admin, two admins of whom one was deleted in Clerk, plain users), then upgraded: every
admin lands in the built-in Administrators group, which grants exactly what the role `admin`
allowed before, so `may` answers as the old fixed matrix did, permission by permission.

A deleted admin is a member too: the migration takes every row with the role `admin`, tombstones
included. A tombstone cannot sign in, so this gives no one access; it keeps the row as it was, with
what it could do, should the history be read later.
"""

import importlib.util
import json
import os
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from app.audit.services import Actor
from app.extensions import db
from app.models import StaffGroup, User
from app.permissions import ADMINISTRATORS, ADMINISTRATORS_DESCRIPTION, ADMINISTRATORS_PERMISSIONS, ALL, CATALOGUE, may
from tests.conftest import _scratch_postgres_database, make_app

BEFORE = "0010_organizations"
MIGRATION = Path(__file__).resolve().parent.parent / "migrations" / "versions" / "0011_staff_groups.py"

# DESIGN §9 before permissions were data: admins did everything but these (to users with the role
# `user` only); super admins did everything to everyone.
# Deleting organizations came after the migration, which did not give it to admins: a super admin
# grants it to a group.
ADDED_SINCE = frozenset({"organizations.delete"})
ADMINS_COULD_NOT = frozenset({"users.delete", "roles.manage", "webhooks.replay", "permissions.manage"}) | ADDED_SINCE


def old_matrix(role: str, permission: str, target_role: str | None = None) -> bool:
    if role == "super_admin":
        return True
    if role != "admin" or permission in ADMINS_COULD_NOT:
        return False
    return target_role in (None, "user")


def migration_module():
    spec = importlib.util.spec_from_file_location("staff_groups_migration", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migrations_frozen_list_is_the_codes_and_the_old_matrix():
    migration = migration_module()
    assert sorted(migration.ADMINISTRATORS_PERMISSIONS) == migration.ADMINISTRATORS_PERMISSIONS
    assert set(migration.ADMINISTRATORS_PERMISSIONS) == ADMINISTRATORS_PERMISSIONS
    assert migration.ADMINISTRATORS_DESCRIPTION == ADMINISTRATORS_DESCRIPTION
    assert ADMINISTRATORS_PERMISSIONS == ALL - ADMINS_COULD_NOT
    assert {p.name for p in CATALOGUE if old_matrix("admin", p.name)} == ADMINISTRATORS_PERMISSIONS


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def scratch_url(request, tmp_path):
    """An empty database of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.sqlite3'}"
        return
    url, admin, name = _scratch_postgres_database(os.environ["TEST_DATABASE_URL"])
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


PEOPLE = {
    # key: (role, deleted)
    "boss": ("super_admin", False),
    "admin": ("admin", False),
    "gone": ("admin", True),
    "plain": ("user", False),
    "other": ("user", False),
}


@pytest.fixture
def old_database(scratch_url):
    """An app on a database at 0010_organizations holding PEOPLE (their ids, by key), in its context."""
    app = make_app(scratch_url)
    with app.app_context():
        upgrade(revision=BEFORE)
        ids = {key: str(uuid.uuid4()) for key in PEOPLE}
        now = datetime(2026, 11, 1, 12)
        with db.engine.begin() as connection:
            for key, (role, deleted) in PEOPLE.items():
                connection.execute(
                    sa.text(
                        "INSERT INTO users (id, email, clerk_id, role, status, created_at, updated_at, deleted_at) "
                        "VALUES (:id, :email, :clerk_id, :role, 'active', :now, :now, :deleted_at)"
                    ),
                    {
                        "id": ids[key],
                        "email": f"{key}@example.com",
                        "clerk_id": f"user_{key}",
                        "role": role,
                        "now": now,
                        "deleted_at": now if deleted else None,
                    },
                )
        try:
            yield ids
        finally:
            db.session.remove()
            db.engine.dispose()


def built_in_groups() -> list[tuple]:
    return db.session.execute(
        sa.text("SELECT id, name, description, permissions FROM staff_groups WHERE builtin ORDER BY id")
    ).all()


def members() -> set[str]:
    return set(db.session.scalars(sa.text("SELECT user_id FROM staff_group_members")))


def test_upgrading_changes_no_ones_access(old_database):
    ids = old_database
    upgrade()
    (group,) = built_in_groups()
    assert (group.name, group.description) == (ADMINISTRATORS, ADMINISTRATORS_DESCRIPTION)
    assert json.loads(group.permissions) == sorted(ADMINISTRATORS_PERMISSIONS)
    assert db.session.scalar(sa.text("SELECT count(*) FROM staff_groups")) == 1
    assert members() == {ids["admin"], ids["gone"]}  # every admin, the deleted one too; no one else
    # The rows the migration wrote read back through the models as the app's own would.
    loaded = db.session.get(StaffGroup, group.id)
    assert (loaded.builtin, loaded.version, loaded.permission_names) == (True, 1, sorted(ADMINISTRATORS_PERMISSIONS))
    assert loaded.created_at.tzinfo is not None and {m.user_id for m in loaded.members} == members()

    people = {key: db.session.get(User, ids[key]) for key in PEOPLE}
    target_roles = {"user": people["plain"], "admin": people["admin"], "super_admin": people["boss"]}
    for key in ("boss", "admin", "gone", "plain"):
        role = PEOPLE[key][0]
        for permission in CATALOGUE:
            actor = Actor.staff(people[key])  # a new actor each time: nothing remembered between questions
            assert may(actor, permission.name) == old_matrix(role, permission.name), (key, permission.name)
            for target_role, target in target_roles.items():
                if target is people[key]:
                    continue
                assert may(actor, permission.name, target) == old_matrix(role, permission.name, target_role), (
                    key,
                    permission.name,
                    target_role,
                )


def test_downgrading_and_upgrading_again(old_database):
    ids = old_database
    upgrade()
    db.session.remove()  # nothing of ours may hold the tables the downgrade drops
    downgrade(revision=BEFORE)
    inspector = sa.inspect(db.engine)
    assert not inspector.has_table("staff_groups") and not inspector.has_table("staff_group_members")
    assert "staff_group_id" not in {column["name"] for column in inspector.get_columns("audit_events")}
    assert db.session.scalar(sa.text("SELECT count(*) FROM users")) == len(PEOPLE)
    db.session.remove()
    upgrade()
    (group,) = built_in_groups()
    assert group.name == ADMINISTRATORS and json.loads(group.permissions) == sorted(ADMINISTRATORS_PERMISSIONS)
    assert members() == {ids["admin"], ids["gone"]}
