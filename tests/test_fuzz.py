"""Nothing a signed-in client sends gives a 5xx, and a refused request changes nothing (DESIGN §10).

Every route of `app.url_map` but static files is sent, as a super admin, NUL bytes, lone
surrogates, bidi controls, 100 KB strings, huge and negative numbers, odd dates, crafted base64url
cursors and deeply nested JSON, in every path variable, query parameter and form field it reads
(with a valid CSRF token, mostly); the Clerk webhook gets real Svix-signed bodies holding such JSON,
and the pages that then show the delivery and its user are read too. On the run's database
(SQLite, or PostgreSQL with TEST_DATABASE_URL), two ways:

- the batteries (`test_each_parameter_with_each_nasty_value`, `test_each_odd_delivery`): each
  input of a route in turn gets each value of a fixed list, the others valid; every failing
  input is reported at once;
- hypothesis (`test_random_requests_never_fail`, `test_random_deliveries_never_fail`): random
  combinations; a fixed sequence of examples when CI is set.

Each request must answer below 500 (an exception while a body streams counts as a failure), and
a 4xx must leave every table as it was, but for the writes listed in REFUSAL_WRITES. A new route
is fuzzed with every parameter name known here, and `test_every_route_is_fuzzed` fails until it
is described in ROUTES (or excluded, with a reason, in EXCLUDED).
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from flask import Flask, got_request_exception
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from werkzeug.routing import AnyConverter, IntegerConverter, Rule
from wtforms import Form
from wtforms.fields.core import UnboundField

from app.audit.services import Actor, Source
from app.auth.services import issue_sign_in_link
from app.clerk.forms import ClerkActionForm
from app.models import (
    STATUS_VERBS,
    ClerkCall,
    ClerkCallState,
    Membership,
    Organization,
    OrganizationInvitation,
    User,
    UserData,
    UserRole,
    UserStatus,
    WebhookEvent,
    WebhookOutcome,
    utcnow,
)
from app.organizations.forms import (
    AddMemberForm,
    DeleteOrganizationForm,
    MemberRoleForm,
    OrganizationEditForm,
    OrganizationInviteForm,
    VersionedForm,
)
from app.organizations.queries import SORTS as ORGANIZATION_SORTS
from app.overview.queries import RANGES
from app.pagination import ListFilters
from app.staff.forms import DeleteGroupForm, GroupEditForm, GroupForm, MemberForm, PermissionsForm, StaffActionForm
from app.users.forms import (
    BulkForm,
    DeleteForm,
    InviteForm,
    MetadataForm,
    StatusForm,
    UserDataForm,
    UserEditForm,
)
from app.users.queries import PER_PAGE_CHOICES, SORTS
from app.webhooks.forms import WITHIN
from app.webhooks.services import HANDLED_TYPES
from tests.clerk_payloads import SECRET, clerk_user, envelope, session_created, sign, user_deleted
from tests.conftest import _empty_tables, csrf_token_from, make_app

APP_DIR = Path(__file__).resolve().parents[1] / "app"

# --- What each route reads --------------------------------------------------------------------

USER_LIST = ("q", "role", "status", "sort", "per_page", "after", "before", "deleted", "locked")
ORGANIZATION_LIST = ("q", "sort", "per_page", "after", "before")


@dataclass(frozen=True)
class Route:
    """The inputs of one (endpoint, method) besides its path variables."""

    query: tuple[str, ...] = ()
    forms: tuple[type[Form], ...] = ()  # WTForms classes whose fields are posted
    form: tuple[str, ...] = ()  # names read straight from request.form
    signed: bool = False  # a Svix-signed JSON body instead of a form

    def form_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*(n for f in self.forms for n in field_names(f)), *self.form]))


ROUTES: dict[tuple[str, str], Route] = {
    ("overview.index", "GET"): Route(query=("days",)),
    ("health.healthz", "GET"): Route(),
    ("auth.sign_in_page", "GET"): Route(query=("next", "signed_out")),
    ("auth.redeem_link", "GET"): Route(query=("next",)),
    ("auth.sign_out_view", "POST"): Route(),
    ("users.index", "GET"): Route(query=USER_LIST),
    ("users.count", "GET"): Route(query=USER_LIST),
    ("users.export_csv", "GET"): Route(query=USER_LIST),
    ("users.bulk", "POST"): Route(query=USER_LIST, forms=(BulkForm,), form=("ids",)),
    ("users.new", "GET"): Route(),
    ("users.new", "POST"): Route(forms=(InviteForm,)),
    ("users.create", "POST"): Route(forms=(InviteForm,)),
    ("users.detail", "GET"): Route(),
    ("users.edit", "GET"): Route(),
    ("users.edit", "POST"): Route(forms=(UserEditForm,)),
    ("users.confirm_status", "GET"): Route(query=("to", "view")),
    ("users.change_status", "POST"): Route(forms=(StatusForm,), form=("view",)),
    ("users.invitation", "POST"): Route(forms=(ClerkActionForm,)),
    ("users.add_data", "POST"): Route(forms=(UserDataForm,)),
    ("users.edit_data", "GET"): Route(),
    ("users.update_data", "POST"): Route(forms=(UserDataForm,)),
    ("users.delete_data", "POST"): Route(forms=(UserDataForm,)),
    ("users.data_section", "GET"): Route(),
    ("users.row", "GET"): Route(query=("focus",)),
    ("users.status_panel", "GET"): Route(query=("focus",)),
    ("users.data_row", "GET"): Route(),
    ("users.edit_metadata", "POST"): Route(forms=(MetadataForm,)),
    ("users.sessions", "GET"): Route(),
    ("users.revoke_sessions", "POST"): Route(forms=(ClerkActionForm,)),
    ("users.unlock", "POST"): Route(forms=(ClerkActionForm,)),
    ("users.delete", "GET"): Route(),
    ("users.delete", "POST"): Route(forms=(DeleteForm,)),
    ("webhooks.receive_clerk", "POST"): Route(signed=True),
    ("webhooks.index", "GET"): Route(query=("outcome", "type", "within", "received", "after")),
    ("webhooks.detail", "GET"): Route(),
    ("webhooks.replay", "POST"): Route(),
    ("audit.index", "GET"): Route(query=("actor", "target", "action", "source", "organization", "after")),
    ("organizations.index", "GET"): Route(query=ORGANIZATION_LIST),
    ("organizations.detail", "GET"): Route(query=("mq", "after", "before")),
    # VersionedForm: the version field the rename and role forms share.
    ("organizations.rename", "POST"): Route(forms=(OrganizationEditForm, VersionedForm)),
    ("organizations.add", "POST"): Route(forms=(AddMemberForm,)),
    ("organizations.user_search", "GET"): Route(query=("user",)),
    ("organizations.change_role", "POST"): Route(forms=(MemberRoleForm,)),
    ("organizations.member_row", "GET"): Route(),
    ("organizations.delete", "GET"): Route(),
    ("organizations.delete", "POST"): Route(forms=(DeleteOrganizationForm,)),
    ("organizations.remove", "GET"): Route(),
    ("organizations.remove", "POST"): Route(forms=(ClerkActionForm,)),
    ("organizations.invite", "POST"): Route(forms=(OrganizationInviteForm,)),
    ("organizations.revoke", "POST"): Route(forms=(ClerkActionForm,)),
    ("staff.index", "GET"): Route(),
    ("staff.me", "GET"): Route(),
    ("staff.person", "GET"): Route(),
    ("staff.create", "POST"): Route(forms=(GroupForm,)),
    ("staff.group", "GET"): Route(),
    ("staff.update", "POST"): Route(forms=(GroupEditForm, VersionedForm)),
    ("staff.permissions", "POST"): Route(forms=(PermissionsForm,)),
    ("staff.add", "POST"): Route(forms=(MemberForm,)),
    ("staff.remove", "POST"): Route(forms=(StaffActionForm,)),
    ("staff.delete", "GET"): Route(),
    ("staff.delete", "POST"): Route(forms=(DeleteGroupForm,)),
    ("clerk.index", "GET"): Route(query=("state", "after", "before")),
    ("clerk.retry", "POST"): Route(forms=(ClerkActionForm,), form=("back",)),
    ("clerk.take_value", "POST"): Route(forms=(ClerkActionForm,)),
    ("clerk.push", "POST"): Route(forms=(ClerkActionForm,)),
}

EXCLUDED: dict[str, str] = {
    "static": "files from disk: no database, no session, no parameter but the file's path",
}

# Refused requests that write by design: the table they may write, which rows, and why.
REFUSAL_WRITES: dict[str, tuple[str, Callable[[dict], bool], str]] = {
    "auth.redeem_link": (
        "audit_events",
        lambda row: row["action"] == "auth.sign_in_refused",
        "a refused sign-in link is audited: the throttle counts these rows",
    ),
    "webhooks.receive_clerk": (
        "webhook_events",
        lambda row: row["outcome"] == WebhookOutcome.FAILED.value,
        "a signed delivery that is not a Clerk event is kept (failed) for the page and a replay",
    ),
}


def field_names(form_class: type[Form]) -> tuple[str, ...]:
    names = [
        name
        for cls in reversed(form_class.__mro__)
        for name, value in vars(cls).items()
        if isinstance(value, UnboundField)
    ]
    return tuple(dict.fromkeys(names))


def _route_table() -> list[tuple[Rule, str]]:
    app = make_app("sqlite://")
    rules = sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint))
    return [(rule, method) for rule in rules for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]


ALL_ROUTES = _route_table()
FUZZED = [(rule, method) for rule, method in ALL_ROUTES if rule.endpoint not in EXCLUDED]
ALL_QUERY_NAMES = tuple(dict.fromkeys(n for r in ROUTES.values() for n in r.query))
ALL_FORM_NAMES = tuple(dict.fromkeys(n for r in ROUTES.values() for n in r.form_fields()))


def route_for(rule: Rule, method: str) -> Route:
    """A new route, not described yet, still gets every known name (and fails the coverage test)."""
    known = ROUTES.get((rule.endpoint, method))
    if known is not None:
        return known
    if method == "GET":
        return Route(query=ALL_QUERY_NAMES)
    return Route(query=ALL_QUERY_NAMES, form=ALL_FORM_NAMES)


def route_id(pair: tuple[Rule, str]) -> str:
    rule, method = pair
    return f"{method} {rule.rule}"


# --- Values ------------------------------------------------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ODD_CHARS = [
    "\x00",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    *BIDI,
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "\x7f",
    "\x1b",
    "\r",
    "\n",
    "\t",
    "\u2028",
    "\u00a0",
    "\u0301",
    "\U0001f600",
    "%",
    "_",
    "\\",
    "'",
    '"',
    "<",
    ">",
    "&",
    "/",
    "?",
    "#",
    "=",
    ";",
    " ",
]
KB100 = "x" * 100_000
DEEP_ARRAY = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 5000 + "1" + "}" * 5000


def nested(depth: int) -> str:
    return '{"k":' + "[" * depth + "1" + "]" * depth + "}"


NUMBERS = [
    "-1",
    "0",
    "-0",
    "1.5",
    "99999999999999999999",
    "-99999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "2147483648",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "nan",
    "inf",
    "-Infinity",
    "0x10",
    "1_000",
    " 7 ",
    "\u0661\u0662",
    "1" * 5000,
]
DATES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999+00:00",
    "1970-01-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T25:00:00Z",
    "0000-00-00",
    "-0001-01-01",
    "2038-01-19T03:14:08+00:00",
    "2024-06-01T12:00:00+23:59",
]
STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202eevil\u202c",
    "\u2066a\u2069",
    KB100,
    KB100 + "\x00",
    "\x00" * 1000,
    "%",
    "_%_",
    "\\",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "{{ 7 * 7 }}",
    "../../etc/passwd",
    "//example.org",
    "https://example.org/",
    "/users\x00",
    "javascript:alert(1)",
    "\U0001f600" * 50,
    DEEP_ARRAY,
    DEEP_OBJECT,
    "null",
    "[]",
    "{}",
]
JSON_TEXTS = [  # the first ten go into the battery
    DEEP_ARRAY,
    DEEP_OBJECT,
    nested(990),
    nested(400),
    '{"k": "\\ud800"}',
    '{"\\udfff": 1}',
    '{"k": "a\\u0000b"}',
    '{"\\u0000": 1}',
    '{"k": 1e999}',
    '{"k": ' + "9" * 5000 + "}",
    nested(600),
    nested(200),
    '{"k": -1e999}',
    '{"k": NaN}',
    '{"k": Infinity}',
    '{"k": 99999999999999999999}',
    '{"a": 1, "a": 2}',
    '{"\\u202e": "\\u202e"}',
    '{"k": "<script>alert(1)</script>"}',
    '{"k": "' + "x" * 100_000 + '"}',
    '{"k": "0001-01-01T00:00:00+14:00"}',
    "[]",
    '"x"',
    "null",
    "{",
    '{"k": "\\ud800"',
    "{}",
]

OFFSETS = [
    UTC,
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-14)),
    timezone(timedelta(hours=23, minutes=59)),
    timezone(timedelta(hours=-23, minutes=59)),
]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor(*parts: Any) -> str:
    """A cursor as the pages make them: base64url of a JSON list (lone surrogates become \\ud800)."""
    return b64(json.dumps(list(parts)).encode())


CRAFTED_CURSORS = [
    cursor("-created_at", "0001-01-01T00:00:00+14:00", "x"),
    cursor("-created_at", "9999-12-31T23:59:59-14:00", "x"),
    cursor("-created_at", "2020-01-01T00:00:00+00:00", "\ud800"),
    cursor("-created_at", "2020-01-01T00:00:00+00:00", "a\x00b"),
    cursor("email", "\ud800", "x"),
    cursor("email", "a\x00b", "x"),
    cursor("-name", "\u202e", "\ud800"),
    cursor("-last_sign_in_at", "0001-01-01T00:00:00+14:00", "x"),
    cursor("0001-01-01T00:00:00+14:00", "x"),
    cursor("9999-12-31T23:59:59-14:00", "x"),
    cursor("2020-01-01T00:00:00+00:00", "\ud800"),
    cursor("2020-01-01T00:00:00+00:00", "a\x00b"),
    cursor("2020-01-01T00:00:00+00:00", 1e309),
    cursor(None, None),
    cursor(),
    b64(b"\xff\xfe\x00"),
    b64(b"[" * 400 + b"]" * 400),
    "A" * 3000,
    "!!!",
    cursor(2**31),
    cursor(-(2**31) - 1),
    cursor(10**400),
    cursor(True),
    cursor("-members", 2**31, "x"),
    cursor("members", 1e309, "x"),
    cursor("name", "\ud800", "x"),
    cursor("-created_at", "2020-01-01T00:00:00+00:00", 7),
]

# Valid values, so that requests also get past validation into the code behind it.
VALID: dict[str, list[str]] = {
    "q": ["ada", "a", "example.com"],
    "role": [*(r.value for r in UserRole), "org:admin", "org:member"],
    "status": [s.value for s in UserStatus],
    "sort": list(dict.fromkeys([*SORTS, *ORGANIZATION_SORTS])),
    "per_page": [str(n) for n in PER_PAGE_CHOICES],
    "deleted": ["1", "on"],
    "locked": ["1", "on"],
    "days": [str(d) for d in RANGES],
    "to": list(STATUS_VERBS),
    "view": ["row", "detail"],
    "outcome": [o.value for o in WebhookOutcome],
    "type": list(HANDLED_TYPES),
    "within": list(WITHIN),
    "received": list(WITHIN),
    "state": [s.value for s in ClerkCallState],
    "action": ["user.invite", "user.update", "auth.sign_in_refused", *list(STATUS_VERBS)],
    "source": [s.value for s in Source],
    "next": ["/users", "/audit?actor=x"],
    "signed_out": ["1"],
    "back": ["user"],
    "email": ["fuzz.new@example.com", "Fuzz.Person@Example.COM"],
    "first_name": ["Ada", ""],
    "last_name": ["Lovelace", ""],
    "username": ["ada", ""],
    "image_url": ["https://img.example.com/a.png", ""],
    "external_id": ["ext-1", ""],
    "public_metadata": ['{"plan": "pro"}', ""],
    "private_metadata": ['{"stripe": "cus_1"}', ""],
    "unsafe_metadata": ['{"theme": "dark"}', ""],
    "key": ["fuzz.key", "plan"],
    "value": ["pro", "x"],
    "mq": ["ada", "a", "lovelace"],
    "user": ["ada@example.com", "00000000-0000-4000-8000-000000000001", "ada"],
    "name": ["Fuzz Org", "Acme"],
    "slug": ["fuzz-org", "acme"],
    "version": ["1", "2"],
    "organization": ["00000000-0000-4000-8000-0000000000a1"],
}
CURSOR_NAMES = {"after", "before"}
JSON_NAMES = {"public_metadata", "private_metadata", "unsafe_metadata", "value"}


def battery_values(name: str) -> list[str]:
    """The fixed list each parameter is sent in turn: the issue's inputs, and more for cursors and JSON."""
    values = [
        "a\x00b",
        "x\ud800y",
        "\u202eabc\u202c",
        KB100,
        "99999999999999999999",
        "-1",
        "1e309",
        "NaN",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        DEEP_OBJECT,
    ]
    if name in CURSOR_NAMES:
        values += CRAFTED_CURSORS[:12]
    if name in JSON_NAMES:
        values += JSON_TEXTS[:10]
    return list(dict.fromkeys(values))


