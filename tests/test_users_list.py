"""The users list: search, filters, sorts, keyset pages, the lazy count, fragments."""

import re
from datetime import timedelta

import pytest

from app.models import UserRole, UserStatus, utcnow
from app.users.queries import COUNT_CAP
from tests.conftest import HX, csrf_token_from


@pytest.fixture
def staff(auth):
    return auth.sign_in(
        auth.make_user(email="staff@admin.test", role=UserRole.SUPER_ADMIN, created_at=utcnow() - timedelta(days=900))
    )


@pytest.fixture
def people(make_user):
    now = utcnow()
    return {
        "ada": make_user(
            email="ada@example.com",
            first_name="Ada",
            last_name="Lovelace",
            username="countess",
            created_at=now - timedelta(days=5),
            last_sign_in_at=now - timedelta(hours=1),
        ),
        "alan": make_user(
            email="alan@turing.org",
            first_name="Alan",
            last_name="Turing",
            role=UserRole.ADMIN,
            created_at=now - timedelta(days=4),
            last_sign_in_at=now - timedelta(days=3),
        ),
        "grace": make_user(
            email="grace@navy.mil",
            first_name="Grace",
            last_name="Hopper",
            status=UserStatus.SUSPENDED,
            created_at=now - timedelta(days=3),
        ),
        "edsger": make_user(
            email="edsger@example.com",
            first_name="Edsger",
            last_name="Dijkstra",
            clerk_id="user_2edsgerCLERK",
            status=UserStatus.INVITED,
            created_at=now - timedelta(days=2),
        ),
        "barbara": make_user(
            email="barbara@example.com",
            first_name="Barbara",
            last_name="Liskov",
            status=UserStatus.INACTIVE,
            created_at=now - timedelta(days=1),
            last_sign_in_at=now - timedelta(days=30),
        ),
        "gone": make_user(
            email="gone@example.com",
            first_name="Gone",
            last_name="Away",
            deleted_at=now,
            created_at=now - timedelta(hours=5),
        ),
    }


def listed(client, query: str = "", headers=HX) -> list[str]:
    html = client.get(f"/users?{query}", headers=headers).get_data(as_text=True)
    return re.findall(r'<a href="/users/[^"]+">([^<]+@[^<]+)</a>', html)


def every_page(client, url: str) -> tuple[list[str], str]:
    """The emails listed on every page from `url` on, following "next", and the last page's HTML."""
    seen, html = [], ""
    while url:
        html = client.get(url, headers=HX).get_data(as_text=True)
        seen += re.findall(r'<a href="/users/[^"]+">([^<]+@[^<]+)</a>', html)
        nxt = re.search(r'href="(/users\?after=[^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    return seen, html


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("ada", ["ada@example.com"]),
        ("LOVELACE", ["ada@example.com"]),  # case-insensitive, last name
        ("countess", ["ada@example.com"]),  # username
        ("2edsgerclerk", ["edsger@example.com"]),  # clerk id
        ("turing.org", ["alan@turing.org"]),
        ("grace hopper", ["grace@navy.mil"]),  # across first and last name
        ("example.com", ["barbara@example.com", "edsger@example.com", "ada@example.com"]),
        ("nobody-at-all", []),
        ("100%", []),  # LIKE wildcards are searched for literally
        ("a_a", []),  # "_" is not a wildcard: it would match "ada"
        ("da@example.com", ["ada@example.com"]),  # a short local part: the whole term, inside a word
        ("a@example.com", ["barbara@example.com", "ada@example.com"]),
        ("ar@example.com", []),
    ],
)
def test_search(client, staff, people, q, expected):
    from urllib.parse import urlencode

    assert listed(client, urlencode({"q": q})) == expected


