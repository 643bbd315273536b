"""One-time sign-in links, the session they start, and the guard in front of every page."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.models import AuditEvent, SignInLink, User, UserRole, UserStatus, utcnow
from app.records.users import update_user_fields
from tests.conftest import csrf_token_from


def test_pages_require_sign_in(client):
    response = client.get("/users")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/sign-in?next=")


def test_htmx_request_without_session_is_sent_to_sign_in(client):
    response = client.get("/users", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/auth/sign-in")


def next_of(location: str) -> list[str]:
    return parse_qs(urlsplit(location).query).get("next", [])


def test_an_htmx_fragment_sends_sign_in_back_to_the_page_it_was_on(client):
    response = client.get(
        "/users/count?q=ada&status=active",
        headers={"HX-Request": "true", "HX-Current-URL": "http://localhost/users?q=ada&status=active"},
    )
    assert response.status_code == 401
    assert next_of(response.headers["HX-Redirect"]) == ["/users?q=ada&status=active"]


@pytest.mark.parametrize(
    "current_url",
    [
        None,
        "https://evil.example/users",
        "//evil.example/x",
        "javascript:alert(1)",
        "http://localhost/auth/sign-in?next=/users",
        "http://[localhost/users",
        "http://localhost//evil.example/x",
    ],
)
def test_an_htmx_fragment_never_becomes_next(client, current_url):
    headers = {"HX-Request": "true"} | ({"HX-Current-URL": current_url} if current_url else {})
    response = client.get("/users/count?q=ada", headers=headers)
    assert response.status_code == 401
    location = response.headers["HX-Redirect"]
    assert location.startswith("/auth/sign-in") and next_of(location) == []


def test_a_page_request_keeps_its_next(client):
    response = client.get("/users?q=ada")
    assert response.status_code == 302
    assert next_of(response.headers["Location"]) == ["/users?q=ada"]


def test_a_boosted_htmx_navigation_keeps_the_page_it_goes_to(client):
    headers = {"HX-Request": "true", "HX-Boosted": "true", "HX-Current-URL": "http://localhost/"}
    response = client.get("/users?q=ada", headers=headers)
    assert response.status_code == 401
    assert next_of(response.headers["HX-Redirect"]) == ["/users?q=ada"]


def test_public_endpoints_need_no_session(client):
    assert client.get("/healthz").status_code == 200
    page = client.get("/auth/sign-in")
    assert page.status_code == 200
    assert "flask --app app users sign-in-link" in page.get_data(as_text=True)
    with client.get("/static/app.css") as css:
        assert css.status_code == 200


def test_create_admin_then_sign_in_link_then_users_page(runner, client, db):
    result = runner.invoke(args=["users", "create-admin", "Boss@Example.com"])
    assert result.exit_code == 0, result.output
    boss = db.session.scalars(sa.select(User).where(User.email == "boss@example.com")).one()
    assert (boss.role, boss.status) == (UserRole.SUPER_ADMIN, UserStatus.ACTIVE)
    assert boss.clerk_id.startswith("local_")

    result = runner.invoke(args=["users", "sign-in-link", "boss@example.com"])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith("http://localhost/auth/link/")

    response = client.get(url.removeprefix("http://localhost"))
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/users")
    assert page.status_code == 200
    assert "boss@example.com" in page.get_data(as_text=True)
    actions = db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.occurred_at)).all()
    assert actions == ["user.create_admin", "auth.sign_in_link_issued", "auth.signed_in"]


def test_create_admin_with_admin_role_and_existing_user_is_promoted(runner, make_user, db):
    user = make_user(email="support@example.com", role=UserRole.USER, status=UserStatus.SUSPENDED)
    result = runner.invoke(args=["users", "create-admin", "support@example.com", "--role", "admin"])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    user = db.session.get(User, user.id)
    assert (user.role, user.status) == (UserRole.ADMIN, UserStatus.ACTIVE)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


def test_create_admin_refuses_a_bad_email(runner, db):
    result = runner.invoke(args=["users", "create-admin", "not-an-email"])
    assert result.exit_code != 0
    assert "not a valid email" in result.output
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


def test_sign_in_link_refused_for_unknown_and_plain_users(runner, make_user):
    make_user(email="plain@example.com")
    unknown = runner.invoke(args=["users", "sign-in-link", "nobody@example.com"])
    assert unknown.exit_code != 0 and "no user" in unknown.output
    plain = runner.invoke(args=["users", "sign-in-link", "plain@example.com"])
    assert plain.exit_code != 0 and "active admin or super admin" in plain.output


def test_a_link_works_once(auth, client, make_user):
    admin = make_user(email="admin@example.com", role=UserRole.ADMIN)
    link = auth.link_for(admin)
    assert client.get(link).status_code == 302
    again = client.get(link)
    assert again.status_code == 403
    assert "already been used" in again.get_data(as_text=True)


def test_forged_and_tampered_links_are_refused(auth, client, make_user):
    admin = make_user(role=UserRole.ADMIN)
    link = auth.link_for(admin)
    for forged in ("/auth/link/abc", link[:-3] + "xyz", "/auth/link/" + "a" * 200):
        response = client.get(forged)
        assert response.status_code == 403
        assert "not valid" in response.get_data(as_text=True)
    assert client.get("/users").status_code == 302  # still signed out


def test_a_link_signed_with_another_key_is_refused(app, client, make_user, db):
    from itsdangerous import URLSafeTimedSerializer

    from app.auth.services import SALT

    admin = make_user(role=UserRole.ADMIN)
    db.session.add(SignInLink(id="known-id", user_id=admin.id, expires_at=utcnow() + timedelta(minutes=5)))
    db.session.commit()
    token = URLSafeTimedSerializer("another-key", salt=SALT).dumps("known-id")
    assert client.get(f"/auth/link/{token}").status_code == 403


def test_an_expired_link_is_refused(auth, client, make_user, db):
    admin = make_user(role=UserRole.ADMIN)
    link = auth.link_for(admin)
    db.session.execute(sa.update(SignInLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    response = client.get(link)
    assert response.status_code == 403
    assert "expired" in response.get_data(as_text=True)


def test_links_expire_after_fifteen_minutes(app):
    assert app.config["SIGN_IN_LINK_MAX_AGE"] == 15 * 60


def test_a_link_for_an_admin_who_lost_the_role_is_refused(auth, client, make_user, db):
    admin = make_user(role=UserRole.ADMIN)
    link = auth.link_for(admin)
    admin.role = UserRole.USER
    db.session.commit()
    response = client.get(link)
    assert response.status_code == 403
    assert "may not use the dashboard" in response.get_data(as_text=True)


def test_session_ends_when_the_account_is_suspended(auth, client, db):
    admin = auth.sign_in(role=UserRole.ADMIN)
    assert client.get("/users").status_code == 200
    admin.status = UserStatus.SUSPENDED
    db.session.commit()
    assert client.get("/users").status_code == 302


def test_a_signed_in_account_demoted_to_user_is_signed_out(auth, client, db):
    admin = auth.sign_in(role=UserRole.ADMIN)
    admin.role = UserRole.USER
    db.session.commit()
    response = client.get("/users")
    assert response.status_code == 302 and response.headers["Location"].startswith("/auth/sign-in")


def copy_of_the_session(app, client):
    """Another browser holding a copy of this client's session cookie."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    return other