# --- Strategies --------------------------------------------------------------------------------

odd_text = st.text(st.one_of(st.sampled_from(ODD_CHARS), st.characters()), max_size=40)
number_text = st.one_of(st.sampled_from(NUMBERS), st.integers().map(str), st.floats().map(repr))
date_text = st.one_of(
    st.sampled_from(DATES),
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=st.sampled_from(OFFSETS)
    ).map(datetime.isoformat),
)
nasty_text = st.one_of(st.sampled_from(STRINGS), odd_text, number_text, date_text)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), odd_text, number_text, date_text)
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3), max_leaves=8
)
cursor_text = st.one_of(
    st.sampled_from(CRAFTED_CURSORS),
    st.tuples(st.sampled_from(list(SORTS)) | odd_text, date_text | json_scalar, odd_text | json_scalar).map(
        lambda parts: cursor(*parts)
    ),
    st.tuples(date_text | json_scalar, odd_text | json_scalar).map(lambda parts: cursor(*parts)),
    json_value.map(lambda v: cursor(v)),
    st.binary(max_size=60).map(b64),
)
json_text = st.one_of(
    st.sampled_from(JSON_TEXTS),
    st.dictionaries(odd_text, json_value, max_size=4).map(json.dumps),
    json_value.map(json.dumps),
)