def test_filters_by_role_and_status_and_several_at_once(client, staff, people):
    assert listed(client, "role=admin") == ["alan@turing.org"]
    assert listed(client, "status=suspended&status=inactive") == ["barbara@example.com", "grace@navy.mil"]
    assert listed(client, "role=user&status=invited") == ["edsger@example.com"]
    assert listed(client, "role=super_admin&role=admin") == ["alan@turing.org", "staff@admin.test"]


def test_deleted_users_only_when_asked(client, staff, people):
    assert "gone@example.com" not in listed(client)
    assert listed(client, "q=gone&deleted=1") == ["gone@example.com"]


@pytest.mark.parametrize(
    ("sort", "first_three"),
    [
        ("-created_at", ["barbara@example.com", "edsger@example.com", "grace@navy.mil"]),
        ("created_at", ["staff@admin.test", "ada@example.com", "alan@turing.org"]),
        ("email", ["ada@example.com", "alan@turing.org", "barbara@example.com"]),
        ("-email", ["staff@admin.test", "grace@navy.mil", "edsger@example.com"]),
        ("name", ["staff@admin.test", "ada@example.com", "alan@turing.org"]),  # no name sorts first
        ("-last_sign_in_at", ["ada@example.com", "alan@turing.org", "barbara@example.com"]),
    ],
)
def test_sorts(client, staff, people, sort, first_three):
    assert listed(client, f"sort={sort}")[:3] == first_three


