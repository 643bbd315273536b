"""The organizations pages: the list, an organization's page, and its actions.

Each view parses input, calls one service (app/organizations/services.py), commits, tries Clerk
at once (what does not get through stays pending in the outbox) and picks a template: the
region it changed for htmx, the page (or a redirect to it) otherwise.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, make_response, redirect, render_template, request, url_for
from sqlalchemy.orm.exc import StaleDataError

from app.auth.guard import current_actor
from app.clerk.forms import ClerkActionForm
from app.clerk.outbox import open_calls_of_organization
from app.clerk.outbox.delivery import PushReport, deliver_after_request
from app.clerk.outbox.queries import organization_calls
from app.errors import ensure_form_accepted
from app.extensions import db
from app.models import ClerkCall, Membership, Organization, OrganizationInvitation
from app.organizations.forms import (
    AddMemberForm,
    DeleteOrganizationForm,
    MemberRoleForm,
    OrganizationEditForm,
    OrganizationInviteForm,
    default_role,
    role_choices,
)
from app.organizations.queries import (
    DEFAULT_PER_PAGE,
    PER_PAGE_CHOICES,
    SORTS,
    MemberFilters,
    OrganizationFilters,
    find_invitation,
    find_membership,
    list_members,
    list_organizations,
    live_organizations_total,
    member_roles_waiting,
    open_invitations,
    organization_history,
    user_choices,
)
from app.organizations.services import (
    OrganizationError,
    StaleOrganization,
    add_member,
    change_member_role,
    delete_organization,
    deletion_word,
    invite_to_organization,
    remove_member,
    rename_organization,
    revoke_organization_invitation,
    role_label,
)
from app.pages import answer, fragment_or_redirect, vary_on_htmx, wants_fragment
from app.permissions import can_act_on, ensure, ensure_member_change, may

bp = Blueprint("organizations", __name__)


# --- finding rows -----------------------------------------------------------------------------------


def get_organization_or_404(organization_id: str) -> Organization:
    return db.get_or_404(Organization, organization_id, description="There is no organization with this id.")


def get_membership_or_404(organization: Organization, membership_id: str) -> Membership:
    membership = find_membership(organization, membership_id)
    if membership is None:
        abort(404, description="This organization has no such membership.")
    return membership


def get_invitation_or_404(organization: Organization, invitation_id: str) -> OrganizationInvitation:
    invitation = find_invitation(organization, invitation_id)
    if invitation is None:
        abort(404, description="This organization has no such invitation.")
    return invitation


def refuse_if_deleted(organization: Organization) -> None:
    """A deleted organization is read-only: every change answers 409, whoever asks."""
    if organization.deleted_at is not None:
        abort(409, description=f"{organization.label} was deleted: it is read-only here.")


def deliver_to_clerk(*, announce: bool = True) -> PushReport:
    """After a commit: try this request's Clerk calls briefly; what does not get through stays pending."""
    report = deliver_after_request(actor=current_actor())
    if announce and report.stopped:
        flash(f"Saved here; pending in Clerk ({report.stopped}). It is sent again automatically.", "warning")
    elif announce and report.failed:
        flash(f"Saved here, but Clerk refused it: {report.errors[-1]}", "error")
    return report


def with_clerk_outcome(message: str, report: PushReport) -> str:
    """A notice shown in place (htmx) says what Clerk made of it too."""
    if report.stopped:
        return message + " Pending in Clerk."
    if report.failed:
        return message + f" Refused by Clerk: {report.errors[-1]}"
    return message


def blank_form(form_class):
    """An empty add or invite form, its role preset, also when answering a POST (which the form
    would take as its own submission and leave without the preset)."""
    form = form_class(formdata=None)
    form.role.data = default_role()
    return form


def detail_url(organization: Organization, anchor: str | None = None) -> str:
    return url_for("organizations.detail", organization_id=organization.id, _anchor=anchor)


# --- the list ---------------------------------------------------------------------------------------


@bp.get("/organizations")
def index():
    filters = OrganizationFilters.from_args(request.args)
    page = list_organizations(
        filters,
        after=request.args.get("after"),
        before=request.args.get("before"),
        per_page=filters.per_page or DEFAULT_PER_PAGE,
    )
    return answer(
        "organizations/index.html",
        "organizations/_results.html",
        page=page,
        filters=filters,
        sorts=SORTS,
        per_page_choices=PER_PAGE_CHOICES,
        # Exact, from the counters kept with each change: the list itself is never counted.
        total=None if filters.is_filtered else live_organizations_total(),
    )


# --- one organization -------------------------------------------------------------------------------


