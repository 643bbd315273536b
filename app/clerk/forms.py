"""Forms for the Clerk pages: buttons that change state carry only their CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import Form, SelectChoice, SelectField

from app.models import ClerkCallState


class ClerkActionForm(FlaskForm):
    """Retry, revoke, resend, push now: a POST with a CSRF token and nothing else."""


class OutboxFilterForm(Form):
    """The outbox page's filter, bound to the query string (a bad value falls back to everything)."""

    state = SelectField(
        "State",
        choices=[SelectChoice("", "Any state")] + [SelectChoice(s.value, s.value) for s in ClerkCallState],
        default="",
        validate_choice=False,
    )

    @property
    def chosen_state(self) -> str | None:
        return self.state.data if self.state.data in ClerkCallState._value2member_map_ else None
