"""The organizations pages: the list (search, sorts, keyset pages, htmx), an organization's page
(fields, metadata, members paged and searched, invitations, history, calls to Clerk), its actions
(rename, add a member, change a role, remove, invite, revoke), the user's organizations, the
overview's figures and the audit trail's links. Each htmx endpoint as a page and as a fragment."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.models import (
    AuditEvent,
    ClerkCall,
    Membership,
    Organization,
    OrganizationInvitation,
    UserRole,
    utcnow,
)
from tests.conftest import HX, csrf_token_from, form_values
from tests.org_factories import make_invitation, make_membership, make_organization


def html_of(response) -> str:
    return response.get_data(as_text=True)


def fresh(db) -> None:
    db.session.rollback()  # SQLite: the test's read transaction would not see the server's writes


def assert_page(response, status: int = 200) -> str:
    assert response.status_code == status, html_of(response)[:2000]
    assert "HX-Request" in response.headers.get("Vary", "")
    assert response.headers["Cache-Control"] == "no-store"
    html = html_of(response)
    assert "<html" in html
    return html


def assert_fragment(response, status: int = 200) -> str:
    assert response.status_code == status, html_of(response)[:2000]
    assert "HX-Request" in response.headers.get("Vary", "")
    assert response.headers["Cache-Control"] == "no-store"
    html = html_of(response)
    assert "<html" not in html
    return html


@pytest.fixture
def acme(db):
    return make_organization(
        name="Acme Corp", slug="acme-corp", public_metadata='{"plan": "gold"}', private_metadata='{"seats": 10}'
    )


@pytest.fixture
def token_for(client):
    def read(url: str) -> str:
        return csrf_token_from(html_of(client.get(url)))

    return read


# --- the list ----------------------------------------------------------------------------------------


def test_the_list_shows_live_organizations_by_name_with_the_exact_total(client, staff, db):
    make_organization(name="Zeta", slug="zeta")
    make_organization(name="alpha", slug="alpha")
    gone = make_organization(name="Gone Inc", slug="gone")
    gone.deleted_at = utcnow()
    db.session.commit()
    html = assert_page(client.get("/organizations"))
    assert "<h1>Organizations</h1>" in html
    assert html.find("alpha") < html.find("Zeta")
    assert "Gone Inc" not in html
    # The counters are kept by the records: 3 made, the deletion here was not through them.
    assert re.search(r'id="organizations-total" data-figure="\d+"', html)
    assert 'aria-current="page"' in html and ">Organizations</a>" in html


def test_the_list_as_a_fragment_for_htmx(client, staff, acme):
    html = assert_fragment(client.get("/organizations?q=acme", headers=HX))
    assert "Acme Corp" in html and "<table" in html
    boosted = client.get("/organizations", headers={**HX, "HX-Boosted": "true"})
    assert "<html" in html_of(boosted)


@pytest.mark.parametrize(
    ("q", "found"),
    [("acme", True), ("ACME-C", True), ("me co", True), ("ac", True), ("a", True), ("cm", False), ("zz", False)],
)
def test_search_by_name_and_slug_substrings_or_prefixes(client, staff, acme, q, found):
    make_organization(name="Other", slug="other")
    html = html_of(client.get("/organizations", query_string={"q": q}))
    assert ("Acme Corp" in html) is found
    if q in ("acme", "ac"):
        assert ">Other<" not in html


@pytest.mark.parametrize("window", [2, 1000])
@pytest.mark.parametrize("sort", ["name", "-created_at", "-members"])
def test_search_pages_hold_every_match_once_in_order(client, staff, monkeypatch, window, sort):
    """A common term fills a page from the window of rows; a rare one comes from the search index
    (app/pagination.py's search_rows; on SQLite the plain query): the same pages either way."""
    from app.organizations import queries

    monkeypatch.setattr(queries, "SEARCH_WINDOW", window)
    now = utcnow()
    for i in range(36):
        word = "zebra" if i % 3 == 0 else "other"
        make_organization(name=f"{word} {i:02d}", slug=f"{word}-{i:02d}", created_at=now - timedelta(minutes=i))

    def names(html: str) -> list[str]:
        return re.findall(r">(zebra \d\d)<", html)

    expected = names(html_of(client.get("/organizations", query_string={"q": "zebra", "sort": sort, "per_page": 100})))
    assert len(expected) == 12  # two pages of 10
    seen, url = [], f"/organizations?q=zebra&sort={sort}&per_page=10"
    while url:
        html = html_of(client.get(url, headers=HX))
        seen += names(html)
        nxt = re.search(r'href="(/organizations\?after=[^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert seen == expected


def test_a_search_for_like_wildcards_matches_them_literally(client, staff):
    make_organization(name="100% Pure", slug="pure")
    make_organization(name="Plain", slug="plain")
    html = html_of(client.get("/organizations", query_string={"q": "0% p"}))
    assert "100% Pure" in html and ">Plain<" not in html
    assert "100% Pure" not in html_of(client.get("/organizations", query_string={"q": "0_ p"}))
    assert ">Plain<" not in html_of(client.get("/organizations", query_string={"q": "_"}))


@pytest.mark.parametrize("sort", ["name", "-name", "created_at", "-created_at", "members", "-members"])
def test_each_sort_walks_every_page_once_in_order(client, staff, db, make_user, sort):
    start = utcnow() - timedelta(days=10)
    people = [make_user() for _ in range(3)]
    organizations = []
    for i in range(7):
        organization = make_organization(
            name=f"Org {chr(ord('a') + (i * 3) % 7)}", created_at=start + timedelta(hours=i)
        )
        for person in people[: i % 4]:
            make_membership(organization, person)
        organizations.append(organization)
    key = {
        "name": lambda o: (o.name.lower(), o.id),
        "created_at": lambda o: (o.created_at, o.id),
        "members": lambda o: (o.members_count, o.id),
    }[sort.lstrip("-")]
    db.session.expire_all()
    expected = [o.id for o in sorted(organizations, key=key, reverse=sort.startswith("-"))]
    seen, pages, url = [], [], f"/organizations?sort={sort}&per_page=10"
    # per_page 10 of 7 rows is one page: use the smallest choice and more rows instead.
    url = f"/organizations?sort={sort}&per_page=10"
    html = html_of(client.get(url, headers=HX))
    assert re.findall(r'id="organization-([^"]+)"', html) == expected
    # Pages of 2: a cursor walks forwards, and back again.
    for extra in range(6):
        make_organization(name=f"Org z{extra}", created_at=start + timedelta(hours=20 + extra))
    db.session.expire_all()
    everything = sorted(db.session.scalars(sa.select(Organization)).all(), key=key, reverse=sort.startswith("-"))
    url = f"/organizations?sort={sort}&per_page=10"
    while url:
        html = html_of(client.get(url, headers=HX))
        pages.append(html)
        seen += re.findall(r'id="organization-([^"]+)"', html)
        links = re.findall(r'href="(/organizations\?after=[^"]+)"', html)
        url = links[0].replace("&amp;", "&") if links else None
    assert seen == [o.id for o in everything]
    assert len(pages) == 2
    back = re.findall(r'href="(/organizations\?before=[^"]+)"', pages[-1])[0].replace("&amp;", "&")
    assert re.findall(r'id="organization-([^"]+)"', html_of(client.get(back, headers=HX))) == seen[:10]


@pytest.mark.parametrize(
    "junk",
    [
        "after=%%%",
        "after=bm90LWpzb24",
        "before=WzEsMl0",
        "sort=nope",
        "per_page=7",
        "per_page=x",
        "after=" + "A" * 5000,
    ],
)
def test_malformed_parameters_fall_back_to_defaults(client, staff, acme, junk):
    html = assert_page(client.get(f"/organizations?{junk}"))
    assert "Acme Corp" in html


def test_a_cursor_of_another_sort_means_the_first_page(client, staff, db):
    for i in range(12):
        make_organization(name=f"Org {i:02d}")
    html = html_of(client.get("/organizations?per_page=10", headers=HX))
    after = re.findall(r"after=([^&\"]+)", html)[0]
    page = html_of(client.get(f"/organizations?per_page=10&sort=-members&after={after}", headers=HX))
    assert len(re.findall(r'id="organization-', page)) == 10


def test_hostile_names_are_shown_as_text(client, staff, db):
    organization = make_organization(name="<script>alert(1)</script>\u202eevil", slug="x")
    html = html_of(client.get("/organizations"))
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\u202eevil" in html
    detail = html_of(client.get(f"/organizations/{organization.id}"))
    assert "<script>alert(1)" not in detail
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;\\u202eevil</h1>" in detail
    assert "\u202e" not in detail.replace('value="&lt;script&gt;alert(1)&lt;/script&gt;\u202eevil"', "")


def test_the_pages_need_a_signed_in_staff_member(client, acme):
    assert client.get("/organizations").status_code == 302
    assert client.get(f"/organizations/{acme.id}").status_code == 302


# --- one organization -------------------------------------------------------------------------------


def test_the_page_shows_fields_metadata_members_invitations_and_history(client, staff, db, acme, make_user):
    ada = make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace")
    make_membership(acme, ada, "org:admin")
    make_membership(acme, None, identifier="waiting@example.com")
    make_invitation(acme, "new@example.com")
    make_invitation(acme, "late@example.com", expires_at=utcnow() - timedelta(days=1))
    make_invitation(acme, "no@example.com", status="revoked")
    html = assert_page(client.get(f"/organizations/{acme.id}"))
    assert "<h1>Acme Corp</h1>" in html and "<code>acme-corp</code>" in html
    assert "&#34;plan&#34;: &#34;gold&#34;" in html or '"plan": "gold"' in html
    assert "&#34;seats&#34;: 10" in html or '"seats": 10' in html
    assert "ada@example.com" in html and "Ada Lovelace" in html
    assert re.search(r'<option value="org:admin" selected>Admin</option>', html)
    assert "waiting@example.com" in html and "waiting for this user to arrive from Clerk" in html
    invitations = html[html.index('id="invitations"') : html.index('id="clerk"')]
    assert "new@example.com" in invitations and "late@example.com" in invitations
    assert "badge-invitation-expired" in invitations and "no@example.com" not in invitations
    assert "Member added" in html[html.index('id="history"') :]
    assert f"/audit?organization={acme.id}" in html
    assert "Clerk is not connected" in html


def test_unknown_ids_are_404(client, staff, acme, make_user):
    assert client.get("/organizations/nope").status_code == 404
    other = make_organization(name="Other")
    membership = make_membership(other, make_user())
    assert client.get(f"/organizations/{acme.id}/members/{membership.id}/row").status_code == 404
    assert client.get(f"/organizations/{acme.id}/members/nope/delete").status_code == 404
    invitation = make_invitation(other, "x@example.com")
    token = csrf_token_from(html_of(client.get(f"/organizations/{acme.id}")))
    answer = client.post(f"/organizations/{acme.id}/invitations/{invitation.id}/revoke", data={"csrf_token": token})
    assert answer.status_code == 404


def test_members_are_paged_newest_first_and_searched(client, staff, db, acme, make_user):
    start = utcnow() - timedelta(days=5)
    people = [
        make_user(email=f"m{i:02d}@example.com", first_name="Grace" if i == 3 else "Plain", last_name=f"N{i:02d}")
        for i in range(30)
    ]
    for i, person in enumerate(people):
        make_membership(acme, person, created_at=start + timedelta(minutes=i))
    html = assert_page(client.get(f"/organizations/{acme.id}"))
    html = html[html.index('id="members"') : html.index('id="invitations"')]
    rows = re.findall(r"m(\d\d)@example.com</a>", html)
    assert rows == [f"{i:02d}" for i in range(29, 4, -1)]  # 25 newest
    nxt = re.findall(rf'href="(/organizations/{acme.id}\?after=[^"]+)"', html)[0].replace("&amp;", "&")
    second = assert_fragment(client.get(nxt, headers=HX))
    assert re.findall(r"m(\d\d)@example.com</a>", second) == ["04", "03", "02", "01", "00"]
    assert "<form" in second and 'id="members-section"' not in second  # the table alone
    back = re.findall(r'href="([^"]+before=[^"]+)"', second)[0].replace("&amp;", "&")
    assert re.findall(r"m(\d\d)@example.com</a>", html_of(client.get(back, headers=HX))) == rows

    searches = (
        ("grace", ["03"]),
        ("m1", [f"{i:02d}" for i in range(19, 9, -1)]),
        ("n2", None),
        ("M07@Example", ["07"]),  # an email, from its start
        ("@example.com", [f"{i:02d}" for i in range(29, 4, -1)]),  # a domain, anywhere
        ("07@example", []),
    )
    for query, expected in searches:
        found = html_of(client.get(f"/organizations/{acme.id}", query_string={"mq": query}, headers=HX))
        if expected is not None:
            assert re.findall(r"m(\d\d)@example.com</a>", found) == expected
    page = assert_page(client.get(f"/organizations/{acme.id}?mq=grace"))
    members = page[page.index('id="members"') : page.index('id="invitations"')]
    assert 'value="grace"' in page and "m03@example.com" in members and "m04@example.com" not in members
    assert "No member matches" in html_of(client.get(f"/organizations/{acme.id}?mq=zzzz", headers=HX))


def test_a_waiting_member_is_found_by_identifier(client, staff, acme):
    make_membership(acme, None, identifier="lin@example.com")
    html = html_of(client.get(f"/organizations/{acme.id}?mq=lin@", headers=HX))
    assert "lin@example.com" in html


def test_the_members_page_is_a_few_queries_whatever_its_size(client, staff, acme, make_user, count_queries):
    for _ in range(30):
        make_membership(acme, make_user())
    with count_queries() as statements:
        assert client.get(f"/organizations/{acme.id}", headers=HX).status_code == 200
    # the signed-in user, the organization, its open calls, the members with their users
    assert len(statements) <= 6, statements


def test_a_deleted_organization_is_read_only(client, staff, db, acme, make_user):
    membership = make_membership(acme, make_user(email="ada@example.com"))
    invitation = make_invitation(acme, "new@example.com")
    token = csrf_token_from(html_of(client.get(f"/organizations/{acme.id}")))
    acme.deleted_at = utcnow()
    db.session.commit()
    html = assert_page(client.get(f"/organizations/{acme.id}"))
    assert "read-only" in html
    assert "Add a member" not in html and "Rename" not in html and "Remove…" not in html and ">Revoke<" not in html
    base = f"/organizations/{acme.id}"
    for url, data in (
        (base, {"name": "New", "slug": "new", "version": "1"}),
        (f"{base}/members", {"user": "ada@example.com", "role": "org:member"}),
        (f"{base}/members/{membership.id}/role", {"role": "org:admin"}),
        (f"{base}/members/{membership.id}/delete", {}),
        (f"{base}/invitations", {"email": "x@example.com", "role": "org:member"}),
        (f"{base}/invitations/{invitation.id}/revoke", {}),
    ):
        assert client.post(url, data={"csrf_token": token, **data}).status_code == 409, url
    fresh(db)
    assert db.session.get(Organization, acme.id).name == "Acme Corp"
    assert db.session.get(Membership, membership.id).deleted_at is None


# --- rename -----------------------------------------------------------------------------------------


def test_rename_saves_and_audits(client, staff, db, acme):
    html = html_of(client.get(f"/organizations/{acme.id}"))
    values = form_values(html, f"/organizations/{acme.id}")
    assert values["name"] == "Acme Corp" and values["slug"] == "acme-corp"
    answer = client.post(f"/organizations/{acme.id}", data={**values, "name": "Acme Inc", "slug": "acme-inc"})
    assert answer.status_code == 302
    page = html_of(client.get(answer.headers["Location"]))
    assert "<h1>Acme Inc</h1>" in page and "Saved Acme Inc." in page
    fresh(db)
    organization = db.session.get(Organization, acme.id)
    assert (organization.name, organization.slug) == ("Acme Inc", "acme-inc")
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "organization.rename")).one()
    assert event.organization_id == acme.id and event.actor_id == staff.id


