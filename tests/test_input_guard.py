"""NUL bytes and lone surrogates in the path, query string or a form: a 400 with the reason, never a 500.

Run on both databases: PostgreSQL is where a NUL in a text value fails.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.models import UserRole, utcnow
from tests.conftest import HX, csrf_token_from


@pytest.fixture
def staff(auth):
    return auth.sign_in(
        auth.make_user(email="staff@admin.test", role=UserRole.SUPER_ADMIN, created_at=utcnow() - timedelta(days=900))
    )


# --- NUL bytes and lone surrogates: 400 with a reason, never a 500 ---------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/users?q=a%00b", "The query parameter “q” contains a NUL character."),
        ("/users/%00", "The address contains a NUL character."),
        ("/users/count?q=a%00b", "The query parameter “q” contains a NUL character."),
        ("/users/export.csv?q=a%00b", "The query parameter “q” contains a NUL character."),
        ("/audit?actor=a%00b", "The query parameter “actor” contains a NUL character."),
        ("/webhooks/a%00b", "The address contains a NUL character."),
        ("/webhooks?type=a%00b", "The query parameter “type” contains a NUL character."),
        ("/users?a%00b=1", "A query parameter’s name contains a NUL character."),
        ("/audit?" + "n" * 100 + "=%00", "The query parameter “" + "n" * 59 + "…” contains a NUL character."),
    ],
)
def test_a_nul_byte_in_the_url_is_a_400_with_its_reason(client, staff, url, reason):
    page = client.get(url)
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert "<html" in html and reason in html
    fragment = client.get(url, headers=HX)
    assert fragment.status_code == 400
    assert "<html" not in fragment.get_data(as_text=True) and reason in fragment.get_data(as_text=True)


def test_a_nul_byte_in_the_invite_form_is_a_400_and_nobody_is_invited(client, staff, db):
    import sqlalchemy as sa

    from app.models import User

    token = csrf_token_from(client.get("/users/new").get_data(as_text=True))
    response = client.post(
        "/users",
        data={
            "csrf_token": token,
            "email": "nul@example.com",
            "first_name": "Ad\x00a",
            "last_name": "Lovelace",
            "role": "user",
        },
    )
    assert response.status_code == 400
    assert "The field “first_name” contains a NUL character." in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.scalar(sa.select(User).where(User.email == "nul@example.com")) is None


def test_a_nul_byte_before_sign_in_is_no_500_either(client):
    response = client.get("/users/%00")
    assert response.status_code == 302  # to sign in, as any page
    assert client.get(response.headers["Location"]).status_code == 400  # whose `next` holds the NUL


def test_the_clerk_webhook_keeps_its_own_rules(client, app):
    """The receiver reads the raw body itself: the guard leaves it alone (here: no secret, 503)."""
    response = client.post("/webhooks/clerk?x=%00", data=b'{"a": "\x00"}', content_type="application/json")
    assert response.status_code == 503 and response.mimetype == "application/json"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("plain", None),
        ("é ü 漢字 🙂 \ufffd", None),
        ("a\x00b", "contains a NUL character"),
        ("a\ud800b", "is not valid text"),
        ("\udfff", "is not valid text"),
    ],
)
def test_what_the_guard_refuses(text, problem):
    from app.database import text_problem

    assert text_problem(text) == problem
