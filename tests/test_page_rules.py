"""The rules pages show, held by models and services instead of templates."""

from __future__ import annotations

import pytest

from app.audit.services import Actor
from app.models import ClerkIdKind, UserRole, UserStatus, utcnow
from app.permissions import can_act_on
from app.users.services import statuses_offered


@pytest.mark.parametrize(
    ("clerk_id", "kind", "waits", "invitation"),
    [
        ("user_2abc", ClerkIdKind.USER, False, None),
        ("inv_9", ClerkIdKind.INVITATION, True, "inv_9"),
        ("local_1f", ClerkIdKind.PLACEHOLDER, True, None),
        ("other", None, True, None),
    ],
)
def test_a_clerk_id_says_what_the_row_is(make_user, clerk_id, kind, waits, invitation):
    user = make_user(clerk_id=clerk_id)
    assert (user.clerk_id_kind, user.waits_for_clerk_user, user.invitation_id) == (kind, waits, invitation)


def test_nobody_is_offered_to_set_themselves_away_from_active(make_user):
    boss = make_user(role=UserRole.SUPER_ADMIN, status=UserStatus.SUSPENDED)
    assert statuses_offered(boss, actor=Actor.staff(boss)) == (UserStatus.ACTIVE,)


def test_a_deleted_user_or_one_managed_by_others_is_offered_nothing(make_user):
    admin = Actor.staff(make_user(role=UserRole.ADMIN))
    assert not can_act_on(admin, make_user(deleted_at=utcnow()))
    assert statuses_offered(make_user(role=UserRole.ADMIN), actor=admin) == ()
    assert statuses_offered(make_user(), actor=admin) == (UserStatus.SUSPENDED, UserStatus.INACTIVE)


def test_no_template_global_reads_the_database(app):
    assert not {"may_manage", "status_targets", "may_change_roles", "clerk_open_calls", "clerk_pending_ids"} & set(
        app.jinja_env.globals
    )