@st.composite
def value_for(draw, name: str) -> str:
    choices = [nasty_text]
    if name in VALID:
        choices.append(st.sampled_from(VALID[name]))
    if name in CURSOR_NAMES:
        choices.append(cursor_text)
    if name in JSON_NAMES:
        choices.append(json_text)
    return draw(st.one_of(choices))


@dataclass(frozen=True)
class Real:
    """A row that exists: the n-th of its kind in the world (resolved at send time)."""

    kind: str
    n: int = 0


REAL_KINDS = {
    "user_id": "user",
    "data_id": "data",
    "svix_id": "event",
    "call_id": "call",
    "token": "token",
    "organization_id": "organization",
    "membership_id": "membership",
    "invitation_id": "invitation",
    "group_id": "group",
}
VALID_CSRF = Real("csrf")


def path_values(rule: Rule) -> dict[str, st.SearchStrategy]:
    strategies = {}
    for name, converter in rule._converters.items():
        choices: list[st.SearchStrategy] = [nasty_text]
        if name in REAL_KINDS:
            choices.insert(0, st.integers(0, 9).map(lambda n, kind=REAL_KINDS[name]: Real(kind, n)))
        if isinstance(converter, IntegerConverter):
            choices.append(st.one_of(st.integers(min_value=0), st.integers(min_value=2**31)).map(str))
        if isinstance(converter, AnyConverter):
            choices.insert(0, st.sampled_from(sorted(converter.items)))
        strategies[name] = st.one_of(choices)
    return strategies