def offers(organization: Organization, *memberships: Membership) -> dict:
    """What the signed-in person may do here: manage the organization, and which members."""
    actor = current_actor()
    may_manage = organization.deleted_at is None and may(actor, "organizations.manage")
    return {
        "may_manage": may_manage,
        "may_delete": organization.deleted_at is None and may(actor, "organizations.delete"),
        "manageable_member_ids": {
            m.id
            for m in memberships
            if may_manage and m.deleted_at is None and (m.user is None or can_act_on(actor, m.user))
        },
        "role_choices": role_choices,
        "role_label": role_label,
    }


def members_context(organization: Organization, open_calls: list[ClerkCall] | None = None) -> dict:
    """The members table: the page of members asked for (`mq`, `after`, `before`) and their offers."""
    filters = MemberFilters.from_args(request.args)
    filters = MemberFilters(mq=filters.mq, organization_id=organization.id)
    page = list_members(organization, filters, after=request.args.get("after"), before=request.args.get("before"))
    if open_calls is None:
        open_calls = open_calls_of_organization(organization.id)
    return {
        "organization": organization,
        "members": page,
        "member_filters": filters,
        "roles_waiting": member_roles_waiting(open_calls),
        **offers(organization, *page.rows),
    }


def section_context(
    organization: Organization,
    add_form: AddMemberForm | None = None,
    open_calls: list[ClerkCall] | None = None,
    **extra,
) -> dict:
    """The members section (search, table, add form): what a member action answers for htmx."""
    return {
        **members_context(organization, open_calls),
        "add_form": add_form or blank_form(AddMemberForm),
        **extra,
    }


def detail_extras(
    organization: Organization,
    calls: dict,
    *,
    edit_form: OrganizationEditForm | None = None,
    invite_form: OrganizationInviteForm | None = None,
) -> dict:
    """What the organization's page shows besides the members section; `calls` is what
    `organization_calls` read (its open calls, the fields they hold, Retry and Take Clerk's value)."""
    if edit_form is None:
        edit_form = OrganizationEditForm(formdata=None)
        edit_form.fill_from(organization)
    return {
        "edit_form": edit_form,
        "invitations": open_invitations(organization),
        "invite_form": invite_form or blank_form(OrganizationInviteForm),
        "history": organization_history(organization),
        **calls,
    }


def render_detail(
    organization: Organization,
    status: int = 200,
    *,
    add_form: AddMemberForm | None = None,
    edit_form: OrganizationEditForm | None = None,
    invite_form: OrganizationInviteForm | None = None,
    **context,
) -> Response:
    """The whole page (a refused rename, invitation or member form shows on it, what was typed kept)."""
    calls = organization_calls(organization, current_actor())
    extras = detail_extras(organization, calls, edit_form=edit_form, invite_form=invite_form)
    page = {**section_context(organization, add_form, calls["open_calls"]), **extras, **context}
    return vary_on_htmx(make_response(render_template("organizations/detail.html", **page), status))


@bp.get("/organizations/<organization_id>")
def detail(organization_id: str):
    """The organization's page; htmx (the members search and pager) gets the members table alone."""
    organization = get_organization_or_404(organization_id)
    calls = organization_calls(organization, current_actor())  # one read of its open calls
    return answer(
        "organizations/detail.html",
        "organizations/_members.html",
        page_extras=lambda: {"add_form": blank_form(AddMemberForm), **detail_extras(organization, calls)},
        **members_context(organization, calls["open_calls"]),
    )


@bp.post("/organizations/<organization_id>")
def rename(organization_id: str):
    organization = get_organization_or_404(organization_id)
    refuse_if_deleted(organization)
    form = OrganizationEditForm()
    if not form.validate():
        return render_detail(organization, 422, edit_form=form)
    try:
        changed = rename_organization(
            organization,
            name=form.name.data,
            slug=form.slug_value(),
            version=form.expected_version(),
            actor=current_actor(),
        )
        db.session.commit()
    except (StaleOrganization, StaleDataError) as stale:
        db.session.rollback()
        db.session.refresh(organization)
        # Both versions: what is saved now, and what this admin sent (kept in the form, which now
        # carries the saved version, so saving again replaces the other person's change knowingly).
        current = getattr(stale, "current", None) or {"name": organization.name, "slug": organization.slug}
        form.version.data = organization.version
        conflict = {"saved": current, "yours": {"name": form.name.data, "slug": form.slug_value()}}
        return render_detail(organization, 409, edit_form=form, conflict=conflict)
    except OrganizationError as error:
        db.session.rollback()
        field = form[error.field] if error.field in ("name", "slug") else form.name
        field.errors = [*field.errors, error.message]
        return render_detail(organization, 422, edit_form=form)
    if changed:
        report = deliver_to_clerk()
        if not (report.stopped or report.failed):
            flash(f"Saved {organization.label}.", "success")
    else:
        flash("Nothing to save: neither the name nor the slug changed.", "success")
    return redirect(detail_url(organization))


