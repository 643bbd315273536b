"""The deliveries page's filters, bound to the query string."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.models import WebhookOutcome
from app.pagination import ListFilters, choice_arg
from app.webhooks.services import HANDLED_TYPES

# How far back a delivery may have been received: the overview's figures cover the last 24 hours.
WITHIN = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}
WITHIN_LABELS = {"24h": "In the last 24 hours", "7d": "In the last 7 days"}


@dataclass(frozen=True)
class WebhookFilters(ListFilters):
    outcome: str | None = choice_arg([o.value for o in WebhookOutcome])
    # An unhandled type (recorded as ignored) can still be looked for.
    event_type: str | None = choice_arg(lambda value: len(value) <= 100, name="type")
    within: str | None = choice_arg(WITHIN)

    @property
    def type_choices(self) -> list[str]:
        """The types to offer: the handled ones, and the one asked for."""
        asked = self.event_type
        return [*HANDLED_TYPES, asked] if asked and asked not in HANDLED_TYPES else list(HANDLED_TYPES)

    def received_since(self, now: datetime) -> datetime | None:
        return now - WITHIN[self.within] if self.within else None