def test_sign_out_ends_every_copy_of_the_session_cookie(app, auth, client, db):
    admin = auth.sign_in(role=UserRole.ADMIN)
    page = client.get("/users").get_data(as_text=True)
    copy = copy_of_the_session(app, client)
    assert copy.get("/users").status_code == 200
    version, updated_at = admin.version, admin.updated_at

    assert client.post("/auth/sign-out", data={"csrf_token": csrf_token_from(page)}).status_code == 302
    assert client.get("/users").status_code == 302
    response = copy.get("/users")
    assert response.status_code == 302 and response.headers["Location"].startswith("/auth/sign-in")
    db.session.expire_all()
    admin = db.session.get(User, admin.id)
    assert admin.session_generation == 1
    # An edit form opened on this admin before the sign-out still saves: the optimistic lock did not move.
    assert (admin.version, admin.updated_at) == (version, updated_at)
    event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "auth.signed_out")).one()
    assert event.target_id == admin.id and event.actor_id == admin.id
    # A new sign-in works, with the new generation.
    auth.sign_in(admin)
    assert client.get("/users").status_code == 200


LOSSES = {
    "suspension": ({"status": UserStatus.SUSPENDED}, {"status": UserStatus.ACTIVE}),
    "inactive": ({"status": UserStatus.INACTIVE}, {"status": UserStatus.ACTIVE}),
    "demotion": ({"role": UserRole.USER}, {"role": UserRole.ADMIN}),
    "deletion": ({"deleted_at": "now"}, {"deleted_at": None}),
}


@pytest.mark.parametrize("loss", LOSSES)
def test_losing_the_dashboard_ends_every_session_and_getting_it_back_revives_none(app, auth, client, db, loss):
    taken, given_back = ({k: utcnow() if v == "now" else v for k, v in c.items()} for c in LOSSES[loss])
    admin = auth.sign_in(role=UserRole.ADMIN)
    copy = copy_of_the_session(app, client)
    assert copy.get("/users").status_code == 200

    update_user_fields(admin, taken, actor=Actor.cli())
    db.session.commit()
    assert copy.get("/users").status_code == 302
    update_user_fields(admin, given_back, actor=Actor.cli())
    db.session.commit()
    assert admin.can_use_dashboard
    for browser in (client, copy):
        response = browser.get("/users")
        assert response.status_code == 302 and response.headers["Location"].startswith("/auth/sign-in")
    auth.sign_in(admin)  # a new sign-in is the way back
    assert client.get("/users").status_code == 200