@pytest.mark.parametrize(
    ("name", "slug", "field", "message"),
    [
        ("A", "acme-corp", "name", "between 2 and 256"),
        ("x" * 257, "acme-corp", "name", "between 2 and 256"),
        ("Evil\u202eName", "acme-corp", "name", "control or text-direction"),
        ("Acme Corp", "Acme Corp", "slug", "Lowercase letters"),
        ("Acme Corp", "acme_corp", "slug", "Lowercase letters"),
    ],
)
def test_a_refused_rename_shows_the_error_by_its_field_and_keeps_what_was_typed(
    client, staff, db, acme, name, slug, field, message
):
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), f"/organizations/{acme.id}")
    answer = client.post(f"/organizations/{acme.id}", data={**values, "name": name, "slug": slug})
    html = assert_page(answer, 422)
    error = re.search(rf'id="{field}-error" class="field-error">([^<]*)<', html)
    assert error and message in error.group(1), html[html.find("rename") :][:3000]
    assert f'id="{field}"' in html and 'aria-invalid="true"' in html
    assert re.search(r"<details id=\"rename\" class=\"rename\" open>", html)
    typed = name if field == "name" else slug
    assert f'value="{typed}"' in html.replace("&#34;", '"') or typed not in ("A",)
    fresh(db)
    assert db.session.get(Organization, acme.id).name == "Acme Corp"


