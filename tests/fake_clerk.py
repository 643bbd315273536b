"""A stand-in for Clerk's Backend API, served over real HTTP on loopback for the real SDK.

It answers what `flask clerk sync` asks: `GET /v1/users` (limit 1..500, offset, order_by on
created_at, a bare JSON array), `GET /v1/users/count` and `GET /v1/users/{id}`, with complete
User objects: the SDK's pydantic models refuse anything less (docs/clerk.md).

And what the outbox sends: `POST /v1/users/{id}/ban` and `/unban`, `PATCH /v1/users/{id}/metadata`
(a deep merge, `null` removes a key), `POST /v1/invitations` (400 when one is pending for the
email), `GET /v1/invitations?status=&query=` and `POST /v1/invitations/{id}/revoke`. Every request
is kept in `calls` (method, path, JSON body, Authorization). `fail_next` answers the next
requests with injected statuses (and headers, such as Retry-After), `delay` makes it slow, and
`stop()` / `start()` take it off the network and back on the same port (connection refused).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.clerk_payloads import clerk_user

SECRET_KEY = "sk_test_fake_clerk"


def bapi_user(**fields: Any) -> dict[str, Any]:
    """A user as BAPI returns it: the webhook's User object plus the keys the SDK requires."""
    return {**clerk_user(**fields), "enterprise_accounts": []}


def clerk_errors(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {
        "errors": [{"code": code, "message": message, "long_message": message}],
        "clerk_trace_id": "trace_fake",
    }


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
        # The next requests get these answers instead: (status, headers), e.g. (429, {"Retry-After": "7"}).
        self.fail_next: list[tuple[int, dict[str, str]]] = []
        self.delay = 0.0  # seconds to wait before answering (a slow Clerk)
        self._port = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
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
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        assert self._server is None, "already serving"
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-clerk")
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

    # --- the API ---------------------------------------------------------------------------------

    def respond(
        self, method: str, target: str, body: Any, authorization: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.calls.append(Call(method, urlsplit(target).path, body, authorization))
            if self.fail_next:
                status, headers = self.fail_next.pop(0)
                self.requests.append(f"{method} {target}")
                return (*clerk_errors(status, "injected", f"injected failure {status}"), headers)
        if method == "GET":
            return (*self.answer(method, target, authorization), {})
        with self._lock:
            self.requests.append(f"{method} {target}")
            if authorization != f"Bearer {SECRET_KEY}":
                return (*clerk_errors(401, "authentication_invalid", "Invalid secret key"), {})
            return (*self._change(method, urlsplit(target).path, body if isinstance(body, dict) else {}), {})

    def _change(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        parts = path.removeprefix("/v1/").split("/")
        if parts[0] == "users" and len(parts) == 3:
            user = self.user(parts[1])
            if user is None:
                return clerk_errors(404, "resource_not_found", "User not found")
            if method == "POST" and parts[2] in ("ban", "unban"):
                user["banned"] = parts[2] == "ban"
            elif method == "PATCH" and parts[2] == "metadata":
                for name in ("public_metadata", "private_metadata", "unsafe_metadata"):
                    if isinstance(body.get(name), dict):
                        user[name] = deep_merge(user.get(name) or {}, body[name])
            else:
                return clerk_errors(404, "resource_not_found", f"no route {method} {path}")
            user["updated_at"] += 1
            return 200, user
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

    def _list(self, query: dict[str, str]) -> tuple[int, Any]:
        calls = sum(1 for r in self.requests if r.startswith("GET /v1/users?") or r == "GET /v1/users")
        if calls in self.fail_list_calls:
            status = self.fail_list_calls[calls]
            return clerk_errors(status, "internal_clerk_error", "injected failure")
        try:
            limit, offset = int(query.get("limit", 10)), int(query.get("offset", 0))
        except ValueError:
            return clerk_errors(422, "form_param_format_invalid", "limit and offset are numbers")
        if not 1 <= limit <= 500 or offset < 0:
            return clerk_errors(422, "form_param_value_invalid", "limit must be between 1 and 500")
        order = query.get("order_by", "-created_at")
        if order.lstrip("+-") != "created_at":
            return clerk_errors(422, "form_param_value_invalid", f"unsupported order_by {order}")
        ordered = sorted(self.users, key=lambda u: (u["created_at"], u["id"]), reverse=order.startswith("-"))
        return 200, ordered[offset : offset + limit]


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
