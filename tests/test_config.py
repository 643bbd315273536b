import os
import subprocess
import sys

import pytest

from app import create_app
from app.config import ConfigError, from_environment, normalise_database_url


@pytest.mark.parametrize(
    "given",
    [
        "postgres://u:p@db:5432/app",
        "postgresql://u:p@db:5432/app",
        "postgresql+psycopg://u:p@db:5432/app",
    ],
)
def test_postgres_urls_are_normalised_to_psycopg(given):
    assert normalise_database_url(given) == "postgresql+psycopg://u:p@db:5432/app"


def test_sqlite_url_is_left_alone():
    assert normalise_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_default_database_is_a_sqlite_file_under_instance():
    settings = from_environment({})
    assert settings["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert settings["SQLALCHEMY_DATABASE_URI"].endswith("instance/dashboard.sqlite3")


def test_database_url_from_environment():
    settings = from_environment({"DATABASE_URL": "postgres://a@b/c"})
    assert settings["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://a@b/c"


def test_production_without_secret_key_refuses_to_start():
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        create_app({"APP_ENV": "production", "SECRET_KEY": None, "SQLALCHEMY_DATABASE_URI": "sqlite://"})


def test_production_with_secret_key_starts_with_secure_cookies(monkeypatch):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    monkeypatch.setenv("DATABASE_URL", "sqlite://")
    app = create_app({})
    assert app.config["SECRET_KEY"] == "s3cret"
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True


def test_development_gets_a_secret_key_of_its_own():
    app = create_app({"APP_ENV": "development", "SECRET_KEY": None, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert app.config["SECRET_KEY"]


def test_missing_secret_key_is_one_clear_line_on_the_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DATABASE_URL"}}
    env.update(APP_ENV="production", DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "routes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
