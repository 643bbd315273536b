"""A stand-in for Clerk's Backend API, served over real HTTP on loopback for the real SDK.

It answers what `flask clerk sync` asks: `GET /v1/users` (limit 1..500, offset, order_by on
created_at, a bare JSON array), `GET /v1/users/count` and `GET /v1/users/{id}`, with complete
User objects: the SDK's pydantic models refuse anything less (docs/clerk.md).

And what the outbox and the dashboard's actions send (SDK 7.0.0 method in brackets):

- `POST /v1/users/{id}/ban` and `/unban` (users.ban / unban): `banned`; answers the User.
- `POST /v1/users/{id}/lock` and `/unlock` (users.lock / unlock): `locked` true with
  `lockout_expires_in_seconds` 1800, or false with null; answers the User. The SDK parses only a
  403 of these into ClerkErrors: a 404 or 401 reaches it as SDKError.
- `PATCH /v1/users/{id}/metadata` (users.update_metadata): a deep merge, `null` removes a key.
- `PATCH /v1/users/{id}` (users.update): sets whichever of first_name, last_name, username and
  external_id the body has (`null` clears; "" clears a username, as Clerk does). A username another
  user holds (case-insensitive) is 422 `form_identifier_exists`. Other keys (the SDK always sends
  `notify_primary_email_address_changed`) are ignored. Answers the User.
- `DELETE /v1/users/{id}` (users.delete): the user moves from `users` to `deleted_users`; answers
  a DeletedObject `{"object": "user", "id": ..., "deleted": true}`.
- `POST /v1/email_addresses` (email_addresses.create): body user_id, email_address, verified,
  primary. 404 for an unknown user, 422 `form_param_format_invalid` without an "@", 422
  `form_identifier_exists` when any user holds the address (case-insensitive). The new address
  (id `idn_fake` + 6 digits) is primary when asked or when it is the user's first. Answers it.
- `PATCH /v1/email_addresses/{id}` (email_addresses.update): `verified` true gives an unverified
  address an admin verification, false takes the verification away; `primary` true makes it the
  user's primary. Answers the EmailAddress.
- `DELETE /v1/email_addresses/{id}` (email_addresses.delete): 400
  `primary_identification_deletion_not_allowed` for the primary; answers a DeletedObject.
- `GET /v1/sessions?user_id=&client_id=&status=&limit=&offset=` (sessions.list): a bare JSON array,
  newest first, filtered by whichever of user_id, client_id and status are given (an unknown user
  has no sessions: an empty array, not a 404). `add_session()` puts sessions there.
- `POST /v1/sessions/{id}/revoke` (sessions.revoke): status "revoked"; answers the Session. A
  session that is no longer active or pending is 400 `session_not_active`: a guess, as Clerk does
  not document what it answers then.
- `POST /v1/invitations` (400 when one is pending for the email), `GET /v1/invitations?status=&query=`
  and `POST /v1/invitations/{id}/revoke`.

Organizations (docs/clerk.md §6), each answer the SDK's model of it:

- `GET /v1/organizations?limit=&offset=&query=&order_by=&include_members_count=` (organizations.list):
  `{data, total_count}`; query matches id, name or slug (case-insensitive); order_by created_at, name
  or members_count with +/-; `members_count` only when include_members_count is true.
- `GET`, `PATCH` and `DELETE /v1/organizations/{id}` (get by id or slug, update, delete): update sets
  name, slug, max_allowed_memberships and admin_delete_enabled; a slug another organization holds is
  422 `form_identifier_exists` "That slug is taken. Please try another.", a slug that is not
  lowercase letters, digits and hyphens 422 `form_param_format_invalid`. Delete takes its
  memberships and invitations with it and answers a DeletedObject.
- `GET` and `POST /v1/organizations/{id}/memberships`, `PATCH` and `DELETE .../memberships/{user_id}`:
  keyed by (organization, user). Adding a member twice is 400 `already_a_member_in_organization`; a
  role not in `organization_roles` 422 `form_param_value_invalid`; delete answers the membership.
- `POST`/`GET /v1/organizations/{id}/invitations` (status filter), `GET .../invitations/{id}`,
  `POST .../invitations/{id}/revoke` (400 `organization_invitation_not_pending` unless pending), and
  the instance's `GET /v1/organization_invitations?status=&order_by=` (organization_invitations.get_all).

`add_organization`, `add_membership` and `add_organization_invitation` put them there, and
`organization_webhook_data`, `organization_deleted_data`, `membership_webhook_data` and
`organization_invitation_webhook_data` give what Clerk's webhooks carry (shaped as
clerk/javascript's JSON types, which the SDK's models reject), deep copies as `webhook_data` is.

Every change to a user adds 1 to its `updated_at`, and so to an organization, membership or invitation. Unknown users, addresses, sessions and
invitations are 404 `resource_not_found`, a wrong secret key 401, and errors have Clerk's shape
(`clerk_errors`). Admin verifications are only ever "verified": the SDK's model of one has no
other status, so an unverified address has `verification: null`.

Every request is kept in `calls` (method, path, JSON body, Authorization). `fail_next` answers the
next requests with injected statuses (and headers, such as Retry-After), `fail_calls` the n-th
request that starts with a given "METHOD /path", `delay` makes it slow, and
`stop()` / `start()` take it off the network and back on the same port (connection refused).
`fail_all` (when set) answers every request with one injected status and headers, after
`fail_next` is used up: a Clerk that is down (503) or rate limiting (429 with Retry-After) for as
long as it stays set. `answered` holds the status of each answer, in step with `calls`.
Answers are deep copies taken under the one lock, and so is `webhook_data(user_id)`, the `data` a
`user.updated` webhook sent at that moment would carry: later changes do not alter them.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.clerk_payloads import BASE_MS, clerk_user

SECRET_KEY = "sk_test_fake_clerk"
LOCKOUT_SECONDS = 1800  # what a locked user's lockout_expires_in_seconds says
SESSION_STATUSES = frozenset({"active", "revoked", "ended", "expired", "removed", "abandoned", "replaced", "pending"})
DAY_MS = 86_400_000
ORGANIZATION_ROLES = {"org:admin": "Admin", "org:member": "Member"}  # Clerk's default roles
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
INVITATION_DAYS = 30  # Clerk's organization invitations expire after 30 days unless told otherwise


def now_ms() -> int:
    return int(time.time() * 1000)


def bapi_user(**fields: Any) -> dict[str, Any]:
    """A user as BAPI returns it: the webhook's User object plus the keys the SDK requires."""
    return {**clerk_user(**fields), "enterprise_accounts": []}


