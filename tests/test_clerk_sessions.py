"""Signing in with a Clerk session token, verified offline with a key the test makes."""

import time

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.models import AuditEvent, UserRole, UserStatus, utcnow
from tests.conftest import csrf_token_from

ORIGIN = "https://admin.example.com"


def make_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public.decode()


@pytest.fixture(scope="module")
def keys():
    return make_key()


@pytest.fixture
def clerk_app(app, keys):
    app.config["CLERK_JWT_KEY"] = keys[1]
    app.config["CLERK_AUTHORIZED_PARTIES"] = [ORIGIN]
    return app


def token_for(key, sub, **claims):
    now = int(time.time())
    payload = {
        "sub": sub,
        "sid": "sess_1",
        "azp": ORIGIN,
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 60,
        "iss": "https://clerk.example.com",
        "v": 2,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "ins_test"})


@pytest.fixture
def admin(make_user):
    return make_user(email="clerk-admin@example.com", role=UserRole.ADMIN, clerk_id="user_2clerkadmin")


def test_a_session_cookie_signs_in_and_starts_a_dashboard_session(clerk_app, client, keys, admin, db):
    client.set_cookie("__session", token_for(keys[0], admin.clerk_id))
    assert client.get("/users").status_code == 200
    client.delete_cookie("__session")
    assert client.get("/users").status_code == 200  # the dashboard's own session carries on
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "auth.signed_in")).one()
    assert event.target_id == admin.id and "clerk session" in event.changes


def test_a_bearer_token_signs_in_one_request_only(clerk_app, client, keys, admin):
    headers = {"Authorization": f"Bearer {token_for(keys[0], admin.clerk_id)}"}
    response = client.get("/users", headers=headers)
    assert response.status_code == 200
    assert client.get("/users").status_code == 302


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "other_key",
        "wrong_azp",
        "no_azp",
        "no_exp",
        "hs256",
        "garbage",
        "pending",
        "no_sub",
    ],
)
def test_bad_tokens_are_kept_out(clerk_app, client, keys, admin, case):
    key = keys[0]
    now = int(time.time())
    token = {
        "expired": lambda: token_for(key, admin.clerk_id, exp=now - 30),
        "not_yet_valid": lambda: token_for(key, admin.clerk_id, nbf=now + 60),
        "issued_in_future": lambda: token_for(key, admin.clerk_id, iat=now + 60),
        "other_key": lambda: token_for(make_key()[0], admin.clerk_id),
        "wrong_azp": lambda: token_for(key, admin.clerk_id, azp="https://evil.example.com"),
        "no_azp": lambda: token_for(key, admin.clerk_id, azp=None),
        "no_exp": lambda: token_for(key, admin.clerk_id, exp=None),
        "hs256": lambda: jwt.encode(
            {"sub": admin.clerk_id, "exp": now + 60, "azp": ORIGIN}, "secret" * 8, algorithm="HS256"
        ),
        "garbage": lambda: "not.a.jwt",
        "pending": lambda: token_for(key, admin.clerk_id, sts="pending"),
        "no_sub": lambda: token_for(key, None),
    }[case]()
    client.set_cookie("__session", token)
    response = client.get("/users")
    assert response.status_code == 302 and response.headers["Location"].startswith("/auth/sign-in")
    page = client.get(response.headers["Location"])
    assert "was not accepted" in page.get_data(as_text=True)


def test_unknown_users_are_sent_to_sign_in(clerk_app, client, keys):
    client.set_cookie("__session", token_for(keys[0], "user_nobody"))
    assert client.get("/users").status_code == 302


def test_a_plain_user_gets_403(clerk_app, client, keys, make_user):
    user = make_user(clerk_id="user_plain", role=UserRole.USER)
    client.set_cookie("__session", token_for(keys[0], user.clerk_id))
    assert client.get("/users").status_code == 403


@pytest.mark.parametrize(
    "change", [{"status": UserStatus.SUSPENDED}, {"status": UserStatus.INACTIVE}, {"deleted_at": "now"}]
)
def test_suspended_inactive_or_deleted_admins_are_kept_out(clerk_app, client, keys, admin, db, change):
    for field, value in change.items():
        setattr(admin, field, utcnow() if value == "now" else value)
    db.session.commit()
    client.set_cookie("__session", token_for(keys[0], admin.clerk_id))
    assert client.get("/users").status_code == 302


