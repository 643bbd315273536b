"""Reading the audit trail: filters by actor, target and action, keyset pages, newest first."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from app.audit.labels import action_label, parse_changes
from app.extensions import db
from app.models import AuditEvent, Organization, StaffGroup, User, escape_like, user_search_condition
from app.pagination import Keyset, KeysetPage, ListFilters, keyset_page, select_page, text_arg


@dataclass(frozen=True)
class AuditFilters(ListFilters):
    actor: str = text_arg()
    target: str = text_arg()
    action: str = text_arg()
    source: str = text_arg()
    organization: str = text_arg()  # an organization's id: its events (its fields, members, invitations)


NEWEST_FIRST = Keyset((AuditEvent.occurred_at, AuditEvent.id), ("datetime", "text"))
# An actor or target filter that names more actors or users than this reads the trail newest first
# and keeps their events (which are then many), rather than one index scan per actor or user.
MAX_SCANS = 40


def known_actions() -> list[str]:
    """Every action in the trail, in order."""
    return distinct_values(AuditEvent.action)


def distinct_values(column: sa.ColumnElement[str]) -> list[str]:
    """The distinct values of an indexed column, in order, by a skip scan: one index probe per
    value (a few dozen actions, the staff's emails) instead of reading every event's."""
    found = sa.select(sa.func.min(column).label("value")).cte("found", recursive=True)
    following = sa.select(sa.select(sa.func.min(column)).where(column > found.c.value).scalar_subquery())
    found = found.union_all(following.where(found.c.value.is_not(None)))
    return list(db.session.scalars(sa.select(found.c.value).where(found.c.value.is_not(None))))


def _label_contains(column_label, text: str) -> sa.ColumnElement[bool]:
    return sa.func.lower(column_label).like(f"%{escape_like(text.lower())}%", escape="\\")


def target_conditions(text: str) -> list[sa.ColumnElement[bool]]:
    """Whose events a target filter asks for, as conditions the target index answers newest first.

    A user's id (what a link to their page holds) names that user. Other text names the users the
    users list's search finds for it (a part of their email, name, username or Clerk id, through
    that search's indexes): their events, whatever email the label held then. Looking for the text
    in every event's label read the whole trail for a rare one (5.7 s at ten million events); it is
    kept for text that names more than MAX_SCANS users, whose events are many and soon found.
    """
    if db.session.scalar(sa.select(User.id).where(User.id == text)) is not None:
        return [AuditEvent.target_id == text]
    named = users_named(text, MAX_SCANS + 1)
    if len(named) > MAX_SCANS:
        return [_label_contains(AuditEvent.target_label, text)]
    return [AuditEvent.target_id == user_id for user_id in named] or [sa.false()]


def users_named(text: str, limit: int) -> list[str]:
    """The ids of up to `limit` users (deleted ones too) the users list's search finds for `text`,
    in no order (which does not matter: up to MAX_SCANS are all of them, more are only counted).

    The matches are a materialised CTE, planned on its own: through the search's indexes for a
    rare term, a scan that stops at the `limit`th match for a common one (it is read lazily). A
    LIMIT on the bare query let PostgreSQL bet on finding matches early in a scan of a million
    users for a rare term (1.5 s); the users list's plan, which must also sort them, took 20 ms.
    """
    hits = sa.select(User.id).where(user_search_condition(text)).cte("hits").prefix_with("MATERIALIZED")
    return list(db.session.scalars(sa.select(hits.c.id).limit(limit)))


def actor_conditions(text: str) -> list[sa.ColumnElement[bool]]:
    """Who an actor filter names, as conditions an index answers newest first: the actor whose id it
    is, and each actor whose label (an email, "Clerk webhook", "command line") contains it, any case.
    The labels are few, so they are listed first; ten million events are never searched by text."""
    folded = text.casefold()
    labels = [label for label in distinct_values(AuditEvent.actor_label) if folded in label.casefold()]
    return [AuditEvent.actor_id == text, *(AuditEvent.actor_label == label for label in labels)]


def filtered(filters: AuditFilters) -> sa.Select:
    """The events the action, source and organization filters keep (list_events adds the others)."""
    query = sa.select(AuditEvent)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.source:
        query = query.where(AuditEvent.source == filters.source)
    if filters.organization:
        query = query.where(AuditEvent.organization_id == filters.organization)
    return query


def list_events(filters: AuditFilters, *, after: str | None = None, per_page: int = 50) -> KeysetPage:
    # The organizations (one query) and staff groups (joined) the page links to come with the events, not one each.
    loading = (
        sa.orm.selectinload(AuditEvent.organization).load_only(
            Organization.name, Organization.slug, Organization.clerk_id
        ),
        sa.orm.joinedload(AuditEvent.staff_group).load_only(StaffGroup.id),  # in the same query
    )
    actors = actor_conditions(filters.actor) if filters.actor else []
    targets = target_conditions(filters.target) if filters.target else []
    # Several actors or users: one index scan each, merged (the actors', when both name several).
    branches = next((named for named in (actors, targets) if 1 < len(named) <= MAX_SCANS), [])
    query = filtered(filters)
    for named in (actors, targets):
        if named and named is not branches:
            query = query.where(sa.or_(*named))
    if not branches:
        return select_page(query.options(*loading), NEWEST_FIRST, after=after, per_page=per_page)
    return _merged_page(query, branches, loading, after=after, per_page=per_page)


def _merged_page(query: sa.Select, branches: list, loading: tuple, *, after: str | None, per_page: int) -> KeysetPage:
    """A page of the events matching `query` and any of `branches`: the newest of each branch (one
    index scan each, from the cursor on), merged. An OR of them would make PostgreSQL either read
    every event of a busy actor and sort them, or walk the whole trail for a quiet one."""
    keys = query.with_only_columns(AuditEvent.id, AuditEvent.occurred_at)

    def fetch(condition, backwards: bool, limit: int) -> list[AuditEvent]:
        order = NEWEST_FIRST.order_by(backwards=backwards)
        parts = []
        for branch in branches:
            part = keys.where(branch) if condition is None else keys.where(branch, condition)
            parts.append(sa.select(part.order_by(*order).limit(limit).subquery()))
        matches = sa.union(*parts).subquery("matches")  # union: an event can match two branches
        first = sa.select(matches.c.id).order_by(
            *NEWEST_FIRST.order_by((matches.c.occurred_at, matches.c.id), backwards=backwards)
        )
        chosen = sa.select(AuditEvent).options(*loading).where(AuditEvent.id.in_(first.limit(limit)))
        return list(db.session.scalars(chosen.order_by(*order)))

    return keyset_page(NEWEST_FIRST, fetch, lambda event: (event.occurred_at, event.id), after=after, per_page=per_page)


def organization_named(organization_id: str) -> Organization | None:
    """The organization an `organization` filter names, to say which (None: no such organization)."""
    return db.session.get(Organization, organization_id) if organization_id else None


@dataclass
class HistoryEntry:
    """One event of a page's history (a user's, an organization's), its changes parsed."""

    event: AuditEvent
    changes: dict

    @property
    def action_label(self) -> str:
        return action_label(self.event.action)


def history(about: sa.ColumnElement[bool], limit: int) -> list[HistoryEntry]:
    """The newest `limit` audit events matching `about` (an indexed column of audit_events)."""
    events = db.session.scalars(
        sa.select(AuditEvent)
        .where(about)
        .options(selectinload(AuditEvent.organization))  # its name, in one query for the page
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    return [HistoryEntry(event, parse_changes(event.changes)) for event in events]
