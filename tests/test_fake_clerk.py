"""The fake Clerk answers as Clerk does: each route driven over loopback by the real SDK (7.0.0).

For each route: the SDK parses the answer into its model, the request it sent (method, path,
body), what changed in the fake's state, and each error answer (ClerkErrors when the SDK's
operation declares that status, SDKError otherwise).
"""

from __future__ import annotations

import re
import time
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


# --- organizations --------------------------------------------------------------------------------


@pytest.fixture
def acme(fake) -> dict:
    return fake.add_organization("Acme", "acme", created_by="user_founder")


@pytest.fixture
def beta(fake) -> dict:
    return fake.add_organization("Beta Corp", "beta")


def test_list_organizations_pages_orders_searches_and_counts_members(sdk, fake, acme, beta, grace, linus):
    fake.add_membership(acme["id"], grace["id"])
    fake.add_membership(acme["id"], linus["id"], role="org:admin")
    fake.add_membership(beta["id"], grace["id"])

    page = call(lambda: sdk.organizations.list(include_members_count=True, order_by="+created_at", limit=1, offset=0))

    assert isinstance(page, models.Organizations)
    assert (page.total_count, [o.id for o in page.data]) == (2, [acme["id"]])
    assert page.data[0].members_count == 2 and page.data[0].created_by == "user_founder"
    assert (
        fake.requests[-1] == "GET /v1/organizations?include_members_count=true&order_by=%2Bcreated_at&limit=1&offset=0"
    )
    rest = call(lambda: sdk.organizations.list(include_members_count=True, order_by="+created_at", limit=1, offset=1))
    assert ([o.id for o in rest.data], rest.data[0].members_count) == ([beta["id"]], 1)
    # Newest first by default; members_count only when asked for; query matches name or slug.
    default = call(lambda: sdk.organizations.list())
    assert [o.id for o in default.data] == [beta["id"], acme["id"]] and default.data[0].members_count is None
    assert [o.id for o in call(lambda: sdk.organizations.list(query="CORP")).data] == [beta["id"]]
    assert [o.id for o in call(lambda: sdk.organizations.list(order_by="-members_count")).data] == [
        acme["id"],
        beta["id"],
    ]
    assert call(lambda: sdk.organizations.list(query="nothing")).model_dump() == {"data": [], "total_count": 0}
    refused(lambda: sdk.organizations.list(limit=501), 422)
    refused(lambda: sdk.organizations.list(order_by="slug"), 422)


def test_get_an_organization_by_id_or_slug(sdk, fake, acme, grace):
    fake.add_membership(acme["id"], grace["id"])

    by_id = call(lambda: sdk.organizations.get(organization_id=acme["id"], include_members_count=True))
    by_slug = call(lambda: sdk.organizations.get(organization_id="acme"))

    assert isinstance(by_id, models.Organization)
    assert (by_id.id, by_id.name, by_id.slug, by_id.members_count) == (acme["id"], "Acme", "acme", 1)
    assert by_slug.id == acme["id"] and by_slug.members_count is None
    assert code_of(refused(lambda: sdk.organizations.get(organization_id="org_gone"), 404))[0] == "resource_not_found"


def test_update_an_organization_and_its_slug_rules(sdk, fake, acme, beta):
    updated = call(lambda: sdk.organizations.update(organization_id=acme["id"], name="Acme Inc", slug="acme-inc"))

    assert (updated.name, updated.slug, updated.updated_at) == ("Acme Inc", "acme-inc", acme["created_at"] + 1)
    assert last(fake) == ("PATCH", f"/v1/organizations/{acme['id']}", {"name": "Acme Inc", "slug": "acme-inc"}, BEARER)
    assert (acme["name"], acme["slug"]) == ("Acme Inc", "acme-inc")

    before = dict(acme)
    error = refused(lambda: sdk.organizations.update(organization_id=acme["id"], name="X", slug="beta"), 422)
    assert code_of(error) == ("form_identifier_exists", "That slug is taken. Please try another.")
    error = refused(lambda: sdk.organizations.update(organization_id=acme["id"], slug="Not A Slug"), 422)
    assert code_of(error)[0] == "form_param_format_invalid"
    assert acme == before
    # Its own slug is not taken; only what is sent changes.
    assert call(lambda: sdk.organizations.update(organization_id=acme["id"], slug="acme-inc")).name == "Acme Inc"
    refused(lambda: sdk.organizations.update(organization_id="org_gone", name="X"), 404)