def test_a_suspension_from_the_dashboard_ends_the_admins_sessions(app, auth, client, make_user, db):
    from app.users.services import set_status

    admin = auth.sign_in(role=UserRole.ADMIN)
    copy = copy_of_the_session(app, client)
    boss = make_user(role=UserRole.SUPER_ADMIN)
    set_status(admin, UserStatus.SUSPENDED, actor=Actor.staff(boss))
    db.session.commit()
    set_status(admin, UserStatus.ACTIVE, actor=Actor.staff(boss))
    db.session.commit()
    assert copy.get("/users").status_code == 302


def test_changes_that_keep_the_dashboard_keep_the_session(auth, client, db):
    admin = auth.sign_in(role=UserRole.ADMIN)
    update_user_fields(admin, {"role": UserRole.SUPER_ADMIN, "first_name": "Ada"}, actor=Actor.cli())
    db.session.commit()
    assert client.get("/users").status_code == 200
    assert admin.session_generation == 0


def test_sign_out_needs_csrf_and_ends_the_session(auth, client):
    auth.sign_in()
    page = client.get("/users").get_data(as_text=True)
    assert client.post("/auth/sign-out").status_code == 400
    assert client.get("/users").status_code == 200
    response = client.post("/auth/sign-out", data={"csrf_token": csrf_token_from(page)})
    assert response.status_code == 302
    assert client.get("/users").status_code == 302


def test_next_parameter_only_returns_to_this_site(auth, client, make_user):
    admin = make_user(role=UserRole.ADMIN)
    response = client.get(auth.link_for(admin) + "?next=https://evil.example/")
    assert response.headers["Location"] == "/"
    other = make_user(role=UserRole.ADMIN)
    response = client.get(auth.link_for(other) + "?next=/users/abc")
    assert response.headers["Location"] == "/users/abc"


def test_session_cookie_is_httponly_and_lax(auth, client, make_user):
    admin = make_user(role=UserRole.ADMIN)
    response = client.get(auth.link_for(admin))
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_sessions_end_after_the_idle_time(app, auth, client):
    import time as clock

    auth.sign_in()
    assert client.get("/users").status_code == 200
    with client.session_transaction() as session:
        session["seen"] = int(clock.time()) - app.config["SESSION_IDLE_MINUTES"] * 60 - 1
    response = client.get("/users")
    assert response.status_code == 302
    assert "without activity" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_sessions_end_after_the_maximum_age_however_busy(app, auth, client):
    import time as clock

    auth.sign_in()
    assert client.get("/users").status_code == 200
    with client.session_transaction() as session:
        session["started"] = int(clock.time()) - int(app.permanent_session_lifetime.total_seconds()) - 1
    response = client.get("/users")
    assert response.status_code == 302
    assert "12 hours after signing in" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_repeated_refused_links_are_throttled(app, auth, client, make_user, db):
    app.config["SIGN_IN_FAILURE_LIMIT"] = 3
    for _ in range(3):
        assert client.get("/auth/link/forged-token").status_code == 403
    admin = make_user(role=UserRole.ADMIN)
    good = auth.link_for(admin)
    throttled = client.get(good)
    assert throttled.status_code == 429
    assert "Too many refused sign-in links" in throttled.get_data(as_text=True)
    refusals = db.session.scalar(sa.select(sa.func.count()).where(AuditEvent.action == "auth.sign_in_refused"))
    assert refusals == 3
    # Another address is not held back by this one's failures.
    assert client.get(good, environ_base={"REMOTE_ADDR": "10.9.8.7"}).status_code == 302


def test_security_headers_and_cookie_flags_in_production(database_url, make_user):
    from tests.conftest import make_app

    app = make_app(database_url, APP_ENV="production", SESSION_COOKIE_SECURE=True)
    with app.app_context():
        client = app.test_client()
        admin = make_user(role=UserRole.ADMIN)
        from app.audit.services import Actor
        from app.auth.services import issue_sign_in_link
        from app.extensions import db as ext_db

        token = issue_sign_in_link(admin, secret_key=app.config["SECRET_KEY"], max_age=60, actor=Actor.cli())
        ext_db.session.commit()
        response = client.get(f"/auth/link/{token}")
        cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        headers = client.get("/users").headers
        assert headers["Referrer-Policy"] == "same-origin"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        ext_db.session.remove()
        ext_db.engine.dispose()
