"""axe-core in a real Chromium on every page: no critical or serious violation, light and dark,
desktop and phone widths."""

import pytest

from app.models import UserData, UserRole, UserStatus
from tests.e2e.axe import VIEWPORTS, serious_violations


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_every_page_has_no_serious_violations(browser, live_server, auth, make_user, db, scheme, width):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, first_name="Bo", last_name="Ss")
    user = make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace", public_metadata='{"a": 1}')
    make_user(email="gone@example.com", status=UserStatus.SUSPENDED)
    db.session.add(UserData(user_id=user.id, key="plan", value="pro"))
    db.session.commit()
    # Reduced motion: Pico then skips its colour transitions, which axe could catch half-way.
    context = browser.new_context(
        base_url=live_server, color_scheme=scheme, viewport=VIEWPORTS[width], reduced_motion="reduce"
    )
    page = context.new_page()
    try:
        page.goto("/auth/sign-in")
        found = {"/auth/sign-in": serious_violations(page)}
        page.goto(auth.link_for(boss))
        pages = [
            "/users",
            "/users?q=zzz",
            f"/users/{user.id}",
            f"/users/{user.id}/edit",
            "/users/new",
            f"/users/{user.id}/status?to=suspended",
            "/audit",
            "/users/missing",
        ]
        for url in pages:
            page.goto(url)
            page.wait_for_load_state("networkidle")
            found[url] = serious_violations(page)
        # A form showing its errors, too.
        page.goto("/users/new")
        page.get_by_role("button", name="Invite").click()
        found["/users/new (errors)"] = serious_violations(page)
        # And the inline states htmx swaps in.
        page.goto("/users")
        page.get_by_role("button", name="Suspend ada@example.com").click()
        page.get_by_role("button", name="Yes, suspend").wait_for()
        found["/users (confirm row)"] = serious_violations(page)
    finally:
        context.close()
    assert {url: v for url, v in found.items() if v} == {}
