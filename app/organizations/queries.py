"""Reading organizations for their pages: the list, one organization's members, invitations and
history, a user's organizations, and the user picker of "add member".

Every query is served by an index on PostgreSQL at 100,000 organizations and 1,500,000
memberships (migration 0010): the list walks (sort key, id) indexes, live only, never OFFSET;
a search uses the trigram index on ORGANIZATION_SEARCH_TEXT (3+ characters) or the prefix
indexes on lower(name) and lower(slug); an organization's members walk the partial index
ix_memberships_organization_live on (organization_id, created_at, id); nothing counts a table
(the overview's totals come from app/records/counts.py, an organization's from members_count).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import contains_eager

from app.audit.queries import HistoryEntry, history
from app.clerk.outbox import UPDATE_MEMBERSHIP
from app.clerk.outbox.queries import waiting_for
from app.extensions import db
from app.models import (
    MEMBER_EMAIL_KEY,
    MEMBER_SEARCH_TEXT,
    ORGANIZATION_NAME_SORT_KEY,
    ORGANIZATION_SEARCH_TEXT,
    AuditEvent,
    ClerkCall,
    Membership,
    Organization,
    OrganizationInvitation,
    OrganizationInvitationStatus,
    User,
    escape_like,
    user_search_condition,
)
from app.pagination import (
    Keyset,
    KeysetPage,
    ListFilters,
    choice_arg,
    int_arg,
    keyset_page,
    ordered,
    search_rows,
    text_arg,
)
from app.records import counts

MAX_QUERY_LENGTH = 200
MIN_SUBSTRING_LENGTH = 3  # a trigram needs three characters; shorter terms match prefixes
PER_PAGE_CHOICES = (10, 25, 50, 100)
DEFAULT_PER_PAGE = 50
MEMBERS_PER_PAGE = 25
# A search first looks for a page of matches among this many rows in the list's order (enough for
# a common term), and only then asks the search index for every match (a rare term has few).
SEARCH_WINDOW = 4000
HISTORY_LIMIT = 30
INVITATIONS_LIMIT = 100
USER_ORGANIZATIONS_LIMIT = 100
USER_CHOICES_LIMIT = 10


def _on_postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


# --- the list --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    name: str
    label: str
    key: sa.ColumnElement
    descending: bool
    kind: str  # how the cursor stores the key: "text", "datetime" or "int"


SORTS: dict[str, Sort] = {
    s.name: s
    for s in (
        Sort("name", "Name A–Z", ORGANIZATION_NAME_SORT_KEY, False, "text"),
        Sort("-name", "Name Z–A", ORGANIZATION_NAME_SORT_KEY, True, "text"),
        Sort("-created_at", "Newest first", Organization.created_at, True, "datetime"),
        Sort("created_at", "Oldest first", Organization.created_at, False, "datetime"),
        Sort("-members", "Most members", Organization.members_count, True, "int"),
        Sort("members", "Fewest members", Organization.members_count, False, "int"),
    )
}
DEFAULT_SORT = "name"


@dataclass(frozen=True)
class OrganizationFilters(ListFilters):
    """What the list shows; every field has a safe default, so a bad URL just shows more."""

    q: str = text_arg(MAX_QUERY_LENGTH)
    sort: str = choice_arg(SORTS, DEFAULT_SORT, narrows=False)
    per_page: int | None = int_arg(PER_PAGE_CHOICES, narrows=False)  # None: DEFAULT_PER_PAGE


def search_condition(q: str) -> sa.ColumnElement[bool]:
    """A substring of "name slug", or for 1-2 characters the start of the name or the slug."""
    term = escape_like(q.lower())
    if len(q) < MIN_SUBSTRING_LENGTH:
        slug = sa.func.lower(Organization.slug, type_=sa.Text)
        return sa.or_(ORGANIZATION_NAME_SORT_KEY.like(term + "%", escape="\\"), slug.like(term + "%", escape="\\"))
    return ORGANIZATION_SEARCH_TEXT.like("%" + term + "%", escape="\\")


def filtered(filters: OrganizationFilters) -> sa.Select:
    query = sa.select(Organization).where(Organization.deleted_at.is_(None))
    if filters.q:
        query = query.where(search_condition(filters.q))
    return query


def organization_keyset(sort: Sort) -> Keyset:
    """The order of a sort: (sort key, id), the sort's name first in its cursors."""
    return Keyset((sort.key, Organization.id), (sort.kind, "text"), descending=sort.descending, tag=sort.name)


