"""One place decides whether a request gets the whole page or only a fragment."""

from __future__ import annotations

from flask import make_response, render_template, request


def wants_fragment() -> bool:
    htmx = request.htmx
    return bool(htmx) and not htmx.boosted and not htmx.history_restore_request


def page_or_fragment(page_template: str, fragment_template: str, **context):
    template = fragment_template if wants_fragment() else page_template
    response = make_response(render_template(template, **context))
    response.vary.add("HX-Request")
    return response