def test_delete_an_organization_takes_its_memberships_and_invitations(sdk, fake, acme, beta, grace):
    membership = fake.add_membership(acme["id"], grace["id"])
    fake.add_organization_invitation(acme["id"], "new@example.com")

    deleted = call(lambda: sdk.organizations.delete(organization_id=acme["id"]))

    assert deleted == models.DeletedObject(object="organization", id=acme["id"], deleted=True)
    assert fake.organizations == [beta] and fake.deleted_organizations == [acme]
    assert fake.memberships == [] and [m["id"] for m in fake.deleted_memberships] == [membership["id"]]
    assert fake.organization_invitations == []
    refused(lambda: sdk.organizations.get(organization_id=acme["id"]), 404)
    refused(lambda: sdk.organizations.delete(organization_id=acme["id"]), 404)


# --- organization memberships ---------------------------------------------------------------------


def test_create_a_membership_keyed_by_organization_and_user(sdk, fake, acme, grace):
    membership = call(
        lambda: sdk.organization_memberships.create(organization_id=acme["id"], user_id=grace["id"], role="org:admin")
    )

    assert isinstance(membership, models.OrganizationMembership)
    assert re.fullmatch(r"orgmem_fake\d{6}", membership.id)
    assert (membership.role, membership.role_name, membership.organization.id) == ("org:admin", "Admin", acme["id"])
    user = membership.public_user_data
    assert (user.user_id, user.identifier, user.first_name, user.username) == (
        grace["id"],
        "grace@example.com",
        "Grace",
        "grace_h",
    )
    assert last(fake) == (
        "POST",
        f"/v1/organizations/{acme['id']}/memberships",
        {"user_id": grace["id"], "role": "org:admin"},
        BEARER,
    )
    assert fake.membership(acme["id"], grace["id"])["id"] == membership.id

    error = refused(
        lambda: sdk.organization_memberships.create(organization_id=acme["id"], user_id=grace["id"], role="org:member"),
        400,
    )
    assert code_of(error)[0] == "already_a_member_in_organization"
    assert fake.membership(acme["id"], grace["id"])["role"] == "org:admin" and len(fake.memberships) == 1


@pytest.mark.parametrize(
    ("organization", "user", "role", "status", "code"),
    [
        ("org_gone", "grace", "org:member", 404, "resource_not_found"),
        ("acme", "user_gone", "org:member", 404, "resource_not_found"),
        ("acme", "grace", "org:owner", 422, "form_param_value_invalid"),
    ],
)
def test_create_membership_errors(sdk, fake, acme, grace, organization, user, role, status, code):
    organization_id = acme["id"] if organization == "acme" else organization
    user_id = grace["id"] if user == "grace" else user

    error = refused(
        lambda: sdk.organization_memberships.create(organization_id=organization_id, user_id=user_id, role=role), status
    )

    assert code_of(error)[0] == code and fake.memberships == []


def test_list_memberships_of_an_organization(sdk, fake, acme, beta, grace, linus):
    first = fake.add_membership(acme["id"], grace["id"])
    second = fake.add_membership(acme["id"], "user_not_in_this_fake", public_user_data={"identifier": "x@y.io"})
    fake.add_membership(beta["id"], linus["id"])

    page = call(
        lambda: sdk.organization_memberships.list(organization_id=acme["id"], order_by="+created_at", limit=1, offset=0)
    )

    assert isinstance(page, models.OrganizationMemberships)
    assert (page.total_count, [m.id for m in page.data]) == (2, [first["id"]])
    rest = call(
        lambda: sdk.organization_memberships.list(organization_id=acme["id"], order_by="+created_at", limit=1, offset=1)
    )
    assert [(m.id, m.public_user_data.identifier) for m in rest.data] == [(second["id"], "x@y.io")]
    newest_first = call(lambda: sdk.organization_memberships.list(organization_id=acme["id"]))
    assert [m.id for m in newest_first.data] == [second["id"], first["id"]]
    refused(lambda: sdk.organization_memberships.list(organization_id="org_gone"), 404, models.SDKError)


def test_update_and_delete_a_membership(sdk, fake, acme, grace):
    added = fake.add_membership(acme["id"], grace["id"])

    changed = call(
        lambda: sdk.organization_memberships.update(organization_id=acme["id"], user_id=grace["id"], role="org:admin")
    )

    assert (changed.id, changed.role, changed.updated_at) == (added["id"], "org:admin", added["updated_at"] + 1)
    assert last(fake) == (
        "PATCH",
        f"/v1/organizations/{acme['id']}/memberships/{grace['id']}",
        {"role": "org:admin"},
        BEARER,
    )
    refused(
        lambda: sdk.organization_memberships.update(organization_id=acme["id"], user_id=grace["id"], role="org:x"),
        422,
    )

    removed = call(lambda: sdk.organization_memberships.delete(organization_id=acme["id"], user_id=grace["id"]))

    assert isinstance(removed, models.OrganizationMembership)
    assert (removed.id, removed.role, removed.updated_at) == (added["id"], "org:admin", added["updated_at"] + 2)
    assert last(fake)[:2] == ("DELETE", f"/v1/organizations/{acme['id']}/memberships/{grace['id']}")
    assert fake.memberships == [] and fake.membership(acme["id"], grace["id"]) is None
    # Already gone: 404, as for a user who never was a member.
    error = refused(lambda: sdk.organization_memberships.delete(organization_id=acme["id"], user_id=grace["id"]), 404)
    assert code_of(error)[0] == "resource_not_found"
    refused(
        lambda: sdk.organization_memberships.update(organization_id=acme["id"], user_id=grace["id"], role="org:admin"),
        404,
    )


