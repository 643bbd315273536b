"""axe-core in a real Chromium on the webhooks pages: no critical or serious violation, light and
dark, desktop and phone; and the filters and Retry button work with htmx and the keyboard."""

from __future__ import annotations

import json

import pytest

from app.models import UserRole
from app.webhooks.services import record_failed_delivery
from tests.clerk_payloads import BASE_MS, SECRET, clerk_user, envelope, sign, user_created, user_updated
from tests.e2e.axe import VIEWPORTS, serious_violations


@pytest.fixture
def deliveries(app, client, db):
    """One delivery of each outcome, as the receiver records them."""
    app.config["CLERK_WEBHOOK_SIGNING_SECRET"] = SECRET
    data = clerk_user(email="ada@example.com", updated_at=BASE_MS + 10)
    sign(user_created(data)).post(client)
    stale = sign(user_updated(data, updated_at=BASE_MS))
    stale.post(client)
    sign(envelope("email.created", {"id": "ema_1"})).post(client)
    sign({"type": "user.created", "data": []}).post(client)
    failed = sign(user_created(clerk_user(email="retry@example.com", first_name="Retry")))
    record_failed_delivery(failed.msg_id, failed.body.decode(), json.loads(failed.body), "OperationalError: lost")
    db.session.commit()
    return {"stale": stale.msg_id, "failed": failed.msg_id}


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_the_webhooks_pages_have_no_serious_violations(browser, live_server, auth, deliveries, scheme, width):
    staff = auth.make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    # Reduced motion: Pico then skips its colour transitions, which axe could catch half-way.
    context = browser.new_context(
        base_url=live_server, color_scheme=scheme, viewport=VIEWPORTS[width], reduced_motion="reduce"
    )
    page = context.new_page()
    try:
        page.goto(auth.link_for(staff))
        found = {}
        for url in ("/webhooks", "/webhooks?outcome=applied&type=session.created", f"/webhooks/{deliveries['stale']}"):
            page.goto(url)
            page.wait_for_load_state("networkidle")
            found[url] = serious_violations(page)
    finally:
        context.close()
    assert {url: v for url, v in found.items() if v} == {}


def test_filter_with_htmx_and_retry_with_the_keyboard(browser, live_server, auth, deliveries):
    staff = auth.make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    context = browser.new_context(base_url=live_server)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(auth.link_for(staff))
        page.goto("/webhooks")
        assert page.locator("tbody tr").count() == 5
        page.get_by_label("Outcome").select_option("failed")
        page.wait_for_url("**/webhooks?outcome=failed*")
        assert page.locator("tbody tr").count() == 2  # the failed one and the malformed one

        retry = page.get_by_role("button", name=f"Retry {deliveries['failed']}")
        retry.focus()
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/webhooks/{deliveries['failed']}")
        assert "re-applied: applied" in page.locator(".flashes").inner_text()
        assert page.locator(".outcome-applied").count() == 1
    finally:
        context.close()
    assert not errors


LONG_ID = "msg_" + "m" * 251  # 255 characters: the longest svix id the receiver takes
LONG_TYPE = "t" * 255


@pytest.mark.parametrize("width", [1366, 390])
def test_long_ids_and_types_keep_the_table_on_the_screen(app, client, browser, live_server, auth, width):
    # Issue 12.16: one malformed delivery with a long id pushed every row's Outcome off the page.
    app.config["CLERK_WEBHOOK_SIGNING_SECRET"] = SECRET
    sign(user_created(clerk_user(email="ada@example.com"))).post(client)
    long = sign(envelope(LONG_TYPE, {"id": "user_" + "u" * 250}), msg_id=LONG_ID)
    assert long.post(client).get_json()["outcome"] == "ignored"
    staff = auth.make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    context = browser.new_context(base_url=live_server, viewport={"width": width, "height": 900})
    page = context.new_page()
    measure = """() => ({
        screen: window.innerWidth,
        page: document.documentElement.scrollWidth,
        boxes: [...document.querySelectorAll('.overflow-auto')].map(box => box.scrollWidth - box.clientWidth),
        outcomes: [...document.querySelectorAll('.badge')].map(badge => {
            const r = badge.getBoundingClientRect(); return [r.left, r.right]; }),
    })"""
    try:
        page.goto(auth.link_for(staff))
        page.goto("/webhooks")
        listed = page.evaluate(measure)
        row = page.locator(f"#webhook-{LONG_ID}")
        titles = [row.locator(f'[title="{value}"]').count() for value in (LONG_ID, LONG_TYPE, "user_" + "u" * 250)]
        page.goto(f"/webhooks/{LONG_ID}")
        detail = page.evaluate(measure)
        shown = page.locator("main").inner_text()
    finally:
        context.close()

    for widths in (listed, detail):
        assert widths["page"] <= widths["screen"], widths
        assert all(extra <= 0 for extra in widths["boxes"]), widths  # no sideways scrolling inside
        assert widths["outcomes"] and all(left >= 0 and right <= widths["screen"] for left, right in widths["outcomes"])
    assert len(listed["outcomes"]) == 2
    assert titles == [1, 1, 1]  # the whole value, on hover, where the list shortens it
    assert LONG_ID in shown.replace("\n", "") and LONG_TYPE in shown.replace("\n", "")
