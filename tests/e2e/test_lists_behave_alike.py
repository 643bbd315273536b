"""Every list filters as you type or choose, keeps the filters in the URL and answers Back; every
filter form has the same button; a refused invite stays on /users/new."""

import re

import pytest
from playwright.sync_api import expect

from app.models import ClerkCall, UserRole, WebhookEvent


@pytest.fixture
def signed_in(page, auth, make_user, db):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    ada = make_user(email="ada@example.com")
    db.session.add_all(
        [
            WebhookEvent(id="msg_applied", type="user.updated", outcome="applied", payload="{}"),
            WebhookEvent(id="msg_failed", type="user.updated", outcome="failed", error="boom", payload="{}"),
            ClerkCall(user_id=ada.id, operation="ban_user", payload="{}", state="failed", attempts=1, last_error="no"),
            ClerkCall(user_id=ada.id, operation="unban_user", payload="{}", state="pending", attempts=0),
        ]
    )
    db.session.commit()
    page.goto(auth.link_for(boss))
    return page


def test_webhooks_filter_as_you_choose(signed_in):
    page = signed_in
    page.goto("/webhooks")
    rows = page.locator("table.webhooks-table tbody tr")
    expect(rows).to_have_count(2)
    page.get_by_label("Outcome").select_option("failed")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"outcome=failed"))
    page.go_back()
    expect(rows).to_have_count(2)


def test_the_audit_trail_filters_as_you_type(signed_in):
    page = signed_in
    page.goto("/audit")
    page.get_by_label("Actor").fill("nobody-at-all")
    expect(page.get_by_text("No events match.")).to_be_visible()
    expect(page).to_have_url(re.compile(r"actor=nobody-at-all"))
    page.go_back()
    expect(page.locator("table.audit-table")).to_be_visible()


def test_the_outbox_filters_as_you_choose(signed_in):
    page = signed_in
    page.goto("/clerk")
    rows = page.locator("table.clerk-calls tbody tr")
    expect(rows).to_have_count(2)
    page.get_by_label("State").select_option("failed")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"state=failed"))
    expect(page.get_by_role("heading", name="Clerk outbox")).to_have_count(1)  # the results, not a page inside the page
    page.go_back()
    expect(rows).to_have_count(2)


def test_every_filter_form_has_the_same_button(signed_in):
    page = signed_in
    looks = {}
    for path, form in [
        ("/users", "#filters"),
        ("/webhooks", "#webhook-filters"),
        ("/audit", "#audit-filters"),
        ("/clerk", "#clerk-filters"),
    ]:
        page.goto(path)
        button = page.locator(form).locator("button[type=submit]")
        box = button.bounding_box()
        looks[path] = (button.get_attribute("class"), round(box["height"]), box["width"] < 200)
    assert len(set(looks.values())) == 1, looks


def test_a_refused_invite_stays_on_its_own_address(signed_in):
    page = signed_in
    page.goto("/users/new")
    page.get_by_label("Email").fill("not an email")
    page.get_by_role("button", name="Invite").click()
    expect(page.locator(".field-error")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/users/new$"))
    expect(page.get_by_label("Email")).to_have_value("not an email")
    page.get_by_label("Email").fill("newbie@example.com")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_text("Invited newbie@example.com.")).to_be_visible()
