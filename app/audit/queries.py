"""Reading the audit trail: filters by actor, target and action, keyset pages, newest first."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from app.audit.labels import action_label, parse_changes
from app.extensions import db
from app.models import AuditEvent, Organization, StaffGroup
from app.pagination import Keyset, KeysetPage, ListFilters, select_page, text_arg


@dataclass(frozen=True)
class AuditFilters(ListFilters):
    actor: str = text_arg()
    target: str = text_arg()
    action: str = text_arg()
    source: str = text_arg()
    organization: str = text_arg()  # an organization's id: its events (its fields, members, invitations)


NEWEST_FIRST = Keyset((AuditEvent.occurred_at, AuditEvent.id), ("datetime", "text"))


def known_actions() -> list[str]:
    return list(db.session.scalars(sa.select(AuditEvent.action).distinct().order_by(AuditEvent.action)))


def _matches(column_id, column_label, text: str):
    # An id matches exactly; anything else is a case-insensitive part of the label (an email).
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.or_(column_id == text, sa.func.lower(column_label).like(f"%{escaped}%", escape="\\"))


def filtered(filters: AuditFilters) -> sa.Select:
    query = sa.select(AuditEvent)
    if filters.actor:
        query = query.where(_matches(AuditEvent.actor_id, AuditEvent.actor_label, filters.actor))
    if filters.target:
        query = query.where(_matches(AuditEvent.target_id, AuditEvent.target_label, filters.target))
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.source:
        query = query.where(AuditEvent.source == filters.source)
    if filters.organization:
        query = query.where(AuditEvent.organization_id == filters.organization)
    return query


def list_events(filters: AuditFilters, *, after: str | None = None, per_page: int = 50) -> KeysetPage:
    # The organizations (one query) and staff groups (joined) the page links to come with the events, not one each.
    query = filtered(filters).options(
        sa.orm.selectinload(AuditEvent.organization).load_only(
            Organization.name, Organization.slug, Organization.clerk_id
        ),
        sa.orm.joinedload(AuditEvent.staff_group).load_only(StaffGroup.id),  # in the same query
    )
    return select_page(query, NEWEST_FIRST, after=after, per_page=per_page)


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
