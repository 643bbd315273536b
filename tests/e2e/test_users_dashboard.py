"""An admin's day on the users dashboard, in a real Chromium."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.models import User, UserData, UserRole, UserStatus, utcnow


@pytest.fixture
def people(make_user, db):
    now = utcnow()
    people = {
        "ada": make_user(
            email="ada@example.com",
            first_name="Ada",
            last_name="Lovelace",
            created_at=now - timedelta(days=3),
            public_metadata='{"plan": "pro"}',
        ),
        "alan": make_user(
            email="alan@turing.org",
            first_name="Alan",
            last_name="Turing",
            role=UserRole.ADMIN,
            created_at=now - timedelta(days=2),
        ),
        "grace": make_user(
            email="grace@navy.mil", first_name="Grace", last_name="Hopper", created_at=now - timedelta(days=1)
        ),
    }
    for i in range(4):
        make_user(email=f"extra{i}@example.com", created_at=now - timedelta(days=10 + i))
    db.session.add(UserData(user_id=people["ada"].id, key="plan", value="pro"))
    db.session.commit()
    return people


@pytest.fixture
def signed_in(page, auth, make_user):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, created_at=utcnow() - timedelta(days=400))
    page.goto(auth.link_for(boss))
    page.goto("/users")
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    return page


def rows(page):
    return page.locator("table.users-table tbody tr")


def test_search_filter_and_open_a_user(people, signed_in):
    page = signed_in
    page.get_by_label("Search users").fill("lovelace")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("ada@example.com")
    assert "q=lovelace" in page.url  # the URL holds the search

    page.get_by_label("Search users").fill("")
    expect(rows(page)).to_have_count(8)
    page.get_by_text("Filters and order").click()
    page.get_by_role("group", name="Role").get_by_label("admin", exact=True).check()
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("alan@turing.org")
    assert "role=admin" in page.url

    page.reload()  # a bookmarked view comes back the same
    expect(rows(page)).to_have_count(1)
    expect(page.get_by_role("group", name="Role").get_by_label("admin", exact=True)).to_be_checked()
    expect(page.locator(".result-count")).to_have_text("1 user")

    page.get_by_role("link", name="alan@turing.org").click()
    expect(page.get_by_role("heading", name="Alan Turing")).to_be_visible()


def test_edit_with_a_bad_then_a_good_value(people, signed_in, db):
    page = signed_in
    page.goto(f"/users/{people['ada'].id}/edit")
    page.get_by_label("First name").fill("A")
    page.get_by_label("Last name").fill("Byron")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Must be between 2 and 100 characters.")).to_be_visible()
    expect(page.get_by_label("Last name")).to_have_value("Byron")  # kept
    expect(page.get_by_label("First name")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("First name").fill("Augusta")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    expect(page.get_by_role("heading", name="Augusta Byron")).to_be_visible()
    expect(page.locator("#history")).to_contain_text("Edited")
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert (people["ada"].first_name, people["ada"].last_name) == ("Augusta", "Byron")


def test_suspend_from_the_list_with_the_keyboard(people, signed_in, db):
    page = signed_in
    row = page.locator(f"#user-{people['grace'].id}")
    suspend = row.get_by_role("button", name="Suspend grace@navy.mil")
    suspend.focus()
    outline = suspend.evaluate("el => getComputedStyle(el).outlineStyle + ' ' + getComputedStyle(el).outlineWidth")
    assert not outline.startswith("none"), outline  # a visible focus ring
    page.keyboard.press("Enter")
    confirm = page.get_by_role("button", name="Yes, suspend")
    expect(confirm).to_be_focused()
    page.keyboard.press("Enter")
    expect(row.locator(".badge-status-suspended")).to_be_visible()
    expect(row).to_contain_text("is now suspended")
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert people["grace"].status == UserStatus.SUSPENDED


def test_cancel_a_status_change(people, signed_in, db):
    page = signed_in
    row = page.locator(f"#user-{people['ada'].id}")
    row.get_by_role("button", name="Mark inactive ada@example.com").click()
    # The row's form carries the address once; htmx adds the button pressed: this one, not Suspend.
    expect(row.get_by_role("button", name="Yes, mark inactive")).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(row.get_by_role("button", name="Suspend ada@example.com")).to_be_visible()
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert people["ada"].status == UserStatus.ACTIVE


def test_key_value_data_inline_with_a_duplicate(people, signed_in, db):
    page = signed_in
    page.goto(f"/users/{people['ada'].id}")
    form = page.locator("#data-add")
    form.get_by_label("Key").fill("plan")
    form.get_by_label("Value").fill("team")
    form.get_by_role("button", name="Add").click()
    expect(page.get_by_text("This user already has a key named 'plan'.")).to_be_visible()
    expect(page.locator("#data-add").get_by_label("Value")).to_have_value("team")

    page.locator("#data-add").get_by_label("Key").fill("seats")
    page.locator("#data-add").get_by_role("button", name="Add").click()
    expect(page.locator("#data-rows")).to_contain_text("seats")
    expect(page.get_by_text("Added seats.")).to_be_focused()  # a notice, and focus on it (not on <body>)

    page.get_by_role("button", name="Edit seats").click()
    page.locator("#data-rows").get_by_label("Value").fill("12")
    page.locator("#data-rows").get_by_role("button", name="Save").click()
    expect(page.locator("#data-rows tr", has_text="seats")).to_contain_text("12")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete seats").click()
    expect(page.locator("#data-rows")).not_to_contain_text("seats")
    keys = db.session.scalars(sa.select(UserData.key).where(UserData.user_id == people["ada"].id)).all()
    assert keys == ["plan"]


def test_bulk_suspend_selected_and_all_on_the_page(people, signed_in, db):
    page = signed_in
    page.get_by_label("Select ada@example.com").check()
    page.get_by_label("Select grace@navy.mil").check()
    page.get_by_label("With the selected users").select_option("suspended")
    page.get_by_role("button", name="Apply to selected").click()
    # A confirmation with the count comes first; Escape takes it away and nothing changes.
    expect(page.get_by_text("Suspend 2 users?")).to_be_visible()
    expect(page.locator("#bulk-confirm [data-focus]")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_text("Suspend 2 users?")).to_have_count(0)
    expect(page.get_by_label("With the selected users")).to_be_focused()
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert db.session.scalar(sa.select(sa.func.count()).where(User.status == UserStatus.SUSPENDED)) == 0
    page.get_by_role("button", name="Apply to selected").click()
    page.get_by_role("button", name="Suspend 2 users").click()
    expect(page.get_by_text("2 of 2 selected users changed (suspend).")).to_be_visible()
    db.session.rollback()  # ends the read snapshot too (SQLite)
    suspended = db.session.scalars(sa.select(User.email).where(User.status == UserStatus.SUSPENDED)).all()
    assert sorted(suspended) == ["ada@example.com", "grace@navy.mil"]

    page.get_by_label("Select all users on this page").check()
    expect(page.get_by_label("Select alan@turing.org")).to_be_checked()
    page.get_by_label("With the selected users").select_option("active")
    page.get_by_role("button", name="Apply to selected").click()
    page.get_by_role("button", name="Reactivate 2 users").click()
    expect(page.get_by_text("selected users changed (reactivate)")).to_be_visible()
    db.session.rollback()  # ends the read snapshot too (SQLite)
    assert db.session.scalar(sa.select(sa.func.count()).where(User.status == UserStatus.SUSPENDED)) == 0


def test_invite_a_user(signed_in, db):
    page = signed_in
    page.get_by_role("button", name="Invite user").click()
    page.get_by_label("Email").fill("newbie@example.com")
    page.get_by_label("Role").select_option("admin")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_text("Invited newbie@example.com.")).to_be_visible()
    expect(page.locator(".badge-status-invited").first).to_be_visible()
    assert (
        db.session.scalars(sa.select(User.status).where(User.email == "newbie@example.com")).one() == UserStatus.INVITED
    )


def test_a_503_is_shown_above_the_page_and_keeps_what_was_there(app, people, signed_in):
    """While the database is away the server answers 503; the page says so and loses nothing."""
    import re

    from app.database import UNREACHABLE_MESSAGE
    from app.errors import render_error

    page = signed_in
    with app.test_request_context("/users", headers={"HX-Request": "true"}):
        answered = render_error(503, UNREACHABLE_MESSAGE)
        body, code = answered.get_data(as_text=True), answered.status_code
    searches = re.compile(r"/users\?q=")
    page.route(
        searches,
        lambda route: route.fulfill(
            status=code, body=body, content_type="text/html; charset=utf-8", headers={"Retry-After": "5"}
        ),
    )
    page.get_by_label("Search users").fill("lovelace")
    alert = page.locator("#request-error")
    expect(alert).to_contain_text("The database is unreachable")
    expect(rows(page)).to_have_count(8)  # the table that was there stays

    page.unroute(searches)
    page.get_by_label("Search users").fill("turing")
    expect(rows(page)).to_have_count(1)
    expect(alert).to_be_empty()


def test_the_export_link_follows_the_list_and_downloads_exactly_its_rows(people, signed_in, make_user):
    import csv
    from urllib.parse import parse_qs, urlsplit

    for email, status in [
        ("s1@example.com", UserStatus.SUSPENDED),
        ("s2@example.com", UserStatus.SUSPENDED),
        ("s3@other.org", UserStatus.SUSPENDED),
    ]:
        make_user(email=email, status=status, first_name="Zoë", private_metadata='{"note": "secret"}')
    page = signed_in
    page.get_by_text("Filters and order").click()
    page.get_by_role("group", name="Status").get_by_label("suspended", exact=True).check()
    page.get_by_label("Search users").fill("example")
    expect(rows(page)).to_have_count(2)
    link = page.locator("#export-link")
    expect(link).to_have_text("Export 2 users (CSV)")  # the count, before the download starts
    href = link.get_attribute("href")
    assert parse_qs(urlsplit(href).query) == {"q": ["example"], "status": ["suspended"]}

    listed = sorted(rows(page).locator("td.user-cell > a").all_inner_texts())
    with page.expect_download() as download:
        link.click()
    with open(download.value.path(), encoding="utf-8-sig", newline="") as file:
        exported = list(csv.DictReader(file))
    assert sorted(r["email"] for r in exported) == listed == ["s1@example.com", "s2@example.com"]
    assert exported[0]["first_name"] == "Zoë"

    page.get_by_label("Search users").fill("")  # an htmx swap brings the link along with the list
    expect(rows(page)).to_have_count(3)
    expect(link).to_have_text("Export 3 users (CSV)")
    assert parse_qs(urlsplit(link.get_attribute("href")).query) == {"status": ["suspended"]}