@pytest.mark.parametrize(
    "sort", ["-created_at", "created_at", "email", "-email", "name", "-name", "last_sign_in_at", "-last_sign_in_at"]
)
def test_every_sort_pages_through_everyone_exactly_once(app, client, staff, make_user, sort):
    app.config["USERS_PER_PAGE"] = 4
    now = utcnow()
    for i in range(13):
        # Ties on purpose: equal names and sign-in times, so the id tie-breaker matters.
        make_user(
            email=f"p{i:02d}@example.com",
            first_name=["Zoë", "Émile", "al"][i % 3],
            last_name="Same",
            last_sign_in_at=None if i % 4 == 0 else now - timedelta(days=i % 2),
            created_at=now - timedelta(minutes=i),
        )
    seen, url, pages = [], f"/users?sort={sort}", 0
    while url:
        html = client.get(url, headers=HX).get_data(as_text=True)
        seen += re.findall(r'<a href="/users/[^"]+">([^<]+@[^<]+)</a>', html)
        nxt = re.search(r'href="(/users\?after=[^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        pages += 1
    assert sorted(seen) == sorted({*seen}) and len(seen) == 14
    assert pages == 4
    # And back again from the last page.
    prev = re.search(r'href="(/users\?before=[^"]+)"', html).group(1).replace("&amp;", "&")
    assert len(listed(client, prev.split("?", 1)[1])) == 4


def test_rows_per_page_is_a_choice_in_the_url(client, staff, make_user):
    for i in range(12):
        make_user(email=f"pp{i:02d}@example.com")
    assert len(listed(client, "per_page=10")) == 10
    html = client.get("/users?per_page=10", headers=HX).get_data(as_text=True)
    assert "per_page=10" in re.search(r'href="(/users\?after=[^"]+)"', html).group(1)
    assert len(listed(client, "per_page=7")) == 13  # not a choice: the default (25)


def test_pager_links_keep_the_filters(app, client, staff, make_user):
    app.config["USERS_PER_PAGE"] = 2
    for i in range(5):
        make_user(email=f"keep{i}@example.com", role=UserRole.ADMIN)
    html = client.get("/users?role=admin&q=keep&sort=email", headers=HX).get_data(as_text=True)
    nxt = re.search(r'href="(/users\?after=[^"]+)"', html).group(1)
    assert "role=admin" in nxt and "q=keep" in nxt and "sort=email" in nxt


@pytest.mark.parametrize(
    "query",
    [
        "role=owner",
        "status=banned&status=",
        "sort=drop+table",
        "after=%%%",
        "before=e30",
        "deleted=maybe",
        "q=" + "x" * 5000,
        "after=WyJlbWFpbCIsICJ4IiwgMV0",
        "sort=email&after=" + "A" * 3000,
        "per_page=-1",
        "per_page=7",
        "per_page=abc",
        "per_page=100000",
    ],
)
def test_malformed_parameters_fall_back_to_defaults(client, staff, people, query):
    response = client.get(f"/users?{query}")
    assert response.status_code == 200


def test_an_unknown_role_is_ignored_not_an_empty_list(client, staff, people):
    assert listed(client, "role=owner") == listed(client)


def test_full_page_and_fragment(client, staff, people):
    page = client.get("/users?q=ada")
    html = page.get_data(as_text=True)
    assert "<html" in html and 'id="filters"' in html and 'value="ada"' in html
    fragment = client.get("/users?q=ada", headers=HX)
    assert "<html" not in fragment.get_data(as_text=True) and "ada@example.com" in fragment.get_data(as_text=True)
    for response in (page, fragment):
        assert "HX-Request" in response.headers["Vary"]


def test_empty_results_say_so(client, staff, people):
    html = client.get("/users?q=zzzzzz", headers=HX).get_data(as_text=True)
    assert "No users match these filters" in html


def count_text(client, query: str = "") -> str:
    html = client.get(f"/users/count?{query}", headers=HX).get_data(as_text=True)
    return re.search(r'<p class="result-count">([^<]*)</p>', html).group(1)


def export_link(html: str) -> tuple[str, dict, str]:
    """The export link's path, query and text (one per page)."""
    from urllib.parse import parse_qs, urlsplit

    found = re.findall(r'<a href="([^"]*)" id="export-link"[^>]*>([^<]*)</a>', html)
    assert len(found) == 1, found
    href, text = found[0]
    parts = urlsplit(href.replace("&amp;", "&"))
    return parts.path, parse_qs(parts.query), text


def test_the_count_is_lazy_and_capped(app, client, staff, people, monkeypatch):
    html = client.get("/users", headers=HX).get_data(as_text=True)
    assert 'hx-get="/users/count"' in html and "Counting" in html
    assert count_text(client) == "6 users"
    assert count_text(client, "status=suspended") == "1 user"
    from app.users import queries

    assert queries.count_users(queries.UserFilters(q="example"), cap=2) == queries.UserCount(2, "capped")
    assert queries.count_users(queries.UserFilters(q="example"), cap=3) == queries.UserCount(3, "exact")
    monkeypatch.setattr("app.users.queries.COUNT_CAP", 2)
    assert count_text(client, "role=user") == "More than 2 users"
    assert COUNT_CAP >= 1000


@pytest.mark.parametrize("headers", [HX, {}])
def test_the_export_link_carries_the_filters_shown(client, staff, people, headers):
    html = client.get(
        "/users?q=example&status=invited&status=inactive&role=user&sort=email&per_page=10", headers=headers
    ).get_data(as_text=True)
    path, args, text = export_link(html)
    assert path == "/users/export.csv" and text == "Export CSV"  # until the count answers
    assert args == {"q": ["example"], "status": ["invited", "inactive"], "role": ["user"], "sort": ["email"]}
    assert export_link(client.get("/users", headers=headers).get_data(as_text=True))[:2] == ("/users/export.csv", {})


def test_the_export_link_says_how_many_rows_it_holds(client, staff, people, monkeypatch):
    html = client.get("/users/count?status=invited&q=edsger", headers=HX).get_data(as_text=True)
    assert export_link(html) == ("/users/export.csv", {"q": ["edsger"], "status": ["invited"]}, "Export 1 user (CSV)")
    assert export_link(client.get("/users/count?q=example", headers=HX).get_data(as_text=True))[2] == (
        "Export 3 users (CSV)"
    )
    monkeypatch.setattr("app.users.queries.COUNT_CAP", 2)
    # Filtered, so it is counted (an unfiltered PostgreSQL table is estimated from its statistics).
    assert export_link(client.get("/users/count?q=example", headers=HX).get_data(as_text=True))[2] == (
        "Export more than 2 users (CSV)"
    )


def test_a_bulk_action_keeps_the_export_link_on_the_filters(client, staff, people):
    token = csrf_token_from(client.get("/users").get_data(as_text=True))
    html = client.post(
        "/users/bulk?status=suspended&q=grace",
        headers=HX,
        data={"csrf_token": token, "action": "active", "confirm": "y", "ids": [people["grace"].id]},
    ).get_data(as_text=True)
    assert export_link(html)[1] == {"q": ["grace"], "status": ["suspended"]}


@pytest.mark.postgresql
def test_a_large_unfiltered_table_is_estimated_not_counted(client, staff, people, db):
    import sqlalchemy as sa

    db.session.execute(sa.text("ANALYZE users"))
    db.session.commit()
    from app.users import queries

    assert queries.count_users(queries.UserFilters(), cap=3).kind == "estimate"
    assert queries.count_users(queries.UserFilters(), cap=100) == queries.UserCount(6, "exact")


def test_badges_and_row_actions_follow_the_status(client, staff, people):
    html = client.get("/users", headers=HX).get_data(as_text=True)
    assert "badge badge-status-suspended" in html and "badge badge-role-admin" in html
    grace_row = re.search(r'<tr id="user-{}">.*?</tr>'.format(people["grace"].id), html, re.S).group(0)
    assert "Reactivate" in grace_row and "Suspend" not in grace_row
    ada_row = re.search(r'<tr id="user-{}">.*?</tr>'.format(people["ada"].id), html, re.S).group(0)
    assert "Suspend" in ada_row and "Mark inactive" in ada_row


def test_list_page_query_count_does_not_grow_with_rows(app, client, staff, make_user, db, count_queries):
    for i in range(30):
        make_user(email=f"q{i}@example.com")
    db.session.expire_all()
    with count_queries() as few:
        client.get("/users", headers=HX)
    app.config["USERS_PER_PAGE"] = 30
    db.session.expire_all()
    with count_queries() as many:
        client.get("/users", headers=HX)
    assert len(many) == len(few) <= 3


def test_a_tombstone_without_email_is_named_by_its_clerk_id(client, staff, make_user):
    make_user(email="", clerk_id="user_2tombstone", deleted_at=utcnow())
    html = client.get("/users?deleted=1&q=tombstone", headers=HX).get_data(as_text=True)
    assert ">user_2tombstone</a>" in html


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("a", ["alan@turing.org", "ada@example.com"]),  # the start of the email and first name
        ("LO", ["ada@example.com"]),  # the start of the last name, any case
        ("co", ["ada@example.com"]),  # the start of the username
        ("tu", ["alan@turing.org"]),  # Turing's last name, not the "turing" inside his email
        ("da", []),  # inside "ada": short terms match starts only
        ("ex", []),  # inside "@example.com"
        ("_", []),  # not a wildcard
    ],
)
def test_one_or_two_characters_match_the_start_of_a_field(client, staff, people, q, expected):
    from urllib.parse import urlencode

    assert listed(client, urlencode({"q": q})) == expected


