"""The shared user services, without HTTP."""

import json

import sqlalchemy as sa

from app.audit.services import Actor
from app.models import AuditEvent, UserStatus
from app.users.records import update_user_fields


def test_update_user_fields_audits_only_real_changes(make_user, db):
    user = make_user(email="a@example.com", first_name="Ann")
    changed = update_user_fields(
        user, {"first_name": "Anna", "email": "a@example.com", "status": UserStatus.SUSPENDED},
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
