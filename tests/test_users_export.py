"""CSV export: the current filters, streamed in keyset batches."""

import csv
import io

import pytest

from app.models import UserRole, UserStatus
from app.users import export


@pytest.fixture
def staff(auth):
    return auth.sign_in(auth.make_user(email="staff@admin.test", role=UserRole.SUPER_ADMIN))


def read_csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"))))


def test_export_holds_exactly_the_filtered_users(client, staff, make_user):
    make_user(email="s1@example.com", status=UserStatus.SUSPENDED, first_name="Sus")
    make_user(email="s2@example.com", status=UserStatus.SUSPENDED, role=UserRole.ADMIN)
    make_user(email="active@example.com")
    response = client.get("/users/export.csv?status=suspended&sort=email")
    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="users-')
    rows = read_csv(response)
    assert [r["email"] for r in rows] == ["s1@example.com", "s2@example.com"]
    assert rows[0]["first_name"] == "Sus" and rows[1]["role"] == "admin"
    assert list(rows[0]) == list(export.COLUMNS)


def test_export_walks_every_batch(client, staff, make_user, monkeypatch):
    for i in range(23):
        make_user(email=f"bulk{i:02d}@example.com")
    original = export.iter_users
    monkeypatch.setattr(export, "iter_users", lambda filters: original(filters, batch=5))
    emails = [r["email"] for r in read_csv(client.get("/users/export.csv?q=bulk&sort=email"))]
    assert emails == [f"bulk{i:02d}@example.com" for i in range(23)]


def test_export_starts_with_a_byte_order_mark_so_excel_keeps_accents(client, staff, make_user):
    make_user(email="zoe@example.com", first_name="Zoë", last_name="Brontë")
    response = client.get("/users/export.csv?q=zoe")
    body = response.get_data()
    assert body.startswith(b"\xef\xbb\xbfid,email,")
    assert response.mimetype == "text/csv" and response.mimetype_params["charset"] == "utf-8"
    assert "Zoë" in body.decode("utf-8") and read_csv(response)[0]["last_name"] == "Brontë"


@pytest.mark.parametrize(
    ("stored", "exported"),
    [
        ('=HYPERLINK("http://evil")', '\'=HYPERLINK("http://evil")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=cmd", "'\t=cmd"),
        ("\r=cmd", "'\r=cmd"),
        ("Ada", "Ada"),
        ("a=b", "a=b"),  # only a leading character starts a formula
    ],
)
def test_export_neutralises_spreadsheet_formulas(client, staff, make_user, stored, exported):
    make_user(email="f@example.com", first_name=stored, username=stored, public_metadata=None)
    row = read_csv(client.get("/users/export.csv?q=f@example.com"))[0]
    assert row["first_name"] == exported and row["username"] == exported


def test_export_requires_sign_in(client):
    assert client.get("/users/export.csv").status_code == 302