def test_a_taken_slug_is_refused_by_the_slug(client, staff, db, acme):
    make_organization(name="Other", slug="other")
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), f"/organizations/{acme.id}")
    html = assert_page(client.post(f"/organizations/{acme.id}", data={**values, "slug": "other"}), 422)
    assert re.search(r'id="slug-error" class="field-error">[^<]*already has the slug', html)


def test_a_stale_rename_answers_409_showing_both_versions(client, staff, db, acme):
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), f"/organizations/{acme.id}")
    acme.name = "Acme Someone"
    db.session.commit()
    answer = client.post(f"/organizations/{acme.id}", data={**values, "name": "Acme Mine"})
    html = assert_page(answer, 409)
    conflict = html[html.index('class="conflict"') : html.index("</article>")]
    assert "Acme Someone" in conflict and "Acme Mine" in conflict
    assert 'value="Acme Mine"' in html  # what was typed is kept
    fresh(db)
    assert db.session.get(Organization, acme.id).name == "Acme Someone"
    # The form now carries the saved version: saving again applies it.
    again = form_values(html, f"/organizations/{acme.id}")
    assert client.post(f"/organizations/{acme.id}", data=again).status_code == 302
    fresh(db)
    assert db.session.get(Organization, acme.id).name == "Acme Mine"