def base_path_values(rule: Rule) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, converter in rule._converters.items():
        if name in REAL_KINDS:
            values[name] = Real(REAL_KINDS[name])
        elif isinstance(converter, AnyConverter):
            values[name] = sorted(converter.items)[0]
        else:
            values[name] = "x"
    return values


# --- Requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    rule: Rule
    method: str
    path: dict[str, Any] = field(default_factory=dict)
    query: tuple[tuple[str, Any], ...] = ()
    form: tuple[tuple[str, Any], ...] = ()
    csrf: Any = VALID_CSRF  # None: no token
    htmx: bool = False
    body: str | None = None  # a signed delivery's JSON text
    svix_id: str | None = None
    note: str = ""  # what was varied, for the report

    @property
    def endpoint(self) -> str:
        return self.rule.endpoint


def pct(value: str) -> str:
    """Percent-encoded UTF-8; a lone surrogate goes as its (invalid) UTF-8 bytes, as a client could send it."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def urlencode(pairs) -> str:
    return "&".join(f"{pct(k)}={pct(v)}" for k, v in pairs)


PLACEHOLDER = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    if len(text) > limit:
        text = f"{text[: limit - 25]}…({len(value) if isinstance(value, str) else '?'} chars)"
    if isinstance(value, str) and 8 < len(value) <= 3000 and re.fullmatch(r"[A-Za-z0-9_-]+", value):
        try:  # a cursor: show what it holds
            decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            json.loads(decoded)
            text += f" (cursor {short(decoded, 120)})"
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
    return text


@dataclass
class Sent:
    call: Call
    url: str
    status: int | None
    error: BaseException | None  # what the app raised or logged (or the client, while streaming)

    def describe(self) -> str:
        what = f"{self.call.method} {self.url}"
        if self.call.note:
            what += f" [{self.call.note}]"
        result = f"status {self.status}" if self.status is not None else "no response"
        if self.error is not None:
            message = str(self.error).strip().splitlines()[0][:160] if str(self.error).strip() else ""
            result += f", {type(self.error).__module__}.{type(self.error).__name__}: {message}"
        return f"{what} -> {result}"


class RefusalChangedDatabase(AssertionError):
    pass


class ServerError(AssertionError):
    pass


class _ExceptionLog(logging.Handler):
    def __init__(self, sink: list):
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.sink.append(record.exc_info[1])


# The world every request meets: fixed ids, so a session cookie outlives a reset.
ADMIN_ID = "00000000-0000-4000-8000-00000000000a"
USER_IDS = {
    "plain": "00000000-0000-4000-8000-000000000001",
    "invited": "00000000-0000-4000-8000-000000000002",
    "admin": "00000000-0000-4000-8000-000000000003",
    "deleted": "00000000-0000-4000-8000-000000000004",
    "suspended": "00000000-0000-4000-8000-000000000005",
}
PLAIN_CLERK_ID = "user_fuzzplain000000000000000001"
ORGANIZATION_IDS = {"acme": "00000000-0000-4000-8000-0000000000a1", "deleted": "00000000-0000-4000-8000-0000000000a2"}
MEMBERSHIP_IDS = {
    "plain": "00000000-0000-4000-8000-0000000000b1",
    "waiting": "00000000-0000-4000-8000-0000000000b2",
    "deleted": "00000000-0000-4000-8000-0000000000b3",
}
INVITATION_IDS = {"pending": "00000000-0000-4000-8000-0000000000c1", "expired": "00000000-0000-4000-8000-0000000000c2"}


class World:
    """The app, its seeded rows, a signed-in super admin, and `check` for one request."""

    def __init__(self, app: Flask, db, auth):
        self.app, self.db, self.client = app, db, auth.client
        app.config["PROPAGATE_EXCEPTIONS"] = False  # a bug answers 500, as in production; its cause is kept
        app.config["CLERK_WEBHOOK_SIGNING_SECRET"] = SECRET
        self.errors: list[BaseException] = []
        got_request_exception.connect(self._on_exception, app)
        # Failures are reported with their cause; their tracebacks need not flood the output too.
        self.log, self.handlers = _ExceptionLog(self.errors), list(app.logger.handlers)
        for handler in self.handlers:
            app.logger.removeHandler(handler)
        app.logger.addHandler(self.log)
        app.logger.propagate = False
        self.seed()
        auth.sign_in(db.session.get(User, ADMIN_ID))
        self.csrf = csrf_token_from(self.client.get("/users/new").get_data(as_text=True))
        self.cookie = self.client.get_cookie("session").value
        self.requests = 0
        self.state = self.snapshot()  # as the last request left it

    def close(self) -> None:
        got_request_exception.disconnect(self._on_exception, self.app)
        self.app.logger.removeHandler(self.log)
        for handler in self.handlers:
            self.app.logger.addHandler(handler)
        self.app.logger.propagate = True

    def _on_exception(self, sender, exception, **extra) -> None:
        self.errors.append(exception)

    # -- rows

    def seed(self) -> None:
        db, now = self.db, utcnow()
        people = [
            User(id=ADMIN_ID, email="fuzz-admin@staff.example", clerk_id="user_fuzzadmin", role=UserRole.SUPER_ADMIN),
            User(
                id=USER_IDS["plain"],
                email="ada@example.com",
                first_name="Ada",
                last_name="Lovelace",
                username="ada",
                clerk_id=PLAIN_CLERK_ID,
                public_metadata='{"plan": "pro"}',
                last_sign_in_at=now - timedelta(days=1),
            ),
            User(
                id=USER_IDS["invited"],
                email="invited@example.com",
                clerk_id="local_fuzzinvited",
                status=UserStatus.INVITED,
            ),
            User(id=USER_IDS["admin"], email="admin@staff.example", clerk_id="user_fuzzadmin2", role=UserRole.ADMIN),
            User(id=USER_IDS["deleted"], email="gone@example.com", clerk_id="user_fuzzdeleted", deleted_at=now),
            User(
                id=USER_IDS["suspended"],
                email="suspended@example.com",
                clerk_id="user_fuzzsuspended",
                status=UserStatus.SUSPENDED,
            ),
        ]
        db.session.add_all(people)
        db.session.flush()
        db.session.add_all(
            [
                UserData(id="00000000-0000-4000-8000-0000000000d1", user_id=USER_IDS["plain"], key="plan", value="pro"),
                UserData(id="00000000-0000-4000-8000-0000000000d2", user_id=USER_IDS["deleted"], key="k", value="v"),
            ]
        )
        payload = json.dumps(
            envelope(
                "user.updated", clerk_user(id=PLAIN_CLERK_ID, email="ada@example.com", updated_at=1_760_000_001_000)
            )
        )
        db.session.add_all(
            [
                WebhookEvent(
                    id="msg_fuzz_failed",
                    type="user.updated",
                    clerk_user_id=PLAIN_CLERK_ID,
                    payload=payload,
                    outcome=WebhookOutcome.FAILED.value,
                    error="fuzz",
                    received_at=now,
                    processed_at=now,
                ),
                WebhookEvent(
                    id="msg_fuzz_applied",
                    type="user.updated",
                    clerk_user_id=PLAIN_CLERK_ID,
                    payload=payload,
                    outcome=WebhookOutcome.APPLIED.value,
                    received_at=now,
                    processed_at=now,
                ),
            ]
        )
        db.session.add_all(
            [
                ClerkCall(
                    id=1,
                    user_id=USER_IDS["plain"],
                    operation="ban",
                    payload=f'{{"user_id": "{PLAIN_CLERK_ID}"}}',
                    state=ClerkCallState.FAILED.value,
                    attempts=3,
                    last_error="fuzz",
                ),
                ClerkCall(
                    id=2,
                    user_id=USER_IDS["plain"],
                    operation="unban",
                    payload=f'{{"user_id": "{PLAIN_CLERK_ID}"}}',
                    state=ClerkCallState.PENDING.value,
                ),
            ]
        )
        self.seed_organizations(now)
        groups = self.seed_staff_groups()
        token = issue_sign_in_link(
            people[0],
            secret_key=self.app.config["SECRET_KEY"],
            max_age=self.app.config["SIGN_IN_LINK_MAX_AGE"],
            actor=Actor.cli(),
        )
        db.session.commit()
        self.real = {
            "user": [
                USER_IDS["plain"],
                USER_IDS["invited"],
                USER_IDS["admin"],
                USER_IDS["deleted"],
                USER_IDS["suspended"],
                ADMIN_ID,
            ],
            "data": ["00000000-0000-4000-8000-0000000000d1", "00000000-0000-4000-8000-0000000000d2"],
            "event": ["msg_fuzz_failed", "msg_fuzz_applied"],
            "call": ["1", "2", "3"],
            "token": [token],
            "organization": list(ORGANIZATION_IDS.values()),
            "membership": list(MEMBERSHIP_IDS.values()),
            "invitation": list(INVITATION_IDS.values()),
            "group": groups,
        }

    def seed_staff_groups(self) -> list[str]:
        """The built-in group and one of the world's own, with the admin in it."""
        from app.staff.services import add_member, create_group, ensure_builtin_group

        builtin = ensure_builtin_group()
        fuzzers = create_group(
            "Fuzzers", description="A group to poke at", permissions=["users.view"], actor=Actor.cli()
        )
        add_member(fuzzers, self.db.session.get(User, USER_IDS["admin"]), actor=Actor.cli())
        return [str(builtin.id), str(fuzzers.id)]

    def seed_organizations(self, now) -> None:
        """An organization with a member, one waiting for its user and a removed one, a pending and
        an expired invitation, an open call; and a deleted organization with a member."""
        db = self.db
        acme, gone = ORGANIZATION_IDS["acme"], ORGANIZATION_IDS["deleted"]
        db.session.add_all(
            [
                Organization(
                    id=acme, clerk_id="org_fuzzacme", name="Acme", slug="acme", public_metadata='{"plan": "pro"}'
                ),
                Organization(id=gone, clerk_id="org_fuzzgone", name="Gone", slug="gone", deleted_at=now),
            ]
        )
        db.session.flush()
        db.session.add_all(
            [
                Membership(
                    id=MEMBERSHIP_IDS["plain"],
                    clerk_id="orgmem_fuzzplain",
                    organization_id=acme,
                    user_id=USER_IDS["plain"],
                    clerk_user_id=PLAIN_CLERK_ID,
                    identifier="ada@example.com",
                    role="org:member",
                ),
                Membership(
                    id=MEMBERSHIP_IDS["waiting"],
                    clerk_id="orgmem_fuzzwaiting",
                    organization_id=acme,
                    clerk_user_id="user_fuzzwaiting",
                    identifier="waiting@example.com",
                    role="org:admin",
                ),
                Membership(
                    id=MEMBERSHIP_IDS["deleted"],
                    clerk_id="orgmem_fuzzdeleted",
                    organization_id=gone,
                    user_id=USER_IDS["suspended"],
                    clerk_user_id="user_fuzzsuspended",
                    identifier="suspended@example.com",
                    role="org:member",
                    deleted_at=now,
                ),
                OrganizationInvitation(
                    id=INVITATION_IDS["pending"],
                    clerk_id="orginv_fuzzpending",
                    organization_id=acme,
                    email="new@example.com",
                    role="org:member",
                ),
                OrganizationInvitation(
                    id=INVITATION_IDS["expired"],
                    clerk_id="orginv_fuzzexpired",
                    organization_id=acme,
                    email="late@example.com",
                    role="org:member",
                    expires_at=now - timedelta(days=1),
                ),
                ClerkCall(
                    id=3,
                    organization_id=acme,
                    operation="update_organization",
                    payload='{"organization_id": "org_fuzzacme", "fields": {"name": "Acme"}}',
                    state=ClerkCallState.FAILED.value,
                    attempts=1,
                    last_error="fuzz",
                ),
            ]
        )
        db.session.get(Organization, acme).members_count = 2

    def reset(self) -> None:
        _empty_tables()
        self.seed()
        self.state = self.snapshot()

    def snapshot(self) -> dict[str, dict[tuple, dict]]:
        """Every row of every table (a handful each), by primary key, read on a connection of its own."""
        tables = {}
        with self.db.engine.connect() as connection:
            for table in self.db.metadata.sorted_tables:
                keys = list(table.primary_key.columns)
                rows = connection.execute(sa.select(table).order_by(*keys)).mappings()
                tables[table.name] = {tuple(row[c.name] for c in keys): dict(row) for row in rows}
        return tables

    # -- requests

    def resolve(self, value: Any) -> str:
        if value is VALID_CSRF:
            return self.csrf
        if isinstance(value, Real):
            pool = self.real[value.kind]
            return pool[value.n % len(pool)]
        return value

    def send(self, call: Call) -> Sent:
        path = PLACEHOLDER.sub(lambda m: pct(self.resolve(call.path[m.group(1)])), call.rule.rule)
        query = urlencode((k, self.resolve(v)) for k, v in call.query)
        url = clip(path, 200) + (f"?{clip(query, 200)}" if query else "")
        headers = {"HX-Request": "true"} if call.htmx else {}
        kwargs: dict[str, Any] = {"query_string": query}
        if call.body is not None:
            signed = sign(call.body, msg_id=call.svix_id or f"msg_fuzz_{self.requests}")
            headers.update(signed.headers)
            kwargs["data"] = signed.body
        elif call.method == "POST":
            pairs = [(k, self.resolve(v)) for k, v in call.form]
            if call.csrf is not None:
                pairs.insert(0, ("csrf_token", self.resolve(call.csrf)))
            kwargs["data"] = urlencode(pairs).encode("ascii")
            kwargs["content_type"] = "application/x-www-form-urlencoded"
        self.client.set_cookie("session", self.cookie)  # whatever the last request did to it
        self.errors.clear()
        self.requests += 1
        status, error = None, None

        def request() -> int:
            response = self.client.open(path, method=call.method, headers=headers, **kwargs)
            response.get_data()  # a streamed body (the export) runs its queries now
            response.close()
            return response.status_code

        try:
            # Outside the test's app context, so that the request has its own, as in production:
            # its own `g` and database session, both gone when it ends.
            status = contextvars.Context().run(request)
        except Exception as exc:  # noqa: BLE001 - raised while streaming: the client gets a broken body
            error = exc
        if error is None and self.errors:
            error = self.errors[-1]
        return Sent(call, url, status, error)

    def check(self, call: Call, *, keep: bool = False) -> Sent:
        """Send `call`; raise ServerError or RefusalChangedDatabase; put the world back if it changed (unless `keep`)."""
        before = self.state
        sent = self.send(call)
        after = self.state = self.snapshot()
        try:
            if sent.status is None or sent.status >= 500:
                raise ServerError(sent.describe()) from sent.error
            if 400 <= sent.status < 500:
                changed = self._unexpected_changes(call.endpoint, before, after)
                if changed:
                    raise RefusalChangedDatabase(f"{sent.describe()}; it changed {changed}")
        finally:
            if after != before and not keep:
                self.reset()
        return sent

    @staticmethod
    def _unexpected_changes(endpoint: str, before: dict, after: dict) -> list[str]:
        allowed_table, allowed_row, _why = REFUSAL_WRITES.get(endpoint, (None, None, None))
        changed = []
        for table, rows in after.items():
            old = before[table]
            if rows == old:
                continue
            if (
                table == allowed_table
                and old.keys() <= rows.keys()
                and all(allowed_row(row) for key, row in rows.items() if old.get(key) != row)
            ):
                continue
            changed.append(f"{table} ({len(old)} -> {len(rows)} rows)")
        return changed


