"""Cross-cutting behaviour: health, error pages, security headers."""

import sqlalchemy as sa

from tests.conftest import make_app


def test_healthz_checks_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_is_503_when_the_database_is_unreachable():
    app = make_app(
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 2}},
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"


def test_security_headers_on_every_response(client):
    for url in ("/healthz", "/auth/sign-in", "/nope"):
        headers = client.get(url).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_nothing_but_static_files_is_cached(auth, client, make_user):
    user = make_user(email="cached@example.com")
    static = client.get("/static/app.css")
    static.close()
    assert static.headers.get("Cache-Control") != "no-store"
    assert client.get("/users").headers["Cache-Control"] == "no-store"  # the redirect to sign in
    auth.sign_in()
    hx = {"HX-Request": "true"}
    responses = {
        "page": client.get("/users"),
        "fragment": client.get("/users?q=cached", headers=hx),
        "count": client.get("/users/count", headers=hx),
        "detail": client.get(f"/users/{user.id}"),
        "export": client.get("/users/export.csv"),
        "audit": client.get("/audit", headers=hx),
        "webhooks": client.get("/webhooks"),
        "404 page": client.get("/users/nobody"),
        "404 fragment": client.get("/users/nobody", headers=hx),
        "400": client.get("/users?q=%00"),
        "health": client.get("/healthz"),
    }
    for name, response in responses.items():
        response.get_data()  # read the export's stream to its end
        assert response.headers["Cache-Control"] == "no-store", name


def test_no_inline_script_in_pages(auth, client):
    auth.sign_in()
    html = client.get("/users").get_data(as_text=True)
    assert "<script>" not in html and "onclick" not in html


def test_404_page_and_fragment(auth, client):
    auth.sign_in()
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "<html" in page.get_data(as_text=True)
    fragment = client.get("/no/such/page", headers={"HX-Request": "true"})
    assert fragment.status_code == 404 and "<html" not in fragment.get_data(as_text=True)


def test_500_rolls_back_and_shows_a_page(database_url, db):
    from app.extensions import db as ext_db
    from app.models import User

    app = make_app(database_url)

    @app.get("/boom")
    def boom():
        ext_db.session.add(User(email="half@example.com", clerk_id="half"))
        ext_db.session.flush()
        raise RuntimeError("midway")

    app.view_functions["boom"].is_public = True
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with app.app_context():
        response = app.test_client().get("/boom")
        assert response.status_code == 500
        assert "Nothing was changed" in response.get_data(as_text=True)
        assert ext_db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0
        ext_db.session.remove()
        ext_db.engine.dispose()