# --- members ----------------------------------------------------------------------------------------


def test_add_a_member_by_email_without_javascript(client, staff, db, acme, make_user):
    ada = make_user(email="ada@example.com")
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), f"/organizations/{acme.id}/members")
    assert values["role"] == "org:member"
    answer = client.post(f"/organizations/{acme.id}/members", data={**values, "user": "ADA@example.com"})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("#members-section")
    page = html_of(client.get(answer.headers["Location"]))
    assert "Added ada@example.com as Member." in page
    fresh(db)
    membership = db.session.scalars(sa.select(Membership).where(Membership.user_id == ada.id)).one()
    assert membership.role == "org:member" and membership.deleted_at is None
    assert db.session.get(Organization, acme.id).members_count == 1
    # Both histories tell it: the organization's names the member, the user's the organization.
    history = page[page.index('id="history"') :]
    assert "Member added" in history and f'href="/users/{ada.id}">ada@example.com</a>' in history
    user_page = html_of(client.get(f"/users/{ada.id}"))
    user_history = user_page[user_page.index('id="history"') :]
    assert f'in <a href="/organizations/{acme.id}">Acme Corp</a>' in user_history


def test_add_a_member_by_id_with_htmx_answers_the_members_section(client, staff, db, acme, make_user):
    ada = make_user(email="ada@example.com")
    token = csrf_token_from(html_of(client.get(f"/organizations/{acme.id}")))
    answer = client.post(
        f"/organizations/{acme.id}/members", data={"csrf_token": token, "user": ada.id, "role": "org:admin"}, headers=HX
    )
    html = assert_fragment(answer)
    assert html.lstrip().startswith('<section id="members-section"')
    assert "Added ada@example.com as Admin." in html and 'role="status"' in html
    assert "ada@example.com</a>" in html and "Members <small" in html and "(1)" in html
    fresh(db)
    assert db.session.scalars(sa.select(Membership.role).where(Membership.user_id == ada.id)).one() == "org:admin"