@pytest.fixture
def world(app, db, auth) -> Iterator[World]:
    world = World(app, db, auth)
    try:
        yield world
    finally:
        world.close()


# --- Deliveries to the Clerk webhook -----------------------------------------------------------

CLERK_USER_FIELDS = (
    "id",
    "first_name",
    "last_name",
    "username",
    "external_id",
    "image_url",
    "created_at",
    "updated_at",
    "last_sign_in_at",
    "public_metadata",
    "private_metadata",
    "unsafe_metadata",
    "email_addresses",
    "primary_email_address_id",
    "banned",
    "locked",
)
MS_VALUES: list[Any] = [
    -1,
    0,
    2**63,
    2**64,
    10**20,
    1e309,
    -1e309,
    float("nan"),
    1.5,
    -62135596800000,
    253402300800000,
    "1760000000000",
    "0001-01-01T00:00:00+14:00",
    None,
    True,
    [],
    {},
]
DEEP = "__fuzz_deep__"


def delivery_body(event_type: str, data: Any, *, deep: str | None = None, timestamp: Any = 1_760_000_000_000) -> str:
    """The JSON text of an event (lone surrogates and NUL escaped); `deep` replaces the DEEP marker verbatim."""
    body = json.dumps({"data": data, "object": "event", "timestamp": timestamp, "type": event_type})
    if deep is not None:
        body = body.replace(json.dumps(DEEP), deep)
    return body


