"""What pages are made of: the page-or-fragment answer, and the filters and globals every template shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from urllib.parse import quote

from flask import Flask, Response, flash, g, make_response, redirect, render_template, request, url_for

from app.database import HIDDEN_IN_JSON
from app.models import STATUS_VERBS, UserRole, UserStatus


def wants_fragment() -> bool:
    """An htmx swap wants a fragment; a boosted link or a history restore wants the whole page."""
    htmx = request.htmx
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request


def is_htmx_request() -> bool:
    """Any htmx request, boosted ones too: its answer is swapped in, so a redirect must be HX-Redirect."""
    return bool(request.htmx)


def vary_on_htmx(response: Response) -> Response:
    # The same URL answers two ways: caches (and the browser's back button) must keep them apart.
    response.vary.add("HX-Request")
    return response


def answer(
    page: str, fragment: str, /, *, status: int = 200, page_extras: Callable[[], dict] | None = None, **context
) -> Response:
    """The page for a full request, the fragment for htmx; `page_extras` builds what only the page shows."""
    if wants_fragment():
        body = render_template(fragment, **context)
    else:
        body = render_template(page, **{**context, **(page_extras() if page_extras else {})})
    return vary_on_htmx(make_response(body, status))


def fragment_or_redirect(
    fragment: str | None, url: str, /, *, status: int = 200, flashed: str | None = None, **context
) -> Response:
    """For htmx, the fragment (None: an empty answer); a full request goes to `url`, where `flashed` shows."""
    if wants_fragment():
        return vary_on_htmx(make_response(render_template(fragment, **context) if fragment else "", status))
    if flashed:
        flash(flashed, "success")
    return vary_on_htmx(redirect(url))


def format_datetime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Times are UTC everywhere (the footer says so); a time of day is labelled, a date is not."""
    if value is None:
        return "—"
    return value.strftime(fmt) + (" UTC" if "%H" in fmt else "")


def _escape_hidden(text: str) -> str:
    # Lone surrogates (JSON may escape one; parsed, it cannot be sent as UTF-8), bidi controls and
    # invisible controls are shown as their escapes: the page renders, nothing reorders the text
    # around it, and the pretty text still reads back as the same JSON.
    return HIDDEN_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def visible(text: str) -> str:
    """Text as it can be shown whole: hidden and reordering characters as their escapes."""
    return _escape_hidden(text)


def pretty_json(text: str | None) -> str:
    """Metadata and payloads are stored as JSON text; show it indented, or as it is when it is not JSON."""
    if not text:
        return ""
    try:
        pretty = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except (ValueError, RecursionError):
        pretty = text
    return _escape_hidden(pretty)


_PLACEHOLDER = "__row_id__"


def row_url(endpoint: str, row_id: str, **values) -> str:
    """`url_for(endpoint, user_id=row_id, **values)` for rows of a table, built once per page.

    url_for costs tens of microseconds; a page of 50 rows with three links each spent more time
    building URLs than querying. The pattern comes from url_for itself; only the id is filled in.
    """
    key = (endpoint, *values.items())  # a call site names its values in one order
    patterns = g.setdefault("_row_url_patterns", {})
    parts = patterns.get(key)
    if parts is None:
        parts = patterns[key] = url_for(endpoint, user_id=_PLACEHOLDER, **values).partition(_PLACEHOLDER)
    return parts[0] + quote(row_id, safe="") + parts[2]


def init_template_helpers(app: Flask) -> None:
    app.jinja_env.filters["datetime"] = format_datetime
    app.jinja_env.filters["pretty_json"] = pretty_json
    app.jinja_env.filters["visible"] = visible
    # Constants and pure helpers only: what depends on the database or on who asks comes from the view.
    app.jinja_env.globals.update(
        UserRole=UserRole,
        UserStatus=UserStatus,
        STATUS_VERBS=STATUS_VERBS,
        wants_fragment=wants_fragment,
        row_url=row_url,
    )