@pytest.mark.parametrize(
    ("user", "role", "field", "message"),
    [
        ("", "org:member", "user", "Choose a user"),
        ("nobody@example.com", "org:member", "user", "No user has"),
        ("ada@example.com", "org:owner", "role", "Not a role that may be given here; choose one of: Admin, Member."),
    ],
)
def test_a_refused_member_shows_the_error_by_its_field(client, staff, db, acme, make_user, user, role, field, message):
    make_user(email="ada@example.com")
    token = csrf_token_from(html_of(client.get(f"/organizations/{acme.id}")))
    data = {"csrf_token": token, "user": user, "role": role}
    fragment = assert_fragment(client.post(f"/organizations/{acme.id}/members", data=data, headers=HX), 422)
    assert re.search(rf'id="{field}-error" class="field-error">[^<]*{message}', fragment), fragment
    assert f'value="{user}"' in fragment or not user
    page = assert_page(client.post(f"/organizations/{acme.id}/members", data=data), 422)
    assert re.search(rf'id="{field}-error" class="field-error">[^<]*{message}', page)
    fresh(db)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Membership)) == 0


def test_adding_a_member_twice_or_a_deleted_user_is_refused(client, staff, db, acme, make_user):
    ada = make_user(email="ada@example.com")
    make_membership(acme, ada)
    gone = make_user(email="gone@example.com", deleted_at=utcnow())
    token = csrf_token_from(html_of(client.get(f"/organizations/{acme.id}")))
    for who, message in ((ada.email, "already a member"), (gone.id, "was deleted")):
        data = {"csrf_token": token, "user": who, "role": "org:member"}
        html = assert_fragment(client.post(f"/organizations/{acme.id}/members", data=data, headers=HX), 422)
        assert re.search(rf'id="user-error" class="field-error">[^<]*{message}', html), html
    fresh(db)
    assert db.session.get(Organization, acme.id).members_count == 1