def delivery_battery() -> list[tuple[str, str, str | None]]:
    """(what, JSON body, svix id): odd values in the fields of a real-shaped user.created, and odd bodies."""
    cases: list[tuple[str, str, str | None]] = []

    def user(**overrides) -> dict:
        return {**clerk_user(id="user_fuzzhook", email="hook@example.com"), **overrides}

    def add(what: str, body: str, svix_id: str | None = None) -> None:
        cases.append((what, body, svix_id))

    texts = ["a\x00b", "x\ud800y", "\u202eevil\u202c"]
    for name in ("id", "first_name", "last_name", "username", "external_id", "image_url"):
        for value in texts + ([KB100] if name in ("id", "first_name") else []):
            add(f"data.{name}={short(value, 30)}", delivery_body("user.created", user(**{name: value})))
    for value in [*texts, KB100]:
        data = user()
        data["email_addresses"][-1]["email_address"] = value
        add(f"email={short(value, 30)}", delivery_body("user.created", data))
    for value in MS_VALUES:
        add(f"data.created_at={value!r}", delivery_body("user.created", user(created_at=value)))
    for value in MS_VALUES[:8]:
        add(f"data.last_sign_in_at={value!r}", delivery_body("user.created", user(last_sign_in_at=value)))
        add(f"data.updated_at={value!r}", delivery_body("user.updated", user(updated_at=value)))
        add(f"timestamp={value!r}", delivery_body("user.updated", user(), timestamp=value))
        session = session_created("user_fuzzhook", at=1_760_000_000_000)["data"]
        add(f"session.created_at={value!r}", delivery_body("session.created", {**session, "created_at": value}))
    for name in ("public_metadata", "private_metadata", "unsafe_metadata"):
        for text in JSON_TEXTS[:10] if name == "public_metadata" else JSON_TEXTS[4:6]:
            add(f"data.{name}={short(text, 40)}", delivery_body("user.created", user(**{name: DEEP}), deep=text))
    for value in ["a\x00b", "\ud800", 5, None, []]:
        add(f"type={short(value, 30)}", delivery_body(value, user()))
        add(f"user.deleted id={short(value, 30)}", delivery_body("user.deleted", user_deleted(value)["data"]))
        add(
            f"session user_id={short(value, 30)}",
            delivery_body("session.created", {**session_created("x", at=1)["data"], "user_id": value}),
        )
    for text in (DEEP_ARRAY, DEEP_OBJECT, nested(990), "[]", "null", '"\\ud800"', "1e309", '{"type": "\\u0000"}'):
        add(f"body={short(text, 40)}", text)
    for svix_id in ("\x00", "msg_\x00", "msg_" + "x" * 300, "m\xe9", "\x7f", "msg_fuzz_failed"):
        add(f"svix-id={svix_id!r:.40}", delivery_body("user.created", user()), svix_id)
    return cases


