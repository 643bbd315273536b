"""Copies and racing events on several workers at once: exactly once, no 500, the right users.

PostgreSQL only: SQLite has a single writer, so nothing there can race.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from app.models import AuditEvent, User, UserStatus, WebhookEvent
from tests.clerk_payloads import (
    BASE_MS,
    Signed,
    clerk_user,
    sign,
    user_created,
    user_deleted,
    user_updated,
)

pytestmark = [pytest.mark.postgresql, pytest.mark.usefixtures("signing_secret")]


def deliver_at_once(app, deliveries: list[Signed]) -> list[tuple[int, str]]:
    """Each delivery on its own thread (its own app context, session and connection), released together."""
    start = threading.Barrier(len(deliveries))
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def deliver(signed: Signed) -> None:
        client = app.test_client()
        start.wait()
        response = signed.post(client)
        with lock:
            results.append((response.status_code, response.get_json().get("outcome")))
        response.close()

    threads = [threading.Thread(target=deliver, args=(signed,)) for signed in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(results) == len(deliveries)
    return results


def users(db) -> list[User]:
    db.session.expire_all()
    return db.session.scalars(sa.select(User)).all()


def test_copies_of_one_message_apply_exactly_once(app, db):
    data = clerk_user(first_name="Once")
    signed = sign(user_created(data))

    results = deliver_at_once(app, [signed] * 8)

    assert Counter(results) == {(200, "applied"): 1, (200, "duplicate"): 7}
    (user,) = users(db)
    assert user.first_name == "Once" and user.version == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 1
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 1


@pytest.mark.parametrize("round_", range(3))
def test_created_and_updated_for_a_new_user_race_to_one_row(app, db, round_):
    data = clerk_user(first_name="Created", updated_at=BASE_MS)
    created = sign(user_created(data))
    updated = sign(user_updated(data, first_name="Updated"))

    results = deliver_at_once(app, [created, updated, created, updated])

    assert all(status == 200 for status, _ in results), results
    assert Counter(outcome for _, outcome in results)["duplicate"] == 2
    (user,) = users(db)
    assert user.first_name == "Updated" and user.clerk_updated_at == BASE_MS + 1_000


def test_racing_events_for_an_invited_user_claim_the_one_row(app, db, make_user):
    invited = make_user(email="race@example.com", status=UserStatus.INVITED, clerk_id="local_race")
    data = clerk_user(email="race@example.com", first_name="Created")
    deliveries = [sign(user_created(data)), sign(user_updated(data, first_name="Updated"))]

    results = deliver_at_once(app, deliveries)

    assert all(status == 200 for status, _ in results), results
    (user,) = users(db)
    assert (user.id, user.clerk_id, user.status) == (invited.id, data["id"], UserStatus.ACTIVE)
    assert user.first_name == "Updated"


def test_a_deletion_racing_an_update_always_ends_deleted(app, db):
    data = clerk_user(first_name="Doomed")
    results = deliver_at_once(app, [sign(user_updated(data)), sign(user_deleted(data["id"]))])

    assert all(status == 200 for status, _ in results), results
    (user,) = users(db)
    assert user.deleted_at is not None


@pytest.mark.parametrize("round_", range(3))
def test_many_versions_of_one_user_at_once_leave_the_newest(app, db, round_):
    data = clerk_user(first_name="v0", updated_at=BASE_MS)
    sign(user_created(data)).post(app.test_client()).close()
    versions = [sign(user_updated(data, first_name=f"v{i}", updated_at=BASE_MS + i)) for i in range(1, 9)]

    results = deliver_at_once(app, versions)

    assert all(status == 200 for status, _ in results), results
    assert {outcome for _, outcome in results} <= {"applied", "stale"}
    (user,) = users(db)
    assert (user.first_name, user.clerk_updated_at) == ("v8", BASE_MS + 8)


def test_retries_of_a_failed_delivery_apply_it_once(app, db):
    from app.webhooks.services import record_failed_delivery

    data = clerk_user(first_name="Retried")
    signed = sign(user_created(data))
    record_failed_delivery(signed.msg_id, signed.body.decode(), user_created(data), "OperationalError: gone")
    db.session.commit()

    results = deliver_at_once(app, [signed] * 6)

    assert Counter(results) == {(200, "applied"): 1, (200, "duplicate"): 5}
    (user,) = users(db)
    assert user.first_name == "Retried"
    row = db.session.get(WebhookEvent, signed.msg_id)
    assert (row.outcome, row.attempts, row.error) == ("applied", 2, None)
