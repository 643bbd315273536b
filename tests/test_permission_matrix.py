"""Issue 16: the whole permission matrix over HTTP, group by group and endpoint by endpoint.

Three staff groups (Support, Read-only, Engineer) and two baselines (the built-in Administrators,
what a plain admin could do before permissions were data, and a super admin) call every endpoint
of tests/matrix_endpoints.py as an admin whose only group is the one under test. Allowed means the
answer the endpoint gives when it works (a 409 "Clerk is not connected" is allowed: it is not a
403); refused means exactly 403, the page or fragment naming the missing permission and linking to
/staff/me, and every table of the database as it was before the request. Then the pages: each
offers only what the person may do.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from flask import g

from app.audit.services import Actor
from app.models import StaffGroupMember, User, UserRole, UserStatus
from app.permissions import ALL
from app.records.staff import builtin_group, groups_of
from app.staff.services import create_group
from tests.conftest import HX, csrf_token_from
from tests.matrix_endpoints import EXEMPT_ENDPOINTS, EXEMPT_PREFIXES, ROWS, Row, Targets, edit_form, make_targets

GROUPS = {
    "Support": frozenset({"users.view", "users.invite", "users.suspend", "users.unlock", "users.sessions"}),
    "Read-only": frozenset({"users.view", "audit.view"}),
    "Engineer": frozenset({"users.view", "webhooks.replay", "clerk.retry"}),
}
ADMINISTRATORS = "Administrators"
SUPER_ADMIN = "super admin"
# What the role `admin` allowed before staff groups (DESIGN §9): all but these four, and deleting
# organizations, which came after (a new permission is granted by a super admin, never by default).
ADMINISTRATORS_HOLD = ALL - {
    "users.delete",
    "roles.manage",
    "webhooks.replay",
    "permissions.manage",
    "organizations.delete",
}
HELD = {**GROUPS, ADMINISTRATORS: ADMINISTRATORS_HOLD, SUPER_ADMIN: ALL}


def slug(group: str) -> str:
    return group.lower().replace(" ", "-")


CASES = [pytest.param(group, row, id=f"{slug(group)}:{row.name}") for group in HELD for row in ROWS]


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def groups(db) -> dict[str, int]:
    made = {
        name: create_group(name, description=f"The {name} team.", permissions=sorted(held), actor=Actor.cli())
        for name, held in GROUPS.items()
    }
    db.session.commit()
    return {name: group.id for name, group in made.items()}


@pytest.fixture
def targets(make_user) -> Targets:
    return make_targets(make_user)


def staff_member(make_user, db, groups: dict[str, int], group: str, email: str = "staff@staff.example") -> User:
    """An admin whose only group is `group` (or one in the built-in group, or a super admin)."""
    if group == SUPER_ADMIN:
        return make_user(email=email, role=UserRole.SUPER_ADMIN)
    person = make_user(email=email, role=UserRole.ADMIN)  # joins Administrators, as the app makes admins
    if group != ADMINISTRATORS:
        db.session.execute(sa.delete(StaffGroupMember).where(StaffGroupMember.user_id == person.id))
        db.session.add(StaffGroupMember(group_id=groups[group], user_id=person.id))
        db.session.commit()
    assert [each.name for each in groups_of(person)] == [group]
    return person


def sign_in_as(auth, client, make_user, db, groups, group: str, **kwargs) -> tuple[User, str]:
    """Sign `client` in as a member of `group`: they, and the CSRF token of their session."""
    person = auth.sign_in(staff_member(make_user, db, groups, group, **kwargs))
    # The tests' app context outlives requests, and Flask-WTF keeps the token it made in `g`: the
    # previous session's would be handed out again.
    g.pop("csrf_token", None)
    return person, csrf_token_from(client.get("/staff/me").get_data(as_text=True))


def snapshot(db) -> dict[str, list[tuple]]:
    """Every row of every table (a fresh read: SQLite's open read transaction would hide the request's writes)."""
    db.session.rollback()
    return {
        table.name: sorted((tuple(row) for row in db.session.execute(table.select())), key=repr)
        for table in db.metadata.sorted_tables
    }


def changed_tables(before: dict, after: dict) -> dict[str, dict]:
    return {
        name: {
            "gone": [row for row in before[name] if row not in after[name]],
            "new": [row for row in after[name] if row not in before[name]],
        }
        for name in before
        if before[name] != after[name]
    }


def send(client, row: Row, targets: Targets, token: str):
    url = row.url(targets)
    headers = HX if row.htmx else None
    if row.method == "GET":
        return client.get(url, headers=headers)
    return client.post(url, data={"csrf_token": token, **row.data(targets)}, headers=headers)


def assert_refused(response, permission: str, before: dict, db, what: str = "", *, page: bool | None = None) -> None:
    """Exactly 403, naming `permission` and linking to what one may do, with the database as `before`.

    `page`: a whole page (True) or an htmx fragment (False); None, either."""
    html = response.get_data(as_text=True)
    assert response.status_code == 403, f"{what}: expected 403, got {response.status_code}: {html[:800]}"
    if page is not None:
        assert ("<html" in html) == page, f"{what}: the refusal is not a {'page' if page else 'fragment'}"
    assert permission in html, f"{what}: the refusal does not name {permission}: {html[:800]}"
    assert 'href="/staff/me"' in html, f"{what}: the refusal does not link to what one may do"
    changed = changed_tables(before, snapshot(db))
    assert not changed, f"{what}: refused, yet the database changed: {changed}"


# --- the table covers the app --------------------------------------------------------------------


def test_every_endpoint_of_the_app_has_a_row(app):
    """A new endpoint without a row here fails: say what it needs by adding one to tests/matrix_endpoints.py."""
    covered = {(row.endpoint, row.method) for row in ROWS}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in EXEMPT_ENDPOINTS or rule.endpoint.startswith(EXEMPT_PREFIXES):
            continue
        served |= {(rule.endpoint, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert sorted(served - covered) == [], "endpoints without a row in tests/matrix_endpoints.py"
    assert sorted(covered - served) == [], "rows for endpoints the app does not have"


def test_each_row_calls_the_endpoint_it_names(app, targets):
    targets.me = targets.staff_in_group
    adapter = app.url_map.bind("localhost")
    for row in ROWS:
        endpoint, _ = adapter.match(urlsplit(row.url(targets)).path, method=row.method)
        assert endpoint == row.endpoint, row.name


def test_the_built_in_group_holds_what_an_admin_could_do_before(db):
    assert set(builtin_group().permission_names) == ADMINISTRATORS_HOLD


# --- the matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("group", "row"), CASES)
def test_matrix(group, row, client, auth, make_user, db, groups, targets):
    held = HELD[group]
    person, token = sign_in_as(auth, client, make_user, db, groups, group)
    targets.me = person.id
    before = snapshot(db)

    response = send(client, row, targets, token)

    what = f"{group} {row.method} {row.url(targets)}"
    if row.permission is None or row.permission in held:
        body = response.get_data(as_text=True)
        assert response.status_code in row.ok, f"{what}: allowed, expected {sorted(row.ok)}: {body[:800]}"
        if response.status_code == 409:  # allowed, but Clerk is needed and not connected
            assert "not connected" in body, f"{what}: a 409 for another reason: {body[:800]}"
        if response.status_code == 302:
            assert not urlsplit(response.location).path.startswith("/auth/"), f"{what}: sent to sign in"
        changed = changed_tables(before, snapshot(db))
        assert bool(changed) == row.writes, f"{what}: allowed, {'wrote' if changed else 'wrote nothing'}: {changed}"
        if row.check is not None:
            row.check(targets, held)
    else:
        assert_refused(response, row.permission, before, db, what, page=not row.htmx)


# --- issue 16, "Checked by" ----------------------------------------------------------------------


def test_a_support_member_suspends_and_invites_but_may_not_export_edit_or_change_roles(
    client, auth, make_user, db, groups, targets
):
    _, token = sign_in_as(auth, client, make_user, db, groups, "Support")

    suspended = client.post(f"/users/{targets.user}/status", data={"csrf_token": token, "status": "suspended"})
    invited = client.post("/users", data={"csrf_token": token, "email": "joiner@example.com", "role": "user"})

    assert suspended.status_code == 302 and invited.status_code == 302
    db.session.rollback()
    assert db.session.get(User, targets.user).status == UserStatus.SUSPENDED
    joiner = db.session.scalar(sa.select(User).where(User.email == "joiner@example.com"))
    assert (joiner.status, joiner.role) == (UserStatus.INVITED, UserRole.USER)

    before = snapshot(db)
    assert_refused(client.get("/users/export.csv"), "users.export", before, db, "export")
    version = db.session.get(User, targets.user).version
    form = edit_form(targets, version=str(version), status="suspended")
    edit = client.post(f"/users/{targets.user}/edit", data={"csrf_token": token, **form})
    assert_refused(edit, "users.edit", before, db, "edit")
    role = client.post(
        f"/users/{targets.user}/edit",
        data={"csrf_token": token, **form, "first_name": "Before", "role": "admin"},
    )
    assert role.status_code == 403, "a role change"
    assert "roles.manage" in role.text or "users.edit" in role.text, role.text[:800]
    assert not changed_tables(before, snapshot(db))
    # Nor an invitation that would make an admin: the role is not Support's to give, so not taken.
    sneaky = client.post("/users", data={"csrf_token": token, "email": "sneaky@example.com", "role": "admin"})
    assert sneaky.status_code == 302
    db.session.rollback()
    assert db.session.scalar(sa.select(User.role).where(User.email == "sneaky@example.com")) == UserRole.USER
    assert db.session.get(User, targets.user).role == UserRole.USER


def test_support_may_bulk_suspend_and_read_only_may_not(client, auth, make_user, db, groups, targets):
    ids = [targets.user, targets.other]
    _, token = sign_in_as(auth, client, make_user, db, groups, "Read-only", email="reader@staff.example")
    before = snapshot(db)
    for confirm in ({}, {"confirm": "y"}):
        data = {"csrf_token": token, "action": "suspended", "ids": ids, **confirm}
        assert_refused(client.post("/users/bulk", data=data, headers=HX), "users.suspend", before, db, "bulk")
        assert_refused(client.post("/users/bulk", data=data), "users.suspend", before, db, "bulk (no htmx)")

    _, token = sign_in_as(auth, client, make_user, db, groups, "Support", email="support@staff.example")
    data = {"csrf_token": token, "action": "suspended", "ids": ids, "confirm": "y"}
    html = client.post("/users/bulk", data=data, headers=HX).get_data(as_text=True)
    assert "2 of 2 selected users changed" in html
    db.session.rollback()
    assert {db.session.get(User, i).status for i in ids} == {UserStatus.SUSPENDED}


# --- pages offer only what the person may do -----------------------------------------------------


def offers_on_pages(client, targets: Targets) -> dict[str, tuple[str, bool]]:
    """Each offer the pages may make: (the permission it needs, whether it is on the page)."""
    t = targets
    detail = client.get(f"/users/{t.user}").get_data(as_text=True)
    invited = client.get(f"/users/{t.invited}").get_data(as_text=True)
    listing = client.get("/users").get_data(as_text=True)
    overview = client.get("/").get_data(as_text=True)
    count = client.get("/users/count", headers=HX).get_data(as_text=True)
    webhook = client.get(f"/webhooks/{t.stale_event}").get_data(as_text=True)
    organization = client.get(f"/organizations/{t.organization}").get_data(as_text=True)
    return {
        "detail: Edit": ("users.edit", f'href="/users/{t.user}/edit"' in detail),
        "detail: Suspend": ("users.suspend", f'aria-label="Suspend {t.user_email}"' in detail),
        "detail: Delete…": ("users.delete", f'href="/users/{t.user}/delete"' in detail),
        "detail: key-value add form": ("user_data.edit", 'id="data-add"' in detail),
        "detail: key-value Edit": ("user_data.edit", f"/users/{t.user}/data/{t.data_id}/edit" in detail),
        "detail: key-value Delete": ("user_data.edit", f"/users/{t.user}/data/{t.data_id}/delete" in detail),
        "detail: metadata Edit": ("users.edit", f'action="/users/{t.user}/metadata/public"' in detail),
        "detail: Clerk call Retry": ("clerk.retry", f'action="/clerk/calls/{t.call}/retry"' in detail),
        "invited: Revoke invitation": ("users.invite", f'action="/users/{t.invited}/invitation/revoke"' in invited),
        "list: Invite link": ("users.invite", 'href="/users/new"' in listing),
        "list: Export CSV link": ("users.export", 'id="export-link"' in listing),
        "count: Export CSV link": ("users.export", "/users/export.csv" in count),
        "list: bulk actions": ("users.suspend", 'id="bulk-form"' in listing),
        "list: row Suspend": ("users.suspend", f'aria-label="Suspend {t.user_email}"' in listing),
        "navigation: Audit": ("audit.view", 'href="/audit"' in overview),
        "navigation: Staff": ("permissions.manage", 'href="/staff"' in overview),
        "webhook: Apply anyway": ("webhooks.replay", f'action="/webhooks/{t.stale_event}/replay"' in webhook),
        "organization: rename": ("organizations.manage", 'id="rename"' in organization),
        "organization: add member": ("organizations.manage", 'id="member-add"' in organization),
        "organization: Delete…": (
            "organizations.delete",
            f'href="/organizations/{t.organization}/delete"' in organization,
        ),
    }


@pytest.mark.parametrize("group", list(HELD), ids=slug)
def test_pages_offer_only_what_the_person_may_do(group, client, auth, make_user, db, groups, targets):
    held = HELD[group]
    sign_in_as(auth, client, make_user, db, groups, group)
    wrong = [
        f"{offer} ({permission}): {'shown' if shown else 'missing'}"
        for offer, (permission, shown) in offers_on_pages(client, targets).items()
        if shown != (permission in held)
    ]
    assert wrong == []
