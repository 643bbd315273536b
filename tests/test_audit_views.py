"""The audit trail page: every change, filterable by actor, target and action."""

import pytest

from app.audit.services import Actor, record
from app.models import UserRole, UserStatus
from app.users.services import invite_user, set_status


@pytest.fixture
def staff(auth):
    return auth.sign_in(auth.make_user(email="boss@admin.test", role=UserRole.SUPER_ADMIN))


@pytest.fixture
def trail(app, staff, make_user, db):
    ada = make_user(email="ada@example.com")
    bob = make_user(email="bob@example.com")
    set_status(ada, UserStatus.SUSPENDED, actor=Actor.staff(staff))
    set_status(bob, UserStatus.INACTIVE, actor=Actor.cli())
    invite_user("new@example.com", actor=Actor.staff(staff))
    db.session.commit()
    return ada, bob


def test_lists_events_newest_first(client, trail):
    html = client.get("/audit").get_data(as_text=True)
    assert html.find("new@example.com") < html.find("bob@example.com") < html.find("ada@example.com")
    assert "Suspended" in html and "active → suspended" in html


@pytest.mark.parametrize(
    ("query", "present", "absent"),
    [
        ("actor=boss@admin", ["ada@example.com", "new@example.com"], ["bob@example.com"]),
        ("actor=command", ["bob@example.com"], ["ada@example.com"]),
        ("target=bob@", ["bob@example.com"], ["ada@example.com", "new@example.com"]),
        ("action=user.invite", ["new@example.com"], ["bob@example.com", "ada@example.com"]),
        ("source=cli", ["bob@example.com"], ["ada@example.com"]),
    ],
)
def test_filters(client, trail, query, present, absent):
    html = client.get(f"/audit?{query}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in html
    for text in present:
        assert text in html
    for text in absent:
        assert text not in html


def test_target_filter_by_id(client, trail):
    ada, _ = trail
    html = client.get(f"/audit?target={ada.id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "ada@example.com" in html and "bob@example.com" not in html


def test_target_filter_finds_the_users_it_names_whatever_email_their_events_were_written_with(
    client, trail, make_user, db
):
    ada, _bob = trail
    ada.email = "ada.lovelace@analytical.example"  # changed since her suspension was recorded
    db.session.commit()
    for text in ("lovelace@", "ANALYTICAL", ada.clerk_id):
        html = client.get(f"/audit?target={text}", headers={"HX-Request": "true"}).get_data(as_text=True)
        assert "Suspended" in html and "bob@example.com" not in html, text
    nobody = client.get("/audit?target=no-such-person@", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "ada@example.com" not in nobody and "bob@example.com" not in nobody


def test_target_text_naming_many_users_pages_through_their_events_newest_first(client, staff, make_user, db):
    from app.audit.queries import MAX_SCANS

    people = [make_user(email=f"crowd{n:03d}@crowd.example") for n in range(MAX_SCANS + 5)]
    few = people[:3]
    for person in people:
        record("test.event", actor=Actor.cli(), target=person)
    db.session.commit()
    html = client.get("/audit?target=crowd.example", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert html.count("crowd") >= MAX_SCANS  # more users than the per-user scans: the labels, newest first
    assert html.find(people[-1].email) < html.find(people[-2].email)
    html = client.get("/audit?target=crowd00", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert [p.email in html for p in few] == [True, True, True] and people[10].email not in html


def test_actor_and_target_filters_together(client, trail):
    html = client.get("/audit?actor=boss@admin&target=ada@", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "ada@example.com" in html and "new@example.com" not in html and "bob@example.com" not in html
    html = client.get("/audit?actor=command&target=ada@", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "ada@example.com" not in html


def test_paging_and_malformed_cursor(app, client, staff, db):
    for i in range(60):
        record("test.event", actor=Actor.cli(), changes={"n": [i, i + 1]})
    db.session.commit()
    first = client.get("/audit?action=test.event").get_data(as_text=True)
    assert "Older ›" in first
    assert client.get("/audit?after=garbage").status_code == 200


def test_markup_in_changes_is_text(client, staff, make_user, db):
    user = make_user(email="x@example.com")
    record("user.update", actor=Actor.cli(), target=user, changes={"first_name": [None, "<script>x</script>"]})
    db.session.commit()
    html = client.get("/audit").get_data(as_text=True)
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


@pytest.mark.parametrize(
    "text",
    # %ED%A0%80: a lone surrogate as a browser would encode it (no test client encodes one itself)
    ["a%00b", "%ED%A0%80x", "%C3%A9" * 10_000, "%25_%5C", "[[[{{{", "user_", "%FF%FE"],
)
def test_hostile_target_and_actor_filters_get_an_answer_not_a_500(client, trail, text):
    for name in ("target", "actor"):
        response = client.get(f"/audit?{name}={text}", headers={"HX-Request": "true"})
        assert response.status_code in (200, 400), (name, response.status_code)
        assert "Traceback" not in response.get_data(as_text=True)