def test_the_user_picker_suggests_matching_users(client, staff, acme, make_user):
    make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace")
    make_user(email="bob@example.com")
    make_user(email="adam@gone.example", deleted_at=utcnow())
    url = f"/organizations/{acme.id}/user-choices"
    fragment = assert_fragment(client.get(url, query_string={"user": "ada"}, headers=HX))
    assert fragment.strip().startswith('<datalist id="user-choices">')
    assert '<option value="ada@example.com">Ada Lovelace</option>' in fragment
    assert "bob@" not in fragment and "adam@" not in fragment
    page = assert_page(client.get(url, query_string={"user": "lovelace"}))
    assert "ada@example.com" in page and "Type one of these emails" in page
    assert "<option" not in assert_fragment(client.get(url, headers=HX))
    assert client.get("/organizations/nope/user-choices?user=a").status_code == 404


@pytest.mark.parametrize(
    ("typed", "found"),
    [
        ("o'n", "shaun@oneil.test"),
        ("a l", "ada@example.com"),
        ("ada@example.com", "ada@example.com"),
        ("crm-7", "bob@example.com"),
    ],
)
def test_the_user_picker_searches_as_the_users_list_does(client, staff, acme, make_user, typed, found):
    """Short pieces match starts, an email its owner, an external id whole: the list's own search rule."""
    make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace")
    make_user(email="bob@example.com", external_id="crm-7")
    make_user(email="shaun@oneil.test", first_name="Shaun", last_name="O'Neil")
    fragment = assert_fragment(
        client.get(f"/organizations/{acme.id}/user-choices", query_string={"user": typed}, headers=HX)
    )
    assert re.findall(r'<option value="([^"]+)"', fragment) == [found]


def test_change_a_role_with_htmx_answers_the_row(client, staff, db, acme, make_user):
    membership = make_membership(acme, make_user(email="ada@example.com"))
    html = html_of(client.get(f"/organizations/{acme.id}"))
    url = f"/organizations/{acme.id}/members/{membership.id}/role"
    values = form_values(html, url)
    assert values["role"] == "org:member"
    fragment = assert_fragment(client.post(url, data={**values, "role": "org:admin"}, headers=HX))
    assert fragment.lstrip().startswith(f'<tr id="member-{membership.id}">')
    assert "ada@example.com is now Admin." in fragment
    assert '<option value="org:admin" selected>' in fragment
    fresh(db)
    assert db.session.get(Membership, membership.id).role == "org:admin"
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "membership.role")).one()
    assert event.organization_id == acme.id and event.target_id == membership.user_id


def test_change_a_role_without_javascript_redirects(client, staff, db, acme, make_user):
    membership = make_membership(acme, make_user(email="ada@example.com"))
    url = f"/organizations/{acme.id}/members/{membership.id}/role"
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), url)
    answer = client.post(url, data={**values, "role": "org:admin"})
    assert answer.status_code == 302
    assert "ada@example.com is now Admin." in html_of(client.get(answer.headers["Location"]))


def test_a_stale_or_unknown_role_change_is_refused_in_its_row(client, staff, db, acme, make_user):
    membership = make_membership(acme, make_user(email="ada@example.com"))
    url = f"/organizations/{acme.id}/members/{membership.id}/role"
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), url)
    fragment = assert_fragment(client.post(url, data={**values, "role": "org:owner"}, headers=HX), 422)
    assert 'role="alert"' in fragment
    assert client.post(url, data={**values, "role": "org:owner"}).status_code == 422
    db.session.get(Membership, membership.id).role = "org:billing"
    db.session.commit()
    fragment = assert_fragment(client.post(url, data={**values, "role": "org:admin"}, headers=HX), 409)
    assert "Someone else changed" in fragment and "Billing" in fragment
    assert client.post(url, data={**values, "role": "org:admin"}).status_code == 409
    fresh(db)
    assert db.session.get(Membership, membership.id).role == "org:billing"


def test_remove_a_member_asks_first_then_removes(client, staff, db, acme, make_user):
    membership = make_membership(acme, make_user(email="ada@example.com"))
    url = f"/organizations/{acme.id}/members/{membership.id}/delete"
    page = assert_page(client.get(url))
    assert "Remove ada@example.com from Acme Corp?" in page
    confirm = assert_fragment(client.get(url, headers=HX))
    assert confirm.lstrip().startswith(f'<tr id="member-{membership.id}" class="confirm-row">')
    assert "Yes, remove" in confirm and "data-cancel" in confirm
    cancel = assert_fragment(client.get(f"/organizations/{acme.id}/members/{membership.id}/row", headers=HX))
    assert cancel.lstrip().startswith(f'<tr id="member-{membership.id}">') and "data-focus" in cancel
    assert client.get(f"/organizations/{acme.id}/members/{membership.id}/row").status_code == 302
    fresh(db)
    assert db.session.get(Membership, membership.id).deleted_at is None

    token = csrf_token_from(confirm)
    fragment = assert_fragment(client.post(url, data={"csrf_token": token}, headers=HX))
    assert "Removed ada@example.com from Acme Corp." in fragment and "No members." in fragment
    fresh(db)
    assert db.session.get(Membership, membership.id).deleted_at is not None
    assert db.session.get(Organization, acme.id).members_count == 0
    assert client.get(url).status_code == 409  # no longer a member