def clerk_errors(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {
        "errors": [{"code": code, "message": message, "long_message": message}],
        "clerk_trace_id": "trace_fake",
    }


def admin_verification(verified: bool) -> dict[str, Any] | None:
    """An address verified by the Backend API; None when it is not (see the module docstring)."""
    if not verified:
        return None
    return {
        "object": "verification_admin",
        "status": "verified",
        "strategy": "admin",
        "attempts": None,
        "expire_at": None,
    }


def is_verified(address: dict[str, Any]) -> bool:
    return (address.get("verification") or {}).get("status") == "verified"


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: Any
    authorization: str | None


def deep_merge(target: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Clerk's metadata PATCH: nested objects merge, `None` removes a key."""
    merged = dict(target)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class FakeClerk:
    """`with FakeClerk(users) as clerk:` serves them at `clerk.url` (ends in /v1) until the block ends."""

    def __init__(self, users: list[dict[str, Any]] | None = None) -> None:
        self.users: list[dict[str, Any]] = list(users or [])
        self.requests: list[str] = []  # "GET /v1/users?limit=500&offset=0..." in arrival order
        self.fail_list_calls: dict[int, int] = {}  # nth /users call (from 1) -> status to answer
        self.calls: list[Call] = []  # every request, with its JSON body and Authorization header
        self.invitations: list[dict[str, Any]] = []
        self.deleted_users: list[dict[str, Any]] = []  # what DELETE /v1/users/{id} removed, in order
        self.sessions: list[dict[str, Any]] = []  # add_session() makes them
        # Organizations as organizations.get answers them (members_count is counted when asked for);
        # memberships and organization invitations as stored here (see _membership_json, _invitation_json).
        self.organizations: list[dict[str, Any]] = []
        self.deleted_organizations: list[dict[str, Any]] = []
        self.memberships: list[dict[str, Any]] = []
        self.deleted_memberships: list[dict[str, Any]] = []  # what DELETE .../memberships/{user_id} removed
        self.organization_invitations: list[dict[str, Any]] = []
        self.organization_roles: dict[str, str] = dict(ORGANIZATION_ROLES)  # key -> name
        # The next requests get these answers instead: (status, headers), e.g. (429, {"Retry-After": "7"}).
        self.fail_next: list[tuple[int, dict[str, str]]] = []
        # ("GET /v1/organizations?", 2) -> (status, headers): the 2nd request starting so gets that answer.
        self.fail_calls: dict[tuple[str, int], tuple[int, dict[str, str]]] = {}
        self.delay = 0.0  # seconds to wait before answering (a slow Clerk)
        # Every request gets this answer while set (after fail_next): (503, {}) or (429, {"Retry-After": "5"}).
        self.fail_all: tuple[int, dict[str, str]] | None = None
        self.answered: list[int] = []  # the status answered to each of `calls`, in the same order
        self._port = 0
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # one lock for all state; `answer` takes it again inside `respond`
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._port, "start the fake first"
        return f"http://127.0.0.1:{self._port}/v1"

    def __enter__(self) -> FakeClerk:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        """Serve (again) on the same port as before, so clients configured with `url` reach it."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection cannot hold the server open forever

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw_body = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw_body) if raw_body else None
                except ValueError:
                    body = raw_body.decode("utf-8", "replace")
                if fake.delay:
                    time.sleep(fake.delay)
                status, payload, headers = fake.respond(
                    self.command, self.path, body, self.headers.get("Authorization")
                )
                raw = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up waiting (a timeout test): fine

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        assert self._server is None, "already serving"
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        # A short poll: stop() waits for the serving loop to notice, up to this long (0.5 s by default).
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name="fake-clerk")
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: until start(), connections to `url` are refused."""
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def user(self, user_id: str) -> dict[str, Any] | None:
        return next((u for u in self.users if u["id"] == user_id), None)

    def calls_to(self, method: str, path_prefix: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.startswith(path_prefix)]

    def webhook_data(self, user_id: str) -> dict[str, Any]:
        """The `data` of a `user.updated` sent now: a deep copy of Clerk's user, unchanged by what follows."""
        with self._lock:
            user = self.user(user_id)
            if user is None:
                raise KeyError(f"no user {user_id} in the fake Clerk")
            return copy.deepcopy(user)

    def add_session(self, user_id: str, status: str = "active", **fields: Any) -> dict[str, Any]:
        """A complete Session of `user_id` (what sessions.list parses), each newer than the last.

        `fields` replace the defaults; a dict for `latest_activity` is merged into the default device.
        """
        if status not in SESSION_STATUSES:
            raise ValueError(f"Clerk has no session status {status!r}")
        fields = copy.deepcopy(fields)
        with self._lock:
            n = next(self._ids)
            created_at = fields.get("created_at", BASE_MS + n * 60_000)
            activity = {
                "object": "session_activity",
                "id": f"sess_activity_fake{n:06d}",
                "is_mobile": False,
                "device_type": "Macintosh",
                "browser_name": "Chrome",
                "browser_version": "126.0.0.0",
                "ip_address": "203.0.113.7",
                "city": "Lisbon",
                "country": "PT",
            }
            if isinstance(fields.get("latest_activity"), dict):
                fields["latest_activity"] = {**activity, **fields["latest_activity"]}
            session = {
                "object": "session",
                "id": f"sess_fake{n:06d}",
                "user_id": user_id,
                "client_id": f"client_fake{n:06d}",
                "status": status,
                "actor": None,
                "last_active_organization_id": None,
                "latest_activity": activity,
                "tasks": None,
                "last_active_at": created_at + 30_000,
                "expire_at": created_at + 7 * DAY_MS,
                "abandon_at": created_at + 30 * DAY_MS,
                "created_at": created_at,
                "updated_at": created_at + 30_000,
                **fields,
            }
            self.sessions.append(session)
            return session

    def _holder(self, address_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The user holding the email address `address_id`, and the address."""
        for user in self.users:
            for address in user.get("email_addresses") or []:
                if address.get("id") == address_id:
                    return user, address
        return None

    # --- organizations: state the tests set up, and what webhooks carry ----------------------------

    def organization(self, organization_id: str) -> dict[str, Any] | None:
        """A live organization by id or slug (organizations.get takes either)."""
        return next((o for o in self.organizations if organization_id in (o["id"], o["slug"])), None)

    def membership(self, organization_id: str, user_id: str) -> dict[str, Any] | None:
        """The live membership of `user_id` in the organization (Clerk's key for membership writes)."""
        return next(
            (m for m in self.memberships if m["organization_id"] == organization_id and m["user_id"] == user_id), None
        )

    def organization_invitation(self, invitation_id: str) -> dict[str, Any] | None:
        return next((i for i in self.organization_invitations if i["id"] == invitation_id), None)

    def add_organization(self, name: str, slug: str | None = None, **fields: Any) -> dict[str, Any]:
        """An organization as organizations.get answers it, each newer than the last; `fields` replace defaults."""
        with self._lock:
            n = next(self._ids)
            created_at = fields.get("created_at", BASE_MS + n * 60_000)
            organization = {
                "object": "organization",
                "id": f"org_fake{n:06d}",
                "name": name,
                "slug": slug if slug is not None else f"org-{n}",
                "image_url": f"https://img.clerk.com/org{n}",
                "has_image": False,
                "max_allowed_memberships": 0,
                "admin_delete_enabled": True,
                "public_metadata": {},
                "private_metadata": {},
                "created_by": None,
                "created_at": created_at,
                "updated_at": created_at,
                **copy.deepcopy(fields),
            }
            self.organizations.append(organization)
            return organization

    def add_membership(
        self, organization_id: str, user_id: str, role: str = "org:member", **fields: Any
    ) -> dict[str, Any]:
        """`user_id` becomes a member (a user of the fake, or any id: its public data then comes from
        `public_user_data` in `fields` or a stand-in); answers the membership as Clerk sends it."""
        with self._lock:
            if self.organization(organization_id) is None:
                raise KeyError(f"no organization {organization_id} in the fake Clerk")
            if self.membership(organization_id, user_id) is not None:
                raise ValueError(f"{user_id} is already a member of {organization_id}")
            n = next(self._ids)
            created_at = fields.pop("created_at", BASE_MS + n * 60_000)
            stored = {
                "id": f"orgmem_fake{n:06d}",
                "organization_id": organization_id,
                "user_id": user_id,
                "role": role,
                "permissions": [],
                "public_metadata": {},
                "private_metadata": {},
                "created_at": created_at,
                "updated_at": created_at,
                **copy.deepcopy(fields),
            }
            self.memberships.append(stored)
            return self._membership_json(stored)

    def add_organization_invitation(
        self, organization_id: str, email_address: str, role: str = "org:member", **fields: Any
    ) -> dict[str, Any]:
        """An invitation to the organization (status `pending` unless `fields` says otherwise)."""
        with self._lock:
            if self.organization(organization_id) is None:
                raise KeyError(f"no organization {organization_id} in the fake Clerk")
            n = next(self._ids)
            created_at = fields.pop("created_at", BASE_MS + n * 60_000)
            invitation = {
                "object": "organization_invitation",
                "id": f"orginv_fake{n:06d}",
                "email_address": email_address,
                "role": role,
                "role_name": self.organization_roles.get(role, role),
                "organization_id": organization_id,
                "inviter_id": None,
                "public_inviter_data": None,
                "status": "pending",
                "public_metadata": {},
                "private_metadata": {},
                "url": None,
                "expires_at": now_ms() + INVITATION_DAYS * DAY_MS,  # still open, whenever it was made
                "created_at": created_at,
                "updated_at": created_at,
                **copy.deepcopy(fields),
            }
            self.organization_invitations.append(invitation)
            return copy.deepcopy(invitation)

    def organization_webhook_data(self, organization_id: str) -> dict[str, Any]:
        """The `data` of an `organization.updated` sent now (clerk/javascript's OrganizationJSON)."""
        with self._lock:
            organization = self.organization(organization_id)
            if organization is None:
                raise KeyError(f"no organization {organization_id} in the fake Clerk")
            return copy.deepcopy(self._organization_webhook(organization))

    @staticmethod
    def organization_deleted_data(organization_id: str) -> dict[str, Any]:
        """The `data` of `organization.deleted`: a tombstone, no updated_at (order it by the timestamp)."""
        return {"object": "organization", "id": organization_id, "deleted": True}

    def membership_webhook_data(self, membership_id: str) -> dict[str, Any]:
        """The `data` of an `organizationMembership.*` sent now, a removed one included: the whole
        membership with its organization embedded and the member's public data (MembershipJSON)."""
        with self._lock:
            stored = next((m for m in [*self.memberships, *self.deleted_memberships] if m["id"] == membership_id), None)
            if stored is None:
                raise KeyError(f"no membership {membership_id} in the fake Clerk")
            organization = self.organization(stored["organization_id"]) or next(
                o for o in self.deleted_organizations if o["id"] == stored["organization_id"]
            )
            public = self._public_user_data(stored)
            return copy.deepcopy(
                {
                    "object": "organization_membership",
                    "id": stored["id"],
                    "role": stored["role"],
                    "permissions": stored["permissions"],
                    "public_metadata": stored["public_metadata"],
                    "private_metadata": stored["private_metadata"],
                    "created_at": stored["created_at"],
                    "updated_at": stored["updated_at"],
                    "organization": self._organization_webhook(organization),
                    "public_user_data": {
                        key: public[key]
                        for key in ("user_id", "identifier", "first_name", "last_name", "image_url", "has_image")
                    },
                }
            )

    def organization_invitation_webhook_data(self, invitation_id: str) -> dict[str, Any]:
        """The `data` of an `organizationInvitation.*` sent now (OrganizationInvitationJSON: no
        inviter fields, which the SDK's model requires)."""
        with self._lock:
            invitation = self.organization_invitation(invitation_id)
            if invitation is None:
                raise KeyError(f"no organization invitation {invitation_id} in the fake Clerk")
            data = {
                key: invitation[key]
                for key in (
                    "object",
                    "id",
                    "email_address",
                    "role",
                    "role_name",
                    "organization_id",
                    "status",
                    "public_metadata",
                    "private_metadata",
                    "url",
                    "created_at",
                    "updated_at",
                    "expires_at",
                )
            }
            organization = self.organization(invitation["organization_id"])
            if organization is not None:
                data["public_organization_data"] = self._public_organization_data(organization)
            return copy.deepcopy(data)

    def _organization_webhook(self, organization: dict[str, Any]) -> dict[str, Any]:
        keys = (
            "object",
            "id",
            "name",
            "slug",
            "image_url",
            "has_image",
            "max_allowed_memberships",
            "admin_delete_enabled",
            "public_metadata",
            "private_metadata",
            "created_by",
            "created_at",
            "updated_at",
        )
        return {key: organization.get(key) for key in keys}

    @staticmethod
    def _public_organization_data(organization: dict[str, Any]) -> dict[str, Any]:
        return {key: organization.get(key) for key in ("id", "name", "slug", "image_url", "has_image")}

    def _members_count(self, organization_id: str) -> int:
        return sum(1 for m in self.memberships if m["organization_id"] == organization_id)

    def _organization_json(self, organization: dict[str, Any], *, members_count: bool = False) -> dict[str, Any]:
        answer = dict(organization)
        if members_count:
            answer["members_count"] = self._members_count(organization["id"])
        return answer

    def _public_user_data(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The member as the membership shows them: from the fake's user, else what the test gave."""
        user = self.user(stored["user_id"])
        if user is None:
            given = stored.get("public_user_data") or {}
            return {
                "user_id": stored["user_id"],
                "identifier": given.get("identifier", f"{stored['user_id']}@example.com"),
                "first_name": given.get("first_name"),
                "last_name": given.get("last_name"),
                "image_url": given.get("image_url", "https://img.clerk.com/default"),
                "profile_image_url": None,
                "has_image": given.get("has_image", False),
                "username": given.get("username"),
                "banned": False,
            }
        primary = next(
            (a for a in user.get("email_addresses") or [] if a.get("id") == user.get("primary_email_address_id")), None
        )
        return {
            "user_id": user["id"],
            "identifier": primary["email_address"] if primary else user.get("username"),
            "first_name": user.get("first_name"),
            "last_name": user.get("last_name"),
            "image_url": user.get("image_url") or "https://img.clerk.com/default",
            "profile_image_url": user.get("profile_image_url"),
            "has_image": bool(user.get("has_image")),
            "username": user.get("username"),
            "banned": bool(user.get("banned")),
        }

    def _membership_json(self, stored: dict[str, Any]) -> dict[str, Any]:
        """A membership as the Backend API answers it (organization_memberships.*)."""
        organization = self.organization(stored["organization_id"]) or next(
            o for o in self.deleted_organizations if o["id"] == stored["organization_id"]
        )
        return {
            "object": "organization_membership",
            "id": stored["id"],
            "role": stored["role"],
            "role_name": self.organization_roles.get(stored["role"], stored["role"]),
            "permissions": stored["permissions"],
            "public_metadata": stored["public_metadata"],
            "private_metadata": stored["private_metadata"],
            "organization": self._organization_json(organization),
            "public_user_data": self._public_user_data(stored),
            "created_at": stored["created_at"],
            "updated_at": stored["updated_at"],
        }

    @staticmethod
    def _listed(query: dict[str, str], items: list[dict[str, Any]]) -> tuple[int, Any]:
        """`{data, total_count}` of one page, as the organization lists answer."""
        status, page = FakeClerk._paged(query, items)
        if status != 200:
            return status, page
        return 200, {"data": page, "total_count": len(items)}

    @staticmethod
    def _ordered(items: list[dict[str, Any]], order_by: str, allowed: tuple[str, ...]) -> list[dict[str, Any]] | None:
        key = order_by.lstrip("+-")
        if key not in allowed:
            return None
        return sorted(items, key=lambda i: (i[key], i["id"]), reverse=order_by.startswith("-"))

    def _organizations_get(self, parts: list[str], query: dict[str, str]) -> tuple[int, Any]:
        """GET /v1/organizations[/{id}[/memberships | /invitations[/{id}]]]."""
        counted = query.get("include_members_count") == "true"
        if len(parts) == 1:
            wanted = query.get("query", "").lower()
            chosen = [
                self._organization_json(o, members_count=True)
                for o in self.organizations
                if not wanted or any(wanted in (o[k] or "").lower() for k in ("id", "name", "slug"))
            ]
            ordered = self._ordered(
                chosen, query.get("order_by", "-created_at"), ("created_at", "name", "members_count")
            )
            if ordered is None:
                return clerk_errors(422, "form_param_value_invalid", f"unsupported order_by {query['order_by']}")
            if not counted:
                ordered = [{k: v for k, v in o.items() if k != "members_count"} for o in ordered]
            return self._listed(query, ordered)
        organization = self.organization(parts[1])
        if organization is None:
            return clerk_errors(404, "resource_not_found", "Organization not found")
        if len(parts) == 2:
            return 200, self._organization_json(organization, members_count=counted)
        if parts[2:] == ["memberships"]:
            chosen = [
                self._membership_json(m)
                for m in self.memberships
                if m["organization_id"] == organization["id"]
                and query.get("role", m["role"]) == m["role"]
                and query.get("user_id", m["user_id"]) == m["user_id"]
            ]
            ordered = self._ordered(chosen, query.get("order_by", "-created_at"), ("created_at",))
            if ordered is None:
                return clerk_errors(422, "form_param_value_invalid", f"unsupported order_by {query['order_by']}")
            return self._listed(query, ordered)
        if parts[2] == "invitations" and len(parts) in (3, 4):
            mine = [i for i in self.organization_invitations if i["organization_id"] == organization["id"]]
            if len(parts) == 4:
                invitation = next((i for i in mine if i["id"] == parts[3]), None)
                if invitation is None:
                    return clerk_errors(404, "resource_not_found", "Organization invitation not found")
                return 200, invitation
            return self._invitation_list(query, mine)
        return clerk_errors(404, "resource_not_found", f"no route GET {'/'.join(parts)}")

    def _invitation_list(self, query: dict[str, str], items: list[dict[str, Any]]) -> tuple[int, Any]:
        wanted = query.get("query", query.get("email_address", "")).lower()
        chosen = [
            i for i in items if query.get("status", i["status"]) == i["status"] and wanted in i["email_address"].lower()
        ]
        ordered = self._ordered(chosen, query.get("order_by", "-created_at"), ("created_at", "email_address"))
        if ordered is None:
            return clerk_errors(422, "form_param_value_invalid", f"unsupported order_by {query['order_by']}")
        return self._listed(query, ordered)

    def _instance_memberships(self, query: dict[str, str]) -> tuple[int, Any]:
        """GET /v1/organization_memberships (users.get_instance_organization_memberships): every
        organization's memberships, each with its organization embedded."""
        chosen = [self._membership_json(m) for m in self.memberships]
        ordered = self._ordered(chosen, query.get("order_by", "-created_at"), ("created_at",))
        if ordered is None:
            return clerk_errors(422, "form_param_value_invalid", f"unsupported order_by {query['order_by']}")
        return self._listed(query, ordered)

    def _instance_invitations(self, query: dict[str, str]) -> tuple[int, Any]:
        """GET /v1/organization_invitations: every organization's, each with its organization's public data."""
        status, answer = self._invitation_list(query, self.organization_invitations)
        if status == 200:
            answer["data"] = [
                {
                    **i,
                    "public_organization_data": self._public_organization_data(self.organization(i["organization_id"])),
                }
                for i in answer["data"]
            ]
        return status, answer

    def _organizations_change(self, method: str, parts: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        """PATCH / DELETE /v1/organizations/{id}, and the writes of its memberships and invitations."""
        organization = self.organization(parts[1]) if len(parts) > 1 else None
        if organization is None:
            return clerk_errors(404, "resource_not_found", "Organization not found")
        if len(parts) == 2 and method == "PATCH":
            return self._update_organization(organization, body)
        if len(parts) == 2 and method == "DELETE":
            self.organizations.remove(organization)
            self.deleted_organizations.append(organization)
            gone = [m for m in self.memberships if m["organization_id"] == organization["id"]]
            self.memberships = [m for m in self.memberships if m not in gone]
            self.deleted_memberships.extend(gone)
            self.organization_invitations = [
                i for i in self.organization_invitations if i["organization_id"] != organization["id"]
            ]
            return 200, {"object": "organization", "id": organization["id"], "deleted": True}
        if parts[2] == "memberships":
            return self._membership_change(method, organization, parts[3:], body)
        if parts[2] == "invitations":
            return self._invitation_change(method, organization, parts[3:], body)
        return clerk_errors(404, "resource_not_found", f"no route {method} {'/'.join(parts)}")

    def _update_organization(self, organization: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        changes = {
            name: body[name]
            for name in ("name", "slug", "max_allowed_memberships", "admin_delete_enabled")
            if body.get(name) is not None
        }
        slug = changes.get("slug")
        if slug is not None and not (isinstance(slug, str) and SLUG.fullmatch(slug)):
            return clerk_errors(
                422, "form_param_format_invalid", "slug must contain only lowercase letters, digits and hyphens"
            )
        if slug is not None and any(
            o is not organization and o["slug"].lower() == slug.lower() for o in self.organizations
        ):
            return clerk_errors(422, "form_identifier_exists", "That slug is taken. Please try another.")
        if "name" in changes and not str(changes["name"]).strip():
            return clerk_errors(422, "form_param_nil", "name must not be empty")
        organization.update(changes)
        organization["updated_at"] += 1
        return 200, self._organization_json(organization)

    def _role_error(self, role: Any) -> tuple[int, Any] | None:
        if role not in self.organization_roles:
            return clerk_errors(422, "form_param_value_invalid", f"role {role!r} does not exist")
        return None

    def _membership_change(
        self, method: str, organization: dict[str, Any], rest: list[str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        if not rest and method == "POST":
            user_id = body.get("user_id")
            if self.user(user_id or "") is None:
                return clerk_errors(404, "resource_not_found", "User not found")
            if (error := self._role_error(body.get("role"))) is not None:
                return error
            if self.membership(organization["id"], user_id) is not None:
                return clerk_errors(
                    400, "already_a_member_in_organization", f"User {user_id} is already a member of the organization."
                )
            n = next(self._ids)
            stored = {
                "id": f"orgmem_fake{n:06d}",
                "organization_id": organization["id"],
                "user_id": user_id,
                "role": body["role"],
                "permissions": [],
                "public_metadata": body.get("public_metadata") or {},
                "private_metadata": body.get("private_metadata") or {},
                "created_at": BASE_MS + n * 60_000,
                "updated_at": BASE_MS + n * 60_000,
            }
            self.memberships.append(stored)
            return 200, self._membership_json(stored)
        if len(rest) != 1 or method not in ("PATCH", "DELETE"):
            return clerk_errors(404, "resource_not_found", f"no route {method} memberships/{'/'.join(rest)}")
        stored = self.membership(organization["id"], rest[0])
        if stored is None:
            return clerk_errors(404, "resource_not_found", "Membership not found")
        if method == "PATCH":
            if (error := self._role_error(body.get("role"))) is not None:
                return error
            stored["role"] = body["role"]
        else:
            self.memberships.remove(stored)
            self.deleted_memberships.append(stored)
        stored["updated_at"] += 1
        return 200, self._membership_json(stored)

    def _invitation_change(
        self, method: str, organization: dict[str, Any], rest: list[str], body: dict[str, Any]
    ) -> tuple[int, Any]:
        if not rest and method == "POST":
            address = body.get("email_address")
            if not isinstance(address, str) or "@" not in address:
                return clerk_errors(422, "form_param_format_invalid", "email_address must be a valid email address")
            if (error := self._role_error(body.get("role"))) is not None:
                return error
            if any(
                i["organization_id"] == organization["id"]
                and i["status"] == "pending"
                and i["email_address"].lower() == address.lower()
                for i in self.organization_invitations
            ):
                return clerk_errors(400, "duplicate_record", "There is already a pending invitation for this email")
            if any(
                self._public_user_data(m)["identifier"].lower() == address.lower()
                for m in self.memberships
                if m["organization_id"] == organization["id"]
            ):
                return clerk_errors(
                    400, "already_a_member_in_organization", f"{address} is already a member of the organization."
                )
            n = next(self._ids)
            created_at = now_ms()  # it expires counted from now
            days = body.get("expires_in_days") or INVITATION_DAYS
            invitation = {
                "object": "organization_invitation",
                "id": f"orginv_fake{n:06d}",
                "email_address": address,
                "role": body["role"],
                "role_name": self.organization_roles[body["role"]],
                "organization_id": organization["id"],
                "inviter_id": body.get("inviter_user_id"),
                "public_inviter_data": None,
                "status": "pending",
                "public_metadata": body.get("public_metadata") or {},
                "private_metadata": body.get("private_metadata") or {},
                "url": None,
                "expires_at": created_at + days * DAY_MS,
                "created_at": created_at,
                "updated_at": created_at,
            }
            self.organization_invitations.append(invitation)
            return 200, invitation
        if len(rest) == 2 and rest[1] == "revoke" and method == "POST":
            invitation = self.organization_invitation(rest[0])
            if invitation is None or invitation["organization_id"] != organization["id"]:
                return clerk_errors(404, "resource_not_found", "Organization invitation not found")
            if invitation["status"] != "pending":
                return clerk_errors(
                    400, "organization_invitation_not_pending", "Only pending invitations can be revoked"
                )
            invitation.update(status="revoked", updated_at=invitation["updated_at"] + 1)
            return 200, invitation
        return clerk_errors(404, "resource_not_found", f"no route {method} invitations/{'/'.join(rest)}")

    # --- the API ---------------------------------------------------------------------------------

    def respond(
        self, method: str, target: str, body: Any, authorization: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        """One request, all under the lock; the answer is a deep copy, so serialising it needs no lock."""
        with self._lock:
            status, payload, headers = self._respond(method, target, body, authorization)
            self.answered.append(status)
            return status, payload, headers

    def _respond(
        self, method: str, target: str, body: Any, authorization: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.calls.append(Call(method, urlsplit(target).path, copy.deepcopy(body), authorization))
            failure = (
                self.fail_next.pop(0)
                if self.fail_next
                else self.fail_all or self._planned_failure(f"{method} {target}")
            )
            if failure is not None:
                status, headers = failure
                self.requests.append(f"{method} {target}")
                return (*clerk_errors(status, "injected", f"injected failure {status}"), headers)
            if method == "GET":
                status, payload = self.answer(method, target, authorization)
            else:
                self.requests.append(f"{method} {target}")
                if authorization != f"Bearer {SECRET_KEY}":
                    status, payload = clerk_errors(401, "authentication_invalid", "Invalid secret key")
                else:
                    status, payload = self._change(
                        method, urlsplit(target).path, body if isinstance(body, dict) else {}
                    )
            return status, copy.deepcopy(payload), {}

    def _planned_failure(self, request: str) -> tuple[int, dict[str, str]] | None:
        for (prefix, nth), failure in self.fail_calls.items():
            if request.startswith(prefix) and 1 + sum(r.startswith(prefix) for r in self.requests) == nth:
                return failure
        return None

    def _change(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        parts = path.removeprefix("/v1/").split("/")
        if parts[0] == "organizations":
            return self._organizations_change(method, parts, body)
        if parts[0] == "users" and len(parts) in (2, 3):
            user = self.user(parts[1])
            if user is None:
                return clerk_errors(404, "resource_not_found", "User not found")
            if len(parts) == 2 and method == "PATCH":
                error = self._update_user(user, body)
                if error is not None:
                    return error
            elif len(parts) == 2 and method == "DELETE":
                self.users.remove(user)
                self.deleted_users.append(user)
                return 200, {"object": "user", "id": user["id"], "deleted": True}
            elif len(parts) == 2:
                return clerk_errors(404, "resource_not_found", f"no route {method} {path}")
            elif method == "POST" and parts[2] in ("ban", "unban"):
                user["banned"] = parts[2] == "ban"
            elif method == "POST" and parts[2] in ("lock", "unlock"):
                user["locked"] = parts[2] == "lock"
                user["lockout_expires_in_seconds"] = LOCKOUT_SECONDS if user["locked"] else None
            elif method == "PATCH" and parts[2] == "metadata":
                for name in ("public_metadata", "private_metadata", "unsafe_metadata"):
                    if isinstance(body.get(name), dict):
                        user[name] = deep_merge(user.get(name) or {}, body[name])
            else:
                return clerk_errors(404, "resource_not_found", f"no route {method} {path}")
            user["updated_at"] += 1
            return 200, user
        if parts == ["email_addresses"] and method == "POST":
            return self._create_address(body)
        if parts[0] == "email_addresses" and len(parts) == 2 and method in ("PATCH", "DELETE"):
            held = self._holder(parts[1])
            if held is None:
                return clerk_errors(404, "resource_not_found", "Email address not found")
            user, address = held
            if method == "DELETE":
                if user.get("primary_email_address_id") == address["id"]:
                    return clerk_errors(
                        400,
                        "primary_identification_deletion_not_allowed",
                        "The primary email address cannot be deleted",
                    )
                # Copy on write: lists handed to the fake (a test's fixture) are never changed in place.
                user["email_addresses"] = [a for a in user["email_addresses"] if a is not address]
                user["updated_at"] += 1
                return 200, {"object": "email_address", "id": address["id"], "deleted": True}
            return self._update_address(user, address, body)
        if len(parts) == 3 and parts[0] == "sessions" and parts[2] == "revoke" and method == "POST":
            session = next((s for s in self.sessions if s["id"] == parts[1]), None)
            if session is None:
                return clerk_errors(404, "resource_not_found", "Session not found")
            if session["status"] not in ("active", "pending"):
                return clerk_errors(400, "session_not_active", f"The session is {session['status']}, not active")
            session.update(status="revoked", updated_at=session["updated_at"] + 1)
            return 200, session
        if parts == ["invitations"] and method == "POST":
            address = body.get("email_address")
            if not isinstance(address, str) or "@" not in address:
                return clerk_errors(422, "form_param_format_invalid", "email_address must be a valid email address")
            if any(i["email_address"] == address and i["status"] == "pending" for i in self.invitations):
                return clerk_errors(400, "duplicate_record", "There are already pending invitations for this email")
            if any(e["email_address"] == address for u in self.users for e in u["email_addresses"]):
                return clerk_errors(400, "form_identifier_exists", "That email address is taken")
            invitation = {
                "object": "invitation",
                "id": f"inv_fake{next(self._ids):06d}",
                "email_address": address,
                "public_metadata": body.get("public_metadata") or {},
                "status": "pending",
                "revoked": False,
                "url": None,
                "expires_at": None,
                "created_at": 1_760_000_000_000,
                "updated_at": 1_760_000_000_000,
            }
            self.invitations.append(invitation)
            return 200, invitation
        if len(parts) == 3 and parts[0] == "invitations" and parts[2] == "revoke" and method == "POST":
            invitation = next((i for i in self.invitations if i["id"] == parts[1]), None)
            if invitation is None:
                return clerk_errors(404, "resource_not_found", "Invitation not found")
            if invitation["status"] != "pending":
                return clerk_errors(400, "revoke_invitation_not_pending", "Only pending invitations can be revoked")
            invitation.update(status="revoked", revoked=True)
            return 200, invitation
        return clerk_errors(404, "resource_not_found", f"no route {method} {path}")

    def _update_user(self, user: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any] | None:
        """PATCH /v1/users/{id}: the error to answer, or None once the changes are applied."""
        changes = {name: body[name] for name in ("first_name", "last_name", "username", "external_id") if name in body}
        if changes.get("username") == "":
            changes["username"] = None  # Clerk removes a username set to "" as to null
        wanted = changes.get("username")
        if isinstance(wanted, str) and any(
            u is not user and (u.get("username") or "").lower() == wanted.lower() for u in self.users
        ):
            return clerk_errors(422, "form_identifier_exists", "That username is taken. Please try another.")
        user.update(changes)
        return None

    def _create_address(self, body: dict[str, Any]) -> tuple[int, Any]:
        """POST /v1/email_addresses."""
        user = self.user(body.get("user_id") or "")
        if user is None:
            return clerk_errors(404, "resource_not_found", "User not found")
        wanted = body.get("email_address")
        if not isinstance(wanted, str) or "@" not in wanted:
            return clerk_errors(422, "form_param_format_invalid", "email_address must be a valid email address")
        if any(
            a["email_address"].lower() == wanted.lower() for u in self.users for a in u.get("email_addresses") or []
        ):
            return clerk_errors(422, "form_identifier_exists", "That email address is taken. Please try another.")
        user["updated_at"] += 1
        address = {
            "object": "email_address",
            "id": f"idn_fake{next(self._ids):06d}",
            "email_address": wanted,
            "reserved": False,
            "verification": admin_verification(bool(body.get("verified"))),
            "linked_to": [],
            "matches_sso_connection": False,
            "created_at": user["updated_at"],
            "updated_at": user["updated_at"],
        }
        first = not user.get("email_addresses")
        user["email_addresses"] = [*(user.get("email_addresses") or []), address]
        if body.get("primary") or first:
            user["primary_email_address_id"] = address["id"]
        return 200, address

    def _update_address(self, user: dict[str, Any], address: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        """PATCH /v1/email_addresses/{id}."""
        changed = dict(address)
        if body.get("verified") is True and not is_verified(address):
            changed["verification"] = admin_verification(True)
        elif body.get("verified") is False:
            changed["verification"] = admin_verification(False)
        if body.get("primary") is True:
            user["primary_email_address_id"] = address["id"]
        user["updated_at"] += 1
        changed["updated_at"] = user["updated_at"]
        user["email_addresses"] = [changed if a is address else a for a in user["email_addresses"]]
        return 200, changed

    def answer(self, method: str, target: str, authorization: str | None) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(f"{method} {target}")
            if authorization != f"Bearer {SECRET_KEY}":
                return clerk_errors(401, "authentication_invalid", "Invalid secret key")
            parts = urlsplit(target)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/v1/invitations":
                return 200, [
                    i
                    for i in self.invitations
                    if i["status"] == query.get("status", i["status"]) and query.get("query", "") in i["email_address"]
                ]
            if parts.path == "/v1/sessions":
                return self._sessions(query)
            if parts.path == "/v1/organization_invitations":
                return self._instance_invitations(query)
            if parts.path == "/v1/organization_memberships":
                return self._instance_memberships(query)
            if parts.path.startswith("/v1/organizations"):
                return self._organizations_get(parts.path.removeprefix("/v1/").split("/"), query)
            if parts.path == "/v1/users":
                return self._list(query)
            if parts.path == "/v1/users/count":
                return 200, {"object": "total_count", "total_count": len(self.users)}
            if parts.path.startswith("/v1/users/"):
                wanted = parts.path.removeprefix("/v1/users/")
                for user in self.users:
                    if user["id"] == wanted:
                        return 200, user
                return clerk_errors(404, "resource_not_found", "not found")
            return clerk_errors(404, "resource_not_found", f"no route {parts.path}")

    @staticmethod
    def _paged(query: dict[str, str], items: list[dict[str, Any]]) -> tuple[int, Any]:
        """`items[offset:offset + limit]`, or a 422 for a limit outside 1..500 or a negative offset."""
        try:
            limit, offset = int(query.get("limit", 10)), int(query.get("offset", 0))
        except ValueError:
            return clerk_errors(422, "form_param_format_invalid", "limit and offset are numbers")
        if not 1 <= limit <= 500 or offset < 0:
            return clerk_errors(422, "form_param_value_invalid", "limit must be between 1 and 500")
        return 200, items[offset : offset + limit]

    def _sessions(self, query: dict[str, str]) -> tuple[int, Any]:
        if query.get("status", "active") not in SESSION_STATUSES:
            return clerk_errors(422, "form_param_value_invalid", f"unknown status {query['status']}")
        chosen = [
            s
            for s in self.sessions
            if all(s[name] == query[name] for name in ("user_id", "client_id", "status") if name in query)
        ]
        chosen.sort(key=lambda s: (s["created_at"], s["id"]), reverse=True)  # newest first, as Clerk lists them
        return self._paged(query, chosen)

    def _list(self, query: dict[str, str]) -> tuple[int, Any]:
        calls = sum(1 for r in self.requests if r.startswith("GET /v1/users?") or r == "GET /v1/users")
        if calls in self.fail_list_calls:
            status = self.fail_list_calls[calls]
            return clerk_errors(status, "internal_clerk_error", "injected failure")
        order = query.get("order_by", "-created_at")
        if order.lstrip("+-") != "created_at":
            return clerk_errors(422, "form_param_value_invalid", f"unsupported order_by {order}")
        ordered = sorted(self.users, key=lambda u: (u["created_at"], u["id"]), reverse=order.startswith("-"))
        return self._paged(query, ordered)


@contextmanager
def connected_fake_clerk(app, users: list[dict[str, Any]]) -> Iterator[FakeClerk]:
    """A running fake Clerk that `app` sends its outbox calls to (no SDK retries, a short budget)."""
    with FakeClerk(users) as server:
        app.config.update(
            CLERK_SECRET_KEY=SECRET_KEY,
            CLERK_API_URL=server.url,
            CLERK_API_RETRY_MAX_MS=0,
            CLERK_OUTBOX_REQUEST_BUDGET_MS=800,
        )
        yield server
        if server._server is None:  # a test stopped it: start again so the block can end cleanly
            server.start()
