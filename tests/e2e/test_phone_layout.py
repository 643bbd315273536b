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
