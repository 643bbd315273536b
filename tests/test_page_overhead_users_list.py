"""What a page of the users list costs outside its SQL stays fixed as rows grow (benchmarks/page_overhead.py).

No timings here: the structure that keeps the page fast is what is held. Rows are macros imported
once (no template looked up, no context built per row), row links come from one pattern each
(no url_for per row), the page asks `may` a fixed number of times, and a public endpoint met
without credentials does not look anyone up.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from contextlib import contextmanager

import pytest

from app.models import UserRole, UserStatus
from tests.conftest import HX


@contextmanager
def counting_page_work(app, monkeypatch):
    """Counts, while it is open: templates looked up, url_for calls and `may` asked by templates."""
    counts: Counter[str] = Counter()
    env = app.jinja_env
    get_template, url_for, may = env.get_template, app.url_for, env.globals["may"]

    def counted(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(env, "get_template", counted("templates", get_template))
    monkeypatch.setattr(app, "url_for", counted("url_for", url_for))
    monkeypatch.setitem(env.globals, "url_for", counted("url_for", url_for))
    monkeypatch.setitem(env.globals, "may", counted("may", may))
    yield counts


def people(make_user, n: int) -> None:
    statuses = [UserStatus.ACTIVE, UserStatus.SUSPENDED, UserStatus.INACTIVE, UserStatus.INVITED]
    for i in range(n):
        make_user(email=f"row{i}@example.com", first_name="Row", last_name=f"Number{i}", status=statuses[i % 4])


@pytest.mark.parametrize("role", [UserRole.SUPER_ADMIN, UserRole.ADMIN])
@pytest.mark.parametrize("headers", [HX, {}], ids=["fragment", "page"])
def test_work_per_list_page_does_not_grow_with_rows(
    app, auth, client, make_user, db, count_queries, monkeypatch, role, headers
):
    auth.sign_in(role=role)
    people(make_user, 40)

    def work(per_page: int) -> tuple[Counter, int, int]:
        app.config["USERS_PER_PAGE"] = per_page
        db.session.expire_all()
        with counting_page_work(app, monkeypatch) as counts, count_queries() as statements:
            html = client.get("/users", headers=headers).get_data(as_text=True)
        monkeypatch.undo()
        return counts, len(statements), html.count('<tr id="user-')

    work(3)  # templates compiled, caches filled
    few, few_statements, few_rows = work(3)
    many, many_statements, many_rows = work(40)
    assert (few_rows, many_rows) == (3, 40)
    assert many == few, (few, many)
    assert many_statements == few_statements <= (3 if role == UserRole.SUPER_ADMIN else 4)


def row_markup(html: str, user_id: str) -> str:
    return re.search(rf'<tr id="user-{user_id}">.*?</tr>', html, re.S).group(0)


def test_a_row_drawn_alone_is_the_row_of_the_list(client, staff, make_user):
    ada = make_user(email="ada@example.com", first_name="Ada", last_name="Lovelace", username="countess", locked=True)
    listed = client.get("/users", headers=HX).get_data(as_text=True)
    alone = client.get(f"/users/{ada.id}/row", headers=HX).get_data(as_text=True)
    assert row_markup(alone, ada.id) == row_markup(listed, ada.id)
    assert 'aria-label="Suspend ada@example.com"' in alone and "badge-locked" in alone


def test_a_public_endpoint_without_credentials_looks_nobody_up(app, client, count_queries, monkeypatch):
    from app.extensions import login_manager

    def no_lookup(_session_id):
        raise AssertionError("nobody is signed in: the session's user is not looked up")

    monkeypatch.setattr(login_manager, "_user_callback", no_lookup)
    with count_queries() as statements:
        assert client.get("/healthz").status_code == 200
    assert len(statements) == 1  # the health check's own SELECT 1


def test_a_public_page_still_knows_who_is_signed_in(client, staff):
    response = client.get("/auth/sign-in")
    assert response.status_code == 302  # a signed-in person is sent on, not shown the sign-in page


def test_the_session_cookie_is_sent_when_it_changes_not_with_every_answer(client, staff, monkeypatch):
    from app.auth import guard

    client.get("/users")  # the first page gives the session its CSRF secret
    assert "Set-Cookie" not in client.get("/users").headers
    now = time.time()
    monkeypatch.setattr(guard.time, "time", lambda: now + 90)  # the "seen" mark moves on once a minute
    refreshed = client.get("/users")
    assert refreshed.status_code == 200 and "Set-Cookie" in refreshed.headers
    assert "Set-Cookie" not in client.get("/users").headers


@pytest.mark.parametrize("role", [UserRole.SUPER_ADMIN, UserRole.ADMIN])
def test_permission_checks_per_list_page_do_not_grow_with_rows(app, auth, client, make_user, monkeypatch, role):
    from app import permissions

    auth.sign_in(role=role)
    people(make_user, 40)
    checks = Counter()
    for name in ("refusal", "can_manage"):
        original = getattr(permissions, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            checks[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(permissions, name, counted)

    def checks_for(per_page: int) -> Counter:
        app.config["USERS_PER_PAGE"] = per_page
        checks.clear()
        assert client.get("/users", headers=HX).status_code == 200
        return Counter(checks)

    assert checks_for(40) == checks_for(4)  # four rows: one of each status, as forty have


def test_offers_asked_once_per_kind_are_each_users_own_answer(app, auth, make_user):
    """offers_for asks the rules once per kind of user (app/permissions.py, target_kind): the answers
    are what asking for every user would give, whoever asks, for every role, status and deletion."""
    from flask import g

    from app.models import utcnow
    from app.permissions import can_act_on
    from app.users.services import statuses_offered
    from app.users.views import offers_for

    everyone = [
        make_user(role=target_role, status=status, deleted_at=utcnow() if deleted else None)
        for target_role in UserRole
        for status in UserStatus
        for deleted in (False, True)
    ]
    for role in (UserRole.SUPER_ADMIN, UserRole.ADMIN):
        staff = make_user(role=role)
        shown = [*everyone, staff]
        with app.test_request_context("/users"):
            g.user = staff
            from app.auth.guard import current_actor

            actor = current_actor()
            offers = offers_for(*shown)
            assert offers["manageable_ids"] == {u.id for u in shown if can_act_on(actor, u)}
            assert offers["status_targets"] == {
                u.id: [s.value for s in statuses_offered(u, actor=actor)] for u in shown
            }