# --- organization invitations ---------------------------------------------------------------------


def test_create_list_get_and_revoke_an_organization_invitation(sdk, fake, acme, beta, grace):
    invitation = call(
        lambda: sdk.organization_invitations.create(
            organization_id=acme["id"], email_address="new@example.com", role="org:member", inviter_user_id=grace["id"]
        )
    )

    assert isinstance(invitation, models.OrganizationInvitation)
    assert re.fullmatch(r"orginv_fake\d{6}", invitation.id)
    assert (invitation.email_address, invitation.role, invitation.status, invitation.organization_id) == (
        "new@example.com",
        "org:member",
        "pending",
        acme["id"],
    )
    assert invitation.expires_at == invitation.created_at + 30 * 86_400_000 and invitation.inviter_id == grace["id"]
    assert last(fake) == (
        "POST",
        f"/v1/organizations/{acme['id']}/invitations",
        {"email_address": "new@example.com", "role": "org:member", "inviter_user_id": grace["id"], "notify": True},
        BEARER,
    )
    fake.add_organization_invitation(acme["id"], "old@example.com", status="accepted")
    fake.add_organization_invitation(beta["id"], "other@example.com")

    pending = call(
        lambda: sdk.organization_invitations.list(
            organization_id=acme["id"], status=models.ListOrganizationInvitationsQueryParamStatus.PENDING
        )
    )
    assert isinstance(pending, models.OrganizationInvitations)
    assert (pending.total_count, [i.id for i in pending.data]) == (1, [invitation.id])
    assert call(lambda: sdk.organization_invitations.list(organization_id=acme["id"])).total_count == 2
    got = call(lambda: sdk.organization_invitations.get(organization_id=acme["id"], invitation_id=invitation.id))
    assert got == invitation
    refused(lambda: sdk.organization_invitations.get(organization_id=beta["id"], invitation_id=invitation.id), 404)

    revoked = call(lambda: sdk.organization_invitations.revoke(organization_id=acme["id"], invitation_id=invitation.id))

    assert (revoked.id, revoked.status, revoked.updated_at) == (invitation.id, "revoked", invitation.updated_at + 1)
    assert last(fake)[:2] == ("POST", f"/v1/organizations/{acme['id']}/invitations/{invitation.id}/revoke")
    error = refused(
        lambda: sdk.organization_invitations.revoke(organization_id=acme["id"], invitation_id=invitation.id), 400
    )
    assert code_of(error)[0] == "organization_invitation_not_pending"
    refused(lambda: sdk.organization_invitations.revoke(organization_id=acme["id"], invitation_id="orginv_gone"), 404)


def test_organization_invitation_errors(sdk, fake, acme, grace):
    fake.add_membership(acme["id"], grace["id"])
    fake.add_organization_invitation(acme["id"], "pending@example.com")

    def invite(email: str, role: str = "org:member"):
        return lambda: sdk.organization_invitations.create(organization_id=acme["id"], email_address=email, role=role)

    assert code_of(refused(invite("no-at-sign"), 422))[0] == "form_param_format_invalid"
    assert code_of(refused(invite("x@example.com", "org:owner"), 422))[0] == "form_param_value_invalid"
    assert code_of(refused(invite("PENDING@example.com"), 400))[0] == "duplicate_record"
    assert code_of(refused(invite("grace@example.com"), 400))[0] == "already_a_member_in_organization"
    assert (
        code_of(
            refused(
                lambda: sdk.organization_invitations.create(
                    organization_id="org_gone", email_address="x@example.com", role="org:member"
                ),
                404,
            )
        )[0]
        == "resource_not_found"
    )
    assert len(fake.organization_invitations) == 1


def test_the_instances_invitations_carry_their_organization(sdk, fake, acme, beta):
    first = fake.add_organization_invitation(acme["id"], "a@example.com")
    fake.add_organization_invitation(acme["id"], "b@example.com", status="revoked")
    third = fake.add_organization_invitation(beta["id"], "c@example.com")

    page = call(
        lambda: sdk.organization_invitations.get_all(
            status=models.ListInstanceOrganizationInvitationsQueryParamStatus.PENDING,
            order_by="+created_at",
            limit=10,
            offset=0,
        )
    )

    assert page.total_count == 2
    assert [(i.id, i.public_organization_data.slug) for i in page.data] == [
        (first["id"], "acme"),
        (third["id"], "beta"),
    ]
    assert (
        fake.requests[-1] == "GET /v1/organization_invitations?order_by=%2Bcreated_at&status=pending&limit=10&offset=0"
    )