@pytest.mark.parametrize("window", [4, 1000])
@pytest.mark.parametrize("sort", ["-created_at", "email", "-name"])
def test_search_pages_hold_every_match_once_in_order(app, client, staff, make_user, monkeypatch, window, sort):
    """Common terms fill a page from the window of rows; rare ones come from the search index."""
    from app.users import queries

    monkeypatch.setattr(queries, "SEARCH_WINDOW", window)
    app.config["USERS_PER_PAGE"] = 3
    now = utcnow()
    for i in range(24):
        make_user(
            email=f"u{i:02d}@{'zebra' if i % 3 == 0 else 'other'}.test",
            first_name=f"N{23 - i:02d}",
            created_at=now - timedelta(minutes=i),
        )
    expected = listed(client, f"q=zebra&sort={sort}&per_page=100")
    assert len(expected) == 8
    seen, html = every_page(client, f"/users?q=zebra&sort={sort}")
    assert seen == expected
    # And back from the last page.
    prev = re.search(r'href="(/users\?before=[^"]+)"', html).group(1).replace("&amp;", "&")
    assert listed(client, prev.split("?", 1)[1]) == expected[3:6]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("o'n", ["shaun@oneil.test"]),  # the start of O'Neil, not "o'n" inside another word
        ("a b", ["ada.byron@example.test"]),  # initials: a first name starting a, a last name starting b
        ("a.b", []),  # a start, not the "a.b" inside "ada.byron"
        ("%%%", []),  # no letters at all: a start, and wildcards are literal
        ("jo sm", ["john@smithy.test"]),
    ],
)
def test_terms_of_short_pieces_match_starts(client, staff, make_user, q, expected):
    """A term without three letters in a row cannot use the trigram index: like a 1-2 letter term,
    it matches starts (and two short words match a first and a last name's starts)."""
    from urllib.parse import urlencode

    make_user(email="shaun@oneil.test", first_name="Shaun", last_name="O'Neil")
    make_user(email="mo'neil@example.test", first_name="Mo", last_name="Neil")
    make_user(email="ada.byron@example.test", first_name="Ada", last_name="Byron")
    make_user(email="john@smithy.test", first_name="John", last_name="Smith")
    make_user(email="bob@example.test", first_name="Bob", last_name="Alanson")
    assert listed(client, urlencode({"q": q})) == expected