@st.composite
def deliveries(draw) -> tuple[str, str | None]:
    event_type = draw(st.sampled_from([*HANDLED_TYPES, "organization.created"]) | odd_text)
    base = clerk_user(id=draw(st.sampled_from(["user_fuzzhook", PLAIN_CLERK_ID]) | odd_text), email="hook@example.com")
    changes = draw(
        st.fixed_dictionaries(
            {},
            optional={
                name: st.one_of(json_value, st.sampled_from(MS_VALUES), odd_text, nasty_text)
                for name in CLERK_USER_FIELDS
            },
        )
    )
    deep = None
    if draw(st.booleans()):
        name = draw(st.sampled_from(["public_metadata", "private_metadata", "unsafe_metadata", "first_name"]))
        changes[name], deep = DEEP, draw(st.sampled_from(JSON_TEXTS))
    data: Any = {**base, **changes}
    if event_type == "session.created" and draw(st.booleans()):
        data = {
            **session_created(data["id"] if isinstance(data.get("id"), str) else "x", at=1)["data"],
            "created_at": draw(st.sampled_from(MS_VALUES)),
            "user": data,
        }
    body = delivery_body(event_type, data, deep=deep, timestamp=draw(st.sampled_from(MS_VALUES[:10])))
    svix_id = draw(st.none() | st.sampled_from(["\x00", "msg_fuzz_failed", "msg_" + "x" * 300, "m\xe9"]))
    return body, svix_id


def deliver_and_look(world: World, body: str, svix_id: str | None, note: str) -> None:
    """One signed delivery, then the pages that show it and, when it was applied, its user and history."""
    rules = {(rule.endpoint, method): rule for rule, method in ALL_ROUTES}
    svix_id = svix_id or f"msg_fuzz_{world.requests}"
    try:
        sent = world.check(
            Call(rules["webhooks.receive_clerk", "POST"], "POST", body=body, svix_id=svix_id, note=note), keep=True
        )
        looks = [
            Call(rules["webhooks.detail", "GET"], "GET", path={"svix_id": svix_id}),
            Call(rules["webhooks.index", "GET"], "GET"),
        ]
        if sent.status < 400:
            with world.db.engine.connect() as connection:
                user_ids = list(
                    connection.scalars(
                        sa.select(User.id).where(User.id.not_in([ADMIN_ID, *USER_IDS.values()])).limit(2)
                    )
                )
            looks += [
                Call(rules["users.index", "GET"], "GET", query=(("deleted", "1"),)),
                Call(rules["audit.index", "GET"], "GET"),
            ]
            for user_id in user_ids:
                looks += [
                    Call(rules["users.detail", "GET"], "GET", path={"user_id": user_id}),
                    Call(rules["users.edit", "GET"], "GET", path={"user_id": user_id}),
                ]
        looks.append(Call(rules["webhooks.replay", "POST"], "POST", path={"svix_id": svix_id}))
        for look in looks:
            world.check(replace(look, note=f"after delivering {note}"), keep=True)
    finally:
        world.reset()


# --- The tests ---------------------------------------------------------------------------------

# The fuzzing tests fail on the code of this branch (NUL on PostgreSQL, crafted cursors, surrogates
# in deliveries, deep metadata, huge integers): remove this mark once those fixes are merged.


def test_every_route_is_fuzzed():
    routes = {(rule.endpoint, method) for rule, method in ALL_ROUTES}
    missing = sorted(r for r in routes if r not in ROUTES and r[0] not in EXCLUDED)
    assert not missing, f"describe these routes in ROUTES (or exclude them, with a reason, in EXCLUDED): {missing}"
    stale = sorted(r for r in ROUTES if r not in routes)
    assert not stale, f"ROUTES describes routes that are gone: {stale}"
    assert all(reason for reason in EXCLUDED.values())


