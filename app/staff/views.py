"""The staff pages: who is staff, the groups of permissions, and what each person may do.

Every view needs permissions.manage (app/auth/guard.py's AREA_PERMISSIONS) but the two marked
`own_check`, which show a person what they may do. Each POST parses its form, calls one service
(app/staff/services.py), commits and answers: the section it changed for htmx, a redirect back to
the page otherwise. A rule's refusal (StaffError) is shown by its field (422), a group changed
meanwhile (GroupConflict) is a 409 showing both versions, and NotAllowed is the app's 403.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, request, url_for
from htmx_flask import make_response as htmx_response

from app.auth.guard import current_actor, own_check
from app.errors import ensure_form_accepted, expired_form_message
from app.extensions import db
from app.models import StaffGroup, User
from app.pages import answer, fragment_or_redirect, is_htmx_request, vary_on_htmx, wants_fragment
from app.pagination import MAX_INT
from app.permissions import ensure, is_self, may
from app.records.staff import groups_of
from app.staff.forms import (
    DeleteGroupForm,
    GroupEditForm,
    GroupForm,
    MemberForm,
    PermissionsForm,
    StaffActionForm,
)
from app.staff.queries import (
    find_group,
    find_staff_person,
    group_history,
    group_members,
    known_permissions,
    list_groups,
    list_staff,
    permission_areas,
    person_grants,
    unknown_permissions,
)
from app.staff.services import (
    GroupConflict,
    StaffError,
    add_member,
    create_group,
    delete_group,
    find_staff,
    remove_member,
    rename_group,
    set_permissions,
)

bp = Blueprint("staff", __name__)

MAX_GROUP_ID = MAX_INT  # the id column is an INTEGER: a larger number is no group, not a query error
GROUP = f"/staff/groups/<int(max={MAX_GROUP_ID}):group_id>"


# --- finding rows -----------------------------------------------------------------------------------


def get_group_or_404(group_id: int) -> StaffGroup:
    group = find_group(group_id)
    if group is None:
        abort(404, description="There is no staff group with this id (it may have been deleted).")
    return group


def group_url(group: StaffGroup, anchor: str | None = None) -> str:
    return url_for("staff.group", group_id=group.id, _anchor=anchor)


def field_error(form, error: StaffError, fields: tuple[str, ...], default: str) -> None:
    """Show a service's refusal by the field it names (or by `default`, the form's first field)."""
    field = form[error.field] if error.field in fields else form[default]
    field.errors = [*field.errors, str(error)]


# --- /staff -----------------------------------------------------------------------------------------


def index_context(form: GroupForm | None = None, **extra) -> dict:
    staff, staff_total = list_staff()
    return {
        "staff": staff,
        "staff_total": staff_total,
        "groups": list_groups(),
        "form": form or GroupForm(formdata=None),
        **extra,
    }


@bp.get("/staff")
def index():
    """The staff with their groups, the groups, and the form for a new one."""
    return answer("staff/index.html", "staff/_groups.html", **index_context())


@bp.post("/staff/groups")
def create():
    """A new group (no permissions yet): to its page, where the grid sets them."""
    form = GroupForm()
    if form.validate():
        try:
            group = create_group(form.name.data, description=form.description.data or "", actor=current_actor())
            db.session.commit()
        except StaffError as error:
            db.session.rollback()
            field_error(form, error, ("name", "description"), "name")
        else:
            message = f"Created the group {group.name}. Tick what it grants, then add its members."
            if wants_fragment():
                return answer("staff/index.html", "staff/_groups.html", **index_context(notice=message))
            flash(message, "success")
            return vary_on_htmx(redirect(group_url(group, "permissions")))
    return answer("staff/index.html", "staff/_groups.html", status=422, **index_context(form))


# --- one group --------------------------------------------------------------------------------------


def group_context(
    group: StaffGroup,
    *,
    details_form: GroupEditForm | None = None,
    permissions_form: PermissionsForm | None = None,
    member_form: MemberForm | None = None,
    **extra,
) -> dict:
    """What the group's page shows; a section answered alone (htmx) takes what it needs of it."""
    if details_form is None:
        details_form = GroupEditForm(formdata=None)
        details_form.fill_from(group)
    if permissions_form is None:
        permissions_form = PermissionsForm(formdata=None)
        permissions_form.fill_from(group)
    members, members_total = group_members(group)
    return {
        "group": group,
        "details_form": details_form,
        "permissions_form": permissions_form,
        "areas": permission_areas(),
        "known": known_permissions(group),
        "unknown": unknown_permissions(group),
        "members": members,
        "members_total": members_total,
        "member_form": member_form or MemberForm(formdata=None),
        "history": group_history(group),
        **extra,
    }