def list_organizations(
    filters: OrganizationFilters, *, after: str | None = None, before: str | None = None, per_page: int = 50
) -> KeysetPage:
    """One page of live organizations in the chosen order; `after`/`before` are neighbouring pages' cursors."""
    sort = SORTS[filters.sort]

    def fetch(condition, backwards: bool, limit: int) -> list:
        descending = sort.descending != backwards
        if filters.q and _on_postgresql():
            return _search_rows(filters, sort, condition, descending=descending, limit=limit)
        query = filtered(filters).add_columns(sort.key)
        if condition is not None:
            query = query.where(condition)
        return db.session.execute(query.order_by(*ordered(sort.key, Organization.id, descending)).limit(limit)).all()

    page = keyset_page(
        organization_keyset(sort), fetch, lambda row: (row[1], row[0].id), after=after, before=before, per_page=per_page
    )
    page.rows = [organization for organization, _ in page.rows]
    return page


def _search_rows(filters, sort: Sort, condition, *, descending: bool, limit: int) -> list:
    """A page of a search on PostgreSQL: app/pagination.py's search_rows, for this list."""
    return search_rows(
        Organization,
        unsearched=filtered(replace(filters, q="")),
        searched=filtered(filters),
        hit=search_condition(filters.q),
        sort_key=sort.key,
        condition=condition,
        descending=descending,
        limit=limit,
        window=SEARCH_WINDOW,
    )


# --- one organization: its members ----------------------------------------------------------------


@dataclass(frozen=True)
class MemberFilters(ListFilters):
    """The members table of an organization's page: `mq` searches the members' email and name.
    Its links (pager, search) go to the organization's page, so they carry its id too."""

    mq: str = text_arg(MAX_QUERY_LENGTH, name="mq")
    organization_id: str = ""  # not a parameter: the page's own path

    def to_args(self, **overrides) -> dict:
        return {"organization_id": self.organization_id, **super().to_args(**overrides)}


# Newest members first, as the partial index ix_memberships_organization_live keeps them.
MEMBERS_ORDER = Keyset((Membership.created_at, Membership.id), ("datetime", "text"), descending=True)


def member_search_condition(mq: str) -> sa.ColumnElement[bool]:
    """A member matches by email or names, as Clerk's public_user_data names them (kept current
    from the user's row: app/records/organizations.py), so the search never joins users: a
    substring for 3+ characters (a trigram index on PostgreSQL), a prefix of each for 1-2, and an
    email (a term with "@" after its first character) from its start: trigrams common to every
    address would be slow. "@acme.com" still finds a domain anywhere."""
    term = escape_like(mq.lower())
    if "@" in mq[1:]:  # an email: from its start, on (organization, lower(identifier)) on PostgreSQL
        return MEMBER_EMAIL_KEY.like(term + "%", escape="\\")
    if len(mq) < MIN_SUBSTRING_LENGTH:
        columns = (Membership.identifier, Membership.first_name, Membership.last_name)
        return sa.or_(*(sa.func.lower(c, type_=sa.Text).like(term + "%", escape="\\") for c in columns))
    return MEMBER_SEARCH_TEXT.like("%" + term + "%", escape="\\")


def _members_query(organization: Organization) -> sa.Select:
    return (
        sa.select(Membership)
        .outerjoin(User, User.id == Membership.user_id)
        .options(contains_eager(Membership.user))
        .where(Membership.organization_id == organization.id, Membership.deleted_at.is_(None))
    )


def list_members(
    organization: Organization,
    filters: MemberFilters,
    *,
    after: str | None = None,
    before: str | None = None,
    per_page: int = MEMBERS_PER_PAGE,
) -> KeysetPage:
    """A page of the organization's live members (newest first) with their users, one query."""

    def fetch(condition, backwards: bool, limit: int) -> list:
        descending = MEMBERS_ORDER.descending != backwards
        query = _members_query(organization)
        if filters.mq:
            query = query.where(member_search_condition(filters.mq))
        if condition is not None:
            query = query.where(condition)
        in_order = query.order_by(*ordered(Membership.created_at, Membership.id, descending)).limit(limit)
        return list(db.session.scalars(in_order).unique())

    return keyset_page(
        MEMBERS_ORDER, fetch, lambda m: (m.created_at, m.id), after=after, before=before, per_page=per_page
    )


