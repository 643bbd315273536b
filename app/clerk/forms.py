"""Forms for the Clerk pages (buttons that change state carry only their CSRF token), and the outbox's filter."""

from __future__ import annotations

from dataclasses import dataclass

from flask_wtf import FlaskForm

from app.models import ClerkCallState
from app.pagination import ListFilters, choice_arg


class ClerkActionForm(FlaskForm):
    """Retry, revoke, resend, push now: a POST with a CSRF token and nothing else."""


@dataclass(frozen=True)
class OutboxFilters(ListFilters):
    """The outbox page's filter, bound to the query string (a bad value falls back to everything)."""

    state: str | None = choice_arg([s.value for s in ClerkCallState])