def test_remove_without_javascript_redirects_and_needs_the_token(client, staff, db, acme, make_user):
    membership = make_membership(acme, make_user(email="ada@example.com"))
    url = f"/organizations/{acme.id}/members/{membership.id}/delete"
    assert client.post(url, data={}).status_code == 400
    token = csrf_token_from(html_of(client.get(url)))
    answer = client.post(url, data={"csrf_token": token})
    assert answer.status_code == 302
    assert "Removed ada@example.com" in html_of(client.get(answer.headers["Location"]))


def test_an_admin_may_not_act_on_a_staff_member(client, auth, db, make_user, acme):
    auth.sign_in(role=UserRole.ADMIN)
    boss = make_user(email="boss@example.com", role=UserRole.SUPER_ADMIN)
    plain = make_user(email="plain@example.com")
    staff_membership = make_membership(acme, boss)
    make_membership(acme, plain)
    html = html_of(client.get(f"/organizations/{acme.id}"))
    assert "Remove plain@example.com" in html and "Remove boss@example.com" not in html
    token = csrf_token_from(html)
    url = f"/organizations/{acme.id}/members/{staff_membership.id}/role"
    assert client.post(url, data={"csrf_token": token, "role": "org:admin"}).status_code == 403
    fresh(db)
    assert db.session.get(Membership, staff_membership.id).role == "org:member"


# --- invitations ------------------------------------------------------------------------------------


def test_invite_with_htmx_answers_the_invitations_section(client, staff, db, acme):
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), f"/organizations/{acme.id}/invitations")
    data = {**values, "email": "New.Person@Example.COM", "role": "org:admin"}
    fragment = assert_fragment(client.post(f"/organizations/{acme.id}/invitations", data=data, headers=HX))
    assert fragment.lstrip().startswith('<section id="invitations"')
    assert "Invited new.person@example.com as Admin." in fragment and "new.person@example.com</td>" in fragment
    fresh(db)
    invitation = db.session.scalars(sa.select(OrganizationInvitation)).one()
    assert (invitation.email, invitation.role, invitation.status) == ("new.person@example.com", "org:admin", "pending")


def test_invite_without_javascript_and_refusals(client, staff, db, acme, make_user):
    make_membership(acme, make_user(email="ada@example.com"))
    url = f"/organizations/{acme.id}/invitations"
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), url)
    answer = client.post(url, data={**values, "email": "new@example.com"})
    assert answer.status_code == 302
    assert "Invited new@example.com as Member." in html_of(client.get(answer.headers["Location"]))
    for email, message in (
        ("not an email", "valid email"),
        ("new@example.com", "already has a pending invitation"),
        ("ada@example.com", "already a member"),
    ):
        page = assert_page(client.post(url, data={**values, "email": email}), 422)
        assert re.search(rf'id="invite-email-error" class="field-error">[^<]*{message}', page), page
        assert f'value="{email}"' in page
        fragment = assert_fragment(client.post(url, data={**values, "email": email}, headers=HX), 422)
        assert re.search(rf'id="invite-email-error" class="field-error">[^<]*{message}', fragment)
    fresh(db)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(OrganizationInvitation)) == 1


def test_revoke_an_invitation(client, staff, db, acme):
    invitation = make_invitation(acme, "new@example.com")
    url = f"/organizations/{acme.id}/invitations/{invitation.id}/revoke"
    values = form_values(html_of(client.get(f"/organizations/{acme.id}")), url)
    fragment = assert_fragment(client.post(url, data=values, headers=HX))
    assert "Revoked the invitation of new@example.com." in fragment
    assert "No invitation is waiting" in fragment
    assert '<option selected value="org:member">' in fragment  # the new form's preset, after a POST too
    fresh(db)
    assert db.session.get(OrganizationInvitation, invitation.id).status == "revoked"
    assert client.post(url, data=values).status_code == 409  # nothing left to revoke
    other = make_invitation(acme, "other@example.com")
    answer = client.post(f"/organizations/{acme.id}/invitations/{other.id}/revoke", data=values)
    assert answer.status_code == 302
    assert "Revoked the invitation of other@example.com." in html_of(client.get(answer.headers["Location"]))