def test_another_authorization_scheme_does_not_hide_the_cookie(clerk_app, client, keys, admin):
    client.set_cookie("__session", token_for(keys[0], admin.clerk_id))
    assert client.get("/users", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 200


def test_without_authorized_parties_any_azp_is_accepted(clerk_app, client, keys, admin):
    clerk_app.config["CLERK_AUTHORIZED_PARTIES"] = []
    client.set_cookie("__session", token_for(keys[0], admin.clerk_id, azp=None))
    assert client.get("/users").status_code == 200


def test_without_a_jwt_key_clerk_tokens_are_ignored(app, client, keys, admin):
    client.set_cookie("__session", token_for(keys[0], admin.clerk_id))
    assert client.get("/users").status_code == 302


def test_sign_out_drops_clerk_cookie_too(clerk_app, client, keys, admin):
    client.set_cookie("__session", token_for(keys[0], admin.clerk_id))
    token = csrf_token_from(client.get("/users").get_data(as_text=True))
    response = client.post("/auth/sign-out", data={"csrf_token": token})
    assert "__session=;" in " ".join(response.headers.getlist("Set-Cookie"))
    assert client.get("/users").status_code == 302


def test_sign_in_page_with_a_publishable_key_loads_clerk_from_the_frontend_api(database_url, make_user):
    from tests.conftest import make_app

    app = make_app(database_url, CLERK_PUBLISHABLE_KEY="pk_test_Y2xlcmsuZXhhbXBsZS5jb20k")
    with app.app_context():
        response = app.test_client().get("/auth/sign-in")
        html = response.get_data(as_text=True)
        from app.extensions import db

        db.session.remove()
        db.engine.dispose()
    assert 'src="https://clerk.example.com/npm/@clerk/clerk-js@5/dist/clerk.browser.js"' in html
    assert "script-src 'self' https://clerk.example.com" in response.headers["Content-Security-Policy"]
    assert "sign-in-link" in html  # the break-glass path is still explained


def test_a_bad_publishable_key_stops_start_up():
    from app import create_app
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="CLERK_PUBLISHABLE_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "CLERK_PUBLISHABLE_KEY": "sk_live_oops", "TESTING": True})


def test_tokens_against_a_running_server(clerk_app, live_server, keys, admin, make_user):
    import httpx

    plain = make_user(clerk_id="user_plain_http", role=UserRole.USER)
    good, expired = token_for(keys[0], admin.clerk_id), token_for(keys[0], admin.clerk_id, exp=int(time.time()) - 60)
    with httpx.Client(base_url=live_server, follow_redirects=False) as http:
        assert http.get("/users", headers={"Authorization": f"Bearer {good}"}).status_code == 200
        assert http.get("/users", headers={"Authorization": f"Bearer {expired}"}).status_code == 302
        assert (
            http.get("/users", headers={"Authorization": f"Bearer {token_for(keys[0], plain.clerk_id)}"}).status_code
            == 403
        )
        assert (
            http.get(
                "/users", headers={"Authorization": f"Bearer {token_for(make_key()[0], admin.clerk_id)}"}
            ).status_code
            == 302
        )
        http.cookies.set("__session", good)
        signed_in = http.get("/users")
        assert signed_in.status_code == 200
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert signed_in.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in signed_in.headers["content-security-policy"]


def test_sign_out_ends_a_session_a_clerk_token_started_for_every_copy(clerk_app, client, keys, admin):
    client.set_cookie("__session", token_for(keys[0], admin.clerk_id))
    page = client.get("/users").get_data(as_text=True)
    copy = clerk_app.test_client()
    copy.set_cookie("session", client.get_cookie("session").value)  # the dashboard's cookie, not Clerk's
    assert copy.get("/users").status_code == 200
    assert client.post("/auth/sign-out", data={"csrf_token": csrf_token_from(page)}).status_code == 302
    assert copy.get("/users").status_code == 302
