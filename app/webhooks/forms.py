"""The deliveries page's filters, bound to the query string."""

from __future__ import annotations

from dataclasses import dataclass

from wtforms import Form, SelectChoice, SelectField

from app.models import WebhookOutcome
from app.webhooks.services import HANDLED_TYPES

@dataclass(frozen=True)
class WebhookFilters:
    outcome: str | None = None
    event_type: str | None = None

    @property
    def is_filtered(self) -> bool:
        return bool(self.outcome or self.event_type)

    def to_args(self) -> dict[str, str]:
        return {k: v for k, v in (("outcome", self.outcome), ("type", self.event_type)) if v}


class WebhookFilterForm(Form):
    """No CSRF: a GET filter. Unknown values fall back to "any" instead of failing."""

    outcome = SelectField(
        "Outcome", choices=[SelectChoice("", "Any outcome"), *(SelectChoice(o.value, o.value) for o in WebhookOutcome)]
    )
    type = SelectField("Event type", choices=[SelectChoice("", "Any type"), *(SelectChoice(t, t) for t in HANDLED_TYPES)])

    def __init__(self, formdata=None, **kwargs):
        super().__init__(formdata, **kwargs)
        requested = (formdata or {}).get("type") or ""
        if requested and requested not in HANDLED_TYPES and len(requested) <= 100:
            # An unhandled type (recorded as ignored) can still be looked for.
            self.type.choices = [*self.type.choices, SelectChoice(requested, requested)]

    def filters(self) -> WebhookFilters:
        self.validate()
        outcome = self.outcome.data if not self.outcome.errors else None
        event_type = self.type.data if not self.type.errors else None
        return WebhookFilters(outcome=outcome or None, event_type=event_type or None)
