"""`flask maintenance prune`: retention for webhook deliveries, their payloads, audit events and
finished calls to Clerk, in committed batches, with one audit event per run."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor, record
from app.config import from_environment
from app.extensions import db as _db
from app.models import AuditEvent, ClerkCall, User, UserRole, WebhookEvent, utcnow
from tests.clerk_payloads import clerk_user, sign, user_created, user_updated
from tests.conftest import csrf_token_from, make_app

pytestmark = pytest.mark.usefixtures("signing_secret")

DAY = timedelta(days=1)


def prune(runner, *args: str):
    return runner.invoke(args=["maintenance", "prune", "--pause", "0", *args])


def deliver(client, payload, **kwargs):
    signed = sign(payload, **kwargs)
    response = signed.post(client)
    assert response.status_code == 200, response.get_data(as_text=True)
    return signed


def age_delivery(db, svix_id: str, days: float) -> None:
    """As if the delivery had arrived `days` ago."""
    db.session.execute(
        sa.update(WebhookEvent).where(WebhookEvent.id == svix_id).values(received_at=utcnow() - days * DAY)
    )
    db.session.commit()


def delivery(db, svix_id: str) -> WebhookEvent | None:
    db.session.expire_all()
    return db.session.get(WebhookEvent, svix_id)


def old_deliveries(db, *ages: float) -> list[str]:
    """Stored deliveries (as the receiver stores them) received `ages` days ago."""
    ids = []
    for n, age in enumerate(ages):
        svix_id = f"msg_old_{n}_{int(age * 1000)}"
        body = json.dumps({"type": "email.created", "data": {"id": f"ema_{n}"}})
        at = utcnow() - age * DAY
        db.session.add(
            WebhookEvent(
                id=svix_id, type="email.created", received_at=at, processed_at=at, outcome="ignored", payload=body
            )
        )
        ids.append(svix_id)
    db.session.commit()
    return ids


def summary_events(db) -> list[AuditEvent]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "maintenance.prune")))


# --- deliveries and their payloads --------------------------------------------------------------


def test_old_payloads_are_cleared_and_their_rows_kept(client, db, runner):
    data = clerk_user(email="kept@example.com")
    old, recent = deliver(client, user_created(data)), deliver(client, user_updated(data, first_name="Recent"))
    age_delivery(db, old.msg_id, 31)
    age_delivery(db, recent.msg_id, 29)

    result = prune(runner)

    assert result.exit_code == 0, result.output
    assert "webhook payloads cleared (older than 30 days): 1" in result.output
    row = delivery(db, old.msg_id)
    assert row is not None and row.payload is None and row.payload_pruned_at is not None
    assert (row.type, row.outcome, row.clerk_user_id) == ("user.created", "applied", data["id"])
    assert row.processed_at is not None and row.received_at < utcnow() - 30 * DAY
    assert json.loads(delivery(db, recent.msg_id).payload)["data"]["first_name"] == "Recent"


def test_deliveries_older_than_the_webhook_days_are_deleted(db, runner):
    ancient, old, recent = old_deliveries(db, 91, 60, 5)

    result = prune(runner)

    assert result.exit_code == 0, result.output
    assert delivery(db, ancient) is None
    assert delivery(db, old).payload is None  # kept, payload cleared
    assert delivery(db, recent).payload is not None
    assert "webhook deliveries deleted (older than 90 days): 1" in result.output


def test_a_retry_of_a_pruned_delivery_is_still_a_duplicate(client, db, runner):
    data = clerk_user(email="once@example.com", first_name="First")
    signed = deliver(client, user_updated(data))
    age_delivery(db, signed.msg_id, 10)
    assert prune(runner, "--payload-days", "7").exit_code == 0
    user = db.session.scalar(sa.select(User).where(User.clerk_id == data["id"]))
    user.first_name = "Changed since"
    db.session.commit()
    assert delivery(db, signed.msg_id).payload is None

    # Svix sends the same message again: its row (svix id) is still there.
    response = signed.post(client)

    assert response.status_code == 200
    assert response.get_json()["outcome"] == "duplicate"
    db.session.expire_all()
    assert db.session.scalar(sa.select(User.first_name).where(User.clerk_id == data["id"])) == "Changed since"
    assert delivery(db, signed.msg_id).payload is None


def test_webhook_days_below_seven_are_refused_and_nothing_changes(db, runner):
    ids = old_deliveries(db, 100, 40)

    result = prune(runner, "--webhook-days", "6")

    assert result.exit_code == 2
    assert "at least 7 days" in result.output and "Svix" in result.output and "duplicate" in result.output
    assert all(delivery(db, svix_id).payload is not None for svix_id in ids)
    assert summary_events(db) == []


def test_a_setting_below_seven_days_is_refused_too(app, runner):
    app.config["RETENTION_WEBHOOK_DAYS"] = 3
    result = prune(runner)
    assert result.exit_code == 2 and "at least 7 days" in result.output


def test_deliveries_are_kept_at_least_as_long_as_their_payloads(runner):
    result = prune(runner, "--payload-days", "60", "--webhook-days", "30")
    assert result.exit_code == 2
    assert "at least as long as their payloads" in result.output


def test_zero_days_keeps_for_good(db, runner):
    ancient, old = old_deliveries(db, 400, 60)

    result = prune(runner, "--payload-days", "0", "--webhook-days", "0")

    assert result.exit_code == 0, result.output
    assert "Kept for good: webhook payloads, webhook deliveries, audit events." in result.output
    assert delivery(db, ancient).payload is not None and delivery(db, old).payload is not None


# --- audit events ------------------------------------------------------------------------------


def audit_event_aged(db, user: User, days: float) -> str:
    event = record("user.update", actor=Actor.cli(), target=user, changes={"first_name": ["A", "B"]})
    db.session.flush()
    event.occurred_at = utcnow() - days * DAY
    db.session.commit()
    return event.id


def test_audit_events_are_kept_unless_asked(db, runner, ada):
    ancient = audit_event_aged(db, ada, 3000)

    result = prune(runner)

    assert result.exit_code == 0, result.output
    assert "audit events" in result.output.splitlines()[0]  # "Kept for good: ... audit events."
    assert db.session.get(AuditEvent, ancient) is not None


def test_audit_days_deletes_older_events(db, runner, ada):
    old, recent = audit_event_aged(db, ada, 400), audit_event_aged(db, ada, 300)

    result = prune(runner, "--audit-days", "365")

    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert db.session.get(AuditEvent, old) is None
    assert db.session.get(AuditEvent, recent) is not None
    assert "audit events deleted (older than 365 days): 1" in result.output


def test_audit_days_from_the_setting(app, db, runner, ada):
    app.config["RETENTION_AUDIT_DAYS"] = 100
    old = audit_event_aged(db, ada, 101)
    assert prune(runner).exit_code == 0
    db.session.expire_all()
    assert db.session.get(AuditEvent, old) is None


# --- calls to Clerk ----------------------------------------------------------------------------


def test_only_old_finished_calls_to_clerk_are_deleted(db, runner):
    long_ago, lately = utcnow() - 31 * DAY, utcnow() - 29 * DAY
    calls = {
        "delivered": ClerkCall(operation="ban_user", payload="{}", state="delivered", created_at=long_ago),
        "superseded": ClerkCall(operation="update_user", payload="{}", state="superseded", created_at=long_ago),
        "pending": ClerkCall(operation="unban_user", payload="{}", state="pending", created_at=long_ago),
        "failed": ClerkCall(operation="update_user", payload="{}", state="failed", created_at=long_ago),
        "recent": ClerkCall(operation="ban_user", payload="{}", state="delivered", created_at=lately),
    }
    db.session.add_all(calls.values())
    db.session.commit()
    ids = {name: call.id for name, call in calls.items()}

    result = prune(runner)

    assert result.exit_code == 0, result.output
    db.session.expire_all()
    left = set(db.session.scalars(sa.select(ClerkCall.id)))
    assert left == {ids["pending"], ids["failed"], ids["recent"]}
    assert "finished calls to Clerk deleted (older than 30 days): 2" in result.output


def test_pending_calls_are_never_deleted_whatever_their_age(db, runner):
    ancient = ClerkCall(operation="ban_user", payload="{}", state="pending", created_at=utcnow() - 5000 * DAY)
    db.session.add(ancient)
    db.session.commit()
    assert prune(runner, "--outbox-days", "1").exit_code == 0
    db.session.expire_all()
    assert db.session.get(ClerkCall, ancient.id) is not None


# --- dry run, batches, the summary -------------------------------------------------------------


def test_a_dry_run_counts_and_changes_nothing(db, runner, ada):
    ids = old_deliveries(db, 100, 40, 35, 1)
    event = audit_event_aged(db, ada, 400)
    before = db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent))

    result = prune(runner, "--dry-run", "--audit-days", "365")

    assert result.exit_code == 0, result.output
    assert "webhook deliveries older than 90 days: 1 to be deleted" in result.output
    assert "webhook payloads older than 30 days: 2 to be cleared" in result.output
    assert "audit events older than 365 days: 1 to be deleted" in result.output
    assert "Dry run: nothing was changed." in result.output
    assert all(delivery(db, svix_id).payload is not None for svix_id in ids)
    assert db.session.get(AuditEvent, event) is not None
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == before


def test_batches_of_two_over_five_rows(db, runner, count_queries):
    ids = old_deliveries(db, 95, 94, 93, 92, 91)

    with count_queries() as statements:
        result = prune(runner, "--batch-size", "2", "--payload-days", "0")

    assert result.exit_code == 0, result.output
    assert all(delivery(db, svix_id) is None for svix_id in ids)
    deletes = [s for s in statements if s.lstrip().upper().startswith("DELETE FROM WEBHOOK_EVENTS")]
    assert len(deletes) == 3  # 2 + 2 + 1: a short batch ends the step
    assert "webhook deliveries deleted (older than 90 days): 5" in result.output


def test_each_batch_is_committed_before_the_next(db, runner, app):
    """Stopped in its second batch (as Ctrl-C would), the first batch stays done; a rerun carries on."""
    ids = old_deliveries(db, 95, 94, 93, 92, 91)
    from app.extensions import db as database

    deletes = []

    def stop_at_the_second_batch(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("DELETE FROM WEBHOOK_EVENTS"):
            deletes.append(statement)
            if len(deletes) == 2:
                raise KeyboardInterrupt

    sa.event.listen(database.engine, "before_cursor_execute", stop_at_the_second_batch)
    try:
        result = prune(runner, "--batch-size", "2", "--payload-days", "0")
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", stop_at_the_second_batch)

    assert result.exit_code == 130
    assert "a rerun carries on" in result.output
    assert [delivery(db, svix_id) is None for svix_id in ids] == [True, True, False, False, False]
    (summary,) = summary_events(db)
    assert json.loads(summary.changes)["interrupted"] is True
    assert json.loads(summary.changes)["webhook_events_deleted"] == 2

    again = prune(runner, "--batch-size", "2", "--payload-days", "0")
    assert again.exit_code == 0, again.output
    assert all(delivery(db, svix_id) is None for svix_id in ids)


def test_the_run_records_one_summary_event(client, db, runner, ada, staff):
    old_deliveries(db, 100, 40, 35)
    audit_event_aged(db, ada, 400)

    result = prune(runner, "--audit-days", "365", "--batch-size", "1")

    assert result.exit_code == 0, result.output
    assert "Pruned in" in result.output
    (event,) = summary_events(db)
    assert (event.source, event.actor_label, event.target_id) == ("cli", "command line", None)
    assert json.loads(event.changes) == {
        "webhook_events_deleted": 1,
        "webhook_payloads_cleared": 2,
        "audit_events_deleted": 1,
        "clerk_outbox_deleted": 0,
        "webhook_payload_days": 30,
        "webhook_days": 90,
        "audit_days": 365,
        "outbox_days": 30,
    }
    page = client.get("/audit?action=maintenance.prune").get_data(as_text=True)
    assert "Old history pruned (retention)" in page and "webhook_payloads_cleared" in page


def test_nothing_to_do_is_still_recorded(db, runner):
    result = prune(runner)
    assert result.exit_code == 0, result.output
    assert len(summary_events(db)) == 1


# --- the pages and replay of a pruned delivery --------------------------------------------------


@pytest.fixture
def pruned_failure(client, db, runner) -> str:
    """A failed delivery whose payload the retention cleared."""
    data = clerk_user(email="gone@example.com")
    signed = sign(user_created(data))
    from app.webhooks.services import record_failed_delivery

    record_failed_delivery(signed.msg_id, signed.body.decode(), user_created(data), "OperationalError: lost")
    db.session.commit()
    age_delivery(db, signed.msg_id, 31)
    assert prune(runner).exit_code == 0
    return signed.msg_id


def test_the_webhooks_pages_say_the_payload_was_pruned(client, db, pruned_failure, auth):
    auth.sign_in(role=UserRole.SUPER_ADMIN)
    today = f"{utcnow():%Y-%m-%d}"

    listing = client.get("/webhooks")
    detail = client.get(f"/webhooks/{pruned_failure}")

    assert listing.status_code == 200 and detail.status_code == 200
    assert f"Payload pruned on {today}: cannot be re-applied" in listing.get_data(as_text=True)
    body = detail.get_data(as_text=True)
    assert f"Payload pruned on {today}" in body and "flask maintenance prune" in body
    assert f"/webhooks/{pruned_failure}/replay" not in body  # no Retry button


def test_replaying_a_pruned_delivery_is_refused_clearly(client, db, pruned_failure, auth):
    auth.sign_in(role=UserRole.SUPER_ADMIN)
    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))

    response = client.post(f"/webhooks/{pruned_failure}/replay", data={"csrf_token": token})

    assert response.status_code == 409
    assert "was pruned on" in response.get_data(as_text=True)
    assert delivery(db, pruned_failure).outcome == "failed"
    assert db.session.scalar(sa.select(User).where(User.email == "gone@example.com")) is None


def test_the_replay_command_refuses_a_pruned_delivery(runner, pruned_failure):
    result = runner.invoke(args=["clerk", "replay", pruned_failure])
    assert result.exit_code == 1
    assert "was pruned on" in result.output and "nothing left to re-apply" in result.output


# --- settings, and PostgreSQL's row locks -------------------------------------------------------


def test_the_settings_and_their_defaults():
    defaults = from_environment({})
    assert (
        defaults["RETENTION_WEBHOOK_PAYLOAD_DAYS"],
        defaults["RETENTION_WEBHOOK_DAYS"],
        defaults["RETENTION_AUDIT_DAYS"],
        defaults["RETENTION_OUTBOX_DAYS"],
    ) == (30, 90, None, 30)
    given = from_environment(
        {
            "RETENTION_WEBHOOK_PAYLOAD_DAYS": "14",
            "RETENTION_WEBHOOK_DAYS": "30",
            "RETENTION_AUDIT_DAYS": "730",
            "RETENTION_OUTBOX_DAYS": "0",
        }
    )
    assert {k: v for k, v in given.items() if k.startswith("RETENTION_")} == {
        "RETENTION_WEBHOOK_PAYLOAD_DAYS": 14,
        "RETENTION_WEBHOOK_DAYS": 30,
        "RETENTION_AUDIT_DAYS": 730,
        "RETENTION_OUTBOX_DAYS": 0,
    }


@pytest.mark.postgresql
def test_a_row_a_request_holds_is_skipped_and_pruned_next_time(app, db, runner):
    held, free = old_deliveries(db, 95, 94)
    other = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with other.connect() as connection:
            connection.execute(sa.text("SELECT id FROM webhook_events WHERE id = :id FOR UPDATE"), {"id": held})

            result = prune(runner, "--payload-days", "0")

            assert result.exit_code == 0, result.output
            assert delivery(db, free) is None
            assert delivery(db, held) is not None  # not waited for: skipped
            connection.rollback()
    finally:
        other.dispose()
    assert prune(runner, "--payload-days", "0").exit_code == 0
    assert delivery(db, held) is None


class SlowDeletes:
    """Each deleted audit event costs `seconds` (a row trigger sleeping): as a cold cache, a
    checkpoint or a busy server makes a batch outlast the statement timeout."""

    def __init__(self, database_url: str, seconds: float):
        self.engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN OLD; END $$"
                )
            )
            connection.execute(
                sa.text(
                    "CREATE TRIGGER slow_delete BEFORE DELETE ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION slow_delete()"
                )
            )

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        with self.engine.begin() as connection:
            connection.execute(sa.text("DROP TRIGGER slow_delete ON audit_events"))
            connection.execute(sa.text("DROP FUNCTION slow_delete()"))
        self.engine.dispose()


def timed_prune(database_url: str, *args: str):
    """`prune` on an app whose statement timeout is 350 ms."""
    guarded = make_app(database_url, DATABASE_STATEMENT_TIMEOUT_MS=350)
    with guarded.app_context():  # a command runs in the app context it finds (the tests' own app's)
        try:
            return prune(guarded.test_cli_runner(), *args)
        finally:
            _db.session.remove()
            _db.engine.dispose()


@pytest.mark.postgresql
def test_a_batch_that_outlasts_the_statement_timeout_is_halved_and_the_run_goes_on(database_url, db, ada):
    events = [audit_event_aged(db, ada, 400 + n) for n in range(10)]
    kept = audit_event_aged(db, ada, 10)

    db.session.rollback()  # no transaction of ours left open on the table: the trigger's drop waits for any
    with SlowDeletes(database_url, 0.1):  # 8 rows: 0.8 s, 4: 0.4 s, past 350 ms; 2 rows: 0.2 s
        result = timed_prune(database_url, "--audit-days", "365", "--batch-size", "8")

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "a batch outlasted the statement timeout: going on with batches of 4" in result.output
    assert "going on with batches of 2" in result.output
    assert "audit events deleted (older than 365 days): 10" in result.output
    db.session.expire_all()
    assert [db.session.get(AuditEvent, event) for event in events] == [None] * 10
    assert db.session.get(AuditEvent, kept) is not None
    (summary,) = summary_events(db)
    assert json.loads(summary.changes)["audit_events_deleted"] == 10
    assert "interrupted" not in json.loads(summary.changes)


@pytest.mark.postgresql
def test_a_row_that_cannot_be_pruned_within_the_timeout_stops_the_run_clearly(database_url, db, ada):
    (old_delivery,) = old_deliveries(db, 100)
    event = audit_event_aged(db, ada, 400)

    db.session.rollback()  # no transaction of ours left open on the table: the trigger's drop waits for any
    with SlowDeletes(database_url, 0.5):  # even one row outlasts 350 ms
        result = timed_prune(database_url, "--audit-days", "365", "--batch-size", "4")

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "going on with batches of 1" in result.output
    assert (
        "Stopped: one of the audit events could not be deleted within the statement timeout "
        "(DATABASE_STATEMENT_TIMEOUT_MS): the table is locked or the server overloaded. "
        "What was pruned stays pruned, and a rerun carries on from there." in result.output
    )
    assert delivery(db, old_delivery) is None  # the step before it was done and committed
    assert db.session.get(AuditEvent, event) is not None
    (summary,) = summary_events(db)
    changes = json.loads(summary.changes)
    assert (changes["webhook_events_deleted"], changes["audit_events_deleted"], changes["interrupted"]) == (1, 0, True)

    assert timed_prune(database_url, "--audit-days", "365").exit_code == 0  # once it is quick again
    db.session.expire_all()
    assert db.session.get(AuditEvent, event) is None


# --- the audit trail's filters, read through their indexes --------------------------------------


def test_an_actor_filter_naming_several_actors_pages_newest_first(db, make_user):
    from app.audit.queries import AuditFilters, known_actions, list_events

    first, second = make_user(email="staff-a@example.com"), make_user(email="staff-b@example.com")
    actors = [Actor.staff(first), Actor.staff(second), Actor.cli()]
    start = utcnow() - DAY
    made = []
    for n in range(9):
        event = record(f"test.step_{n % 3}", actor=actors[n % 3], target=first)
        db.session.flush()
        event.occurred_at = start + n * timedelta(minutes=1)
        made.append(event.id)
    db.session.commit()
    expected = [event_id for n, event_id in enumerate(made) if n % 3 != 2][::-1]  # the staff's, newest first

    seen, after = [], None
    while True:
        page = list_events(AuditFilters(actor="STAFF-"), after=after, per_page=2)
        seen += [event.id for event in page.rows]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    by_id = [event.id for event in list_events(AuditFilters(actor=first.id), per_page=50).rows]

    assert seen == expected
    assert by_id == [event_id for n, event_id in enumerate(made) if n % 3 == 0][::-1]
    assert known_actions() == ["test.step_0", "test.step_1", "test.step_2"]