def test_every_name_the_app_reads_is_fuzzed():
    """A parameter read with request.args/.form, a field of any form or a list's filter, is in some route's list."""
    read = set()
    for path in APP_DIR.rglob("*.py"):
        read |= set(re.findall(r"(?:args|form)\.(?:get|getlist)\(\s*[\"'](\w+)[\"']", path.read_text()))
    forms = [f for r in ROUTES.values() for f in r.forms]
    for subclass in _subclasses(Form):
        if subclass.__module__.startswith("app."):
            assert subclass in forms, f"{subclass.__qualname__} is not posted or queried by any route in ROUTES"
            read |= set(field_names(subclass))
    for filters in _subclasses(ListFilters):
        read |= set(filters.arg_names())
    known = set(ALL_QUERY_NAMES) | set(ALL_FORM_NAMES)
    assert read - known == set(), f"read by the app but fuzzed nowhere: {sorted(read - known)}"


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def base_call(rule: Rule, method: str) -> Call:
    """The route with real path values and valid fields: the request the battery varies one input of."""
    route = route_for(rule, method)
    form = tuple((name, VALID[name][0]) for name in route.form_fields() if name in VALID)
    if rule.endpoint == "users.edit":
        form = (
            ("email", "ada@example.com"),
            ("first_name", "Ada"),
            ("last_name", "Lovelace"),
            ("role", "user"),
            ("status", "active"),
            ("version", "1"),
        )
    if rule.endpoint in ("users.change_status", "users.bulk"):
        form = (("status", "suspended"), ("action", "suspended"), ("ids", Real("user")))
    path = base_path_values(rule)
    if rule.endpoint == "users.invitation":
        path["user_id"] = Real("user", 1)  # the invited one
    return Call(rule, method, path=path, form=form)


def battery(rule: Rule, method: str) -> Iterator[Call]:
    route, base = route_for(rule, method), base_call(rule, method)
    yield base
    if not (base.path or route.query or route.form_fields()):  # no inputs: an unknown parameter, then
        for value in battery_values("x"):
            yield replace(base, query=(("x", value),), note=f"query x={short(value, 40)}")
    for name in base.path:
        for value in battery_values(name):
            yield replace(base, path={**base.path, name: value}, note=f"path {name}={short(value, 40)}")
    for name in route.query:
        for value in battery_values(name):
            yield replace(base, query=((name, value),), note=f"query {name}={short(value, 40)}")
            if name in ("q", "role", "status") and value in ("a\x00b", "x\ud800y"):
                yield replace(base, query=((name, value),), htmx=True, note=f"htmx, query {name}={short(value, 40)}")
    for name in route.form_fields():
        for value in battery_values(name):
            form = (*tuple(pair for pair in base.form if pair[0] != name), (name, value))
            yield replace(base, form=form, note=f"form {name}={short(value, 40)}")
    if method == "POST" and not route.signed:
        for value in ("a\x00b", "x\ud800y", KB100, DEEP_OBJECT):
            yield replace(base, csrf=value, note=f"csrf_token={short(value, 40)}")


FAST = [pair for pair in FUZZED if not route_for(*pair).signed]
RECEIVER = [pair for pair in FUZZED if route_for(*pair).signed]


@pytest.mark.parametrize("rule, method", FAST, ids=[route_id(p) for p in FAST])
def test_each_parameter_with_each_nasty_value(world, rule, method):
    failures = {}
    for call in battery(rule, method):
        try:
            world.check(call)
        except AssertionError as failure:
            cause = failure.__cause__
            kind = type(cause).__name__ if cause else type(failure).__name__
            failures.setdefault((call.note.split("=")[0], kind), str(failure))
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(sorted(failures.values()))


@pytest.mark.parametrize("rule, method", RECEIVER, ids=[route_id(p) for p in RECEIVER])
def test_each_odd_delivery(world, rule, method):
    failures = {}
    for note, body, svix_id in delivery_battery():
        try:
            deliver_and_look(world, body, svix_id, note)
        except AssertionError as failure:
            cause = failure.__cause__
            kind = type(cause).__name__ if cause else type(failure).__name__
            where = str(failure).split(" -> ")[0].split("?")[0].split(" [")[0]
            failures.setdefault((note.split("=")[0], where, kind), str(failure))
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(sorted(failures.values()))


# Hypothesis: a fixed sequence of examples in CI (so CI does not flake), fresh ones locally.
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 12)),
    deadline=None,
    # Each failure is reported with its whole request, and the battery above gives one-input
    # reproductions; shrinking (minutes on a failing route) only with FUZZ_SHRINK=1.
    phases=tuple(Phase) if os.environ.get("FUZZ_SHRINK") else tuple(p for p in Phase if p != Phase.shrink),
    # A request, and a reset of the tables after one that changed them, takes a while. (The
    # function-scoped fixtures are not a concern: @given wraps a function inside the test, and
    # World.check puts the tables and the session cookie back after every example.)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("fuzz-ci", parent=settings.get_profile("fuzz"), derandomize=True, database=None)
FUZZ_SETTINGS = settings.get_profile("fuzz-ci" if os.environ.get("CI") else "fuzz")


@st.composite
def calls(draw, rule: Rule, method: str) -> Call:
    route = route_for(rule, method)
    path = draw(st.fixed_dictionaries(path_values(rule)))
    names = list(route.query) or list(ALL_QUERY_NAMES)
    max_query = 6 if route.query else 1
    query = draw(
        st.lists(st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), value_for(n))), max_size=max_query)
    )
    form: list[tuple[str, Any]] = []
    if method == "POST":
        fields = draw(st.fixed_dictionaries({}, optional={name: value_for(name) for name in route.form_fields()}))
        form = list(fields.items())
        if "ids" in route.form_fields():
            ids = draw(st.lists(st.integers(0, 9).map(lambda n: Real("user", n)) | nasty_text, max_size=4))
            form = [pair for pair in form if pair[0] != "ids"] + [("ids", i) for i in ids]
    csrf = draw(st.sampled_from([VALID_CSRF] * 6 + [None, "bad"]))
    if csrf == "bad":
        csrf = draw(nasty_text)
    return Call(rule, method, path=path, query=tuple(query), form=tuple(form), csrf=csrf, htmx=draw(st.booleans()))


@pytest.mark.parametrize("rule, method", FAST, ids=[route_id(p) for p in FAST])
def test_random_requests_never_fail(world, rule, method):
    @FUZZ_SETTINGS
    @given(call=calls(rule, method))
    def run(call):
        world.check(call)

    run()


@pytest.mark.parametrize("rule, method", RECEIVER, ids=[route_id(p) for p in RECEIVER])
def test_random_deliveries_never_fail(world, rule, method):
    @FUZZ_SETTINGS
    @given(delivery=deliveries())
    def run(delivery):
        body, svix_id = delivery
        deliver_and_look(world, body, svix_id, "a random delivery")

    run()