def group_answer(group: StaffGroup, section: str, *, status: int = 200, **context) -> Response:
    """The group's page (a refusal shows on it, what was typed kept), or for htmx the section alone."""
    return answer("staff/group.html", f"staff/_{section}.html", status=status, **group_context(group, **context))


def group_done(group: StaffGroup, section: str, message: str) -> Response:
    """After a change: for htmx the section (and the history) with `message`; otherwise back to the page."""
    if wants_fragment():
        return group_answer(group, section, notice=message)
    return fragment_or_redirect(None, group_url(group, section), flashed=message)


def stale_version() -> None:
    abort(400, description=expired_form_message("The form does not say which version of the group it changes."))


@bp.get(GROUP)
def group(group_id: int):
    """The group: its name and description, its permissions as a grid, its members, its history."""
    return answer("staff/group.html", "staff/_permissions.html", **group_context(get_group_or_404(group_id)))


@bp.post(GROUP)
def update(group_id: int):
    """A new name or description (a built-in group keeps its name)."""
    group = get_group_or_404(group_id)
    form = GroupEditForm()
    if group.builtin and not form.name.raw_data:  # its name is shown read-only; absent is the same name
        form.name.process_formdata([group.name])
    if not form.validate():
        return group_answer(group, "details", status=422, details_form=form)
    if form.expected_version() is None:
        stale_version()
    try:
        changes = rename_group(
            group,
            form.name.data,
            description=form.description.data or "",
            actor=current_actor(),
            expected_version=form.expected_version(),
        )
        db.session.commit()
    except GroupConflict as conflict:
        db.session.rollback()
        db.session.refresh(group)
        # Both versions: the saved one, and this person's (kept in the form, which now carries the
        # saved version, so saving again replaces the other change knowingly).
        saved = {"name": group.name, "description": group.description}
        yours = {"name": form.name.data, "description": form.description.data or ""}
        form.version.data = group.version
        details_conflict = {"message": str(conflict), "saved": saved, "yours": yours}
        return group_answer(group, "details", status=409, details_form=form, details_conflict=details_conflict)
    except StaffError as error:
        db.session.rollback()
        field_error(form, error, ("name", "description"), "name")
        return group_answer(group, "details", status=422, details_form=form)
    message = f"Saved {group.name}." if changes else "Nothing to save: neither the name nor the description changed."
    return group_done(group, "details", message)


@bp.post(f"{GROUP}/permissions")
def permissions(group_id: int):
    """The grid: the group grants exactly the ticked permissions from now on."""
    group = get_group_or_404(group_id)
    form = PermissionsForm()
    if not form.validate():
        return group_answer(group, "permissions", status=422, permissions_form=form)
    if form.expected_version() is None:
        stale_version()
    yours = sorted(form.ticked())
    try:
        changes = set_permissions(group, yours, actor=current_actor(), expected_version=form.expected_version())
        db.session.commit()
    except GroupConflict as conflict:
        db.session.rollback()
        db.session.refresh(group)
        form.version.data = group.version
        permissions_conflict = {"message": str(conflict), "saved": group.permission_names, "yours": yours}
        return group_answer(
            group, "permissions", status=409, permissions_form=form, permissions_conflict=permissions_conflict
        )
    except StaffError as error:
        db.session.rollback()
        form.permissions.errors = [*form.permissions.errors, str(error)]
        return group_answer(group, "permissions", status=422, permissions_form=form)
    if not changes:
        message = f"Nothing to save: {group.name} already grants exactly these permissions."
    else:
        granted, revoked = changes.get("granted", [None, None])[1], changes.get("revoked", [None, None])[0]
        parts = [f"granted {granted}" if granted else "", f"revoked {revoked}" if revoked else ""]
        message = f"Saved {group.name}: {'; '.join(p for p in parts if p)}."
    return group_done(group, "permissions", message)


