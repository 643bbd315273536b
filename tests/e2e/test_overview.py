"""The overview (`/`) in a real Chromium: figures, the two SVG charts, the htmx range switch, figures
leading to the filtered list, axe in both colour schemes and widths, and (SCREENSHOTS=1) the
screenshots in docs/screenshots."""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from app.audit.services import Actor
from app.models import User, UserRole, UserStatus, utcnow
from app.users.services import set_status
from tests.e2e.axe import VIEWPORTS, serious_violations

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

# (sign-up days ago, latest sign-in days ago or None, role, status): sign-ups on days inside the
# 7-day range, only inside 30 days and only inside 90 days, so each range shows different bars.
PEOPLE = [
    (0, 0, UserRole.USER, UserStatus.ACTIVE),
    (0, None, UserRole.USER, UserStatus.INVITED),
    (1, 0, UserRole.ADMIN, UserStatus.ACTIVE),
    (3, 2, UserRole.USER, UserStatus.ACTIVE),
    (3, 2, UserRole.USER, UserStatus.ACTIVE),
    (3, None, UserRole.USER, UserStatus.INACTIVE),
    (6, 4, UserRole.ADMIN, UserStatus.ACTIVE),
    (12, 12, UserRole.USER, UserStatus.ACTIVE),
    (12, 5, UserRole.USER, UserStatus.ACTIVE),
    (25, 20, UserRole.USER, UserStatus.ACTIVE),
    (40, 33, UserRole.USER, UserStatus.ACTIVE),
    (85, 60, UserRole.USER, UserStatus.ACTIVE),
    (85, None, UserRole.USER, UserStatus.ACTIVE),
    (200, 150, UserRole.USER, UserStatus.ACTIVE),
]
SUSPENDED = 3  # suspended through the service after the recount, so the counters follow the change


@pytest.fixture
def population(make_user, runner, db):
    """The boss, the people above and three suspended users; returns (boss, sign-ups, sign-ins) per UTC day.

    make_user writes rows directly, around the counters, so `flask stats rebuild` recounts; the
    suspensions go through app.users.services.set_status, which keeps the counters itself.
    """
    now = utcnow()
    boss = make_user(
        email="boss@example.com",
        role=UserRole.SUPER_ADMIN,
        first_name="Bo",
        last_name="Ss",
        created_at=now - timedelta(days=400),
        last_sign_in_at=now - timedelta(days=300),
    )
    for i, (created, signed_in, role, status) in enumerate(PEOPLE):
        make_user(
            email=f"p{i}@example.com",
            role=role,
            status=status,
            created_at=now - timedelta(days=created),
            last_sign_in_at=None if signed_in is None else now - timedelta(days=signed_in),
        )
    to_suspend = [
        make_user(email=f"s{i}@example.com", created_at=now - timedelta(days=8 + i)) for i in range(SUSPENDED)
    ]
    result = runner.invoke(args=["stats", "rebuild"])
    assert result.exit_code == 0, result.output
    for user in to_suspend:
        set_status(user, UserStatus.SUSPENDED, actor=Actor.cli())
    db.session.commit()
    check = runner.invoke(args=["stats", "check"])
    assert check.exit_code == 0, check.output

    today = now.date()
    signups = Counter(today - timedelta(days=c) for c, _s, _r, _st in PEOPLE)
    signups.update(today - timedelta(days=8 + i) for i in range(SUSPENDED))
    signins = Counter(today - timedelta(days=s) for _c, s, _r, _st in PEOPLE if s is not None)
    return boss, signups, signins


def sign_in(page, auth, boss) -> None:
    page.goto(auth.link_for(boss))
    page.goto("/")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def bars(page, key: str) -> list[dict]:
    """Every bar of a chart: its day, its figure (from its <title>), its drawn height and fill."""
    return page.locator(f"svg.chart-{key} .chart-bars rect").evaluate_all(
        """rects => rects.map(r => {
             const [day, n] = r.querySelector('title').textContent.split(': ');
             return {day, n: Number(n.replace(/,/g, '')), height: r.getBBox().height, top: r.getBBox().y,
                     fill: getComputedStyle(r).fill};
           })"""
    )