@pytest.fixture
def lookalikes(make_user):
    """People whose emails, ids and usernames hold each other's: a whole value is also a piece of others."""
    now = utcnow()
    rows = [
        ("bob@example.test", "user_2bob", "bob", None),
        ("jimbob@example.test", "user_2jimbob", "jimbob", "crm-1"),
        ("bob@example.test.uk", "user_2bob2", "bobby", "crm-10"),
        ("alice@example.test", "inv_2alice", None, "user_2bob"),  # an external id that looks like an id
        ("carol@elsewhere.test", "user_2carol", "bob@example.test", None),  # a username holding an email
    ]
    return [
        make_user(
            email=email, clerk_id=clerk_id, username=username, external_id=external, created_at=now - timedelta(hours=i)
        )
        for i, (email, clerk_id, username, external) in enumerate(rows)
    ]


@pytest.mark.parametrize("window", [2, 6000])
@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # A whole email: every other row holding it too, in the list's order (newest first).
        (
            "bob@example.test",
            ["bob@example.test", "jimbob@example.test", "bob@example.test.uk", "carol@elsewhere.test"],
        ),
        (
            "BOB@Example.TEST",
            ["bob@example.test", "jimbob@example.test", "bob@example.test.uk", "carol@elsewhere.test"],
        ),
        ("user_2bob", ["bob@example.test", "bob@example.test.uk", "alice@example.test"]),  # id, and an external id
        ("inv_2alice", ["alice@example.test"]),  # an invitation's id
        ("jimbob", ["jimbob@example.test"]),  # a username (and the start of an email)
        ("crm-1", ["jimbob@example.test"]),  # an external id matches whole only
        ("crm-10", ["bob@example.test.uk"]),
        ("crm", []),
        ("example.test.uk", ["bob@example.test.uk"]),
    ],
)
def test_whole_values_list_every_row_the_substring_search_would(
    app, client, staff, lookalikes, monkeypatch, window, q, expected
):
    """An email, a Clerk id, a username or an external id is looked up through its equality index
    first (on PostgreSQL its matches then come straight from the search index), and the list still
    holds every row that holds the term, in order, page after page."""
    from urllib.parse import urlencode

    from app.users import queries

    monkeypatch.setattr(queries, "SEARCH_WINDOW", window)
    assert listed(client, urlencode({"q": q})) == expected
    app.config["USERS_PER_PAGE"] = 2
    assert every_page(client, "/users?" + urlencode({"q": q}))[0] == expected


