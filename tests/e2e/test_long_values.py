"""Long values wrap or are cut short, at phone and desktop widths: no page is wider than the
screen, and each row's status and buttons stay on it."""

import json

import pytest

from app.audit.services import Actor
from app.models import ClerkCall, UserRole
from app.users.services import add_user_data

WIDTHS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1366, "height": 768}}

LONG_KEY = "k" * 255
LONG_VALUE = "v" * 10_000

# What sticks out: the page's width against the screen's, and the elements past its right edge,
# even inside a box that scrolls (cut off on purpose, with an ellipsis, is fine).
MEASURE = """() => {
  const screen = document.documentElement.clientWidth;
  const clipped = (el) => {
    for (let up = el.parentElement; up; up = up.parentElement) {
      if (getComputedStyle(up).overflowX === 'hidden' && up.getBoundingClientRect().right <= screen + 1) return true;
    }
    return false;
  };
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect();
    if (box.width && box.right > screen + 1 && !clipped(el)) {
      out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className && el.className.baseVal === undefined ? '.' + el.className : '') + ' ' + Math.round(box.right));
    }
  }
  return {screen, page: document.documentElement.scrollWidth, out: out.slice(0, 8)};
}"""


@pytest.fixture
def long_user(make_user, db):
    """A user whose every field is as long as the rules allow, with data, history and a Clerk call."""
    user = make_user(
        email="a-very-long-local-part-" + "x" * 40 + "@" + "sub-domain-" * 12 + "example.com",
        first_name="N" * 100,
        last_name="L" * 100,
        username="u" * 64,
        clerk_id="user_" + "c" * 250,
        external_id="e" * 200,
        image_url="https://img.example.com/" + "p" * 300,
        public_metadata=json.dumps({"note": "m" * 2000, "nested": {"deep": "d" * 500}}),
    )
    boss = make_user(email="boss-" + "b" * 80 + "@example.com", role=UserRole.SUPER_ADMIN)
    actor = Actor.staff(boss)
    add_user_data(user, LONG_KEY, LONG_VALUE, actor=actor)
    add_user_data(user, "plan", "pro", actor=actor)
    db.session.add(
        ClerkCall(
            user_id=user.id,
            operation="update_metadata",
            payload="{}",
            state="failed",
            attempts=3,
            last_error="Clerk said: " + "z" * 3000,
        )
    )
    db.session.commit()
    return user, boss


def open_as(browser, live_server, auth, boss, width):
    context = browser.new_context(base_url=live_server, viewport=WIDTHS[width])
    page = context.new_page()
    page.goto(auth.link_for(boss))
    return context, page


def assert_fits(page):
    found = page.evaluate(MEASURE)
    assert found["page"] <= found["screen"] and not found["out"], (page.url, found)


def assert_on_screen(page, locator):
    screen = page.evaluate("document.documentElement.clientWidth")
    box = locator.bounding_box()
    assert box is not None, locator
    assert box["x"] >= 0 and box["x"] + box["width"] <= screen, (locator, box, screen)


@pytest.mark.parametrize("width", list(WIDTHS))
def test_long_values_fit_every_page(browser, live_server, auth, long_user, width):
    user, boss = long_user
    context, page = open_as(browser, live_server, auth, boss, width)
    try:
        for path in ["/users", f"/users/{user.id}", f"/users/{user.id}/edit", "/audit", "/", "/clerk"]:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            assert_fits(page)

        page.goto("/users")
        row = page.locator(f"#user-{user.id}")
        assert_on_screen(page, row.locator(".badge-status-active"))
        for button in row.get_by_role("button").all():
            assert_on_screen(page, button)

        page.goto(f"/users/{user.id}")
        for row in page.locator("#data-rows tr").all():
            for button in row.get_by_role("button").all():
                assert_on_screen(page, button)
        page.get_by_role("button", name=f"Edit {LONG_KEY}").click()
        page.locator("#data-rows .editing").wait_for()
        assert_fits(page)
        for button in page.locator("#data-rows .editing").get_by_role("button").all():
            assert_on_screen(page, button)

        page.goto("/clerk")
        for button in page.locator("table.clerk-calls tbody tr").first.get_by_role("button").all():
            assert_on_screen(page, button)
    finally:
        context.close()
