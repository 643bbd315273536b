"""The webhook's statements per delivery (issue 17), and the guarantees its shortcuts must keep.

Each delivery is counted statement by statement (the engine's cursor executions; BEGIN and COMMIT
are not statements here): a new statement on the hot path fails a test below, and so does a
shortcut that drops a guarantee (exactly once, ordering, tombstones, claims, exact counters, the
audit trail, a pending dashboard edit, members' copies of names).
"""

from __future__ import annotations

import itertools
import json

import pytest
import sqlalchemy as sa
from email_validator import validate_email
from hypothesis import given
from hypothesis import strategies as st

from app.models import AuditEvent, ClerkCall, Membership, User, UserRole, UserStatus, WebhookEvent
from app.records import counts
from app.records.users import normalise_email
from tests.clerk_payloads import (
    clerk_membership,
    clerk_organization,
    clerk_user,
    envelope,
    sign,
    user_created,
    user_deleted,
    user_updated,
)

pytestmark = pytest.mark.usefixtures("signing_secret")


def tables(statements: list[str]) -> list[str]:
    """Each statement as its verb and table ('SELECT users', 'INSERT audit_events', ...)."""
    named = []
    for statement in statements:
        words = statement.split()
        verb = words[0].upper()
        if verb == "SELECT" and "pg_advisory_xact_lock" in statement:
            named.append("LOCK")
        elif verb == "SELECT":
            named.append("SELECT " + _main_from(statement))
        elif verb == "INSERT":
            named.append("INSERT " + words[2])
        else:
            named.append(f"{verb} {words[1]}")
    return named


def _main_from(select: str) -> str:
    """The table after the outermost FROM (not one in a subquery of the column list)."""
    depth = 0
    words = select.replace("(", " ( ").replace(")", " ) ").split()
    for word, following in itertools.pairwise(words):
        depth += {"(": 1, ")": -1}.get(word, 0)
        if depth == 0 and word.upper() == "FROM":
            return following
    raise AssertionError(f"no FROM in {select}")


def lock(db) -> list[str]:
    """The advisory lock on the Clerk user id: PostgreSQL only (SQLite has one writer at a time)."""
    return ["LOCK"] if db.engine.dialect.name == "postgresql" else []


def post(client, count_queries, payload, **kwargs) -> tuple[str, list[str]]:
    signed = sign(payload, **kwargs)
    with count_queries() as statements:
        response = signed.post(client)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"], tables(statements)


def user_with(db, clerk_user_id: str) -> User:
    db.session.expire_all()
    return db.session.scalars(sa.select(User).where(User.clerk_id == clerk_user_id)).one()


def assert_counters_exact(db) -> None:
    db.session.rollback()
    assert counts.differences(counts.read_counts(), counts.recount()) == {}
    db.session.rollback()


# --- Statements per delivery -----------------------------------------------------------------------


def test_a_new_user_takes_seven_statements(client, db, count_queries):
    outcome, statements = post(client, count_queries, user_created(clerk_user(last_sign_in_at=1_760_000_000_000)))

    assert outcome == "applied"
    assert statements == [
        *lock(db),  # taken first: a user.created is usually a user not here yet
        "SELECT users",  # the user by Clerk id, else a row waiting for the email: one statement
        "INSERT users",
        "INSERT audit_events",
        "UPDATE memberships",  # memberships that arrived first now point at the user
        "INSERT webhook_events",  # last, with the outcome: the row that makes it once per svix id
        "INSERT user_counts",  # the counters, with the commit
    ]
    assert_counters_exact(db)


def test_an_update_takes_four_statements_without_memberships_or_pending_calls(client, db, count_queries):
    data = clerk_user(first_name="Ada")
    post(client, count_queries, user_created(data))

    outcome, statements = post(client, count_queries, user_updated(data, first_name="Augusta"))

    assert outcome == "applied"
    assert statements == ["SELECT users", "UPDATE users", "INSERT audit_events", "INSERT webhook_events"]
    user = user_with(db, data["id"])
    assert (user.first_name, user.clerk_updated_at, user.version) == ("Augusta", data["updated_at"] + 1_000, 2)
    audited = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.update")).one()
    assert json.loads(audited.changes) == {"first_name": ["Ada", "Augusta"]}


def test_a_stale_event_takes_two_statements_and_changes_nothing(client, db, count_queries):
    data = clerk_user(first_name="Ada")
    post(client, count_queries, user_created(data))
    post(client, count_queries, user_updated(data, first_name="Augusta"))

    outcome, statements = post(
        client, count_queries, user_updated(data, first_name="Old", updated_at=data["updated_at"])
    )

    assert outcome == "stale"
    assert statements == ["SELECT users", "INSERT webhook_events"]
    assert user_with(db, data["id"]).first_name == "Augusta"


def test_a_members_copy_of_a_new_name_is_refreshed_only_for_a_member(client, db, count_queries):
    member, loner = clerk_user(first_name="Ada"), clerk_user(first_name="Lone")
    organization = clerk_organization()
    created = envelope("organizationMembership.created", clerk_membership(organization, member["id"]))
    assert sign(created).post(client).status_code == 200
    post(client, count_queries, user_created(member))
    post(client, count_queries, user_created(loner))

    _, statements = post(client, count_queries, user_updated(member, first_name="Augusta"))
    assert "UPDATE memberships" in statements
    _, statements = post(client, count_queries, user_updated(loner, first_name="Still"))
    assert "UPDATE memberships" not in statements

    db.session.expire_all()
    assert db.session.scalars(sa.select(Membership.first_name)).one() == "Augusta"