def render_delete(organization: Organization, form: DeleteOrganizationForm, status: int = 200):
    context = {"organization": organization, "form": form, "word": deletion_word(organization)}
    return render_template("organizations/delete.html", **context), status


@bp.route("/organizations/<organization_id>/delete", methods=["GET", "POST"])
def delete(organization_id: str):
    """A page that asks for the organization's slug; then the tombstone, and the deletion in Clerk."""
    organization = get_organization_or_404(organization_id)
    refuse_if_deleted(organization)
    ensure(current_actor(), "organizations.delete")
    form = DeleteOrganizationForm()
    if request.method == "GET":
        return render_delete(organization, form)
    ensure_form_accepted(form)
    try:
        delete_organization(organization, form.confirm.data or "", actor=current_actor())
    except OrganizationError as error:
        db.session.rollback()
        if error.field != "confirm":
            abort(409, description=error.message)
        form.confirm.errors.append(error.message)
        return render_delete(organization, form, 422)
    db.session.commit()
    flash(f"Deleted {organization.label}. It is read-only here; its history stays.", "success")
    deliver_to_clerk()
    return redirect(detail_url(organization))


# --- members ----------------------------------------------------------------------------------------


def members_answer(organization: Organization, *, notice: str | None = None, status: int = 200, **context):
    """The members section for htmx; a full request goes back to it on the organization's page."""
    return fragment_or_redirect(
        "organizations/_members_section.html",
        detail_url(organization, "members-section"),
        status=status,
        flashed=notice,
        **section_context(organization, notice=notice, **context),
    )


@bp.post("/organizations/<organization_id>/members")
def add(organization_id: str):
    organization = get_organization_or_404(organization_id)
    refuse_if_deleted(organization)
    form = AddMemberForm()
    if form.validate():
        try:
            membership = add_member(organization, form.member, form.role.data, actor=current_actor())
            db.session.commit()
        except OrganizationError as error:
            db.session.rollback()
            field = form[error.field] if error.field in ("user", "role") else form.user
            field.errors = [*field.errors, error.message]
        else:
            report = deliver_to_clerk(announce=not wants_fragment())
            message = f"Added {membership.label} as {role_label(membership.role)}."
            return members_answer(organization, notice=with_clerk_outcome(message, report))
    if wants_fragment():
        return answer(
            "organizations/detail.html",
            "organizations/_members_section.html",
            status=422,
            **section_context(organization, form),
        )
    return render_detail(organization, 422, add_form=form)


def row_answer(organization: Organization, membership: Membership, *, status: int = 200, **context) -> Response:
    return fragment_or_redirect(
        "organizations/_member_row.html",
        detail_url(organization, "members-section"),
        status=status,
        organization=organization,
        member=membership,
        roles_waiting=member_roles_waiting(open_calls_of_organization(organization.id)),
        **offers(organization, membership),
        **context,
    )


@bp.post("/organizations/<organization_id>/members/<membership_id>/role")
def change_role(organization_id: str, membership_id: str):
    organization = get_organization_or_404(organization_id)
    membership = get_membership_or_404(organization, membership_id)
    refuse_if_deleted(organization)
    form = MemberRoleForm(current_role=membership.role)
    if not form.validate():
        if not wants_fragment():
            abort(422, description=f"Choose a role for {membership.label}: {' '.join(form.role.errors) or 'none'}.")
        return row_answer(organization, membership, status=422, row_error=" ".join(form.role.errors))
    try:
        changed = change_member_role(membership, form.role.data, actor=current_actor(), version=form.expected_version())
        db.session.commit()
    except (StaleOrganization, StaleDataError):
        db.session.rollback()
        db.session.refresh(membership)
        message = (
            f"Someone else changed {membership.label}'s membership after you opened the page: "
            f"the role is now {role_label(membership.role)}; yours, {role_label(form.role.data)}, was not saved."
        )
        if not wants_fragment():
            abort(409, description=message)
        return row_answer(organization, membership, status=409, row_error=message)
    except OrganizationError as error:
        db.session.rollback()
        if not wants_fragment():
            abort(409 if error.field is None else 422, description=error.message)
        return row_answer(organization, membership, status=409 if error.field is None else 422, row_error=error.message)
    if not changed:
        message = f"{membership.label} already has the role {role_label(membership.role)}."
        return row_answer(organization, membership, row_notice=message, flashed=message)
    report = deliver_to_clerk(announce=not wants_fragment())
    message = with_clerk_outcome(f"{membership.label} is now {role_label(membership.role)}.", report)
    return row_answer(organization, membership, row_notice=message, flashed=message)