# --- members ----------------------------------------------------------------------------------------


@bp.post(f"{GROUP}/members")
def add(group_id: int):
    """Add an admin to the group, by email."""
    group = get_group_or_404(group_id)
    form = MemberForm()
    if form.validate():
        try:
            user = find_staff(form.email.data)
            add_member(group, user, actor=current_actor())
            db.session.commit()
        except StaffError as error:
            db.session.rollback()
            field_error(form, error, ("email",), "email")
        else:
            return group_done(group, "members", f"Added {user.label} to {group.name}.")
    return group_answer(group, "members", status=422, member_form=form)


@bp.post(f"{GROUP}/members/<user_id>/delete")
def remove(group_id: int, user_id: str):
    """Take someone out of the group (they lose what only it granted them)."""
    group = get_group_or_404(group_id)
    user = db.get_or_404(User, user_id, description="There is no user with this id.")
    ensure_form_accepted(StaffActionForm())
    try:
        remove_member(group, user, actor=current_actor())
        db.session.commit()
    except StaffError as error:
        db.session.rollback()
        if wants_fragment():
            return group_answer(group, "members", status=409, members_error=str(error))
        abort(409, description=str(error))
    return group_done(group, "members", f"Removed {user.label} from {group.name}.")


# --- deleting a group -------------------------------------------------------------------------------


@bp.route(f"{GROUP}/delete", methods=["GET", "POST"])
def delete(group_id: int):
    """GET asks "Delete this group?" (with what it grants and who loses it); POST deletes it."""
    group = get_group_or_404(group_id)
    if group.builtin:
        abort(409, description=f"{group.name} is built in: it cannot be deleted (its permissions can be changed).")
    form = DeleteGroupForm()
    if request.method == "GET":
        form = DeleteGroupForm(formdata=None)
        form.version.data = group.version
        members, members_total = group_members(group, limit=10)
        return answer(
            "staff/delete.html",
            "staff/_delete_confirm.html",
            group=group,
            form=form,
            members=members,
            members_total=members_total,
            unknown=unknown_permissions(group),
        )
    ensure_form_accepted(form)
    if form.expected_version() is None:
        stale_version()
    name = group.name
    try:
        delete_group(group, actor=current_actor(), expected_version=form.expected_version())
        db.session.commit()
    except StaffError as error:  # GroupConflict among them: changed since the question was asked
        db.session.rollback()
        abort(409, description=f"{error} Look at the group again before deleting it.")
    flash(
        f"Deleted the group {name}; its members lost what it granted them. Its history stays in the audit trail.",
        "success",
    )
    target = url_for("staff.index")
    if is_htmx_request():  # an htmx request cannot be redirected into a swap: htmx loads the page instead
        return vary_on_htmx(htmx_response("", 200, redirect=target))
    return vary_on_htmx(redirect(target))


# --- what a person may do ---------------------------------------------------------------------------


def person_answer(person: User) -> Response:
    actor = current_actor()
    return answer(
        "staff/person.html",
        "staff/_grants.html",
        person=person,
        areas=person_grants(person),
        groups=groups_of(person),
        is_me=is_self(actor, person),
        may_manage=may(actor, "permissions.manage"),
    )


@bp.get("/staff/people/<user_id>")
@own_check
def person(user_id: str):
    """What a member of staff may do, and which group grants each permission: for those who manage
    permissions, and for the person themselves."""
    actor = current_actor()
    if actor.user is None or actor.user.id != user_id:
        ensure(actor, "permissions.manage")  # before the look-up: no probing who is staff
    person = find_staff_person(user_id)
    if person is None:
        abort(404, description="There is no member of staff with this id (admins and super admins are staff).")
    return person_answer(person)


@bp.get("/staff/me")
@own_check
def me():
    """What the signed-in person may do, and which group grants each permission (anyone on the staff)."""
    return person_answer(current_actor().user)
