"""Text no database stores is refused at the door: a NUL byte or a lone surrogate in any input.

PostgreSQL cannot hold U+0000 in text and no driver can encode U+D800–U+DFFF, so such a value
reaching a query is a 500 wherever it lands (a search, an id in the path, a form field, a
stream half sent). One check before every view answers 400 instead, with the reason.
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import BadRequest

from app.database import text_problem

# The Clerk webhook reads its raw body and answers Svix in its own terms.
EXEMPT_ENDPOINTS = frozenset({"webhooks.receive_clerk", "static"})


def input_problem() -> str | None:
    """The first refused part of this request (path, query string, form), as a sentence, or None."""
    problem = text_problem(request.path)  # the view arguments come from it
    if problem:
        return f"The address {problem}."
    for kind, values in (("query parameter", request.args), ("field", request.form)):
        for name, value in values.items(multi=True):
            if problem := text_problem(name):
                return f"A {kind}’s name {problem}."
            if problem := text_problem(value):
                shown = name if len(name) <= 60 else name[:59] + "…"
                return f"The {kind} “{shown}” {problem}."
    return None


def refuse_unstorable_text() -> None:
    if request.endpoint in EXEMPT_ENDPOINTS:
        return
    problem = input_problem()
    if problem:
        raise BadRequest(description=problem)


def init_input_guard(app: Flask) -> None:
    app.before_request(refuse_unstorable_text)
