"""One behaviour for every list and form: each list answers htmx with its results fragment, and
the invite form posts to its own address (a refused submit stays on /users/new)."""

import pytest
import sqlalchemy as sa

from app.models import ClerkCall, User, UserStatus
from tests.conftest import HX


@pytest.mark.parametrize(
    "path, fragment_marker",
    [
        ("/users", "results-head"),
        ("/webhooks", "No deliveries yet"),
        ("/audit", "audit-table"),
        ("/clerk", "clerk-calls"),
    ],
)
def test_each_list_answers_htmx_with_its_results_only(client, staff, db, make_user, path, fragment_marker):
    make_user(email="ada@example.com")
    db.session.add(ClerkCall(operation="update_metadata", payload="{}", state="failed", attempts=1))
    db.session.commit()
    page = client.get(path)
    fragment = client.get(path, headers=HX)
    assert page.status_code == fragment.status_code == 200
    assert "<html" in page.get_data(as_text=True) and "<html" not in fragment.get_data(as_text=True)
    assert fragment_marker in fragment.get_data(as_text=True)
    assert "HX-Request" in fragment.headers.get("Vary", "")


def test_the_outbox_filter_keeps_its_state_in_the_fragment(client, staff, db):
    db.session.add_all(
        [
            ClerkCall(operation="ban_user", payload="{}", state="failed", attempts=1, last_error="no"),
            ClerkCall(operation="unban_user", payload="{}", state="pending", attempts=0),
        ]
    )
    db.session.commit()
    html = client.get("/clerk?state=failed", headers=HX).get_data(as_text=True)
    assert html.count('id="clerk-call-') == 1 and "Calls to Clerk, failed" in html


def test_the_invite_form_posts_to_its_own_address(client, token, db):
    form = client.get("/users/new").get_data(as_text=True)
    assert 'action="/users/new"' in form
    refused = client.post("/users/new", data={"csrf_token": token, "email": "not an email", "role": "user"})
    assert refused.status_code == 422 and "field-error" in refused.get_data(as_text=True)
    invited = client.post("/users/new", data={"csrf_token": token, "email": "new@example.com", "role": "user"})
    assert invited.status_code == 302
    assert db.session.scalars(sa.select(User.status).where(User.email == "new@example.com")).one() == UserStatus.INVITED
    # POST /users, the design's endpoint, still invites.
    assert (
        client.post("/users", data={"csrf_token": token, "email": "two@example.com", "role": "user"}).status_code == 302
    )


def test_adding_a_key_value_pair_says_so_in_the_fragment(client, token, make_user):
    ada = make_user(email="ada@example.com")
    html = client.post(
        f"/users/{ada.id}/data", data={"csrf_token": token, "key": "plan", "value": "pro"}, headers=HX
    ).get_data(as_text=True)
    assert '<p class="notice" role="status" tabindex="-1" data-focus>Added plan.</p>' in html
