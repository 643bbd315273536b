"""The staff pages in a real Chromium: a super admin creates a group, ticks its permissions in the
grid with the keyboard (Tab, Space), saves, adds a member by email and sees it all in the group's
history; a stale grid is a conflict shown in place; axe finds no serious or critical violation on
/staff, a group's page and /staff/me, light and dark, desktop and phone, and nothing is wider than
a phone (the grid stacks)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.audit.services import Actor
from app.models import AuditEvent, StaffGroup, StaffGroupMember, UserRole
from app.staff.services import add_member, create_group, set_permissions
from tests.e2e.axe import VIEWPORTS, serious_violations


@pytest.fixture
def world(db, make_user):
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, first_name="Bo", last_name="Ss")
    grace = make_user(email="grace@example.com", role=UserRole.ADMIN, first_name="Grace", last_name="Hopper")
    make_user(email="linus@example.com", role=UserRole.ADMIN)
    engineers = create_group(
        "Engineers",
        description="Replay webhooks and retry calls to Clerk <b>only</b>",
        permissions=["users.view", "webhooks.replay", "clerk.retry"],
        actor=Actor.cli(),
    )
    add_member(engineers, grace, actor=Actor.cli())
    db.session.commit()
    return {"boss": boss, "grace": grace, "engineers": engineers}


@pytest.fixture
def signed_in(page, auth, world):
    page.goto(auth.link_for(world["boss"]))
    return page


def tab_to(page, target, limit=200):
    """Press Tab until `target` has focus, as a person would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {target}")


def test_a_super_admin_makes_a_group_by_keyboard(signed_in, world, db):
    page = signed_in
    page.goto("/staff")
    expect(page.locator("h1")).to_have_text("Staff")
    expect(page.locator(f"#staff-{world['grace'].id}")).to_contain_text("Engineers")

    # A new group: its name by keyboard, Enter creates it and opens its page.
    name = page.get_by_label("Name")
    tab_to(page, name)
    page.keyboard.type("Support")
    page.keyboard.press("Tab")
    page.keyboard.type("Suspends, unlocks and invites")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Create group")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Support")
    expect(page.locator(".flashes")).to_contain_text("Created the group Support.")
    db.session.rollback()
    group = db.session.scalars(sa.select(StaffGroup).where(StaffGroup.name == "Support")).one()

    # Tick view, invite, suspend, unlock and sessions in the grid: Tab to each box, Space ticks it.
    grid = page.locator("#permissions")
    expect(grid.locator("fieldset legend").first).to_have_text("Users")
    for permission in ("users.view", "users.invite", "users.suspend", "users.unlock", "users.sessions"):
        box = grid.get_by_label(permission, exact=True)
        tab_to(page, box)
        page.keyboard.press("Space")
        expect(box).to_be_checked()
    save = grid.get_by_role("button", name="Save permissions")
    tab_to(page, save)
    page.keyboard.press("Enter")
    notice = page.locator("#permissions .notice")
    expect(notice).to_contain_text(
        "Saved Support: granted users.invite users.sessions users.suspend users.unlock users.view."
    )
    expect(notice).to_be_focused()
    expect(page.locator("#group-history")).to_contain_text("Staff group's permissions changed")
    db.session.rollback()
    assert db.session.get(StaffGroup, group.id).permission_names == [
        "users.invite",
        "users.sessions",
        "users.suspend",
        "users.unlock",
        "users.view",
    ]

    # Add a member by email: a wrong one is refused by the field, then the right one.
    email = page.get_by_label("Email")
    tab_to(page, email)
    page.keyboard.type("nobody@example.com")
    page.keyboard.press("Enter")
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_be_focused()
    expect(page.locator("#member-email-error")).to_contain_text("There is no user with the email")
    email.fill("linus@example.com")
    email.press("Enter")
    members = page.locator("#members")
    expect(members.locator(".notice")).to_have_text("Added linus@example.com to Support.")
    expect(members.get_by_role("button", name="Remove linus@example.com from Support")).to_be_visible()

    # The history shows each change with its before and after, without reloading.
    history = page.locator("#group-history")
    expect(history).to_contain_text("Added to a staff group")
    expect(history).to_contain_text("Staff group created")
    expect(history.locator("table.changes").first).to_contain_text("Support")
    db.session.rollback()
    actions = db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.staff_group_id == group.id)).all()
    assert sorted(actions) == ["staff_group.create", "staff_group.member_add", "staff_group.permissions"]
    assert db.session.scalars(sa.select(StaffGroupMember).where(StaffGroupMember.group_id == group.id)).one()

    # Remove them again, by keyboard.
    remove = members.get_by_role("button", name="Remove linus@example.com from Support")
    tab_to(page, remove)
    page.keyboard.press("Enter")
    expect(members.locator(".notice")).to_have_text("Removed linus@example.com from Support.")
    expect(history).to_contain_text("Removed from a staff group")


