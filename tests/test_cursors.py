"""Crafted cursors and numbers in the URL fall back to the first page and the defaults, never a 500.

Cursors are base64url JSON that anyone can write: a date that overflows in UTC, a lone
surrogate or a NUL in an id must not reach a query. Run on both databases.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
from werkzeug.datastructures import MultiDict

from app.models import AuditEvent, UserRole, WebhookEvent, utcnow
from app.users.queries import SORTS
from tests.conftest import HX


@pytest.fixture
def staff(auth):
    return auth.sign_in(
        auth.make_user(email="staff@admin.test", role=UserRole.SUPER_ADMIN, created_at=utcnow() - timedelta(days=900))
    )


def crafted(*parts) -> str:
    """A cursor as the codecs write them: base64url of a JSON array, unpadded."""
    raw = json.dumps(list(parts)).encode()  # ensure_ascii: "\ud800" travels as an escape
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def emails(html: str) -> list[str]:
    return re.findall(r'<a href="/users/[^"]+">([^<]+@[^<]+)</a>', html)


# --- crafted cursors fall back to the first page --------------------------------------------


BAD_DATETIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
BAD_TEXTS = ["\ud800", "a\x00b", "x" * 3000]


def users_cursors(sort_name: str) -> list[str]:
    sort = SORTS[sort_name]
    good_value = "2024-01-01T00:00:00+00:00" if sort.kind == "datetime" else "m"
    values = BAD_DATETIMES if sort.kind == "datetime" else BAD_TEXTS
    return [
        *(crafted(sort_name, value, "some-id") for value in values),
        *(crafted(sort_name, good_value, user_id) for user_id in BAD_TEXTS),
        crafted(sort_name, good_value, "some-id", "extra"),
        crafted(sort_name, 10**400 if sort.kind == "text" else 1e308, "some-id"),
    ]


@pytest.mark.parametrize("direction", ["after", "before"])
@pytest.mark.parametrize("sort", list(SORTS))
def test_a_crafted_users_cursor_falls_back_to_the_first_page(app, client, staff, make_user, sort, direction):
    app.config["USERS_PER_PAGE"] = 2
    for i in range(3):
        make_user(email=f"c{i}@example.com", first_name=f"C{i}", last_sign_in_at=utcnow() - timedelta(days=i))
    first = emails(client.get(f"/users?sort={sort}", headers=HX).get_data(as_text=True))
    assert len(first) == 2
    for cursor in users_cursors(sort):
        response = client.get(f"/users?sort={sort}&{direction}={cursor}", headers=HX)
        assert response.status_code == 200, cursor
        assert emails(response.get_data(as_text=True)) == first, cursor


def test_users_cursor_decoding_keeps_only_valid_keys():
    from app.users.queries import keyset

    newest, by_email = keyset(SORTS["-created_at"]), keyset(SORTS["email"])
    when, user_id = newest.decode(crafted("-created_at", "2024-01-01T02:00:00+02:00", "u1"))
    assert when.isoformat() == "2024-01-01T00:00:00+00:00" and user_id == "u1"
    for value in BAD_DATETIMES:
        assert newest.decode(crafted("-created_at", value, "u1")) is None
    assert by_email.decode(crafted("email", "a\ud800", "u1")) is None
    assert by_email.decode(crafted("email", "a@example.com", "u1")) == ("a@example.com", "u1")
    # A cursor of another order is the first page of this one.
    assert newest.decode(crafted("email", "a@example.com", "u1")) is None


def newest_first_cursors() -> list[str]:
    good = "2024-01-01T00:00:00+00:00"
    return [
        *(crafted(value, "some-id") for value in BAD_DATETIMES),
        *(crafted(good, text) for text in BAD_TEXTS),
        crafted(good, "some-id", "extra"),
        crafted(good, 10**400),
    ]


def test_a_crafted_audit_cursor_falls_back_to_the_first_page(app, client, staff, db):
    now = utcnow()
    for i in range(3):
        db.session.add(
            AuditEvent(
                source="cli", actor_label="cli", action=f"test.crafted{i}", occurred_at=now - timedelta(minutes=i)
            )
        )
    db.session.commit()
    first = client.get("/audit", headers=HX).get_data(as_text=True)
    assert "test.crafted0" in first
    for cursor in newest_first_cursors():
        response = client.get(f"/audit?after={cursor}", headers=HX)
        assert response.status_code == 200, cursor
        assert response.get_data(as_text=True) == first, cursor


def test_a_crafted_webhooks_cursor_falls_back_to_the_first_page(app, client, staff, db):
    now = utcnow()
    for i in range(3):
        db.session.add(
            WebhookEvent(
                id=f"msg_crafted{i}",
                type="user.updated",
                outcome="applied",
                payload="{}",
                received_at=now - timedelta(minutes=i),
            )
        )
    db.session.commit()
    first = client.get("/webhooks", headers=HX).get_data(as_text=True)
    assert "msg_crafted0" in first
    for cursor in newest_first_cursors():
        response = client.get(f"/webhooks?after={cursor}", headers=HX)
        assert response.status_code == 200, cursor
        assert response.get_data(as_text=True) == first, cursor


def test_newest_first_cursor_decoding_keeps_only_valid_keys():
    from app.pagination import decode_cursor, encode_cursor

    when, row_id = decode_cursor(crafted("2024-01-01T02:00:00+02:00", "r1"), "datetime", "text")
    assert when.isoformat() == "2024-01-01T00:00:00+00:00" and row_id == "r1"
    assert decode_cursor(encode_cursor(when, "r1"), "datetime", "text") == (when, "r1")
    for cursor in newest_first_cursors():
        assert decode_cursor(cursor, "datetime", "text") is None, cursor


BAD_INTS = [2**31, -(2**31) - 1, 10**400, 1e308, 1.5, True, "12", None]


def test_integer_cursor_decoding_keeps_only_an_integer_column_can_bind():
    from app.pagination import decode_cursor, encode_cursor

    assert decode_cursor(encode_cursor(12), "int") == (12,)
    assert decode_cursor(crafted(2**31 - 1), "int") == (2**31 - 1,)
    for value in BAD_INTS:
        assert decode_cursor(crafted(value), "int") is None, value
    assert decode_cursor(crafted(12, 13), "int") is None


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_page", ["-1", "0", "99999999999999999999999", "1e9", "9" * 5000, "25.0"])
def test_rows_per_page_out_of_range_falls_back(client, staff, per_page):
    from app.users.queries import UserFilters

    assert UserFilters.from_args(MultiDict({"per_page": per_page})).per_page is None
    assert client.get(f"/users?per_page={per_page}").status_code == 200


def test_a_crafted_outbox_cursor_falls_back_to_the_first_page(client, staff, db):
    from app.models import ClerkCall

    db.session.add_all([ClerkCall(operation="ban_user", payload="{}", state="pending", attempts=0) for _ in range(3)])
    db.session.commit()
    first = client.get("/clerk", headers=HX).get_data(as_text=True)
    assert first.count('id="clerk-call-') == 3
    for cursor in [*(crafted(value) for value in BAD_INTS), crafted(1, 2), "%%%", "A" * 5000]:
        response = client.get(f"/clerk?after={cursor}", headers=HX)
        assert response.status_code == 200, cursor
        assert response.get_data(as_text=True) == first, cursor


@pytest.mark.parametrize("before", ["99999999999999999999999", "-99999999999999999999999", "-1", "abc", "3"])
def test_old_outbox_links_with_a_number_show_the_newest_calls(client, staff, before):
    # Pages were `?before=<call id>` once; such links now open the first page.
    assert client.get(f"/clerk?before={before}").status_code == 200


def test_retrying_a_call_with_a_huge_id_is_404(client, staff):
    from tests.conftest import csrf_token_from

    token = csrf_token_from(client.get("/clerk").get_data(as_text=True))
    response = client.post("/clerk/calls/99999999999999999999999/retry", data={"csrf_token": token})
    assert response.status_code == 404
