"""In a real Chromium: a suspension made while Clerk is down shows "pending in Clerk", and is
delivered by `flask clerk push` once Clerk is back; the Clerk pages have no serious axe violation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.models import ClerkCall, UserRole, utcnow
from tests.e2e.axe import VIEWPORTS, serious_violations
from tests.fake_clerk import bapi_user, connected_fake_clerk


@pytest.fixture
def clerk_user_record() -> dict:
    return bapi_user(email="grace@navy.mil", first_name="Grace", last_name="Hopper")


@pytest.fixture
def fake(app, clerk_user_record):
    with connected_fake_clerk(app, [clerk_user_record]) as server:
        yield server


@pytest.fixture
def grace(make_user, clerk_user_record):
    return make_user(email="grace@navy.mil", first_name="Grace", last_name="Hopper", clerk_id=clerk_user_record["id"])


def test_a_suspension_while_clerk_is_down_is_pending_then_pushed(
    page, auth, make_user, grace, fake, db, runner, clerk_user_record
):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    page.goto(auth.link_for(boss))
    fake.stop()

    page.goto(f"/users/{grace.id}")
    page.get_by_role("button", name="Suspend grace@navy.mil").click()
    page.get_by_role("button", name="Yes, suspend").click()
    expect(page.locator("#status-panel")).to_contain_text("Pending in Clerk")

    page.reload()
    clerk = page.locator("#clerk")
    expect(clerk.locator(".badge-clerk-pending").first).to_have_text("pending in Clerk")
    expect(clerk).to_contain_text("Ban in Clerk")
    expect(clerk).to_contain_text("unreachable")
    page.goto("/users")
    expect(page.locator("tr", has_text="grace@navy.mil")).to_contain_text("pending in Clerk")

    fake.start()
    db.session.rollback()  # a fresh transaction: the one the test read in is older than the server's writes
    db.session.execute(sa.update(ClerkCall).values(next_attempt_at=utcnow()))  # skip the backoff
    db.session.commit()
    result = runner.invoke(args=["clerk", "push"])
    assert "2 delivered" in result.output, result.output
    assert clerk_user_record["banned"] is True

    page.goto(f"/users/{grace.id}")
    expect(page.locator("#clerk")).to_contain_text("Every change to this user has reached Clerk")
    expect(page.locator("#clerk .badge-clerk-pending")).to_have_count(0)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_the_clerk_pages_have_no_serious_violations(
    browser, live_server, auth, make_user, grace, fake, db, app, scheme, width
):
    from app.clerk.outbox import BAN, METADATA
    from app.clerk.outbox.enqueue import enqueue

    fake.stop()
    enqueue(grace, BAN, {"user_id": grace.clerk_id})
    failed = enqueue(grace, METADATA, {"user_id": grace.clerk_id, "public_metadata": {"role": "user"}})
    failed.state, failed.last_error = "failed", "Clerk answered 404: User not found"
    db.session.commit()
    invited = make_user(email="new@example.com", status="invited", clerk_id="inv_e2e")
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    context = browser.new_context(
        base_url=live_server, color_scheme=scheme, viewport=VIEWPORTS[width], reduced_motion="reduce"
    )
    page = context.new_page()
    found = {}
    try:
        page.goto(auth.link_for(boss))
        for url in ("/clerk", "/clerk?state=failed", f"/users/{grace.id}", f"/users/{invited.id}", "/users"):
            page.goto(url)
            page.wait_for_load_state("networkidle")
            found[url] = serious_violations(page)
        app.config["CLERK_SECRET_KEY"] = None  # and the "not connected" notes
        for url in ("/clerk", "/users/new"):
            page.goto(url)
            page.wait_for_load_state("networkidle")
            found[f"{url} (not connected)"] = serious_violations(page)
    finally:
        context.close()
    assert {url: v for url, v in found.items() if v} == {}