def test_a_stale_grid_is_a_conflict_and_a_group_is_deleted_after_asking(signed_in, world, db):
    page = signed_in
    engineers = world["engineers"]
    page.goto(f"/staff/groups/{engineers.id}")
    set_permissions(engineers, ["users.view"], actor=Actor.cli())  # someone else, meanwhile
    db.session.commit()
    page.locator("#permissions").get_by_label("audit.view", exact=True).check()
    page.get_by_role("button", name="Save permissions").click()
    conflict = page.locator("#permissions .conflict")
    expect(conflict).to_contain_text("nothing was overwritten")
    expect(page.locator("#permissions").get_by_label("audit.view", exact=True)).to_be_checked()
    db.session.rollback()
    assert db.session.get(StaffGroup, engineers.id).permission_names == ["users.view"]

    page.get_by_role("button", name="Delete group…").click()
    expect(page.locator("h1")).to_have_text("Delete the group Engineers?")
    expect(page.locator("#delete-confirm")).to_contain_text("grace@example.com")
    page.get_by_role("button", name="Delete Engineers").click()
    expect(page.locator(".flashes")).to_contain_text("Deleted the group Engineers")
    expect(page.locator(".groups-table")).not_to_contain_text("Engineers")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_no_serious_violations_and_nothing_wider_than_the_screen(browser, live_server, auth, world, scheme, width):
    engineers, grace = world["engineers"], world["grace"]
    context = browser.new_context(
        base_url=live_server, color_scheme=scheme, viewport=VIEWPORTS[width], reduced_motion="reduce"
    )
    page = context.new_page()
    found, too_wide = {}, {}

    def check(name: str) -> None:
        found[name] = serious_violations(page)
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if widths[0] > widths[1]:
            too_wide[name] = widths

    try:
        page.goto(auth.link_for(world["boss"]))
        for url in (
            "/staff",
            f"/staff/groups/{engineers.id}",
            f"/staff/groups/{engineers.id}/delete",
            f"/staff/people/{grace.id}",
            "/staff/me",
            "/staff/groups/999999",  # a 404 page
        ):
            page.goto(url)
            page.wait_for_load_state("networkidle")
            check(url)
        # The states htmx swaps in and the refusals: a refused member, a refused new group.
        page.goto(f"/staff/groups/{engineers.id}")
        page.get_by_label("Email").fill("nobody@example.com")
        page.get_by_role("button", name="Add member").click()
        page.locator("#member-email-error").wait_for()
        check("refused member")
        page.goto("/staff")
        page.get_by_role("button", name="Create group").click()
        page.locator("#group-name-error").wait_for()
        check("refused group")
        # An admin's own page, with no permission to manage anything.
        page.goto(auth.link_for(grace))
        page.goto("/staff/me")
        page.wait_for_load_state("networkidle")
        check("admin's /staff/me")
    finally:
        context.close()
    assert {name: v for name, v in found.items() if v} == {}
    assert too_wide == {}
