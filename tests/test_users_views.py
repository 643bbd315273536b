"""The first users page: the table, keyset paging, fragments for htmx, the detail page."""

from datetime import timedelta

import pytest

from app.models import UserRole, utcnow


@pytest.fixture
def many_users(app, make_user):
    app.config["USERS_PER_PAGE"] = 5
    start = utcnow() - timedelta(days=30)
    return [make_user(email=f"u{i:02d}@example.com", created_at=start + timedelta(hours=i)) for i in range(12)]


def emails_on(page_html: str, users) -> list[str]:
    return [u.email for u in sorted(users, key=lambda u: page_html.find(u.email)) if u.email in page_html]


def test_list_shows_users_newest_first_with_badges(client, staff, make_user):
    make_user(
        email="older@example.com", first_name="Ada", last_name="Lovelace", created_at=utcnow() - timedelta(days=2)
    )
    response = client.get("/users")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<h1>Users</h1>" in html
    assert html.find(staff.email) < html.find("older@example.com")
    assert "Ada Lovelace" in html
    assert 'class="badge badge-role-super_admin"' in html
    assert 'class="badge badge-status-active"' in html
    assert response.headers["Vary"] == "HX-Request" or "HX-Request" in response.headers["Vary"]


def test_keyset_pages_walk_forwards_and_backwards(client, staff, many_users):
    everyone = [staff, *many_users]  # staff is the newest
    seen = []
    url = "/users"
    pages = []
    while url:
        html = client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
        pages.append((url, html))
        seen += emails_on(html, everyone)
        nxt = [part for part in html.split('"') if part.startswith("/users?after=")]
        url = nxt[0] if nxt else None
    assert seen == [u.email for u in sorted(everyone, key=lambda u: u.created_at, reverse=True)]
    assert len(pages) == 3

    # From the last page, "Newer" leads back to exactly the middle page.
    last_html = pages[-1][1]
    prev = next(part for part in last_html.split('"') if part.startswith("/users?before="))
    middle = client.get(prev, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert emails_on(middle, everyone) == emails_on(pages[1][1], everyone)


@pytest.mark.parametrize("junk", ["after=%%%", "after=bm90LWpzb24", "before=WzEsMl0", "after=", "after=" + "A" * 5000])
def test_malformed_cursors_fall_back_to_the_first_page(client, staff, many_users, junk):
    response = client.get(f"/users?{junk}")
    assert response.status_code == 200
    assert "u11@example.com" in response.get_data(as_text=True) or staff.email in response.get_data(as_text=True)


def test_htmx_request_gets_only_the_results_fragment(client, staff):
    response = client.get("/users", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html and "<table" in html and staff.email in html
    assert "HX-Request" in response.headers["Vary"]
    boosted = client.get("/users", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.get_data(as_text=True)


def test_deleted_users_are_not_listed(client, staff, make_user):
    make_user(email="gone@example.com", deleted_at=utcnow())
    assert "gone@example.com" not in client.get("/users").get_data(as_text=True)


def test_markup_in_fields_is_shown_as_text(client, staff, make_user):
    user = make_user(
        email="x@example.com", first_name="<script>alert(1)</script>", public_metadata='{"html": "<b>bold</b>"}'
    )
    for url in ("/users", f"/users/{user.id}"):
        html = client.get(url).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in client.get(f"/users/{user.id}").get_data(as_text=True)


def test_detail_shows_every_field_and_pretty_metadata(client, staff, make_user, db):
    from app.models import UserData

    user = make_user(
        email="full@example.com",
        username="fully",
        clerk_id="user_abc",
        private_metadata='{"b": 1, "a": {"c": true}}',
        role=UserRole.ADMIN,
    )
    db.session.add(UserData(user_id=user.id, key="plan", value="pro"))
    db.session.commit()
    html = client.get(f"/users/{user.id}").get_data(as_text=True)
    for text in ("full@example.com", "fully", "user_abc", user.id, "plan", "pro"):
        assert text in html
    assert "{\n  &#34;a&#34;: {\n    &#34;c&#34;: true\n  },\n  &#34;b&#34;: 1\n}" in html


def test_unknown_user_is_404_page(client, staff):
    response = client.get("/users/does-not-exist")
    assert response.status_code == 404
    assert "404" in response.get_data(as_text=True)


def test_detail_page_query_count_does_not_grow_with_data_or_history(app, client, staff, make_user, db, count_queries):
    """No N+1: a user with 40 key-value pairs and 40 history entries costs what one with 1 does."""
    from app.audit.services import Actor, record
    from app.models import UserData

    def fill(user, n):
        for i in range(n):
            db.session.add(UserData(user_id=user.id, key=f"k{i}", value=f"v{i}"))
            record("user.update", actor=Actor.cli(), target=user, changes={"first_name": [f"a{i}", f"b{i}"]})
        db.session.commit()

    small, large = make_user(email="small@example.com"), make_user(email="large@example.com")
    fill(small, 1)
    fill(large, 40)

    def queries_for(user) -> int:
        db.session.expire_all()
        with count_queries() as statements:
            html = client.get(f"/users/{user.id}").get_data(as_text=True)
        assert user.email in html
        return len(statements)

    few, many = queries_for(small), queries_for(large)
    assert many == few <= 8
