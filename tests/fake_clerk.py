"""A stand-in for Clerk's Backend API, served over real HTTP on loopback for the real SDK.

It answers what `flask clerk sync` asks: `GET /v1/users` (limit 1..500, offset, order_by on
created_at, a bare JSON array), `GET /v1/users/count` and `GET /v1/users/{id}`, with complete
User objects: the SDK's pydantic models refuse anything less (docs/clerk.md).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.clerk_payloads import clerk_user

SECRET_KEY = "sk_test_fake_clerk"


def bapi_user(**fields: Any) -> dict[str, Any]:
    """A user as BAPI returns it: the webhook's User object plus the keys the SDK requires."""
    return {**clerk_user(**fields), "enterprise_accounts": []}


def clerk_errors(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"errors": [{"code": code, "message": message, "long_message": message}],
                    "clerk_trace_id": "trace_fake"}


class FakeClerk:
    """`with FakeClerk(users) as clerk:` serves them at `clerk.url` (ends in /v1) until the block ends."""

    def __init__(self, users: list[dict[str, Any]] | None = None) -> None:
        self.users: list[dict[str, Any]] = list(users or [])
        self.requests: list[str] = []  # "GET /v1/users?limit=500&offset=0..." in arrival order
        self.fail_list_calls: dict[int, int] = {}  # nth /users call (from 1) -> status to answer
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeClerk:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection cannot hold the server open forever

            def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
                status, body = fake.answer(self.command, self.path, self.headers.get("Authorization"))
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-clerk")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- the API ---------------------------------------------------------------------------------

    def answer(self, method: str, target: str, authorization: str | None) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(f"{method} {target}")
            if authorization != f"Bearer {SECRET_KEY}":
                return clerk_errors(401, "authentication_invalid", "Invalid secret key")
            parts = urlsplit(target)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
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
