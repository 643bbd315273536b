"""The fake Clerk answers as Clerk does: each route driven over loopback by the real SDK (7.0.0).

For each route: the SDK parses the answer into its model, the request it sent (method, path,
body), what changed in the fake's state, and each error answer (ClerkErrors when the SDK's
operation declares that status, SDKError otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from clerk_backend_api import Clerk, models

from app.clerk.client import quiet_sdk_deprecations
from tests.fake_clerk import LOCKOUT_SECONDS, SECRET_KEY, FakeClerk, bapi_user

BEARER = f"Bearer {SECRET_KEY}"
T = TypeVar("T")


@pytest.fixture
def grace() -> dict:
    return bapi_user(
        email="grace@example.com",
        first_name="Grace",
        last_name="Hopper",
        username="grace_h",
        extra_emails=("grace.old@example.com",),
        updated_at=1_000,
    )


@pytest.fixture
def linus() -> dict:
    return bapi_user(email="linus@example.com", first_name="Linus", last_name="Torvalds", username="linus")


@pytest.fixture
def fake(grace, linus) -> Iterator[FakeClerk]:
    with FakeClerk([grace, linus]) as server:
        yield server


def client_for(fake: FakeClerk, secret_key: str = SECRET_KEY) -> Clerk:
    return Clerk(bearer_auth=secret_key, server_url=fake.url, retry_config=None, timeout_ms=5000)


@pytest.fixture
def sdk(fake) -> Iterator[Clerk]:
    with client_for(fake) as clerk:
        yield clerk


def call(action: Callable[[], T]) -> T:
    with quiet_sdk_deprecations():
        return action()


def refused(action: Callable[[], Any], status: int, error: type[Exception] = models.ClerkErrors) -> Exception:
    """The SDK raises `error` with `status`: the exception, to look at further."""
    with quiet_sdk_deprecations(), pytest.raises(error) as raised:
        action()
    assert raised.value.status_code == status
    return raised.value


def code_of(error: Exception) -> tuple[str, str]:
    assert isinstance(error, models.ClerkErrors)
    first = error.data.errors[0]
    return first.code, first.message


def last(fake: FakeClerk) -> tuple[str, str, Any, str | None]:
    c = fake.calls[-1]
    return c.method, c.path, c.body, c.authorization


def address_ids(user: dict) -> list[str]:
    return [a["id"] for a in user["email_addresses"]]


# --- PATCH /v1/users/{id} -------------------------------------------------------------------------


def test_update_sets_the_names_username_and_external_id(sdk, fake, grace, linus):
    user = call(
        lambda: sdk.users.update(
            user_id=grace["id"], first_name="Amazing", last_name=None, username="Admiral", external_id="ext-7"
        )
    )

    assert isinstance(user, models.User)
    assert (user.id, user.first_name, user.last_name, user.username, user.external_id) == (
        grace["id"],
        "Amazing",
        None,
        "Admiral",
        "ext-7",
    )
    assert last(fake) == (
        "PATCH",
        f"/v1/users/{grace['id']}",
        {
            "first_name": "Amazing",
            "last_name": None,
            "username": "Admiral",
            "external_id": "ext-7",
            "notify_primary_email_address_changed": False,  # the SDK always sends its default
        },
        BEARER,
    )
    assert (grace["first_name"], grace["last_name"], grace["username"], grace["external_id"]) == (
        "Amazing",
        None,
        "Admiral",
        "ext-7",
    )
    assert grace["updated_at"] == user.updated_at == 1_001
    assert linus["first_name"] == "Linus"

    # Only what is sent changes; "" removes a username as null does.
    user = call(lambda: sdk.users.update(user_id=grace["id"], username=""))
    assert last(fake)[2] == {"username": "", "notify_primary_email_address_changed": False}
    assert user.username is None and grace["username"] is None and grace["first_name"] == "Amazing"
    assert grace["updated_at"] == 1_002


def test_update_refuses_a_username_another_user_holds(sdk, fake, grace, linus):
    before = dict(grace)

    error = refused(lambda: sdk.users.update(user_id=grace["id"], first_name="X", username="LINUS"), 422)

    assert code_of(error) == ("form_identifier_exists", "That username is taken. Please try another.")
    assert grace == before  # nothing applied, updated_at unchanged
    # The user's own username, in another case, is not "taken".
    assert call(lambda: sdk.users.update(user_id=grace["id"], username="Grace_H")).username == "Grace_H"


def test_update_of_an_unknown_user_is_404(sdk, fake):
    error = refused(lambda: sdk.users.update(user_id="user_gone", first_name="X"), 404)
    assert code_of(error)[0] == "resource_not_found"


# --- POST /v1/users/{id}/lock and /unlock ---------------------------------------------------------


def test_lock_and_unlock(sdk, fake, grace):
    user = call(lambda: sdk.users.lock(user_id=grace["id"]))

    assert isinstance(user, models.User)
    assert (user.locked, user.lockout_expires_in_seconds) == (True, LOCKOUT_SECONDS) == (True, 1800)
    assert last(fake) == ("POST", f"/v1/users/{grace['id']}/lock", None, BEARER)
    assert (grace["locked"], grace["lockout_expires_in_seconds"], grace["updated_at"]) == (True, 1800, 1_001)

    user = call(lambda: sdk.users.unlock(user_id=grace["id"]))

    assert (user.locked, user.lockout_expires_in_seconds) == (False, None)
    assert last(fake) == ("POST", f"/v1/users/{grace['id']}/unlock", None, BEARER)
    assert (grace["locked"], grace["lockout_expires_in_seconds"], grace["updated_at"]) == (False, None, 1_002)


def test_lock_of_an_unknown_user_reaches_the_sdk_as_an_sdk_error(sdk, fake):
    # users.lock / unlock parse only a 403 into ClerkErrors: a 404 is an SDKError.
    refused(lambda: sdk.users.lock(user_id="user_gone"), 404, models.SDKError)
    refused(lambda: sdk.users.unlock(user_id="user_gone"), 404, models.SDKError)


# --- DELETE /v1/users/{id} ------------------------------------------------------------------------


def test_delete_removes_the_user_and_answers_a_deleted_object(sdk, fake, grace, linus):
    deleted = call(lambda: sdk.users.delete(user_id=grace["id"]))

    assert deleted == models.DeletedObject(object="user", id=grace["id"], deleted=True)
    assert last(fake) == ("DELETE", f"/v1/users/{grace['id']}", None, BEARER)
    assert fake.users == [linus] and fake.deleted_users == [grace]
    refused(lambda: sdk.users.get(user_id=grace["id"]), 404)
    error = refused(lambda: sdk.users.delete(user_id=grace["id"]), 404)
    assert code_of(error)[0] == "resource_not_found"
    assert call(lambda: sdk.users.count()).total_count == 1


# --- POST /v1/email_addresses ---------------------------------------------------------------------


def test_create_a_verified_primary_email_address(sdk, fake, grace):
    request = {"user_id": grace["id"], "email_address": "amazing@example.com", "verified": True, "primary": True}

    address = call(lambda: sdk.email_addresses.create(request=request))

    assert isinstance(address, models.EmailAddress)
    assert re.fullmatch(r"idn_fake\d{6}", address.id)
    assert isinstance(address.verification, models.Admin)
    assert (address.verification.status, address.verification.strategy) == ("verified", "admin")
    assert (address.email_address, address.reserved, address.linked_to) == ("amazing@example.com", False, [])
    assert address.created_at == address.updated_at == grace["updated_at"] == 1_001
    assert last(fake) == (
        "POST",
        "/v1/email_addresses",
        {**request, "notify_primary_email_address_changed": False},
        BEARER,
    )
    assert grace["primary_email_address_id"] == address.id
    assert address_ids(grace)[-1] == address.id and len(grace["email_addresses"]) == 3
    # The user, as the SDK reads it back, has it too.
    user = call(lambda: sdk.users.get(user_id=grace["id"]))
    assert user.primary_email_address_id == address.id
    assert [a.email_address for a in user.email_addresses][-1] == "amazing@example.com"


def test_an_unverified_address_has_no_verification_and_stays_secondary(sdk, fake, grace):
    primary = grace["primary_email_address_id"]
    request = {"user_id": grace["id"], "email_address": "later@example.com", "verified": False, "primary": False}

    address = call(lambda: sdk.email_addresses.create(request=request))

    # The SDK's admin verification can only say "verified": Clerk's unverified address has none.
    assert address.verification is None
    assert grace["primary_email_address_id"] == primary
    assert grace["updated_at"] == 1_001


def test_the_first_address_of_a_user_becomes_primary(sdk, fake):
    bare = bapi_user(email_addresses=[], primary_email_address_id=None)
    fake.users.append(bare)

    address = call(lambda: sdk.email_addresses.create(request={"user_id": bare["id"], "email_address": "b@x.io"}))

    assert last(fake)[2] == {
        "user_id": bare["id"],
        "email_address": "b@x.io",
        "notify_primary_email_address_changed": False,
    }
    assert bare["primary_email_address_id"] == address.id and address.verification is None


@pytest.mark.parametrize(
    ("user", "email", "status", "code", "message"),
    [
        ("user_gone", "new@example.com", 404, "resource_not_found", "User not found"),
        ("grace", "no-at-sign", 422, "form_param_format_invalid", "email_address must be a valid email address"),
        (
            "grace",
            "LINUS@example.com",
            422,
            "form_identifier_exists",
            "That email address is taken. Please try another.",
        ),
        (
            "grace",
            "Grace@Example.com",
            422,
            "form_identifier_exists",
            "That email address is taken. Please try another.",
        ),
    ],
)
def test_create_email_address_errors(sdk, fake, grace, linus, user, email, status, code, message):
    user_id = grace["id"] if user == "grace" else user
    before = (address_ids(grace), address_ids(linus), grace["updated_at"], grace["primary_email_address_id"])

    error = refused(
        lambda: sdk.email_addresses.create(
            request={"user_id": user_id, "email_address": email, "verified": True, "primary": True}
        ),
        status,
    )

    assert code_of(error) == (code, message)
    assert (address_ids(grace), address_ids(linus), grace["updated_at"], grace["primary_email_address_id"]) == before


# --- PATCH /v1/email_addresses/{id} ---------------------------------------------------------------


def test_update_verifies_an_address_and_makes_it_primary(sdk, fake, grace):
    created = call(
        lambda: sdk.email_addresses.create(
            request={"user_id": grace["id"], "email_address": "new@example.com", "verified": False}
        )
    )

    address = call(lambda: sdk.email_addresses.update(email_address_id=created.id, verified=True, primary=True))

    assert isinstance(address, models.EmailAddress) and address.id == created.id
    assert isinstance(address.verification, models.Admin) and address.verification.status == "verified"
    assert last(fake) == (
        "PATCH",
        f"/v1/email_addresses/{created.id}",
        {"verified": True, "primary": True, "notify_primary_email_address_changed": False},
        BEARER,
    )
    assert grace["primary_email_address_id"] == created.id
    assert grace["updated_at"] == address.updated_at == 1_002
    stored = next(a for a in grace["email_addresses"] if a["id"] == created.id)
    assert stored["verification"]["status"] == "verified"

    # verified=False takes the verification away; an address already verified keeps its own.
    old = grace["email_addresses"][0]
    assert call(
        lambda: sdk.email_addresses.update(email_address_id=old["id"], verified=True)
    ).verification.strategy == ("email_code")
    assert call(lambda: sdk.email_addresses.update(email_address_id=created.id, verified=False)).verification is None
    assert last(fake)[2] == {"verified": False, "notify_primary_email_address_changed": False}


def test_update_of_an_unknown_address_is_404(sdk, fake):
    error = refused(lambda: sdk.email_addresses.update(email_address_id="idn_gone", verified=True), 404)
    assert code_of(error)[0] == "resource_not_found"


# --- DELETE /v1/email_addresses/{id} --------------------------------------------------------------


def test_delete_a_secondary_address(sdk, fake, grace):
    primary = grace["primary_email_address_id"]
    (secondary,) = [i for i in address_ids(grace) if i != primary]

    deleted = call(lambda: sdk.email_addresses.delete(email_address_id=secondary))

    assert deleted == models.DeletedObject(object="email_address", id=secondary, deleted=True)
    assert last(fake) == ("DELETE", f"/v1/email_addresses/{secondary}", None, BEARER)
    assert address_ids(grace) == [primary] and grace["updated_at"] == 1_001
    error = refused(lambda: sdk.email_addresses.delete(email_address_id=secondary), 404)
    assert code_of(error)[0] == "resource_not_found"


def test_the_primary_address_cannot_be_deleted(sdk, fake, grace):
    before = (address_ids(grace), grace["updated_at"])

    error = refused(lambda: sdk.email_addresses.delete(email_address_id=grace["primary_email_address_id"]), 400)

    assert code_of(error) == (
        "primary_identification_deletion_not_allowed",
        "The primary email address cannot be deleted",
    )
    assert (address_ids(grace), grace["updated_at"]) == before


# --- sessions -------------------------------------------------------------------------------------


def test_add_session_makes_a_session_the_sdk_accepts(fake, grace):
    session = fake.add_session(grace["id"], latest_activity={"city": "Paris", "is_mobile": True})

    parsed = models.Session.model_validate(session)
    assert (parsed.user_id, parsed.status, parsed.object) == (grace["id"], "active", "session")
    assert parsed.latest_activity is not None
    activity = parsed.latest_activity
    assert (activity.city, activity.is_mobile, activity.browser_name, activity.device_type) == (
        "Paris",
        True,
        "Chrome",
        "Macintosh",
    )
    assert activity.country and activity.ip_address
    assert session["created_at"] < session["last_active_at"] <= session["updated_at"] < session["expire_at"]
    assert fake.sessions == [session]
    with pytest.raises(ValueError):
        fake.add_session(grace["id"], status="signed_in")


def test_list_sessions_filters_by_user_and_status_newest_first(sdk, fake, grace, linus):
    older = fake.add_session(grace["id"])
    fake.add_session(grace["id"], status="revoked")
    newer = fake.add_session(grace["id"], latest_activity={"browser_name": "Firefox", "device_type": "iPhone"})
    fake.add_session(linus["id"])

    sessions = call(lambda: sdk.sessions.list(user_id=grace["id"], status=models.QueryParamStatus.ACTIVE))

    assert all(isinstance(s, models.Session) for s in sessions)
    assert [s.id for s in sessions] == [newer["id"], older["id"]]
    assert sessions[0].latest_activity.browser_name == "Firefox"
    assert sessions[0].last_active_at == newer["last_active_at"]
    assert last(fake) == ("GET", "/v1/sessions", None, BEARER)
    # The SDK sends the enum's value and its default page.
    assert fake.requests[-1] == f"GET /v1/sessions?user_id={grace['id']}&status=active&limit=10&offset=0"

    assert len(call(lambda: sdk.sessions.list(user_id=grace["id"]))) == 3
    page = call(lambda: sdk.sessions.list(user_id=grace["id"], limit=1, offset=1))
    assert [s.status for s in page] == ["revoked"]
    assert call(lambda: sdk.sessions.list(user_id="user_gone")) == []  # not a 404
    refused(lambda: sdk.sessions.list(user_id=grace["id"], limit=0), 422)


def test_revoke_a_session(sdk, fake, grace):
    session = fake.add_session(grace["id"])
    updated_at = session["updated_at"]

    revoked = call(lambda: sdk.sessions.revoke(session_id=session["id"]))

    assert isinstance(revoked, models.Session)
    assert (revoked.id, revoked.status) == (session["id"], models.Status.REVOKED)
    assert last(fake) == ("POST", f"/v1/sessions/{session['id']}/revoke", None, BEARER)
    assert (session["status"], session["updated_at"]) == ("revoked", updated_at + 1)
    assert call(lambda: sdk.sessions.list(user_id=grace["id"], status=models.QueryParamStatus.ACTIVE)) == []

    error = refused(lambda: sdk.sessions.revoke(session_id=session["id"]), 400)
    assert code_of(error)[0] == "session_not_active"
    assert session["updated_at"] == updated_at + 1
    error = refused(lambda: sdk.sessions.revoke(session_id="sess_gone"), 404)
    assert code_of(error)[0] == "resource_not_found"


# --- snapshots, failures, the secret key, concurrency ---------------------------------------------


def test_webhook_data_and_answers_are_snapshots(sdk, fake, grace):
    snapshot = fake.webhook_data(grace["id"])
    assert snapshot == grace and snapshot is not grace
    assert snapshot["email_addresses"] is not grace["email_addresses"]

    call(lambda: sdk.users.update(user_id=grace["id"], first_name="Later"))
    call(lambda: sdk.email_addresses.create(request={"user_id": grace["id"], "email_address": "z@example.com"}))
    call(lambda: sdk.users.update_metadata(user_id=grace["id"], public_metadata={"plan": "pro"}))

    assert (snapshot["first_name"], len(snapshot["email_addresses"]), snapshot["public_metadata"]) == ("Grace", 2, {})
    assert snapshot["updated_at"] == 1_000
    snapshot["email_addresses"].clear()
    assert len(grace["email_addresses"]) == 3

    status, payload, _ = fake.respond("GET", f"/v1/users/{grace['id']}", None, BEARER)
    assert status == 200 and payload == grace and payload is not grace
    assert payload["email_addresses"][0] is not grace["email_addresses"][0]
    with pytest.raises(KeyError):
        fake.webhook_data("user_gone")


def test_fail_next_reaches_the_sdk_as_500_and_422(sdk, fake, grace):
    fake.fail_next = [(500, {}), (422, {})]

    refused(lambda: sdk.users.update(user_id=grace["id"], first_name="X"), 500, models.SDKError)
    error = refused(
        lambda: sdk.email_addresses.create(request={"user_id": grace["id"], "email_address": "q@x.io"}), 422
    )

    assert code_of(error) == ("injected", "injected failure 422")
    assert [(c.method, c.path) for c in fake.calls] == [
        ("PATCH", f"/v1/users/{grace['id']}"),
        ("POST", "/v1/email_addresses"),
    ]
    assert (grace["first_name"], len(grace["email_addresses"]), grace["updated_at"]) == ("Grace", 2, 1_000)
    assert call(lambda: sdk.users.update(user_id=grace["id"], first_name="X")).first_name == "X"


def test_a_wrong_secret_key_is_401_and_changes_nothing(fake, grace):
    session = fake.add_session(grace["id"])
    before = fake.webhook_data(grace["id"])

    with client_for(fake, "sk_test_wrong") as wrong:
        refused(lambda: wrong.users.update(user_id=grace["id"], first_name="X"), 401)
        refused(lambda: wrong.users.lock(user_id=grace["id"]), 401, models.SDKError)
        refused(lambda: wrong.users.delete(user_id=grace["id"]), 401)
        refused(lambda: wrong.email_addresses.create(request={"user_id": grace["id"], "email_address": "w@x.io"}), 401)
        refused(lambda: wrong.email_addresses.delete(email_address_id=grace["email_addresses"][0]["id"]), 401)
        refused(lambda: wrong.sessions.list(user_id=grace["id"]), 401)
        refused(lambda: wrong.sessions.revoke(session_id=session["id"]), 401)

    assert fake.webhook_data(grace["id"]) == before and session["status"] == "active"
    assert {c.authorization for c in fake.calls} == {"Bearer sk_test_wrong"}


def test_concurrent_requests_are_applied_one_at_a_time(sdk, fake, grace):
    def add(n: int) -> str:
        request = {"user_id": grace["id"], "email_address": f"many{n}@example.com", "verified": True}
        return call(lambda: sdk.email_addresses.create(request=request)).id

    def claim(_: int) -> bool:
        try:
            call(lambda: sdk.email_addresses.create(request={"user_id": grace["id"], "email_address": "one@x.io"}))
        except models.ClerkErrors as error:
            assert code_of(error)[0] == "form_identifier_exists"
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(add, range(40)))
        claimed = list(pool.map(claim, range(8)))

    assert len(set(ids)) == 40 and set(ids) <= set(address_ids(grace))
    assert claimed.count(True) == 1  # one address, one holder
    assert len(grace["email_addresses"]) == 2 + 40 + 1
    assert grace["updated_at"] == 1_000 + 41
