"""What the overview shows, each figure from a small read: the counters, index ranges, a few rows.

Nothing here counts users: users by status and role and per day come from `user_counts` (a few
hundred rows at most for 90 days), webhook outcomes from an index range over the last 24 hours,
the outbox from its (state, next_attempt_at) index, the audit trail from its newest rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import defer

from app.audit.queries import AuditFilters, list_events
from app.clerk.client import clerk_connected
from app.clerk.outbox.queries import outbox_health
from app.extensions import db
from app.models import UserRole, UserStatus, WebhookEvent, WebhookOutcome
from app.pagination import KeysetPage
from app.records import counts as user_counts
from app.webhooks.forms import WITHIN

RANGES = (7, 30, 90)
DEFAULT_RANGE = 30
WEBHOOK_WINDOW = WITHIN["24h"]  # what the webhooks page's "last 24 hours" filter shows
RECENT_EVENTS = 10


def parse_range(value: int | None) -> int:
    return value if value in RANGES else DEFAULT_RANGE


# --- Users by status and role --------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    key: str
    label: str
    n: int
    percent: float  # of the breakdown's total, 0..100


@dataclass(frozen=True)
class Breakdown:
    shares: list[Share]
    total: int


def breakdown(counts, dimension: str, members) -> Breakdown:
    figures = [(m.value, m.label, counts.get((dimension, m.value), 0)) for m in members]
    total = sum(max(n, 0) for _key, _label, n in figures)
    return Breakdown(
        shares=[Share(key, label, n, 100.0 * max(n, 0) / total if total else 0.0) for key, label, n in figures],
        total=total,
    )


# --- Per-day charts ------------------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 640, 200
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 44, 8, 10, 176  # the plot area inside the viewBox


@dataclass(frozen=True)
class Bar:
    day: date
    n: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Tick:
    value: int
    y: float

    @property
    def label(self) -> str:
        """Short enough for the margin on a phone: 500, 2k, 1.5M."""
        for size, suffix in ((1_000_000, "M"), (1_000, "k")):
            if self.value >= size:
                return f"{self.value / size:g}{suffix}"
        return str(self.value)


@dataclass(frozen=True)
class DayLabel:
    day: date
    x: float
    anchor: str  # text-anchor: start, middle, end


@dataclass
class DayChart:
    """A bar per day, laid out in viewBox units; the template only draws it."""

    key: str
    title: str
    description: str
    days: int
    bars: list[Bar] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    labels: list[DayLabel] = field(default_factory=list)
    total: int = 0
    peak: Bar | None = None
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    plot_left: int = PLOT_LEFT
    plot_right: int = CHART_WIDTH - PLOT_RIGHT
    plot_bottom: int = PLOT_BOTTOM


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def day_chart(key: str, title: str, noun: str, series: list[tuple[date, int]]) -> DayChart:
    days = len(series)
    top = nice_ceiling(max((n for _d, n in series), default=0))
    plot_width = CHART_WIDTH - PLOT_RIGHT - PLOT_LEFT
    plot_height = PLOT_BOTTOM - PLOT_TOP
    slot = plot_width / max(days, 1)
    gap = min(slot * 0.2, 3)
    bars = []
    for i, (when, n) in enumerate(series):
        height = plot_height * max(n, 0) / top
        bars.append(
            Bar(
                when,
                n,
                round(PLOT_LEFT + i * slot + gap / 2, 2),
                round(PLOT_BOTTOM - height, 2),
                round(slot - gap, 2),
                round(height, 2),
            )
        )
    # Each grid line sits where its own (whole) value falls: half of 5 is drawn at 2, not 2.5.
    values = sorted({0, top // 2, top})
    ticks = [Tick(value, round(PLOT_BOTTOM - plot_height * value / top, 2)) for value in values]
    labels = []
    if bars:
        first, last = bars[0], bars[-1]
        labels = [DayLabel(first.day, first.x, "start"), DayLabel(last.day, last.x + last.width, "end")]
        if days > 7:
            middle = bars[days // 2]
            labels.insert(1, DayLabel(middle.day, middle.x + middle.width / 2, "middle"))
    total = sum(n for _d, n in series)
    peak = max(bars, key=lambda bar: (bar.n, bar.day)) if bars else None
    start, end = (series[0][0], series[-1][0]) if series else (None, None)
    description = f"{total:,} {noun} from {start} to {end}"
    if peak is not None and peak.n > 0:
        description += f"; the most, {peak.n:,}, on {peak.day}"
    description += ". The table below lists every day."
    return DayChart(
        key=key,
        title=title,
        description=description,
        days=days,
        bars=bars,
        ticks=ticks,
        labels=labels,
        total=total,
        peak=peak,
    )


def day_series(counts, dimension: str, start: date, days: int) -> list[tuple[date, int]]:
    return [
        (start + timedelta(days=i), counts.get((dimension, (start + timedelta(days=i)).isoformat()), 0))
        for i in range(days)
    ]


# --- Everything on the page ----------------------------------------------------------------------


@dataclass
class UserFigures:
    by_status: Breakdown
    by_role: Breakdown
    deleted: int
    organizations: OrganizationFigures


@dataclass(frozen=True)
class OrganizationFigures:
    """Exact, from the same counters (kept with each change): live and deleted organizations, live memberships."""

    live: int
    deleted: int
    memberships: int

    @property
    def members_per_organization(self) -> float:
        return self.memberships / self.live if self.live > 0 else 0.0


@dataclass
class Activity:
    days: int
    start: date
    end: date
    signups: DayChart
    signins: DayChart


def today() -> date:
    return datetime.now(UTC).date()


def user_figures_and_activity(days: int, *, with_figures: bool = True) -> tuple[UserFigures | None, Activity]:
    """One read of `user_counts`: the status, role and deleted rows, and the days of the range."""
    end = today()
    start = end - timedelta(days=days - 1)
    dimensions = user_counts.DIMENSIONS if with_figures else (user_counts.SIGNUP, user_counts.SIGNIN)
    counts = user_counts.read_counts(dimensions, since=start.isoformat())
    activity = Activity(
        days=days,
        start=start,
        end=end,
        signups=day_chart(
            "signups", "Sign-ups per day", "sign-ups", day_series(counts, user_counts.SIGNUP, start, days)
        ),
        signins=day_chart(
            "signins",
            "Latest sign-ins per day",
            "users whose latest sign-in fell in this range",
            day_series(counts, user_counts.SIGNIN, start, days),
        ),
    )
    if not with_figures:
        return None, activity
    figures = UserFigures(
        by_status=breakdown(counts, user_counts.STATUS, UserStatus),
        by_role=breakdown(counts, user_counts.ROLE, UserRole),
        deleted=counts.get((user_counts.DELETED, user_counts.ALL), 0),
        organizations=OrganizationFigures(
            live=counts.get((user_counts.ORGANIZATIONS, user_counts.LIVE), 0),
            deleted=counts.get((user_counts.ORGANIZATIONS, user_counts.DELETED), 0),
            memberships=counts.get((user_counts.MEMBERSHIPS, user_counts.LIVE), 0),
        ),
    )
    return figures, activity


@dataclass
class WebhookHealth:
    since: datetime
    by_outcome: Breakdown
    latest_failure: WebhookEvent | None


class _Outcome:
    """WebhookOutcome members with the label the breakdown wants."""

    def __init__(self, outcome: WebhookOutcome):
        self.value = outcome.value
        self.label = outcome.value


def webhook_health(now: datetime | None = None) -> WebhookHealth:
    since = (now or datetime.now(UTC)) - WEBHOOK_WINDOW
    outcomes = [o.value for o in WebhookOutcome]
    # Leading `outcome IN (...)` lets ix_webhook_events_outcome_received_at answer from the index.
    rows = db.session.execute(
        sa.select(WebhookEvent.outcome, sa.func.count())
        .where(WebhookEvent.outcome.in_(outcomes), WebhookEvent.received_at >= since)
        .group_by(WebhookEvent.outcome)
    ).all()
    counts = {("webhooks", outcome): n for outcome, n in rows}
    latest_failure = db.session.scalars(
        sa.select(WebhookEvent)
        .options(defer(WebhookEvent.payload))
        .where(WebhookEvent.outcome == WebhookOutcome.FAILED.value)
        .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
        .limit(1)
    ).first()
    return WebhookHealth(
        since=since,
        by_outcome=breakdown(counts, "webhooks", map(_Outcome, WebhookOutcome)),
        latest_failure=latest_failure,
    )


def recent_changes() -> KeysetPage:
    page = list_events(AuditFilters(), per_page=RECENT_EVENTS)
    # The overview shows the newest events only; the audit page pages through the rest.
    return KeysetPage(rows=page.rows, per_page=RECENT_EVENTS)


def overview(days: int, *, with_recent_changes: bool = True) -> dict:
    """Everything the page shows; the recent changes only for those who may see the audit trail."""
    figures, activity = user_figures_and_activity(days)
    connected = clerk_connected()
    return {
        "figures": figures,
        "activity": activity,
        "webhooks": webhook_health(),
        "clerk_connected": connected,
        "outbox": outbox_health() if connected else None,
        "page": recent_changes() if with_recent_changes else None,
    }
