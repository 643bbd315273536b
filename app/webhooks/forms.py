"""The deliveries page's filters, bound to the query string."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from wtforms import Form, SelectChoice, SelectField

from app.models import WebhookOutcome
from app.webhooks.services import HANDLED_TYPES

# How far back a delivery may have been received: the overview's figures cover the last 24 hours.
WITHIN = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}


@dataclass(frozen=True)
class WebhookFilters:
    outcome: str | None = None
    event_type: str | None = None
    within: str | None = None  # a key of WITHIN

    @property
    def is_filtered(self) -> bool:
        return bool(self.outcome or self.event_type or self.within)

    def received_since(self, now: datetime) -> datetime | None:
        return now - WITHIN[self.within] if self.within else None

    def to_args(self) -> dict[str, str]:
        pairs = (("outcome", self.outcome), ("type", self.event_type), ("within", self.within))
        return {k: v for k, v in pairs if v}


class WebhookFilterForm(Form):
    """No CSRF: a GET filter. Unknown values fall back to "any" instead of failing."""

    outcome = SelectField(
        "Outcome", choices=[SelectChoice("", "Any outcome"), *(SelectChoice(o.value, o.value) for o in WebhookOutcome)]
    )
    type = SelectField("Event type", choices=[SelectChoice("", "Any type"), *(SelectChoice(t, t) for t in HANDLED_TYPES)])
    within = SelectField("Received", choices=[SelectChoice("", "Any time"), SelectChoice("24h", "In the last 24 hours"),
                                              SelectChoice("7d", "In the last 7 days")])

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
        within = self.within.data if not self.within.errors else None
        return WebhookFilters(outcome=outcome or None, event_type=event_type or None, within=within or None)