def expect_bars(page, key: str, days: int, expected: Counter) -> None:
    expect(page.locator(f"svg.chart-{key} .chart-bars rect")).to_have_count(days)
    drawn = bars(page, key)
    end = date.fromisoformat(drawn[-1]["day"])  # today (UTC) for the server
    assert [b["day"] for b in drawn] == [(end - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    shown = {b["day"]: b["n"] for b in drawn}
    wanted = {(end - timedelta(days=i)).isoformat(): expected.get(end - timedelta(days=i), 0) for i in range(days)}
    assert shown == wanted, key
    for bar in drawn:
        assert (bar["height"] > 0) == (bar["n"] > 0), bar  # a bar wherever there are users, none elsewhere
        assert bar["fill"] not in ("none", "rgba(0, 0, 0, 0)"), bar
    tallest = max(drawn, key=lambda b: b["n"])
    assert all(b["height"] <= tallest["height"] + 0.01 for b in drawn)


# Elements under `root` whose right edge passes the viewport's, unless a scrolling box holds them.
OUTSIDE_THE_VIEWPORT = """root => {
  const width = document.documentElement.clientWidth;
  const scrolls = el => ['auto', 'scroll', 'hidden'].includes(getComputedStyle(el).overflowX);
  const held = el => { for (let p = el.parentElement; p; p = p.parentElement) if (scrolls(p)) return true; return false; };
  return [...document.querySelectorAll(`${root} *`)]
    .filter(el => el.getBoundingClientRect().right > width + 0.5 && !held(el))
    .map(el => `${el.tagName.toLowerCase()}.${el.getAttribute('class') || ''}#${el.id}`);
}"""


def expect_honest_ticks(page, key: str) -> None:
    """Every grid line sits where its label's value falls: (bottom - y) / (bottom - top) = value / top."""
    ticks = page.locator(f"svg.chart-{key} .chart-grid text").evaluate_all(
        "texts => texts.map(t => [t.textContent.trim(), Number(t.getAttribute('y'))])"
    )
    lines = page.locator(f"svg.chart-{key} .chart-grid line").evaluate_all(
        "lines => lines.map(l => Number(l.getAttribute('y1')))"
    )
    assert [y for _label, y in ticks] == lines
    values = [
        (float(label[:-1]) * {"k": 1e3, "M": 1e6}[label[-1]] if label[-1] in "kM" else float(label), y)
        for label, y in ticks
    ]
    (zero, bottom), (top, top_y) = values[0], values[-1]
    assert zero == 0 and top > 0 and len(values) >= 2, ticks
    for value, y in values:
        assert abs((bottom - y) / (bottom - top_y) - value / top) < 0.001, (key, ticks)
    # And a bar whose figure equals a tick reaches that tick's line.
    for bar in bars(page, key):
        for value, y in values:
            if bar["n"] == value and value:
                assert abs(bar["top"] - y) < 0.01, (key, bar, ticks)


def figure(page, selector: str) -> int:
    """The figure an element shows, checked against the exact number it carries."""
    element = page.locator(selector)
    shown = int(element.inner_text().replace(",", ""))
    assert shown == int(element.get_attribute("data-figure")), selector
    return shown


# --- What a super admin sees ---------------------------------------------------------------------


def test_the_overview_shows_the_figures_and_both_charts(page, auth, population, db):
    boss, signups, signins = population
    sign_in(page, auth, boss)

    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview")).to_have_attribute(
        "aria-current", "page"
    )
    live = len(PEOPLE) + SUSPENDED + 1
    assert figure(page, "#users-total") == live
    statuses = Counter(st for *_rest, st in PEOPLE) + Counter({UserStatus.SUSPENDED: SUSPENDED, UserStatus.ACTIVE: 1})
    for status in UserStatus:
        assert figure(page, f"#status-{status.value} .breakdown-figure") == statuses[status], status
    roles = Counter(r for _c, _s, r, _st in PEOPLE) + Counter({UserRole.USER: SUSPENDED, UserRole.SUPER_ADMIN: 1})
    for role in UserRole:
        assert figure(page, f"#role-{role.value} .breakdown-figure") == roles[role], role
    expect(page.locator("#status-suspended")).to_contain_text(f"{100 * SUSPENDED / live:.1f}%")

    # Both charts: an image each, named by its <title> and described by its <desc>.
    for key, title, expected in (
        ("signups", "Sign-ups per day", signups),
        ("signins", "Latest sign-ins per day", signins),
    ):
        chart = page.get_by_role("img", name=title)
        expect(chart).to_be_visible()
        expect(chart).to_have_attribute("aria-labelledby", f"{key}-title {key}-desc")
        total = sum(
            n
            for day, n in expected.items()
            if day > date.fromisoformat(bars(page, key)[-1]["day"]) - timedelta(days=30)
        )
        expect(page.locator(f"#chart-{key} .chart-total")).to_have_text(str(total))
        expect(page.locator(f"#{key}-desc")).to_contain_text(f"{total:,} ")
        expect_bars(page, key, 30, expected)
        expect_honest_ticks(page, key)
    expect(page.locator("#range-30")).to_have_attribute("aria-current", "true")

    # The same data as a table, for whoever cannot see the bars.
    page.get_by_text("Sign-ups per day: every day").click()
    table = page.locator("#chart-signups table")
    expect(table.locator("tbody tr")).to_have_count(30)
    today = date.fromisoformat(bars(page, "signups")[-1]["day"])
    newest = table.locator("tbody tr").first
    expect(newest.get_by_role("rowheader")).to_have_text(today.isoformat())
    expect(newest.get_by_role("cell")).to_have_text(str(signups[today]))


def test_the_range_switch_swaps_only_the_charts_and_keeps_the_url(page, auth, population, browser, live_server):
    boss, signups, signins = population
    sign_in(page, auth, boss)
    expect_bars(page, "signups", 30, signups)
    # Marks on nodes outside and inside #activity: a swap keeps the first, a page load loses both.
    page.evaluate("""() => {
        document.getElementById('users-total').dataset.kept = 'yes';
        document.getElementById('activity').dataset.kept = 'yes';
        document.querySelector('#chart-signups svg').dataset.old = 'yes';
    }""")

    page.get_by_role("link", name="7 days").click()
    expect(page).to_have_url(re.compile(r"/\?days=7$"))
    expect(page.locator("svg.chart-signups .chart-bars rect")).to_have_count(7)
    expect(page.locator("#range-7")).to_have_attribute("aria-current", "true")
    expect(page.locator("#range-30")).not_to_have_attribute("aria-current", "true")
    assert page.locator("#users-total").get_attribute("data-kept") == "yes"  # the figures stayed
    assert page.locator("#activity").get_attribute("data-kept") == "yes"  # its content was swapped
    expect(page.locator("#chart-signups svg[data-old]")).to_have_count(0)  # the charts are new
    expect_bars(page, "signups", 7, signups)
    expect_bars(page, "signins", 7, signins)
    expect(page.get_by_role("img", name="Sign-ups per day")).to_be_visible()

    page.get_by_role("link", name="90 days").click()
    expect(page).to_have_url(re.compile(r"/\?days=90$"))
    expect(page.locator("svg.chart-signins .chart-bars rect")).to_have_count(90)
    expect_bars(page, "signups", 90, signups)
    expect_bars(page, "signins", 90, signins)
    assert page.locator("#users-total").get_attribute("data-kept") == "yes"

    # Back goes through the ranges the way they came.
    page.go_back()
    expect(page).to_have_url(re.compile(r"/\?days=7$"))
    expect(page.locator("svg.chart-signups .chart-bars rect")).to_have_count(7)
    expect(page.locator("#range-7")).to_have_attribute("aria-current", "true")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("svg.chart-signups .chart-bars rect")).to_have_count(30)
    expect(page.locator("#range-30")).to_have_attribute("aria-current", "true")

    # The pushed URL works on its own, without JavaScript.
    context = browser.new_context(
        base_url=live_server, storage_state=page.context.storage_state(), java_script_enabled=False
    )
    try:
        plain = context.new_page()
        plain.goto("/?days=7")
        expect(plain.locator("svg.chart-signups .chart-bars rect")).to_have_count(7)
        expect(plain.locator("svg.chart-signins .chart-bars rect")).to_have_count(7)
        expect(plain.locator("#range-7")).to_have_attribute("aria-current", "true")
        expect(plain.locator("#users-total")).to_have_text(str(len(PEOPLE) + SUSPENDED + 1))
        plain.get_by_role("link", name="90 days").click()  # a plain link, too
        expect(plain).to_have_url(re.compile(r"/\?days=90$"))
        expect(plain.locator("svg.chart-signups .chart-bars rect")).to_have_count(90)
    finally:
        context.close()


