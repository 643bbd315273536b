"""In a real Chromium: a suspension made while Clerk is down shows "pending in Clerk", and is
delivered by `flask clerk push` once Clerk is back; a name edited while Clerk is down is pending by
the name, survives a stale webhook, and is pushed from the outbox page; the metadata editor and the
new buttons work by keyboard, at phone width, in dark mode; the Clerk pages have no serious axe
violation."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.models import ClerkCall, UserRole, utcnow
from tests.clerk_payloads import sign, user_updated
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


def test_a_name_edited_while_clerk_is_down_survives_a_stale_webhook_and_is_pushed(
    page, auth, make_user, grace, fake, db, signing_secret, clerk_user_record
):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    page.goto(auth.link_for(boss))
    fake.stop()

    page.goto(f"/users/{grace.id}/edit")
    page.get_by_label("First name").fill("Amazing")
    page.get_by_role("button", name="Save").click()
    first_name = page.locator("dt:text-is('First name') + dd")
    expect(first_name).to_have_text(re.compile(r"^Amazing\s+pending in Clerk$"))
    expect(page.locator("dt:text-is('Last name') + dd")).to_have_text("Hopper")
    expect(page.locator("dt:text-is('Email') + dd")).to_have_text("grace@navy.mil")
    page.goto("/users")
    expect(page.locator(f"#user-{grace.id} td").nth(2)).to_have_text(re.compile(r"Amazing Hopper\s+pending in Clerk"))

    # Clerk's user as it stood before the edit: an event sent now carries the old name.
    stale = fake.webhook_data(grace.clerk_id)
    assert stale["first_name"] == "Grace"
    db.session.rollback()  # SQLite: the test's read transaction would hold the server's write
    delivery = sign(user_updated(stale, updated_at=stale["updated_at"]))
    answer = page.request.post("/webhooks/clerk", data=delivery.body, headers=delivery.headers)
    assert answer.status == 200, answer.text()
    page.goto(f"/users/{grace.id}")
    expect(first_name).to_have_text(re.compile(r"^Amazing\s+pending in Clerk$"))
    expect(page.locator("h1")).to_have_text("Amazing Hopper")

    fake.start()
    db.session.rollback()  # a fresh transaction: the one the test read in is older than the server's writes
    db.session.execute(sa.update(ClerkCall).values(next_attempt_at=utcnow()))  # skip the backoff
    db.session.commit()
    page.goto("/clerk")
    expect(page.locator(".clerk-calls")).to_contain_text("Update profile: first_name")
    page.get_by_role("button", name="Send due calls now").click()
    expect(page.locator(".flashes")).to_contain_text("1 delivered")

    assert clerk_user_record["first_name"] == "Amazing"
    page.goto(f"/users/{grace.id}")
    expect(first_name).to_have_text("Amazing")
    expect(page.locator(".badge-clerk-pending")).to_have_count(0)
    expect(page.locator("#clerk")).to_contain_text("Every change to this user has reached Clerk")


def tab_to(page, target, limit=120):
    """Press Tab until `target` has focus, as a person would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {target}")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_metadata_unlock_and_sessions_by_keyboard_on_a_phone(
    browser, live_server, auth, make_user, grace, fake, db, scheme, clerk_user_record
):
    hostile = {"<script>alert(1)</script>": "</textarea><b>x</b>", "long": "y" * 10_000}
    grace.private_metadata = json.dumps(hostile)
    grace.locked = True
    clerk_user_record.update(locked=True, private_metadata=hostile)
    db.session.commit()
    fake.add_session(grace.clerk_id)
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    context = browser.new_context(base_url=live_server, color_scheme=scheme, viewport=VIEWPORTS["phone"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(auth.link_for(boss))
        page.goto(f"/users/{grace.id}")
        block = page.locator("#metadata-private")
        expect(block.locator("pre")).to_contain_text("<script>alert(1)</script>")  # shown as text
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing widens the phone's page
        expect(page.locator("#sessions")).to_contain_text("Chrome 126.0.0.0 on Macintosh")

        editor = block.locator("summary", has_text="Edit private metadata")
        tab_to(page, editor)
        page.keyboard.press("Enter")
        textarea = block.get_by_label("Private metadata (JSON)")
        tab_to(page, textarea)
        page.keyboard.press("Control+A")
        page.keyboard.type('["not", "an object"]')
        page.keyboard.press("Tab")
        expect(block.get_by_role("button", name="Save private metadata")).to_be_focused()
        page.keyboard.press("Enter")
        textarea = page.locator("#metadata-private").get_by_label("Private metadata (JSON)")
        expect(page.locator("#metadata-value-private-error")).to_contain_text("an array was given")
        expect(textarea).to_be_focused()  # the field with the error
        expect(textarea).to_have_value('["not", "an object"]')

        page.keyboard.press("Control+A")
        page.keyboard.type('{"plan": "<b>pro</b>"}')
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        notice = page.locator("#metadata-private").get_by_role("status")
        expect(notice).to_have_text("Saved the private metadata.")
        expect(notice).to_be_focused()
        expect(page.locator("#metadata-private pre")).to_contain_text('"plan": "<b>pro</b>"')
        assert clerk_user_record["private_metadata"] == {"plan": "<b>pro</b>"}

        unlock = page.get_by_role("button", name="Unlock grace@navy.mil")
        tab_to(page, unlock)
        page.keyboard.press("Enter")
        expect(page.locator(".flashes")).to_contain_text("Unlocked grace@navy.mil")
        assert clerk_user_record["locked"] is False

        sign_out = page.locator("#sessions").get_by_role("button", name="Sign out everywhere")
        tab_to(page, sign_out)
        page.keyboard.press("Enter")
        expect(page.locator(".flashes")).to_contain_text("Clerk ended their active sessions")
        expect(page.locator("#sessions")).to_contain_text("No active sessions")
        assert serious_violations(page) == []
    finally:
        context.close()
    assert not errors


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
