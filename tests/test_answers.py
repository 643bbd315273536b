"""Every URL that answers htmx differently from a full request says so: Vary: HX-Request, both ways."""

from __future__ import annotations

import json

import pytest

from app.models import UserData
from tests.conftest import HX


@pytest.fixture
def item(db, ada) -> UserData:
    item = UserData(user_id=ada.id, key="plan", value="pro")
    db.session.add(item)
    db.session.commit()
    return item


GETS = [
    "/",
    "/users",
    "/users/count",
    "/webhooks",
    "/clerk",
    "/audit",
    "/users/no-such-user",
    "/users/{ada}/status?to=suspended",
    "/users/{ada}/status?to=suspended&view=row",
    "/users/{ada}/row",
    "/users/{ada}/status-panel",
    "/users/{ada}/data",
    "/users/{ada}/data/{item}/edit",
    "/users/{ada}/data/{item}",
    "/users/{ada}/data/no-such-pair/edit",
]
POSTS = [
    ("/users/bulk", {"action": "suspended", "ids": "{ada}"}),
    ("/users/bulk", {"action": "suspended", "ids": "{ada}", "confirm": "y"}),
    ("/users/bulk", {"action": "", "ids": ""}),
    ("/users/{ada}/status", {"status": "inactive", "view": "row"}),
    ("/users/{ada}/data", {"key": "plan2", "value": "x"}),
    ("/users/{ada}/data", {"key": "", "value": ""}),
    ("/users/{ada}/data/{item}", {"key": "plan", "value": "max"}),
    ("/users/{ada}/data/{item}", {"key": "", "value": ""}),
    ("/users/{ada}/data/no-such-pair", {"key": "plan", "value": "max"}),
    ("/users/{ada}/data/{item}/delete", {}),
]


@pytest.mark.parametrize("headers", [{}, HX], ids=["page", "fragment"])
@pytest.mark.parametrize("url", GETS)
def test_every_get_that_can_answer_htmx_varies_on_it(client, staff, ada, item, url, headers):
    response = client.get(url.format(ada=ada.id, item=item.id), headers=headers)
    assert "HX-Request" in response.headers.get("Vary", ""), (response.status_code, url)


@pytest.mark.parametrize("headers", [{}, HX], ids=["page", "fragment"])
@pytest.mark.parametrize(("url", "data"), POSTS)
def test_every_post_that_can_answer_htmx_varies_on_it(client, staff, token, ada, item, url, data, headers):
    ids = {"ada": ada.id, "item": item.id}
    form = {name: value.format(**ids) for name, value in data.items()}
    response = client.post(url.format(**ids), data={"csrf_token": token, **form}, headers=headers)
    assert "HX-Request" in response.headers.get("Vary", ""), (response.status_code, url)


@pytest.mark.parametrize("headers", [{}, HX], ids=["page", "fragment"])
def test_the_way_to_sign_in_varies_on_htmx(client, headers):
    response = client.get("/users", headers=headers)
    assert response.status_code == (401 if headers else 302)
    assert "HX-Request" in response.headers.get("Vary", "")


def test_pretty_json_shows_hidden_and_reordering_characters_as_escapes():
    """A bidi override in metadata cannot make "evil" read as something else on the page."""
    from app.pages import pretty_json

    stored = json.dumps({"y": "\u202eevil", "z": "a\u2028b\x85c", "s": "\ud800"})
    shown = pretty_json(stored)
    assert "\u202e" not in shown and "\u2028" not in shown and "\x85" not in shown
    assert "\\u202e" in shown and "\\u2028" in shown and "\\u0085" in shown and "\\ud800" in shown
    assert json.loads(shown) == json.loads(stored)  # the editor's text still reads back as the same JSON


def test_history_and_values_show_reordering_characters_as_escapes(client, staff, ada, db, token):
    """The audit trail shows what an edit stored: a right-to-left override is shown, not obeyed."""
    response = client.post(
        f"/users/{ada.id}/metadata/private", data={"csrf_token": token, "value": '{"y": "\u202eevil"}'}
    )
    assert response.status_code == 302
    page = client.get(f"/users/{ada.id}").get_data(as_text=True)
    assert "\u202e" not in page and "\\u202eevil" in page
