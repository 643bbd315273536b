"""The overview page (`/`): every figure equals a recount, links lead to the filtered list, the range
switch, webhook and outbox health, recent changes, who may see it and what it costs in queries."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import ClerkCall, User, UserRole, UserStatus, WebhookEvent, utcnow
from app.users.services import bulk_set_status, invite_user
from tests.conftest import HX

CLI = Actor.cli()


@pytest.fixture
def staff(auth, runner):
    user = auth.sign_in()
    # make_user writes rows directly, around the services: recount so the counters start exact.
    assert runner.invoke(args=["stats", "rebuild"]).exit_code == 0
    return user


@pytest.fixture
def population(app, db, runner, staff):
    """Users made the ways the app makes them: the demo seeder, invitations, a bulk suspension."""
    assert runner.invoke(args=["demo", "--users", "60"]).exit_code == 0
    for i in range(3):
        invite_user(f"invitee{i}@example.com", role=UserRole.ADMIN, actor=CLI)
    db.session.commit()
    active = db.session.scalars(
        sa.select(User.id)
        .where(User.status == UserStatus.ACTIVE, User.role == UserRole.USER, User.deleted_at.is_(None))
        .order_by(User.id)
        .limit(4)
    ).all()
    bulk_set_status(list(active), UserStatus.SUSPENDED, actor=CLI)
    db.session.commit()


def figures(html: str) -> dict[str, int]:
    """{element id: the exact figure it carries} for every figure with an id on the page."""
    found = {}
    for tag in re.findall(r"<[^>]*data-figure=\"\d+\"[^>]*>", html):
        match = re.search(r'\bid="([^"]+)"', tag)
        if match:
            found[match.group(1)] = int(re.search(r'data-figure="(\d+)"', tag).group(1))
    # Breakdown figures sit inside a link that carries the id.
    for key, value in re.findall(r'id="((?:status|role|outcome)-[a-z_]+)">.*?data-figure="(\d+)"', html, re.S):
        found[key] = int(value)
    return found


def recount(db, column) -> dict[str, int]:
    rows = db.session.execute(
        sa.select(column, sa.func.count()).where(User.deleted_at.is_(None)).group_by(column)
    ).all()
    return {getattr(value, "value", value): n for value, n in rows}


def test_every_user_figure_equals_a_recount_and_links_to_the_filtered_list(client, db, population):
    html = client.get("/").get_data(as_text=True)
    shown = figures(html)
    by_status, by_role = recount(db, User.status), recount(db, User.role)
    for status in UserStatus:
        assert shown[f"status-{status.value}"] == by_status.get(status.value, 0), status
        assert f'href="/users?status={status.value}"' in html
    for role in UserRole:
        assert shown[f"role-{role.value}"] == by_role.get(role.value, 0), role
        assert f'href="/users?role={role.value}"' in html
    live = db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.deleted_at.is_(None)))
    assert shown["users-total"] == live
    assert by_status["suspended"] >= 4 and by_role["admin"] >= 3


def test_a_figure_matches_what_its_link_lists(client, db, population):
    html = client.get("/").get_data(as_text=True)
    suspended = figures(html)["status-suspended"]
    listed = client.get("/users?status=suspended&per_page=100", headers=HX).get_data(as_text=True)
    assert len(re.findall(r'<tr id="user-', listed)) == suspended


def test_sign_ups_per_day_chart_equals_a_recount(client, db, population):
    html = client.get("/?days=90").get_data(as_text=True)
    today = datetime.now(UTC).date()
    start = today - timedelta(days=89)
    expected = {}
    for (created,) in db.session.execute(sa.select(User.created_at).where(User.deleted_at.is_(None))):
        day = created.astimezone(UTC).date()
        if start <= day <= today:
            expected[day.isoformat()] = expected.get(day.isoformat(), 0) + 1
    chart = html[html.index('id="chart-signups"') : html.index('id="chart-signins"')]
    bars = dict(re.findall(r"<title>(\d{4}-\d{2}-\d{2}): ([\d,]+)</title>", chart))
    assert len(bars) == 90
    assert {day: int(n.replace(",", "")) for day, n in bars.items() if n != "0"} == expected
    assert 'role="img"' in chart and "<desc" in chart


@pytest.mark.parametrize(
    ("query", "days"), [("", 30), ("days=7", 7), ("days=90", 90), ("days=13", 30), ("days=abc", 30), ("days=-7", 30)]
)
def test_the_range_is_in_the_url_and_a_bad_one_falls_back(client, staff, query, days):
    html = client.get(f"/?{query}", headers=HX).get_data(as_text=True)
    # htmx gets the charts only; the chosen range is marked and each chart has a bar per day.
    assert "Users by status" not in html
    assert f'id="range-{days}" href="/?days={days}"' in html and 'aria-current="true"' in html
    assert re.search(rf'id="range-{days}"[^>]*aria-current="true"', html)
    chart = html[html.index('id="chart-signups"') : html.index('id="chart-signins"')]
    assert len(re.findall(r"<rect ", chart)) == days


def test_webhook_deliveries_of_the_last_24_hours_by_outcome_and_the_latest_failure(client, db, staff):
    now = utcnow()

    def delivery(svix_id, outcome, hours_ago, error=None):
        db.session.add(
            WebhookEvent(
                id=svix_id,
                type="user.updated",
                outcome=outcome,
                error=error,
                received_at=now - timedelta(hours=hours_ago),
                payload="{}",
            )
        )

    for i in range(5):
        delivery(f"msg_applied{i}", "applied", i)
    delivery("msg_stale", "stale", 2)
    delivery("msg_old_fail", "failed", 30, "too old to count")
    delivery("msg_fail1", "failed", 5, "first failure")
    delivery("msg_fail2", "failed", 1, "the newest failure")
    db.session.commit()
    html = client.get("/").get_data(as_text=True)
    shown = figures(html)
    assert (shown["outcome-applied"], shown["outcome-stale"], shown["outcome-failed"]) == (5, 1, 2)
    assert shown["webhooks-total"] == 8
    assert 'href="/webhooks?within=24h&amp;outcome=failed"' in html
    # The link lists what the figure counts: the old failure is not there.
    listed = client.get("/webhooks?within=24h&outcome=failed", headers=HX).get_data(as_text=True)
    assert "msg_fail1" in listed and "msg_fail2" in listed and "msg_old_fail" not in listed
    assert "msg_old_fail" in client.get("/webhooks?outcome=failed", headers=HX).get_data(as_text=True)
    latest = re.search(r'<a href="([^"]+)" id="latest-failure">', html).group(1)
    assert latest == "/webhooks/msg_fail2" and "the newest failure" in html


def test_calls_to_clerk_when_clerk_is_connected(app, client, db, staff):
    html = client.get("/").get_data(as_text=True)
    assert 'id="outbox-pending"' not in html  # not connected: the page says so instead
    app.config["CLERK_SECRET_KEY"] = "sk_test_overview"
    for state in ("pending", "pending", "failed", "delivered"):
        db.session.add(ClerkCall(user_id=staff.id, operation="ban", payload=json.dumps({}), state=state))
    db.session.commit()
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'id="outbox-pending"[^>]*>.*?data-figure="2"', html, re.S)
    assert re.search(r'id="outbox-failed"[^>]*>.*?data-figure="1"', html, re.S)


def test_the_ten_latest_audit_events(client, db, staff):
    for i in range(14):
        invite_user(f"audited{i:02d}@example.com", actor=CLI)
    db.session.commit()
    html = client.get("/").get_data(as_text=True)
    recent = html[html.index('id="recent-heading"') :]
    shown = re.findall(r"audited(\d\d)@example\.com", recent)
    assert sorted(set(shown), reverse=True) == [f"{i:02d}" for i in range(13, 3, -1)]


def test_only_staff_see_the_overview(client, auth, make_user, db):
    assert client.get("/").status_code == 302  # to the sign-in page
    user = make_user(role=UserRole.ADMIN)
    client.get(auth.link_for(user))
    assert client.get("/").status_code == 200
    user.role = UserRole.USER  # demoted while signed in: the session ends
    db.session.commit()
    assert client.get("/").status_code == 302


def test_the_overview_runs_the_same_queries_for_few_users_or_many(app, client, db, runner, staff, count_queries):
    def queries() -> list[str]:
        db.session.expire_all()
        with count_queries() as statements:
            assert client.get("/?days=90").status_code == 200
        return statements

    few = queries()
    assert runner.invoke(args=["demo", "--users", "120"]).exit_code == 0
    many = queries()
    assert len(few) == len(many) <= 10
    # No statement counts users: figures come from the counters.
    assert not any(re.search(r"count\(\*\)\s+AS \w+\s+FROM users", s, re.I) for s in many)
