"""A new admin's first minutes, in a real browser."""

from datetime import timedelta

from playwright.sync_api import expect

from app.models import UserRole, utcnow


def test_sign_in_by_link_see_users_page_through_and_sign_out(app, page, auth, make_user):
    app.config["USERS_PER_PAGE"] = 10
    start = utcnow() - timedelta(days=100)
    for i in range(25):
        make_user(
            email=f"member{i:02d}@example.com",
            first_name="Member",
            last_name=f"Number{i:02d}",
            created_at=start + timedelta(days=i),
        )
    admin = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)

    page.goto("/users")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    page.goto(auth.link_for(admin))
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()  # signed in: the overview
    expect(page.get_by_text("Signed in as boss@example.com.")).to_be_visible()
    page.get_by_role("link", name="Users", exact=True).click()
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    rows = page.locator("table.users-table tbody tr")
    expect(rows).to_have_count(10)
    expect(rows.first).to_contain_text("boss@example.com")

    # Page on with the keyboard alone.
    page.get_by_role("link", name="Next ›").focus()
    page.keyboard.press("Enter")
    expect(rows).to_have_count(10)
    expect(page.get_by_text("member15@example.com")).to_be_visible()
    page.get_by_role("link", name="Next ›").click()
    expect(rows).to_have_count(6)
    expect(page.get_by_role("link", name="Next ›")).to_have_count(0)
    page.get_by_role("link", name="‹ Previous").click()
    expect(page.get_by_text("member15@example.com")).to_be_visible()

    page.get_by_role("link", name="member10@example.com").click()
    expect(page.get_by_role("heading", name="Member Number10")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You have signed out.")).to_be_visible()
    page.goto("/users")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_used_link_is_refused_in_the_browser(page, auth, make_user):
    admin = make_user(email="once@example.com", role=UserRole.ADMIN)
    link = auth.link_for(admin)
    page.goto(link)
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    page.context.clear_cookies()
    page.goto(link)
    expect(page.get_by_role("heading", name="Sign-in link refused")).to_be_visible()
    expect(page.get_by_text("already been used")).to_be_visible()