def test_a_pending_dashboard_edit_is_looked_up_and_kept(client, db, count_queries):
    data = clerk_user(first_name="Ada", last_name="Lovelace")
    post(client, count_queries, user_created(data))
    user = user_with(db, data["id"])
    user.first_name = "Edited"
    payload = json.dumps({"fields": {"first_name": "Edited"}})
    db.session.add(ClerkCall(user_id=user.id, operation="update_user", payload=payload))
    db.session.commit()

    outcome, statements = post(client, count_queries, user_updated(data, last_name="King"))

    assert outcome == "applied" and "SELECT clerk_outbox" in statements
    user = user_with(db, data["id"])
    assert (user.first_name, user.last_name) == ("Edited", "King")


# --- The guarantees the shortcuts keep ---------------------------------------------------------------


def test_a_copy_is_rolled_back_whole_and_answered_duplicate(client, db, count_queries):
    data = clerk_user(first_name="Ada")
    first = sign(user_created(data))
    assert first.post(client).get_json()["outcome"] == "applied"
    post(client, count_queries, user_updated(data, first_name="Augusta"))

    # Svix resends the creation under its id, with other content: the copy's work is undone.
    again = sign(
        user_created({**data, "first_name": "Changed", "updated_at": data["updated_at"] + 5_000}), msg_id=first.msg_id
    )
    response = again.post(client)

    assert response.get_json() == {"id": first.msg_id, "outcome": "duplicate", "reason": "already received: applied"}
    user = user_with(db, data["id"])
    assert (user.first_name, user.version) == ("Augusta", 2)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 2
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 2
    assert_counters_exact(db)


def test_an_update_before_its_creation_makes_the_user_and_the_creation_is_stale(client, db, count_queries):
    data = clerk_user(first_name="Created", email="early@example.com")

    assert post(client, count_queries, user_updated(data, first_name="Updated"))[0] == "applied"
    assert post(client, count_queries, user_created(data))[0] == "stale"

    user = user_with(db, data["id"])
    assert (user.first_name, user.email) == ("Updated", "early@example.com")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1
    assert_counters_exact(db)


def test_a_creation_still_claims_an_invited_row_and_keeps_a_staff_row_for_a_verified_email(
    client, db, make_user, count_queries
):
    invited = make_user(email="invited@example.com", status=UserStatus.INVITED, clerk_id="local_invited")
    staff = make_user(email="boss@example.com", status=UserStatus.INVITED, role=UserRole.ADMIN, clerk_id="inv_boss")
    claimer = clerk_user(email="Invited@Example.com")  # another spelling of the same address
    impostor = clerk_user(email="boss@example.com", email_verified=False)
    counts.rebuild()  # make_user writes its rows around the counters
    db.session.commit()

    assert post(client, count_queries, user_created(claimer))[0] == "applied"
    outcome = sign(user_created(impostor)).post(client).get_json()
    assert outcome["outcome"] == "applied" and outcome["reason"].startswith("not claimed")

    assert user_with(db, claimer["id"]).id == invited.id
    assert user_with(db, claimer["id"]).status == UserStatus.ACTIVE
    assert user_with(db, impostor["id"]).id != staff.id
    assert db.session.get(User, staff.id).clerk_id == "inv_boss"
    assert_counters_exact(db)


def test_a_deleted_user_stays_deleted_whatever_comes_after(client, db, count_queries):
    data = clerk_user()
    assert post(client, count_queries, user_deleted(data["id"]))[0] == "applied"  # a tombstone first
    assert post(client, count_queries, user_created(data))[0] == "ignored"
    assert post(client, count_queries, user_updated(data))[0] == "ignored"
    assert user_with(db, data["id"]).deleted_at is not None
    assert_counters_exact(db)


def test_a_failed_delivery_is_applied_by_its_retry_once(client, db):
    from app.webhooks.services import record_failed_delivery

    data = clerk_user(first_name="Retried")
    signed = sign(user_created(data))
    record_failed_delivery(signed.msg_id, signed.body.decode(), user_created(data), "OperationalError: gone")
    db.session.commit()

    assert signed.post(client).get_json()["outcome"] == "applied"
    assert signed.post(client).get_json()["outcome"] == "duplicate"
    db.session.expire_all()
    row = db.session.get(WebhookEvent, signed.msg_id)
    assert (row.outcome, row.attempts, row.error) == ("applied", 2, None)
    assert user_with(db, data["id"]).first_name == "Retried"


# --- normalise_email's shortcut for addresses already in their one spelling -------------------------

simple_addresses = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,12}@[a-z0-9-]{1,10}(\.[a-z]{2,6}){1,2}", fullmatch=True)


@given(simple_addresses)
def test_the_shortcut_gives_what_email_validator_gives(address):
    try:
        expected = validate_email(address, check_deliverability=False).normalized.lower()
    except ValueError:
        expected = address.lower()
    assert normalise_email(address) == expected