# --- Clerk --------------------------------------------------------------------------------------------


def test_open_calls_show_on_the_page_with_retry(client, staff, db, acme, make_user):
    ada = make_user(email="ada@example.com")
    membership = make_membership(acme, ada)
    db.session.add_all(
        [
            ClerkCall(
                organization_id=acme.id,
                operation="update_organization",
                payload='{"organization_id": "org_test", "fields": {"name": "Acme Corp"}}',
                state="failed",
                attempts=1,
                last_error="422 slug taken",
            ),
            ClerkCall(
                organization_id=acme.id,
                user_id=ada.id,
                operation="update_membership",
                payload=f'{{"organization_id": "org_test", "user_id": "{membership.clerk_user_id}", "role": "org:admin"}}',
                state="pending",
            ),
        ]
    )
    db.session.commit()
    html = html_of(client.get(f"/organizations/{acme.id}"))
    clerk = html[html.index('id="clerk"') : html.index('id="history"')]
    assert "422 slug taken" in clerk and "badge-clerk-failed" in clerk and "badge-clerk-pending" in clerk
    assert "Retry" in clerk and 'name="back" value="organization"' in clerk
    fields = html[html.index('class="fields"') : html.index("</dl>")]
    assert "refused by Clerk" in fields  # by the name
    row = html[html.index(f'id="member-{membership.id}"') :]
    assert "pending in Clerk" in row[: row.index("</tr>")]


# --- the user's page, the overview, the audit trail --------------------------------------------------


def test_the_user_page_lists_their_organizations_and_roles(client, staff, db, make_user):
    ada = make_user(email="ada@example.com")
    acme = make_organization(name="Acme Corp", slug="acme")
    beta = make_organization(name="Beta")
    gone = make_organization(name="Gone")
    make_membership(acme, ada, "org:admin")
    make_membership(beta, ada, "org:member")
    make_membership(gone, ada)
    gone.deleted_at = utcnow()
    db.session.commit()
    html = html_of(client.get(f"/users/{ada.id}"))
    section = html[html.index('id="organizations"') :]
    section = section[: section.index("</section>")]
    assert section.find("Acme Corp") < section.find("Beta") and "Gone" not in section
    assert f'href="/organizations/{acme.id}"' in section and "Admin" in section and "org:member" in section
    lonely = make_user(email="lonely@example.com")
    assert "Not a member of any organization." in html_of(client.get(f"/users/{lonely.id}"))


def test_the_overview_shows_organizations_and_memberships_from_the_counters(client, staff, db, make_user):
    acme = make_organization(name="Acme")
    make_organization(name="Beta")
    for _ in range(3):
        make_membership(acme, make_user())
    html = html_of(client.get("/"))
    assert re.search(r'data-figure="2" id="organizations-total"', html)
    assert re.search(r'id="memberships-total"[^>]*>.*?data-figure="3"', html, re.S)
    assert 'id="members-per-organization">1.5<' in html


def test_the_audit_trail_links_organization_events_and_filters_by_organization(client, staff, db, make_user):
    acme = make_organization(name="Acme")
    beta = make_organization(name="Beta")
    ada = make_user(email="ada@example.com")
    make_membership(acme, ada)
    html = html_of(client.get("/audit"))
    assert f'href="/organizations/{acme.id}" class="organization-link">Acme</a>' in html
    assert f'href="/users/{ada.id}">ada@example.com</a>' in html
    only = assert_page(client.get(f"/audit?organization={acme.id}"))
    assert f'href="/organizations/{beta.id}"' not in only.split('id="audit-results"')[1]
    assert "Only the events of the organization" in only
    fragment = assert_fragment(client.get(f"/audit?organization={acme.id}", headers=HX))
    assert "Member added" in fragment and "Beta" not in fragment
    assert "no such organization" in html_of(client.get("/audit?organization=nope"))


def test_a_value_too_long_for_any_email_is_refused_without_being_echoed_whole(client, staff, acme):
    token = csrf_token_from(html_of(client.get(f"/organizations/{acme.id}")))
    typed = "x" * 400 + "@example.com"
    data = {"csrf_token": token, "user": typed, "role": "org:member"}
    fragment = assert_fragment(client.post(f"/organizations/{acme.id}/members", data=data, headers=HX), 422)
    errors = re.findall(r'id="user-error" class="field-error">([^<]*)<', fragment)
    assert errors and "longer than 320 characters" in errors[0] and "No user has" not in errors[0]
    assert f'value="{typed}"' in fragment  # what was typed is kept in the field
