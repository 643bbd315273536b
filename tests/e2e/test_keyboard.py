"""The dashboard by keyboard only: Tab, Enter, Space and Escape; focus never falls to <body>."""

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.models import UserData, UserRole, UserStatus, utcnow


@pytest.fixture
def ada(make_user, db):
    user = make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace")
    db.session.add(UserData(user_id=user.id, key="plan", value="pro"))
    db.session.commit()
    return user


@pytest.fixture
def signed_in(page, auth, make_user):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, created_at=utcnow() - timedelta(days=400))
    page.goto(auth.link_for(boss))
    return page


def tab_to(page, target, limit=80):
    """Press Tab until `target` has focus, as a person would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {target}")


def focus_is_not_lost(page):
    assert page.evaluate("document.activeElement && document.activeElement !== document.body")


def test_escape_cancels_a_row_confirmation_and_focus_returns(ada, signed_in, db):
    page = signed_in
    page.goto("/users")
    row = page.locator(f"#user-{ada.id}")
    for name in ("Suspend", "Mark inactive"):
        button = row.get_by_role("button", name=f"{name} ada@example.com")
        tab_to(page, button)
        page.keyboard.press("Enter")
        expect(row.get_by_role("button", name="Cancel")).to_be_visible()
        expect(row.get_by_role("button", name=f"Yes, {name.lower()}")).to_be_focused()
        page.keyboard.press("Escape")
        expect(row.get_by_role("button", name=f"{name} ada@example.com")).to_be_focused()
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert ada.status == UserStatus.ACTIVE

    page.keyboard.press("Shift+Tab")  # back to Suspend
    page.keyboard.press("Enter")
    expect(row.get_by_role("button", name="Yes, suspend")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row.get_by_role("status")).to_contain_text("ada@example.com is now suspended")
    expect(row.get_by_role("status")).to_be_focused()
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert ada.status == UserStatus.SUSPENDED


def test_the_user_page_status_panel_by_keyboard(ada, signed_in, db):
    page = signed_in
    page.goto(f"/users/{ada.id}")
    panel = page.locator("#status-panel")
    tab_to(page, panel.get_by_role("button", name="Suspend ada@example.com"))
    page.keyboard.press("Space")
    expect(panel.get_by_role("button", name="Yes, suspend")).to_be_focused()
    page.keyboard.press("Escape")
    expect(panel.get_by_role("button", name="Suspend ada@example.com")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.get_by_role("button", name="Yes, suspend")).to_be_focused()
    page.keyboard.press("Tab")  # from "Yes" to Cancel
    expect(panel.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.get_by_role("button", name="Suspend ada@example.com")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.get_by_role("button", name="Yes, suspend")).to_be_focused()
    page.keyboard.press("Enter")
    expect(panel.get_by_role("status")).to_be_focused()
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert ada.status == UserStatus.SUSPENDED


def test_key_value_data_by_keyboard(ada, signed_in, db):
    page = signed_in
    page.goto(f"/users/{ada.id}")
    form = page.locator("#data-add")
    tab_to(page, form.get_by_label("Key"))
    page.keyboard.type("plan")
    page.keyboard.press("Tab")
    page.keyboard.type("10")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Add: refused, a duplicate
    key = page.locator("#data-add").get_by_label("Key")
    expect(key).to_have_attribute("aria-invalid", "true")
    expect(key).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type("seats")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Add, the value kept
    notice = page.locator("#data").get_by_role("status")
    expect(notice).to_have_text("Added seats.")
    expect(notice).to_be_focused()
    expect(page.locator("#data-add").get_by_label("Key")).to_have_value("")

    rows = page.locator("#data-rows")
    edit = rows.get_by_role("button", name="Edit seats")
    tab_to(page, edit)
    page.keyboard.press("Enter")
    expect(rows.get_by_label("Key")).to_be_focused()  # the row's first field
    page.keyboard.press("Escape")
    expect(rows.get_by_role("button", name="Edit seats")).to_be_focused()

    page.keyboard.press("Enter")
    expect(rows.get_by_label("Key")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Control+a")
    page.keyboard.type("12")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Save
    expect(rows.locator("tr", has_text="seats")).to_contain_text("12")
    expect(rows.get_by_role("button", name="Edit seats")).to_be_focused()

    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("Tab")  # Delete
    page.keyboard.press("Enter")
    expect(rows).not_to_contain_text("seats")
    focus_is_not_lost(page)
    assert db.session.scalars(sa.select(UserData.key).where(UserData.user_id == ada.id)).all() == ["plan"]


def test_space_opens_a_link_that_looks_like_a_button(signed_in):
    page = signed_in
    page.goto("/users")
    tab_to(page, page.get_by_role("button", name="Invite user"))
    page.keyboard.press("Space")
    expect(page).to_have_url(re.compile(r"/users/new$"))


def test_opening_a_list_leaves_focus_where_the_browser_put_it(signed_in):
    """The count that loads by itself must not pull focus (and a focus ring) onto the results."""
    page = signed_in
    page.goto("/users")
    expect(page.locator(".result-count")).not_to_contain_text("Counting")
    assert page.evaluate("document.activeElement === document.body")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_skip_link_covers_what_is_under_it_when_shown(browser, live_server, scheme):
    context = browser.new_context(base_url=live_server, color_scheme=scheme, viewport={"width": 390, "height": 700})
    page = context.new_page()
    try:
        page.goto("/auth/sign-in")
        page.keyboard.press("Tab")
        link = page.locator(".skip-link")
        assert link.evaluate("el => el === document.activeElement")
        style = link.evaluate("el => { const s = getComputedStyle(el); return [s.backgroundColor, s.color]; }")
        assert style[0].startswith("rgb("), style  # opaque at once (no fade): the brand under it stays hidden
        assert style[0] != style[1], style
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
    finally:
        context.close()