@bp.get("/organizations/<organization_id>/members/<membership_id>/row")
def member_row(organization_id: str, membership_id: str):
    """The member's row as it is (Cancel of a removal brings it back)."""
    organization = get_organization_or_404(organization_id)
    membership = get_membership_or_404(organization, membership_id)
    return row_answer(organization, membership, focus=True)


@bp.route("/organizations/<organization_id>/members/<membership_id>/delete", methods=["GET", "POST"])
def remove(organization_id: str, membership_id: str):
    """GET asks "Remove x from y?" (inline for htmx, a page otherwise); POST removes."""
    organization = get_organization_or_404(organization_id)
    membership = get_membership_or_404(organization, membership_id)
    refuse_if_deleted(organization)
    if membership.deleted_at is not None:
        abort(409, description=f"{membership.label} is no longer a member of {organization.label}.")
    if request.method == "GET":
        ensure_member_change(current_actor(), membership.user)  # asked only of those who may remove
        context = {"organization": organization, "member": membership, "form": ClerkActionForm(formdata=None)}
        return answer("organizations/remove_member.html", "organizations/_member_confirm.html", **context)
    ensure_form_accepted(ClerkActionForm())
    label = membership.label
    try:
        remove_member(membership, actor=current_actor())
        db.session.commit()
    except OrganizationError as error:
        db.session.rollback()
        abort(409, description=error.message)
    report = deliver_to_clerk(announce=not wants_fragment())
    return members_answer(
        organization, notice=with_clerk_outcome(f"Removed {label} from {organization.label}.", report)
    )


@bp.get("/organizations/<organization_id>/user-choices")
def user_search(organization_id: str):
    """The users matching what is typed in "add member": options for its list (htmx), or a page."""
    ensure(current_actor(), "organizations.manage")
    organization = get_organization_or_404(organization_id)
    text = request.args.get("user", "")
    return answer(
        "organizations/user_search.html",
        "organizations/_user_choices.html",
        organization=organization,
        text=" ".join(text.split())[:200],
        choices=user_choices(text),
    )


# --- invitations ------------------------------------------------------------------------------------


def invitations_answer(organization: Organization, *, notice: str | None = None, status: int = 200, form=None):
    return fragment_or_redirect(
        "organizations/_invitations.html",
        detail_url(organization, "invitations"),
        status=status,
        flashed=notice,
        organization=organization,
        invitations=open_invitations(organization),
        invite_form=form or blank_form(OrganizationInviteForm),
        notice=notice,
        **offers(organization),
    )


@bp.post("/organizations/<organization_id>/invitations")
def invite(organization_id: str):
    organization = get_organization_or_404(organization_id)
    refuse_if_deleted(organization)
    form = OrganizationInviteForm()
    if form.validate():
        try:
            invitation = invite_to_organization(organization, form.email.data, form.role.data, actor=current_actor())
            db.session.commit()
        except OrganizationError as error:
            db.session.rollback()
            field = form[error.field] if error.field in ("email", "role") else form.email
            field.errors = [*field.errors, error.message]
        else:
            report = deliver_to_clerk(announce=not wants_fragment())
            message = f"Invited {invitation.email} as {role_label(invitation.role)}."
            return invitations_answer(organization, notice=with_clerk_outcome(message, report))
    if wants_fragment():
        return answer(
            "organizations/detail.html",
            "organizations/_invitations.html",
            status=422,
            organization=organization,
            invitations=open_invitations(organization),
            invite_form=form,
            **offers(organization),
        )
    return render_detail(organization, 422, invite_form=form)


@bp.post("/organizations/<organization_id>/invitations/<invitation_id>/revoke")
def revoke(organization_id: str, invitation_id: str):
    organization = get_organization_or_404(organization_id)
    invitation = get_invitation_or_404(organization, invitation_id)
    refuse_if_deleted(organization)
    ensure_form_accepted(ClerkActionForm())
    try:
        revoke_organization_invitation(invitation, actor=current_actor())
        db.session.commit()
    except OrganizationError as error:
        db.session.rollback()
        abort(409, description=error.message)
    report = deliver_to_clerk(announce=not wants_fragment())
    return invitations_answer(
        organization, notice=with_clerk_outcome(f"Revoked the invitation of {invitation.email}.", report)
    )