@pytest.mark.parametrize(("kind", "key", "param"), [("status", "suspended", "status"), ("role", "admin", "role")])
def test_a_figure_leads_to_the_list_it_counts(page, auth, population, kind, key, param):
    boss, _signups, _signins = population
    sign_in(page, auth, boss)
    shown = figure(page, f"#{kind}-{key} .breakdown-figure")
    assert shown == (SUSPENDED if key == "suspended" else 2)

    page.locator(f"#{kind}-{key}").click()
    expect(page).to_have_url(re.compile(rf"/users\?{param}={key}$"))
    expect(page.locator("table.users-table tbody tr")).to_have_count(shown)
    expect(page.locator(".result-count")).to_have_text(f"{shown} users")
    expect(
        page.get_by_role("group", name=param.capitalize()).get_by_label(key.replace("_", " "), exact=True)
    ).to_be_checked()


def test_the_total_leads_to_every_user(page, auth, population):
    boss, _signups, _signins = population
    sign_in(page, auth, boss)
    total = figure(page, "#users-total")
    page.locator("#users-total").click()
    expect(page).to_have_url(re.compile(r"/users$"))
    expect(page.locator(".result-count")).to_have_text(f"{total} users")


# --- Accessibility -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(VIEWPORTS))
def test_the_overview_has_no_serious_violations(browser, live_server, auth, population, scheme, width):
    boss, _signups, _signins = population
    context = browser.new_context(
        base_url=live_server, color_scheme=scheme, viewport=VIEWPORTS[width], reduced_motion="reduce"
    )
    page = context.new_page()
    try:
        sign_in(page, auth, boss)
        page.wait_for_load_state("networkidle")
        found = {"/": serious_violations(page)}
        # Nothing of the overview sticks out sideways, on a phone either (wide tables scroll in their box).
        assert page.evaluate(OUTSIDE_THE_VIEWPORT, "main") == []
        # The range links side by side, apart, inside the section's width.
        section = page.locator("#activity").bounding_box()
        links = [page.locator(f"#range-{n}").bounding_box() for n in (7, 30, 90)]
        for left, right in itertools.pairwise(links):
            assert left["x"] + left["width"] <= right["x"], links
        assert (
            links[0]["x"] >= section["x"]
            and links[-1]["x"] + links[-1]["width"] <= section["x"] + section["width"] + 0.5
        )
        # The chart data tables, opened, and the charts htmx swaps in.
        for summary in page.locator(".chart-data summary").all():
            summary.click()
        found["/ (tables open)"] = serious_violations(page)
        page.get_by_role("link", name="7 days").click()
        expect(page.locator("svg.chart-signups .chart-bars rect")).to_have_count(7)
        page.wait_for_load_state("networkidle")
        found["/?days=7 (swapped)"] = serious_violations(page)
    finally:
        context.close()
    assert {url: v for url, v in found.items() if v} == {}


