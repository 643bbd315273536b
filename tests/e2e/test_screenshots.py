"""The README's pictures of the users and organizations pages, drawn from the demo data in every run; kept in
docs/screenshots when SCREENSHOTS=1 (`SCREENSHOTS=1 pytest tests/e2e/test_screenshots.py`)."""

from __future__ import annotations

import os

import sqlalchemy as sa
from playwright.sync_api import expect

from app.models import Organization, StaffGroup, User, UserRole, UserStatus
from tests.e2e.axe import VIEWPORTS
from tests.e2e.test_overview import SCREENSHOTS, sign_in


def test_screenshots_of_the_users_pages(browser, live_server, auth, runner, db, tmp_path):
    folder = SCREENSHOTS if os.environ.get("SCREENSHOTS") else tmp_path
    result = runner.invoke(args=["demo", "--users", "200"])
    assert result.exit_code == 0, result.output
    boss = db.session.scalars(
        sa.select(User)
        .where(User.role == UserRole.SUPER_ADMIN, User.status == UserStatus.ACTIVE)
        .order_by(User.clerk_id)
        .limit(1)
    ).one()
    someone = db.session.scalars(
        sa.select(User)
        .join(User.data)
        .where(User.role == UserRole.USER, User.first_name.is_not(None))
        .order_by(User.clerk_id)
        .limit(1)
    ).first()
    largest = db.session.scalars(
        sa.select(Organization).where(Organization.deleted_at.is_(None)).order_by(Organization.members_count.desc())
    ).first()
    support = db.session.scalars(sa.select(StaffGroup).where(StaffGroup.name == "Support")).one()
    context = browser.new_context(base_url=live_server, viewport=VIEWPORTS["desktop"], reduced_motion="reduce")
    page = context.new_page()
    try:
        sign_in(page, auth, boss)
        shots = [
            ("users.png", "light", "desktop", "/users", False),
            ("user.png", "light", "desktop", f"/users/{someone.id}", True),
            ("users-dark-phone.png", "dark", "phone", "/users?status=active&status=suspended", False),
            ("organizations.png", "light", "desktop", "/organizations?sort=-members", False),
            ("organization.png", "light", "desktop", f"/organizations/{largest.id}", True),
            ("staff-group.png", "light", "desktop", f"/staff/groups/{support.id}", False),
        ]
        for name, scheme, size, url, full in shots:
            page.emulate_media(color_scheme=scheme)
            page.set_viewport_size(VIEWPORTS[size])
            page.goto(url)
            page.wait_for_load_state("networkidle")
            expect(page.locator("main h1")).to_be_visible()
            path = folder / name
            page.screenshot(path=path, full_page=full)
            assert path.stat().st_size > 20_000
    finally:
        context.close()