def find_membership(organization: Organization, membership_id: str) -> Membership | None:
    """One membership of this organization (live or ended), or None."""
    membership = db.session.get(Membership, membership_id)
    return membership if membership is not None and membership.organization_id == organization.id else None


def find_invitation(organization: Organization, invitation_id: str) -> OrganizationInvitation | None:
    invitation = db.session.get(OrganizationInvitation, invitation_id)
    return invitation if invitation is not None and invitation.organization_id == organization.id else None


# --- one organization: invitations, history, calls to Clerk ----------------------------------------


def open_invitations(organization: Organization, limit: int = INVITATIONS_LIMIT) -> list[OrganizationInvitation]:
    """Pending invitations, newest first (those past their expiry show as expired: Clerk sends no event)."""
    statuses = [OrganizationInvitationStatus.PENDING.value, OrganizationInvitationStatus.EXPIRED.value]
    return list(
        db.session.scalars(
            sa.select(OrganizationInvitation)
            .where(
                OrganizationInvitation.organization_id == organization.id, OrganizationInvitation.status.in_(statuses)
            )
            .order_by(OrganizationInvitation.created_at.desc(), OrganizationInvitation.id.desc())
            .limit(limit)
        )
    )


def organization_history(organization: Organization, limit: int = HISTORY_LIMIT) -> list[HistoryEntry]:
    """The newest audit events about the organization (its fields, members, invitations)."""
    return history(AuditEvent.organization_id == organization.id, limit)


def member_roles_waiting(open_calls: Iterable[ClerkCall]) -> dict[str, dict[str, str]]:
    """For each Clerk user id, {"role": "pending" | "failed"} while a role change is not in Clerk."""
    by_member: dict[str, list[ClerkCall]] = {}
    for call in open_calls:
        if call.operation == UPDATE_MEMBERSHIP:
            by_member.setdefault(json.loads(call.payload).get("user_id"), []).append(call)
    return {clerk_user_id: waiting for clerk_user_id, calls in by_member.items() if (waiting := waiting_for(calls))}


# --- a user's organizations ------------------------------------------------------------------------


@dataclass(frozen=True)
class UserOrganization:
    organization: Organization
    membership: Membership


def organizations_of_user(user: User, limit: int = USER_ORGANIZATIONS_LIMIT) -> list[UserOrganization]:
    """The live organizations the user is a live member of, with their role, by name."""
    mine = Membership.user_id == user.id
    if user.clerk_id:  # a membership still waiting for this user is theirs too
        mine = sa.or_(mine, Membership.clerk_user_id == user.clerk_id)
    rows = db.session.execute(
        sa.select(Membership, Organization)
        .join(Organization, Organization.id == Membership.organization_id)
        .where(mine, Membership.deleted_at.is_(None), Organization.deleted_at.is_(None))
        .order_by(ORGANIZATION_NAME_SORT_KEY, Organization.id)
        .limit(limit)
    ).all()
    return [UserOrganization(organization, membership) for membership, organization in rows]


# --- the user picker of "add member" ---------------------------------------------------------------


@dataclass(frozen=True)
class UserChoice:
    id: str
    email: str
    name: str
    created_at: datetime


def user_choices(text: str, limit: int = USER_CHOICES_LIMIT) -> list[UserChoice]:
    """Live users whose email, names or username match what is typed (as the users list searches),
    a few, by email: the users list's own search condition (app/models.py), through its indexes."""
    text = " ".join(text.split())[:MAX_QUERY_LENGTH]
    if not text:
        return []
    condition = user_search_condition(text)
    # The first matches the index gives (a common term has thousands), then sorted: never all of them.
    first = (
        sa.select(User.id, User.email, User.first_name, User.last_name, User.created_at)
        .where(User.deleted_at.is_(None), condition)
        .limit(limit * 5)
        .subquery("first")
    )
    rows = db.session.execute(sa.select(first).order_by(first.c.email, first.c.id).limit(limit)).all()
    return [
        UserChoice(row.id, row.email, " ".join(p for p in (row.first_name, row.last_name) if p), row.created_at)
        for row in rows
    ]


# --- totals --------------------------------------------------------------------------------------


def live_organizations_total() -> int:
    """How many live organizations there are, exact, from the counters (never a COUNT of the table)."""
    return counts.read_counts([counts.ORGANIZATIONS]).get((counts.ORGANIZATIONS, counts.LIVE), 0)
