"""The migrations build exactly the seed's schema, on both databases."""

import pytest
import sqlalchemy as sa

SEED_USER_COLUMNS = {
    "id": False,
    "email": False,
    "first_name": True,
    "last_name": True,
    "role": False,
    "status": False,
    "image_url": True,
    "username": True,
    "external_id": True,
    "public_metadata": True,
    "private_metadata": True,
    "unsafe_metadata": True,
    "last_sign_in_at": True,
    "clerk_id": False,
    "created_at": False,
    "updated_at": False,
}
ADDED_USER_COLUMNS = {
    "deleted_at": True,
    "clerk_updated_at": True,
    "version": False,
    "session_generation": False,
    "locked": False,
}


def test_users_columns_and_nullability(db):
    inspector = sa.inspect(db.engine)
    columns = {c["name"]: c["nullable"] for c in inspector.get_columns("users")}
    assert columns == SEED_USER_COLUMNS | ADDED_USER_COLUMNS
    assert inspector.get_pk_constraint("users")["constrained_columns"] == ["id"]
    uniques = [u["column_names"] for u in inspector.get_unique_constraints("users")]
    assert ["clerk_id"] in uniques


def test_user_data_columns_foreign_key_and_unique_key(db):
    inspector = sa.inspect(db.engine)
    columns = {c["name"]: c["nullable"] for c in inspector.get_columns("user_data")}
    assert columns == {
        "id": False,
        "user_id": False,
        "key": False,
        "value": False,
        "created_at": False,
        "updated_at": False,
        "version": False,
    }
    (fk,) = inspector.get_foreign_keys("user_data")
    assert fk["referred_table"] == "users" and fk["constrained_columns"] == ["user_id"]
    uniques = [u["column_names"] for u in inspector.get_unique_constraints("user_data")]
    assert ["user_id", "key"] in uniques


def index_names(db, table: str) -> set[str]:
    # The catalogues, not the inspector: SQLite's inspector skips expression indexes.
    if db.engine.dialect.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = :t"
    return set(db.session.scalars(sa.text(sql), {"t": table}))


def test_indexes_serve_the_list_filters_and_sorts(db):
    names = index_names(db, "users")
    assert {
        "ix_users_created_at_id",
        "ix_users_email_id",
        "ix_users_role_created_at",
        "ix_users_status_created_at",
        "ix_users_locked_created_at",
        "ix_users_sign_in_sort",
        "ix_users_name_sort",
        "ix_users_lower_email",
    } <= names


@pytest.mark.postgresql
def test_substring_search_has_a_trigram_index(db):
    definition = db.session.scalar(sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_users_search_trgm'"))
    assert "USING gin" in definition and "gin_trgm_ops" in definition


def test_defaults_come_from_the_database(db):
    db.session.execute(sa.text("INSERT INTO users (id, email, clerk_id) VALUES ('u1', 'a@b.c', 'c1')"))
    row = db.session.execute(
        sa.text("SELECT role, status, created_at, updated_at, version FROM users WHERE id = 'u1'")
    ).one()
    db.session.rollback()
    assert (row.role, row.status, row.version) == ("user", "active", 1)
    assert row.created_at is not None and row.updated_at is not None


def test_role_and_status_refuse_values_outside_their_enums(db):
    for column, bad in (("role", "owner"), ("status", "banned")):
        try:
            db.session.execute(
                sa.text(f"INSERT INTO users (id, email, clerk_id, {column}) VALUES ('u2', 'a@b.c', 'c2', :v)"),
                {"v": bad},
            )
        except sa.exc.DBAPIError:
            db.session.rollback()
        else:  # pragma: no cover - the assertion explains
            db.session.rollback()
            raise AssertionError(f"{column}={bad!r} was accepted")


@pytest.mark.postgresql
def test_postgresql_enums_are_native_with_the_seed_values(db):
    rows = db.session.execute(
        sa.text(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) "
            "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"
        )
    ).all()
    assert dict(rows) == {
        "user_role": ["super_admin", "admin", "user"],
        "user_status": ["active", "inactive", "invited", "suspended"],
    }
    types = dict(
        db.session.execute(
            sa.text(
                "SELECT column_name, udt_name FROM information_schema.columns "
                "WHERE table_name = 'users' AND column_name IN ('role', 'status')"
            )
        ).all()
    )
    assert types == {"role": "user_role", "status": "user_status"}


def test_models_and_migrations_agree(runner):
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output