# --- Screenshots for the README (kept with SCREENSHOTS=1) --------------------------------------------------


def test_screenshots_of_the_overview(browser, live_server, auth, runner, db, tmp_path):
    """Both colour schemes drawn at a realistic size; kept in docs/screenshots when SCREENSHOTS=1."""
    folder = SCREENSHOTS if os.environ.get("SCREENSHOTS") else tmp_path
    result = runner.invoke(args=["demo", "--users", "400"])
    assert result.exit_code == 0, result.output
    boss = db.session.scalars(
        sa.select(User)
        .where(User.role == UserRole.SUPER_ADMIN, User.status == UserStatus.ACTIVE)
        .order_by(User.clerk_id)
        .limit(1)
    ).one()
    context = browser.new_context(base_url=live_server, viewport=VIEWPORTS["desktop"], reduced_motion="reduce")
    page = context.new_page()
    try:
        sign_in(page, auth, boss)  # once, so both pictures show the same recent changes
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.set_viewport_size(VIEWPORTS["desktop"])
            page.goto("/")
            page.wait_for_load_state("networkidle")
            expect(page.locator("svg.chart rect").first).to_be_visible()
            path = folder / f"overview-{scheme}.png"
            page.screenshot(path=path, full_page=True)
            assert path.stat().st_size > 20_000
            if os.environ.get("SCREENSHOTS_PHONE"):  # a directory for a look at phone width, not kept in docs/
                page.set_viewport_size(VIEWPORTS["phone"])
                for part in ("overview-cards", "overview-activity"):
                    page.locator(f".{part}").first.screenshot(
                        path=Path(os.environ["SCREENSHOTS_PHONE"]) / f"{part}-{scheme}-phone.png"
                    )
    finally:
        context.close()