# --- organization webhooks, failures ---------------------------------------------------------------


def test_webhook_data_is_shaped_as_clerk_sends_it_not_as_the_sdk_models(fake, acme, grace):
    membership = fake.add_membership(acme["id"], grace["id"], role="org:admin")
    invitation = fake.add_organization_invitation(acme["id"], "new@example.com")

    organization = fake.organization_webhook_data(acme["id"])
    member = fake.membership_webhook_data(membership["id"])
    invited = fake.organization_invitation_webhook_data(invitation["id"])

    assert organization["object"] == "organization" and "members_count" not in organization
    assert (organization["id"], organization["name"], organization["slug"]) == (acme["id"], "Acme", "acme")
    assert member["organization"] == organization and member["role"] == "org:admin"
    assert member["public_user_data"] == {
        "user_id": grace["id"],
        "identifier": "grace@example.com",
        "first_name": "Grace",
        "last_name": "Hopper",
        "image_url": grace["image_url"],
        "has_image": False,
    }
    assert "role_name" not in member  # the SDK's own field
    assert invited["public_organization_data"]["id"] == acme["id"] and invited["status"] == "pending"
    assert "inviter_id" not in invited and "public_inviter_data" not in invited
    # The SDK's models refuse what webhooks carry (docs/clerk.md §6): the reason not to parse with them.
    with pytest.raises(ValueError):
        models.OrganizationMembership.model_validate({**member, "public_user_data": {"user_id": grace["id"]}})
    with pytest.raises(ValueError):
        models.OrganizationInvitation.model_validate(invited)
    assert fake.organization_deleted_data(acme["id"]) == {"object": "organization", "id": acme["id"], "deleted": True}
    # Snapshots: later changes do not alter them.
    acme["name"] = "Later"
    fake.memberships[0]["role"] = "org:member"
    assert (organization["name"], member["organization"]["name"], member["role"]) == ("Acme", "Acme", "org:admin")
    with pytest.raises(KeyError):
        fake.organization_webhook_data("org_gone")


def test_a_removed_membership_keeps_its_webhook_data(sdk, fake, acme, grace):
    membership = fake.add_membership(acme["id"], grace["id"])
    call(lambda: sdk.organization_memberships.delete(organization_id=acme["id"], user_id=grace["id"]))

    data = fake.membership_webhook_data(membership["id"])

    assert (data["id"], data["updated_at"]) == (membership["id"], membership["updated_at"] + 1)
    assert data["organization"]["id"] == acme["id"]


def test_fail_next_and_delay_reach_the_organization_routes(sdk, fake, acme, grace):
    fake.fail_next = [(429, {"Retry-After": "7"}), (503, {})]

    error = refused(lambda: sdk.organizations.list(), 429, models.SDKError)
    assert error.headers.get("retry-after") == "7"
    refused(
        lambda: sdk.organization_memberships.create(organization_id=acme["id"], user_id=grace["id"], role="org:member"),
        503,
        models.SDKError,
    )
    assert fake.memberships == []

    fake.delay = 0.2
    started = time.monotonic()
    call(lambda: sdk.organizations.update(organization_id=acme["id"], name="Slow"))
    assert time.monotonic() - started >= 0.2 and acme["name"] == "Slow"


def test_a_wrong_secret_key_changes_no_organization(fake, acme, grace):
    with client_for(fake, "sk_test_wrong") as wrong:
        refused(lambda: wrong.organizations.list(), 401, models.SDKError)
        refused(lambda: wrong.organizations.update(organization_id=acme["id"], name="X"), 401, models.SDKError)
        refused(
            lambda: wrong.organization_memberships.create(
                organization_id=acme["id"], user_id=grace["id"], role="org:member"
            ),
            401,
            models.SDKError,
        )
    assert acme["name"] == "Acme" and fake.memberships == []


def test_fail_calls_answers_the_nth_matching_request(sdk, fake, acme, beta):
    fake.fail_calls = {("GET /v1/organizations?", 2): (429, {"Retry-After": "3"})}

    assert call(lambda: sdk.organizations.list(limit=1)).total_count == 2
    error = refused(lambda: sdk.organizations.list(limit=1, offset=1), 429, models.SDKError)
    assert error.headers.get("retry-after") == "3"
    assert call(lambda: sdk.organizations.get(organization_id=acme["id"])).id == acme["id"]  # another route
    assert call(lambda: sdk.organizations.list(limit=1, offset=1)).data[0].id == acme["id"]  # the 3rd: answered
