"""On a phone, no page is wider than the screen: the navigation wraps, wide tables scroll in their box."""

import pytest

from app.models import UserRole
from tests.e2e.axe import VIEWPORTS


@pytest.mark.parametrize("path", ["/", "/users", "/audit", "/webhooks", "/clerk", "/users/new"])
def test_nothing_is_wider_than_a_phone(browser, live_server, auth, make_user, path):
    boss = make_user(email="a-rather-long-address@example.com", role=UserRole.SUPER_ADMIN)
    for i in range(3):
        make_user(email=f"person{i}@example.com", first_name="Someone", last_name=f"With A Long Name {i}")
    context = browser.new_context(base_url=live_server, viewport=VIEWPORTS["phone"])
    page = context.new_page()
    try:
        page.goto(auth.link_for(boss))
        page.goto(path)
        widths = page.evaluate("""() => ({
            screen: window.innerWidth,
            page: document.documentElement.scrollWidth,
            header: document.querySelector('header').scrollWidth,
        })""")
    finally:
        context.close()
    assert widths["header"] <= widths["screen"] and widths["page"] <= widths["screen"], widths


def test_on_a_phone_the_header_still_leads_to_what_i_may_do(browser, live_server, auth, make_user):
    support = make_user(email="a-rather-long-address@example.com", role=UserRole.ADMIN)
    context = browser.new_context(base_url=live_server, viewport=VIEWPORTS["phone"])
    page = context.new_page()
    try:
        page.goto(auth.link_for(support))
        page.goto("/users")
        link = page.locator("header .nav-user a")
        assert link.is_visible()
        assert link.inner_text().strip().lower() == "admin"  # the address would not fit: it is in the link's name
        assert "a-rather-long-address@example.com" in link.get_attribute("aria-label")
        link.click()
        page.wait_for_url("**/staff/me")
        assert page.locator("h1").inner_text().strip() != ""
        width = page.evaluate("() => [window.innerWidth, document.documentElement.scrollWidth]")
        assert width[1] <= width[0], width
    finally:
        context.close()
