"""The permission matrix's table: every endpoint of the dashboard, how to call it, and what it needs.

One `Row` per (endpoint, method) pair, some more than once (an invitation with the role `user` and
with `admin`, a stale and a failed webhook event). `Targets` are the rows a request acts on, made
afresh for each test by `make_targets`; a row's `url` and `data` read their ids from it.
tests/test_permission_matrix.py runs each row for each staff group.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.outbox import UPDATE_USER
from app.extensions import db
from app.models import ClerkCall, StaffGroupMember, User, UserData, UserRole, UserStatus, WebhookEvent, utcnow
from app.staff.services import create_group
from app.users.services import invite_user
from app.webhooks.services import record_failed_delivery
from tests.clerk_payloads import BASE_MS, clerk_user, sign, user_updated
from tests.org_factories import make_invitation, make_membership, make_organization

TARGET_EMAIL = "target@example.com"
TARGET_METADATA = '{"plan": "pro"}'


@dataclass
class Targets:
    """Ids (and the few values a form must echo) of what the requests act on; all role `user`."""

    user: str  # a Clerk user with key-value data, metadata, an organization and a failed Clerk call
    user_email: str
    user_version: int
    data_id: str
    data_version: int
    locked: str  # a Clerk user Clerk locked
    invited: str  # an invited user, waiting for Clerk
    other: str  # nobody's member yet: added to the organization
    other_email: str
    organization: str
    organization_version: int
    membership: str
    membership_version: int
    org_invitation: str
    call: int  # a failed call to Clerk about `user`
    stale_event: str
    failed_event: str
    staff_group: int  # a group of staff (not the built-in one), with one member
    staff_group_version: int
    staff_in_group: str  # an admin in `staff_group` only
    colleague_email: str  # an admin in the built-in group only, to add to `staff_group`
    me: str = ""  # the signed-in person: set by the test once they exist


def make_targets(make_user) -> Targets:
    user = make_user(
        email=TARGET_EMAIL,
        first_name="Before",
        last_name="Target",
        public_metadata=TARGET_METADATA,
        private_metadata='{"tier": 2}',
    )
    item = UserData(user_id=user.id, key="k", value="v")
    db.session.add(item)
    locked = make_user(email="locked@example.com", locked=True)
    other = make_user(email="other@example.com", first_name="Other")
    invited = invite_user("invited@example.com", first_name="Invited", actor=Actor.cli())
    organization = make_organization(name="Acme Corp", slug="acme-corp", commit=False)
    membership = make_membership(organization, user, commit=False)
    org_invitation = make_invitation(organization, "guest@example.com", commit=False)
    call = ClerkCall(
        user_id=user.id,
        operation=UPDATE_USER,
        payload=json.dumps({"user_id": user.clerk_id, "fields": {"first_name": "Refused"}}),
        state="failed",
        attempts=1,
        last_error="Clerk refused it (422): test",
    )
    db.session.add(call)
    # A stale event (older than what is held) and one that failed on the database, both about `user`.
    data = clerk_user(id=user.clerk_id, email=user.email, first_name="Before", last_name="Target", updated_at=BASE_MS)
    stale = sign(user_updated(data, first_name="Older", updated_at=BASE_MS - 1_000))
    db.session.add(
        WebhookEvent(
            id=stale.msg_id,
            type="user.updated",
            clerk_user_id=user.clerk_id,
            received_at=utcnow(),
            processed_at=utcnow(),
            outcome="stale",
            error="an older version than the one held",
            payload=stale.body.decode(),
        )
    )
    failed_payload = user_updated(data, first_name="Failed")
    failed = sign(failed_payload)
    record_failed_delivery(failed.msg_id, failed.body.decode(), failed_payload, "OperationalError: connection lost")
    staff_group = create_group("Helpers", description="Helping out.", permissions=["users.view"], actor=Actor.cli())
    staff_in_group = make_user(email="helper@staff.example", role=UserRole.ADMIN)  # joins the built-in group
    db.session.execute(sa.delete(StaffGroupMember).where(StaffGroupMember.user_id == staff_in_group.id))
    db.session.add(StaffGroupMember(group_id=staff_group.id, user_id=staff_in_group.id))
    colleague = make_user(email="colleague@staff.example", role=UserRole.ADMIN)
    db.session.commit()
    return Targets(
        user=user.id,
        user_email=user.email,
        user_version=user.version,
        data_id=item.id,
        data_version=item.version,
        locked=locked.id,
        invited=invited.id,
        other=other.id,
        other_email=other.email,
        organization=organization.id,
        organization_version=organization.version,
        membership=membership.id,
        membership_version=membership.version,
        org_invitation=org_invitation.id,
        call=call.id,
        stale_event=stale.msg_id,
        failed_event=failed.msg_id,
        staff_group=staff_group.id,
        staff_group_version=staff_group.version,
        staff_in_group=staff_in_group.id,
        colleague_email=colleague.email,
    )


def edit_form(t: Targets, **changes) -> dict:
    """The edit form as a browser sends it, with the first name changed (and `changes`)."""
    form = {
        "email": t.user_email,
        "first_name": "After",
        "last_name": "Target",
        "username": "",
        "role": UserRole.USER.value,
        "status": UserStatus.ACTIVE.value,
        "external_id": "",
        "public_metadata": TARGET_METADATA,
        "private_metadata": '{"tier": 2}',
        "unsafe_metadata": "",
        "version": str(t.user_version),
    }
    form.update(changes)
    return form


@dataclass(frozen=True)
class Row:
    name: str  # the test id's second half
    endpoint: str
    method: str
    url: Callable[[Targets], str]
    permission: str | None  # None: anyone on the staff
    data: Callable[[Targets], dict] | None = None  # the form (the CSRF token is added)
    ok: frozenset[int] = frozenset({200})  # the statuses of an allowed request
    htmx: bool = False
    # After an allowed request: an extra check, given the targets and the permissions held.
    check: Callable[[Targets, frozenset[str]], None] | None = None
    writes: bool = False  # whether an allowed request changes the database (GETs never do)


def get(name, endpoint, url, permission, *, htmx=False, ok=(200,)) -> Row:
    return Row(name, endpoint, "GET", url, permission, ok=frozenset(ok), htmx=htmx)


def post(name, endpoint, url, permission, data=None, *, ok=(302,), htmx=False, check=None, writes=None) -> Row:
    """A change; unless told, it writes when it succeeds (a 409 "Clerk is not connected" writes nothing)."""
    writes = ok != (409,) if writes is None else writes
    return Row(name, endpoint, "POST", url, permission, data, frozenset(ok), htmx, check, writes)


def role_is(role_if_roles_manage: UserRole, email: str):
    """After an allowed request: `email` has the role asked for with roles.manage, else the role `user`."""

    def check(_t: Targets, held: frozenset[str]) -> None:
        db.session.rollback()
        role = db.session.scalar(sa.select(User.role).where(User.email == email))
        expected = role_if_roles_manage if "roles.manage" in held else UserRole.USER
        assert role == expected, f"{email} has the role {role}, expected {expected}"

    return check


ROWS: tuple[Row, ...] = (
    # --- read pages and fragments: users.view (the overview, users, organizations, webhooks, Clerk calls)
    get("overview", "overview.index", lambda t: "/", "users.view"),
    get("users-list", "users.index", lambda t: "/users", "users.view"),
    get("users-list-fragment", "users.index", lambda t: "/users?q=target", "users.view", htmx=True),
    get("users-count", "users.count", lambda t: "/users/count", "users.view", htmx=True),
    get("user-detail", "users.detail", lambda t: f"/users/{t.user}", "users.view"),
    get("user-row", "users.row", lambda t: f"/users/{t.user}/row", "users.view", htmx=True),
    get("user-status-panel", "users.status_panel", lambda t: f"/users/{t.user}/status-panel", "users.view", htmx=True),
    get("user-data", "users.data_section", lambda t: f"/users/{t.user}/data", "users.view", htmx=True),
    get("user-data-row", "users.data_row", lambda t: f"/users/{t.user}/data/{t.data_id}", "users.view", htmx=True),
    get("organizations", "organizations.index", lambda t: "/organizations", "users.view"),
    get("organization", "organizations.detail", lambda t: f"/organizations/{t.organization}", "users.view"),
    get(
        "organization-member-row",
        "organizations.member_row",
        lambda t: f"/organizations/{t.organization}/members/{t.membership}/row",
        "users.view",
        htmx=True,
    ),
    get(
        "organization-user-choices",
        "organizations.user_search",
        lambda t: f"/organizations/{t.organization}/user-choices?user=other",
        "organizations.manage",
        htmx=True,
    ),
    get("webhooks", "webhooks.index", lambda t: "/webhooks", "users.view"),
    get("webhook-stale", "webhooks.detail", lambda t: f"/webhooks/{t.stale_event}", "users.view"),
    get("webhook-failed", "webhooks.detail", lambda t: f"/webhooks/{t.failed_event}", "users.view"),
    get("clerk-calls", "clerk.index", lambda t: "/clerk", "users.view"),
    get("audit", "audit.index", lambda t: "/audit", "audit.view"),
    get("staff-me", "staff.me", lambda t: "/staff/me", None),
    # --- pages and fragments that open an action: the action's permission
    get("export-csv", "users.export_csv", lambda t: "/users/export.csv", "users.export"),
    get("invite-form", "users.new", lambda t: "/users/new", "users.invite"),
    get("edit-form", "users.edit", lambda t: f"/users/{t.user}/edit", "users.edit"),
    get("status-confirm", "users.confirm_status", lambda t: f"/users/{t.user}/status?to=suspended", "users.suspend"),
    get("delete-form", "users.delete", lambda t: f"/users/{t.user}/delete", "users.delete"),
    get(
        "data-edit-form",
        "users.edit_data",
        lambda t: f"/users/{t.user}/data/{t.data_id}/edit",
        "user_data.edit",
        htmx=True,
    ),
    get("sessions", "users.sessions", lambda t: f"/users/{t.user}/sessions", "users.sessions", htmx=True),
    get(
        "organization-delete-form",
        "organizations.delete",
        lambda t: f"/organizations/{t.organization}/delete",
        "organizations.delete",
    ),
    get(
        "member-remove-confirm",
        "organizations.remove",
        lambda t: f"/organizations/{t.organization}/members/{t.membership}/delete",
        "organizations.manage",
        htmx=True,
    ),
    # --- users: changes
    post("edit", "users.edit", lambda t: f"/users/{t.user}/edit", "users.edit", edit_form),
    # A role in the edit form is taken only from those with roles.manage; others' forged one is ignored.
    post(
        "edit-role",
        "users.edit",
        lambda t: f"/users/{t.user}/edit",
        "users.edit",
        lambda t: edit_form(t, role=UserRole.ADMIN.value),
        check=role_is(UserRole.ADMIN, TARGET_EMAIL),
    ),
    post(
        "suspend",
        "users.change_status",
        lambda t: f"/users/{t.user}/status",
        "users.suspend",
        lambda t: {"status": "suspended"},
    ),
    post(
        "bulk-preview",
        "users.bulk",
        lambda t: "/users/bulk",
        "users.suspend",
        lambda t: {"action": "suspended", "ids": [t.user, t.other]},
        ok=(200,),
        htmx=True,
        writes=False,
    ),
    post(
        "bulk-confirm",
        "users.bulk",
        lambda t: "/users/bulk",
        "users.suspend",
        lambda t: {"action": "suspended", "ids": [t.user, t.other], "confirm": "y"},
        ok=(200,),
        htmx=True,
    ),
    post(
        "invite-user",
        "users.create",
        lambda t: "/users",
        "users.invite",
        lambda t: {"email": "newcomer@example.com", "first_name": "New", "role": "user"},
        check=role_is(UserRole.USER, "newcomer@example.com"),
    ),
    post(
        "invite-admin",
        "users.create",
        lambda t: "/users",
        "users.invite",
        lambda t: {"email": "new-admin@example.com", "first_name": "New", "role": "admin"},
        check=role_is(UserRole.ADMIN, "new-admin@example.com"),
    ),
    post(
        "invite-on-form-page",
        "users.new",
        lambda t: "/users/new",
        "users.invite",
        lambda t: {"email": "newcomer@example.com", "first_name": "New", "role": "user"},
        check=role_is(UserRole.USER, "newcomer@example.com"),
    ),
    post(
        "invitation-revoke",
        "users.invitation",
        lambda t: f"/users/{t.invited}/invitation/revoke",
        "users.invite",
        lambda t: {},
    ),
    # Resending needs Clerk, not connected in tests: 409 for those allowed.
    post(
        "invitation-resend",
        "users.invitation",
        lambda t: f"/users/{t.invited}/invitation/resend",
        "users.invite",
        lambda t: {},
        ok=(409,),
    ),
    post(
        "data-add",
        "users.add_data",
        lambda t: f"/users/{t.user}/data",
        "user_data.edit",
        lambda t: {"key": "added", "value": "1"},
        ok=(200,),
        htmx=True,
    ),
    post(
        "data-update",
        "users.update_data",
        lambda t: f"/users/{t.user}/data/{t.data_id}",
        "user_data.edit",
        lambda t: {"key": "k", "value": "changed", "version": str(t.data_version)},
        ok=(200,),
        htmx=True,
    ),
    post(
        "data-delete",
        "users.delete_data",
        lambda t: f"/users/{t.user}/data/{t.data_id}/delete",
        "user_data.edit",
        lambda t: {"version": str(t.data_version)},
        ok=(200,),
        htmx=True,
    ),
    post(
        "metadata",
        "users.edit_metadata",
        lambda t: f"/users/{t.user}/metadata/public",
        "users.edit",
        lambda t: {"value": '{"plan": "gold"}', "original": json.dumps(TARGET_METADATA)},
        ok=(200,),
        htmx=True,
    ),
    post(
        "sessions-revoke",
        "users.revoke_sessions",
        lambda t: f"/users/{t.user}/sessions/revoke",
        "users.sessions",
        lambda t: {},
        ok=(409,),
    ),
    post("unlock", "users.unlock", lambda t: f"/users/{t.locked}/unlock", "users.unlock", lambda t: {}, ok=(409,)),
    post(
        "delete",
        "users.delete",
        lambda t: f"/users/{t.user}/delete",
        "users.delete",
        lambda t: {"confirm": t.user_email},
    ),
    # --- organizations
    post(
        "organization-rename",
        "organizations.rename",
        lambda t: f"/organizations/{t.organization}",
        "organizations.manage",
        lambda t: {"name": "Acme Renamed", "slug": "acme-renamed", "version": str(t.organization_version)},
    ),
    post(
        "member-add",
        "organizations.add",
        lambda t: f"/organizations/{t.organization}/members",
        "organizations.manage",
        lambda t: {"user": t.other_email, "role": "org:member"},
        ok=(200,),
        htmx=True,
    ),
    post(
        "member-role",
        "organizations.change_role",
        lambda t: f"/organizations/{t.organization}/members/{t.membership}/role",
        "organizations.manage",
        lambda t: {"role": "org:admin", "version": str(t.membership_version)},
        ok=(200,),
        htmx=True,
    ),
    post(
        "member-remove",
        "organizations.remove",
        lambda t: f"/organizations/{t.organization}/members/{t.membership}/delete",
        "organizations.manage",
        lambda t: {},
        ok=(200,),
        htmx=True,
    ),
    post(
        "organization-delete",
        "organizations.delete",
        lambda t: f"/organizations/{t.organization}/delete",
        "organizations.delete",
        lambda t: {"confirm": "acme-corp"},
    ),
    post(
        "organization-invite",
        "organizations.invite",
        lambda t: f"/organizations/{t.organization}/invitations",
        "organizations.manage",
        lambda t: {"email": "friend@example.com", "role": "org:member"},
        ok=(200,),
        htmx=True,
    ),
    post(
        "organization-invitation-revoke",
        "organizations.revoke",
        lambda t: f"/organizations/{t.organization}/invitations/{t.org_invitation}/revoke",
        "organizations.manage",
        lambda t: {},
        ok=(200,),
        htmx=True,
    ),
    # --- calls to Clerk (not connected: a retried call stays pending; taking Clerk's value says it cannot)
    post("clerk-retry", "clerk.retry", lambda t: f"/clerk/calls/{t.call}/retry", "clerk.retry", lambda t: {}),
    post(
        "clerk-take-value",
        "clerk.take_value",
        lambda t: f"/clerk/calls/{t.call}/take-clerk-value",
        "clerk.retry",
        lambda t: {},
        writes=False,  # Clerk's value cannot be read while it is not connected: nothing changes, it says so
    ),
    post("clerk-push", "clerk.push", lambda t: "/clerk/push", "clerk.retry", lambda t: {}, ok=(409,)),
    # --- webhooks
    post(
        "webhook-replay-stale",
        "webhooks.replay",
        lambda t: f"/webhooks/{t.stale_event}/replay",
        "webhooks.replay",
        lambda t: {},
    ),
    post(
        "webhook-replay-failed",
        "webhooks.replay",
        lambda t: f"/webhooks/{t.failed_event}/replay",
        "webhooks.replay",
        lambda t: {},
    ),
    # --- staff and groups: permissions.manage; a person's own page, anyone on the staff
    get("staff", "staff.index", lambda t: "/staff", "permissions.manage"),
    get("staff-group", "staff.group", lambda t: f"/staff/groups/{t.staff_group}", "permissions.manage"),
    get(
        "staff-group-delete-confirm",
        "staff.delete",
        lambda t: f"/staff/groups/{t.staff_group}/delete",
        "permissions.manage",
    ),
    get("staff-person", "staff.person", lambda t: f"/staff/people/{t.staff_in_group}", "permissions.manage"),
    get("staff-person-self", "staff.person", lambda t: f"/staff/people/{t.me}", None),
    post(
        "staff-group-create",
        "staff.create",
        lambda t: "/staff/groups",
        "permissions.manage",
        lambda t: {"name": "Auditors", "description": "They read."},
    ),
    post(
        "staff-group-rename",
        "staff.update",
        lambda t: f"/staff/groups/{t.staff_group}",
        "permissions.manage",
        lambda t: {"name": "Helpers renamed", "description": "", "version": str(t.staff_group_version)},
    ),
    post(
        "staff-group-permissions",
        "staff.permissions",
        lambda t: f"/staff/groups/{t.staff_group}/permissions",
        "permissions.manage",
        lambda t: {"permissions": ["users.view", "audit.view"], "version": str(t.staff_group_version)},
    ),
    post(
        "staff-member-add",
        "staff.add",
        lambda t: f"/staff/groups/{t.staff_group}/members",
        "permissions.manage",
        lambda t: {"email": t.colleague_email},
    ),
    post(
        "staff-member-remove",
        "staff.remove",
        lambda t: f"/staff/groups/{t.staff_group}/members/{t.staff_in_group}/delete",
        "permissions.manage",
        lambda t: {},
    ),
    post(
        "staff-group-delete",
        "staff.delete",
        lambda t: f"/staff/groups/{t.staff_group}/delete",
        "permissions.manage",
        lambda t: {"version": str(t.staff_group_version)},
    ),
)

# Not the dashboard's: public, or the sign-in itself, or Clerk's webhook receiver (signature-checked).
EXEMPT_ENDPOINTS = frozenset({"static", "health.healthz", "webhooks.receive_clerk"})
EXEMPT_PREFIXES = ("auth.",)