def test_a_whole_value_is_found_through_an_equality_index_first(app, db, lookalikes):
    from app.models import exact_match_exists

    assert exact_match_exists("BOB@example.test")  # emails and usernames whatever their case
    assert exact_match_exists("Jimbob")
    assert exact_match_exists("inv_2alice") and exact_match_exists("crm-10")
    assert not exact_match_exists("INV_2ALICE")  # Clerk ids and external ids are exact
    assert not exact_match_exists("bob@example")


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("q", "index"),
    [
        ("ab", "_prefix"),
        ("abc", "ix_users_search_trgm"),
        ("o'n", "_prefix"),
        ("a b", "ix_users_first_name_prefix"),
        ("%%%", "_prefix"),
        ("crm-100077", "ix_users_external_id"),
    ],
)
def test_searches_are_served_by_an_index(app, db, q, index):
    """With sequential scans priced out, the planner can still answer: an index serves each term."""
    import sqlalchemy as sa

    from app.users.queries import UserFilters, filtered

    query = filtered(UserFilters(q=q)).with_only_columns(sa.literal(1))
    compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
    db.session.execute(sa.text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(db.session.scalars(sa.text(f"EXPLAIN {compiled}")))
    db.session.rollback()
    assert index in plan and "Seq Scan" not in plan, plan


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("q", "piece"),
    [
        ("weber.kevin56944@example.com", "%kevin56944%"),  # not "example", which every row may hold
        ("user_2abcDEF123", "%2abcdef123%"),  # not "user", which every Clerk id holds
        ("inv_2xyz987", "%2xyz987%"),
        ("al@example.com", "%al@example.com%"),  # a local part too short: all the trigrams of the term
        ("@example.com", "%example%"),  # no local part: the longest piece there is
    ],
)
def test_a_term_of_several_pieces_asks_the_trigram_index_for_its_telling_piece(app, db, q, piece):
    """The whole term is then checked with strpos on the few rows the index returns."""
    import sqlalchemy as sa

    from app.users.queries import UserFilters, filtered

    query = filtered(UserFilters(q=q)).with_only_columns(sa.literal(1))
    compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
    db.session.execute(sa.text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(db.session.scalars(sa.text(f"EXPLAIN {compiled}"))).replace("%%", "%")  # pyformat's
    db.session.rollback()
    assert f"~~ '{piece}'" in plan and "strpos" in plan and "Seq Scan" not in plan, plan


def test_search_statements_are_compiled_once(app, client, staff, make_user, db):
    """Every statement of a search is cached by SQLAlchemy: a term is a parameter, never a new compile
    (a custom element without a cache key made each email search compile its statements anew)."""
    import sqlalchemy as sa

    make_user(email="ada.lovelace@example.com", username="countess1815")
    make_user(email="alan.turing@example.com", username="countess1816")
    seen: list = []

    def note(_conn, _cursor, _statement, _parameters, context, _many):
        seen.append((str(getattr(context, "cache_hit", None)), _statement[:80]))

    for q in ("ada.lovelace@example.com", "grace.hopper@example.com", "countess1815", "o'n", "a b") * 2:
        client.get(f"/users?q={q}", headers=HX)  # compiled (SQLAlchemy may compile a shape twice)
    sa.event.listen(db.engine, "before_cursor_execute", note)
    try:
        for q in ("alan.turing@example.com", "barbara.liskov@example.com", "countess1816", "d'a", "c d"):
            client.get(f"/users?q={q}", headers=HX)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", note)
    assert seen and all(hit.endswith("CACHE_HIT") for hit, _ in seen), [
        s for s in seen if not s[0].endswith("CACHE_HIT")
    ]
