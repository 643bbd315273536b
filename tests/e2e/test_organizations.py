"""The organizations pages in a real Chromium: the list filters as you type and keeps its state in
the URL, the members table pages and searches, an admin adds a member (picking them from the
suggestions), changes a role, removes a member and revokes an invitation with the keyboard alone;
axe finds no serious or critical violation on the list and the organization's page, light and
dark, desktop and phone, and nothing is wider than a phone."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.models import Membership, OrganizationInvitation, UserRole, utcnow
from tests.e2e.axe import VIEWPORTS, serious_violations
from tests.org_factories import make_invitation, make_membership, make_organization


@pytest.fixture
def world(db, make_user):
    """Acme with 30 members (a staff member among them), a waiting one and invitations; a few more organizations."""
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN, first_name="Bo", last_name="Ss")
    acme = make_organization(name="Acme Corp", slug="acme-corp", public_metadata='{"plan": "<b>gold</b>"}')
    start = utcnow() - timedelta(days=3)
    people = [
        make_user(
            email=f"member{i:02d}@example.com", first_name="Grace" if i == 7 else "Plain", last_name=f"Person {i}"
        )
        for i in range(30)
    ]
    for i, person in enumerate(people):
        make_membership(acme, person, "org:admin" if i == 0 else "org:member", created_at=start + timedelta(minutes=i))
    make_membership(acme, None, identifier="waiting@example.com")
    make_invitation(acme, "invited@example.com")
    make_invitation(acme, "late@example.com", expires_at=utcnow() - timedelta(days=1))
    for name in ("Beta Labs", "Gamma Group", "Delta <i>Ltd</i>"):
        make_organization(name=name)
    make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace")
    return {"boss": boss, "acme": acme, "people": people}


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


def test_the_list_searches_as_you_type_sorts_and_answers_back(signed_in):
    page = signed_in
    page.goto("/organizations")
    rows = page.locator("table.organizations-table tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.first).to_contain_text("Acme Corp")
    page.get_by_label("Search organizations").fill("labs")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Beta Labs")
    expect(page).to_have_url(re.compile(r"q=labs"))
    page.go_back()
    expect(rows).to_have_count(4)
    page.get_by_label("Sort by").select_option("-members")
    expect(page).to_have_url(re.compile(r"sort=-members"))
    expect(rows.first).to_contain_text("Acme Corp")
    expect(rows.first).to_contain_text("31")
    expect(page.locator("table.organizations-table")).to_contain_text("Delta <i>Ltd</i>")  # as text
    page.get_by_role("link", name="Acme Corp").click()
    expect(page.locator("h1")).to_have_text("Acme Corp")


def test_members_page_and_search_keep_the_url(signed_in, world):
    page = signed_in
    acme = world["acme"]
    page.goto(f"/organizations/{acme.id}")
    rows = page.locator("table.members-table tbody tr")
    expect(rows).to_have_count(25)
    expect(rows.first).to_contain_text("waiting@example.com")
    page.locator("#members").get_by_role("link", name="Next ›").click()
    expect(rows).to_have_count(6)
    expect(page).to_have_url(re.compile(r"after="))
    page.get_by_label("Search members").fill("grace")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("member07@example.com")
    expect(page).to_have_url(re.compile(r"mq=grace"))
    page.reload()
    expect(rows).to_have_count(1)
    expect(page.locator(".metadata-block pre").first).to_contain_text('"plan": "<b>gold</b>"')


def test_add_change_remove_and_revoke_by_keyboard(signed_in, world, db):
    page = signed_in
    acme = world["acme"]
    page.goto(f"/organizations/{acme.id}")

    # Add Ada: the suggestions offer her as the email is typed; Enter adds her.
    user = page.get_by_label("User")
    tab_to(page, user)
    page.keyboard.type("ada@exa")
    expect(page.locator("#user-choices option")).to_have_count(1)
    expect(page.locator("#user-choices option")).to_have_attribute("value", "ada@example.com")
    page.keyboard.type("mple.com")
    page.keyboard.press("Enter")
    notice = page.locator("#members-section .notice")
    expect(notice).to_have_text("Added ada@example.com as Member.")
    expect(notice).to_be_focused()
    db.session.rollback()
    ada = next(
        m for m in db.session.query(Membership).filter_by(organization_id=acme.id) if m.identifier == "ada@example.com"
    )
    assert ada.role == "org:member"

    # Change her role: the select and its button, by keyboard.
    row = page.locator(f"#member-{ada.id}")
    role = row.get_by_label("Role of ada@example.com", exact=True)
    tab_to(page, role)
    role.select_option("org:admin")
    page.keyboard.press("Tab")
    expect(row.get_by_role("button", name="Change the role of ada@example.com")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row.get_by_role("status")).to_have_text("ada@example.com is now Admin.")
    db.session.rollback()
    assert db.session.get(Membership, ada.id).role == "org:admin"

    # Remove her: asked inline; Escape cancels and focus returns; Enter confirms.
    remove = row.get_by_role("button", name="Remove ada@example.com")
    tab_to(page, remove)
    page.keyboard.press("Enter")
    expect(row.get_by_role("button", name="Yes, remove")).to_be_focused()
    page.keyboard.press("Escape")
    expect(row.get_by_role("button", name="Remove ada@example.com")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row.get_by_role("button", name="Yes, remove")).to_be_focused()
    page.keyboard.press("Enter")
    expect(notice).to_have_text("Removed ada@example.com from Acme Corp.")
    expect(page.locator(f"#member-{ada.id}")).to_have_count(0)
    db.session.rollback()
    assert db.session.get(Membership, ada.id).deleted_at is not None

    # Revoke the pending invitation, then invite someone else.
    revoke = page.get_by_role("button", name="Revoke the invitation of invited@example.com")
    tab_to(page, revoke)
    page.keyboard.press("Enter")
    invitations = page.locator("#invitations")
    expect(invitations.locator(".notice")).to_have_text("Revoked the invitation of invited@example.com.")
    email = invitations.get_by_label("Email")
    tab_to(page, email)
    page.keyboard.type("not-an-email")
    page.keyboard.press("Enter")
    expect(email).to_be_focused()
    expect(email).to_have_attribute("aria-invalid", "true")
    email.fill("new@example.com")
    email.press("Enter")  # on the field itself: the error's answer may still be settling focus
    expect(invitations.locator(".notice")).to_have_text("Invited new@example.com as Member.")
    db.session.rollback()
    invitations_now = db.session.scalars(sa.select(OrganizationInvitation)).all()
    assert {i.email: i.status for i in invitations_now}["new@example.com"] == "pending"


def test_rename_shows_errors_by_the_field_then_saves(signed_in, world):
    page = signed_in
    page.goto(f"/organizations/{world['acme'].id}")
    summary = page.get_by_text("Rename or change the slug")
    tab_to(page, summary)
    page.keyboard.press("Enter")
    page.get_by_label("Slug").fill("Not A Slug")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#slug-error")).to_contain_text("Lowercase letters")
    expect(page.get_by_label("Slug")).to_have_value("Not A Slug")
    page.get_by_label("Name").fill("Acme Incorporated")
    page.get_by_label("Slug").fill("acme-inc")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("h1")).to_have_text("Acme Incorporated")
    expect(page.locator(".flashes")).to_contain_text("Saved Acme Incorporated.")


def test_delete_by_keyboard_refused_by_the_field_then_done(signed_in, world, db):
    page = signed_in
    acme = world["acme"]
    page.goto(f"/organizations/{acme.id}")
    delete = page.get_by_role("button", name="Delete…")
    tab_to(page, delete)
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Delete Acme Corp?")
    confirm = page.get_by_label("Type the organization's slug to confirm")
    tab_to(page, confirm)
    page.keyboard.type("acme")
    page.keyboard.press("Enter")
    expect(page.locator("#confirm-error")).to_contain_text("Type acme-corp exactly to confirm; nothing was deleted.")
    expect(confirm).to_have_value("acme")  # kept as typed
    expect(confirm).to_be_focused()  # the page came back with an error: focus is on its field
    page.keyboard.press("Control+A")
    page.keyboard.type("acme-corp")
    page.keyboard.press("Enter")
    expect(page.locator(".flashes")).to_contain_text("Deleted Acme Corp. It is read-only here; its history stays.")
    expect(page.locator(".read-only-note")).to_contain_text("this organization is read-only here")
    expect(page.get_by_role("button", name="Delete…")).to_have_count(0)
    db.session.expire_all()
    live = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Membership)
        .where(Membership.organization_id == acme.id, Membership.deleted_at.is_(None))
    )
    assert live == 0


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_no_serious_violations_and_nothing_wider_than_the_screen(browser, live_server, auth, world, scheme, width):
    acme = world["acme"]
    context = browser.new_context(
        base_url=live_server, color_scheme=scheme, viewport=VIEWPORTS[width], reduced_motion="reduce"
    )
    page = context.new_page()
    found, too_wide = {}, {}
    try:
        page.goto(auth.link_for(world["boss"]))
        for url in (
            "/organizations",
            "/organizations?q=zzz",
            f"/organizations/{acme.id}",
            f"/organizations/{acme.id}?mq=grace",
            f"/organizations/{acme.id}/members/{acme.id}/delete",  # a 404 page
            f"/organizations/{acme.id}/delete",
            f"/users/{world['people'][0].id}",
            "/",
        ):
            page.goto(url)
            page.wait_for_load_state("networkidle")
            found[url] = serious_violations(page)
            widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if widths[0] > widths[1]:
                too_wide[url] = widths
        # The inline states htmx swaps in: a removal's confirmation, a refused member.
        page.goto(f"/organizations/{acme.id}")
        page.get_by_role("button", name="Remove member29@example.com").click()
        page.get_by_role("button", name="Yes, remove").wait_for()
        found["confirm removal"] = serious_violations(page)
        page.get_by_role("button", name="Cancel").click()
        page.get_by_label("User").fill("nobody@example.com")
        page.get_by_role("button", name="Add member").click()
        page.locator("#user-error").wait_for()
        found["refused member"] = serious_violations(page)
    finally:
        context.close()
    assert {url: v for url, v in found.items() if v} == {}
    assert too_wide == {}
