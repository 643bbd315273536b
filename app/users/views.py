"""The users pages: each view parses input, calls one service, commits and picks a template."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy.orm.exc import StaleDataError
from wtforms import SelectChoice

from app.auth.guard import current_actor, requires
from app.clerk.client import clerk_connected
from app.clerk.forms import ClerkActionForm
from app.clerk.live import active_sessions
from app.clerk.outbox import is_clerk_user
from app.clerk.outbox.delivery import PushReport, deliver_after_request
from app.clerk.outbox.queries import call_offers, open_calls_for, waiting_for, waiting_in_clerk
from app.errors import ensure_form_accepted, error_page
from app.extensions import db
from app.models import STATUS_VERBS, User, UserData, UserRole, UserStatus
from app.organizations.queries import organizations_of_user
from app.organizations.services import role_label
from app.pages import answer, fragment_or_redirect, pretty_json, wants_fragment
from app.permissions import can_act_on, can_delete, ensure, ensure_can_delete, may, roles_offered, target_kind
from app.users import export
from app.users.forms import (
    BulkForm,
    DeleteForm,
    InviteForm,
    MetadataForm,
    StatusForm,
    UserDataForm,
    UserEditForm,
)
from app.users.history import history_for
from app.users.queries import PER_PAGE_CHOICES, SORTS, UserFilters, count_users, list_users
from app.users.services import (
    MAX_BULK,
    DataConflict,
    DeletionNotConfirmed,
    DuplicateEmail,
    DuplicateKey,
    EditConflict,
    MetadataError,
    NotAllowed,
    ReadOnlyUser,
    UserError,
    add_user_data,
    bulk_set_status,
    can_invite_again,
    delete_user,
    delete_user_data,
    deletion_word,
    edit_user,
    ensure_editable,
    ensure_status_change,
    has_open_invitation,
    invite_user,
    locked_user,
    next_statuses,
    preview_bulk_status,
    resend_invitation,
    revoke_invitation,
    set_metadata,
    set_status,
    sign_out_everywhere,
    statuses_offered,
    unlock_user,
    update_user_data,
)

bp = Blueprint("users", __name__)


def get_user_or_404(user_id: str, *, lock: bool = False) -> User:
    """The user, or a 404. `lock` holds the row until the commit, for a button whose change must
    land on the row as it is now (a sync, a webhook or the outbox may have changed it since the
    page was drawn; without the lock, their change in between would make ours fail as stale)."""
    if not lock:
        return db.get_or_404(User, user_id, description="There is no user with this id.")
    user = locked_user(user_id)
    if user is None:
        abort(404, description="There is no user with this id.")
    return user


def refuse_if_deleted(user: User) -> None:
    """A deleted user is read-only: every change answers 409, whoever asks."""
    try:
        ensure_editable(user)
    except ReadOnlyUser as error:
        abort(409, description=str(error))


def get_item_or_404(user: User, data_id: str) -> UserData:
    item = db.session.get(UserData, data_id)
    if item is None or item.user_id != user.id:
        abort(404, description="This user has no such key-value entry.")
    return item


def deliver_to_clerk(*, announce: bool = True) -> PushReport:
    """After a commit: try this request's Clerk calls briefly; what does not get through stays pending."""
    report = deliver_after_request(actor=current_actor())
    if not announce:
        return report
    if report.stopped:
        flash(f"Saved here; pending in Clerk ({report.stopped}). It is sent again automatically.", "warning")
    elif report.failed:
        flash(f"Saved here, but Clerk refused it: {report.errors[-1]}", "error")
    return report


def offers_for(*users: User) -> dict:
    """What the signed-in person may do to each user shown: whom they manage, which statuses they may set.

    Asked once per kind of user on the page (app/permissions.py, target_kind), not once per row."""
    actor = current_actor()
    by_kind: dict[tuple, tuple[bool, list[str]]] = {}
    manageable: set[str] = set()
    status_targets: dict[str, list[str]] = {}
    for user in users:
        kind = target_kind(actor, user)
        offered = by_kind.get(kind)
        if offered is None:
            statuses = [s.value for s in statuses_offered(user, actor=actor)]
            offered = by_kind[kind] = (can_act_on(actor, user), statuses)
        if offered[0]:
            manageable.add(user.id)
        status_targets[user.id] = offered[1]

    def allowed(permission: str) -> set[str]:
        return manageable if may(actor, permission) else set()

    return {
        "manageable_ids": manageable,
        "editable_ids": allowed("users.edit"),  # the Edit button and the metadata editors
        "data_editable_ids": allowed("user_data.edit"),
        "selectable_ids": allowed("users.suspend"),  # the bulk actions' checkboxes
        "status_targets": status_targets,
    }


def row_context(user: User) -> dict:
    """What users/_row.html needs to draw one user's row alone."""
    return {**offers_for(user), "clerk_waiting": waiting_in_clerk([user.id])}


def results_context() -> dict:
    filters = UserFilters.from_args(request.args)
    per_page = filters.per_page or current_app.config["USERS_PER_PAGE"]
    page = list_users(filters, after=request.args.get("after"), before=request.args.get("before"), per_page=per_page)
    # A bulk action re-renders the same page of the same view.
    here = {k: request.args[k] for k in ("after", "before") if request.args.get(k)}
    bulk_url = url_for("users.bulk", **filters.to_args(), **here)
    return {
        "page": page,
        "filters": filters,
        "sorts": SORTS,
        "bulk_form": BulkForm(),
        "bulk_url": bulk_url,
        "per_page_choices": PER_PAGE_CHOICES,
        # Which fields of its users Clerk does not hold yet: asked only about those with open calls.
        "clerk_waiting": waiting_in_clerk(user.id for user in page.rows if user.has_open_calls),
        **offers_for(*page.rows),
    }


# --- list ----------------------------------------------------------------------------------


@bp.get("/users")
def index():
    return answer("users/index.html", "users/_results.html", **results_context())


@bp.get("/users/count")
def count():
    filters = UserFilters.from_args(request.args)
    return answer("users/_count.html", "users/_count.html", count=count_users(filters), filters=filters)


@bp.get("/users/export.csv")
@requires("users.export")
def export_csv():
    filters = UserFilters.from_args(request.args)
    response = Response(stream_with_context(export.rows(filters)), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename()}"'
    return response


@bp.post("/users/bulk")
@requires("users.suspend")
def bulk():
    """Two steps: the selection and action answer a confirmation with the count; `confirm` applies it."""
    form = BulkForm()
    ids = [i for i in request.form.getlist("ids") if i][:MAX_BULK]
    list_url = url_for("users.index", **request.args.to_dict(flat=False))
    if not form.validate():
        flash("Choose an action for the selected users.", "error")
    elif not ids:
        flash("Select at least one user first.", "error")
    incomplete = bool(form.errors) or not ids
    if incomplete and not form.confirm.data:
        return fragment_or_redirect("_flashes.html", list_url, status=422)  # into the confirmation's place
    if not form.confirm.data:
        status = UserStatus(form.action.data)
        preview = preview_bulk_status(ids, status, actor=current_actor())
        db.session.rollback()  # the preview locked nothing and wrote nothing; end its transaction
        context = {
            "preview": preview,
            "form": form,
            "ids": ids,
            "verb": STATUS_VERBS[form.action.data],
            "bulk_url": request.full_path if request.query_string else request.path,
        }
        return answer("users/bulk_confirm.html", "users/_bulk_confirm.html", **context)
    if not incomplete:
        result = bulk_set_status(ids, UserStatus(form.action.data), actor=current_actor())
        db.session.commit()
        deliver_to_clerk()
        verb = STATUS_VERBS[form.action.data].lower()
        flash(f"{len(result.changed)} of {len(ids)} selected users changed ({verb}).", "success")
        for label, reason in sorted(result.refused.items()):
            flash(f"{label}: not changed. {reason}", "error")
    # The list is read only for the fragment: a full request is sent to the list page itself.
    return fragment_or_redirect("users/_results.html", list_url, **(results_context() if wants_fragment() else {}))


# --- invite --------------------------------------------------------------------------------


def invite_form() -> InviteForm:
    form = InviteForm()
    offered = roles_offered(current_actor())
    if len(offered) == 1:
        del form.role  # without roles.manage, everyone invited has the role `user`
    else:
        form.role.choices = [SelectChoice(role.value, role.label) for role in offered]
    return form


@bp.route("/users/new", methods=["GET", "POST"])
@requires("users.invite")
def new():
    # The form posts here, so a refused submit (422) leaves /users/new in the address bar.
    if request.method == "POST":
        return create()
    return render_template("users/new.html", form=invite_form())


@bp.post("/users")
@requires("users.invite")
def create():
    form = invite_form()
    if form.validate():
        try:
            user = invite_user(
                form.email.data,
                first_name=form.first_name.data,
                last_name=form.last_name.data,
                role=UserRole(form.role.data) if "role" in form else UserRole.USER,
                actor=current_actor(),
            )
        except DuplicateEmail as error:
            form.email.errors.append(str(error))
        else:
            db.session.commit()
            flash(f"Invited {user.email}.", "success")
            deliver_to_clerk()
            return redirect(url_for("users.detail", user_id=user.id))
    return render_template("users/new.html", form=form), 422


# --- one user ------------------------------------------------------------------------------


@bp.get("/users/<user_id>")
def detail(user_id: str):
    user = get_user_or_404(user_id)
    return render_template(
        "users/detail.html", user=user, data_form=UserDataForm(formdata=None), **offers_for(user), **detail_extras(user)
    )


def detail_extras(user: User) -> dict:
    """What the user's page shows besides the sections a fragment refreshes."""
    actor = current_actor()
    may_act = can_act_on(actor, user)
    may_reach_clerk = clerk_connected() and is_clerk_user(user)
    open_calls = open_calls_for(user)
    return {
        "history": history_for(user),
        "organizations": organizations_of_user(user),
        "role_label": role_label,
        "open_calls": open_calls,
        **call_offers(open_calls, actor),
        "waiting": waiting_for(open_calls),
        "open_invitation": may_act and may(actor, "users.invite") and has_open_invitation(user),
        "invite_again": may_act and may(actor, "users.invite") and can_invite_again(user),
        "metadata_blocks": [metadata_block(user, kind) for kind in METADATA_LABELS],
        # Both live in Clerk: without it, the Clerk section says it is not connected, once.
        "show_sessions": may_act and may(actor, "users.sessions") and may_reach_clerk,
        "may_unlock": may_act and may(actor, "users.unlock") and user.locked and may_reach_clerk,
        "may_delete": can_delete(actor, user),
    }


def status_choices(user: User) -> list[SelectChoice]:
    """The current status and where it may go from here: `invited` is never offered to a user who is not."""
    return [SelectChoice(s.value, s.label) for s in (user.status, *next_statuses(user))]


def edit_form(user: User) -> UserEditForm:
    form = UserEditForm()
    actor = current_actor()
    offered = roles_offered(actor)
    if len(offered) == 1 or not may(actor, "roles.manage", user):
        del form.role  # only those with roles.manage see (and may send) the role
    else:
        form.role.choices = [SelectChoice(role.value, role.label) for role in offered]
    form.status.choices = status_choices(user) if may(actor, "users.suspend", user) else status_choices(user)[:1]
    return form


def render_edit(user: User, form: UserEditForm, status: int = 200, **context):
    return render_template("users/edit.html", user=user, form=form, **context), status


@bp.route("/users/<user_id>/edit", methods=["GET", "POST"])
def edit(user_id: str):
    user = get_user_or_404(user_id)
    ensure(current_actor(), "users.edit", user)
    refuse_if_deleted(user)
    form = edit_form(user)
    secret = current_app.config["SECRET_KEY"]
    if request.method == "GET":
        form.fill_from(user, secret_key=secret)
        return render_edit(user, form)
    original = form.opened_values(user, secret_key=secret) or UserEditForm.values_of(user)
    changed_names = form.validate_changed(original)
    if changed_names is None:
        return render_edit(user, form, 422)
    try:
        changed = edit_user(
            user, form.changes(changed_names), expected_version=form.expected_version(), actor=current_actor()
        )
        db.session.commit()
    except DuplicateEmail as error:
        db.session.rollback()
        form.email.errors.append(str(error))
    except NotAllowed as refused:
        db.session.rollback()
        (form.role if "role" in changed_names and "role" in form else form.status).errors.append(str(refused))
    except (EditConflict, StaleDataError):
        db.session.rollback()
        db.session.refresh(user)
        # Theirs: what changed since the form was opened. The form keeps this admin's changes and
        # takes the saved values everywhere else, so saving again cannot undo the other person's edit.
        now = UserEditForm.values_of(user)
        theirs = [name for name in UserEditForm.FIELDS if name in form and now[name] != original[name]]
        mine = set(changed_names)
        form.fill_from(user, secret_key=secret, keep=frozenset(mine))
        form.status.choices = status_choices(user)
        return render_edit(user, form, 409, conflict=True, theirs=theirs, mine=mine, opened=original, now=now)
    except MetadataError as error:  # over 8 KiB once the dashboard's public keys are kept
        db.session.rollback()
        form[error.kind or "public_metadata"].errors.append(str(error))
    except UserError as error:  # a status the user cannot take, or a deletion meanwhile
        db.session.rollback()
        form.status.errors.append(str(error))
    else:
        flash("Saved." if changed else "Nothing to save: no field changed.", "success")
        deliver_to_clerk()
        return redirect(url_for("users.detail", user_id=user.id))
    return render_edit(user, form, 422)


@bp.get("/users/<user_id>/status")
def confirm_status(user_id: str):
    user = get_user_or_404(user_id)
    target = request.args.get("to", "")
    view = request.args.get("view", "detail")
    if target not in STATUS_VERBS:
        abort(400, description="Choose a status: suspended, active or inactive.")
    try:
        ensure_status_change(user, UserStatus(target), actor=current_actor())
    except UserError as error:
        abort(409, description=str(error))
    context = {"user": user, "target": target, "verb": STATUS_VERBS[target], "view": view, "form": StatusForm()}
    fragment = "users/_row_confirm.html" if view == "row" else "users/_status_confirm.html"
    return answer("users/status_confirm.html", fragment, **context)


@bp.post("/users/<user_id>/status")
def change_status(user_id: str):
    user = get_user_or_404(user_id, lock=True)
    form = StatusForm()
    if not form.validate():
        abort(400, description="Choose a status: suspended, active or inactive.")
    try:
        set_status(user, UserStatus(form.status.data), actor=current_actor())
    except UserError as error:
        abort(409, description=str(error))
    db.session.commit()
    report = deliver_to_clerk(announce=not wants_fragment())
    message = f"{user.email} is now {user.status.label}."
    if report.stopped:
        message += " Pending in Clerk."
    elif report.failed:
        message += f" Refused by Clerk: {report.errors[-1]}"
    if request.form.get("view", "detail") == "row":
        fragment, context = "users/_row.html", row_context(user)
    else:
        fragment, context = "users/_status_panel.html", offers_for(user)
    return fragment_or_redirect(
        fragment, url_for("users.detail", user_id=user.id), flashed=message, user=user, notice=message, **context
    )


# --- invitations -----------------------------------------------------------------------------


INVITATION_ACTIONS = {
    "revoke": (revoke_invitation, "Revoked the invitation of {email}."),
    "resend": (resend_invitation, "Sent the invitation to {email} again."),
}


@bp.post("/users/<user_id>/invitation/<any(revoke, resend):action>")
def invitation(user_id: str, action: str):
    service, done = INVITATION_ACTIONS[action]
    return clerk_action(user_id, service, done)


def clerk_action(user_id: str, service, done: str, *, anchor: str | None = None):
    """A button on the user's page whose change Clerk must make too: the service, a commit, Clerk
    tried at once, and back to the page. `done` ({email}, {label}) is said once Clerk has it, or
    when Clerk is not connected; otherwise deliver_to_clerk says it is pending or refused."""
    user = get_user_or_404(user_id, lock=True)
    ensure_form_accepted(ClerkActionForm())
    try:
        service(user, actor=current_actor())
    except UserError as error:
        abort(409, description=str(error))
    db.session.commit()
    report = deliver_to_clerk()
    if not (report.stopped or report.failed):
        flash(done.format(email=user.email, label=user.label), "success")
    return redirect(url_for("users.detail", user_id=user.id, _anchor=anchor))


# --- key-value data ------------------------------------------------------------------------


def render_data(user: User, notice: str | None = None):
    """The key-value section for htmx; a full request goes back to it on the user's page, `notice` flashed."""
    return fragment_or_redirect(
        "users/_data.html",
        url_for("users.detail", user_id=user.id, _anchor="data"),
        flashed=notice,
        user=user,
        data_form=UserDataForm(formdata=None),
        notice=notice,
        **offers_for(user),
    )


def find_item(user: User, data_id: str) -> UserData | None:
    item = db.session.get(UserData, data_id)
    return item if item is not None and item.user_id == user.id else None


def data_gone(user: User, data_id: str, form: UserDataForm | None = None):
    """A pair deleted in another tab (or never there): said in its row, with what was typed; a 404."""
    message = (
        "This key-value pair no longer exists (someone may have deleted it after you opened it); nothing was saved."
    )
    return answer(
        "errors/error.html",
        "users/_data_row_gone.html",
        status=404,
        **error_page(404, message),
        user=user,
        data_id=data_id,
        form=form,
        message=message,
    )


def data_conflict(user: User, item: UserData, form: UserDataForm, message: str):
    """Someone changed the pair: show the saved pair and keep what this admin typed, to save again."""
    db.session.rollback()
    db.session.refresh(item)
    form.version.data = item.version
    return answer(
        "users/data_edit.html",
        "users/_data_row_form.html",
        status=409,
        user=user,
        item=item,
        form=form,
        conflict=message,
    )


@bp.get("/users/<user_id>/data")
def data_section(user_id: str):
    return render_data(get_user_or_404(user_id))


@bp.post("/users/<user_id>/data")
def add_data(user_id: str):
    user = get_user_or_404(user_id)
    form = UserDataForm()
    if form.validate():
        try:
            item = add_user_data(user, form.key.data, form.value.data, actor=current_actor())
            db.session.commit()
        except DuplicateKey as error:
            db.session.rollback()
            form.key.errors.append(str(error))
        except UserError as error:
            abort(409, description=str(error))
        else:
            return render_data(user, notice=f"Added {item.key}.")
    return answer(
        "users/detail.html",
        "users/_data.html",
        status=422,
        page_extras=lambda: detail_extras(user),
        user=user,
        data_form=form,
        **offers_for(user),
    )


@bp.get("/users/<user_id>/data/<data_id>/edit")
def edit_data(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    item = get_item_or_404(user, data_id)
    ensure(current_actor(), "user_data.edit", user)
    refuse_if_deleted(user)
    return answer(
        "users/data_edit.html", "users/_data_row_form.html", user=user, item=item, form=UserDataForm(obj=item)
    )


@bp.post("/users/<user_id>/data/<data_id>")
def update_data(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    form = UserDataForm()
    item = find_item(user, data_id)
    if item is None:
        return data_gone(user, data_id, form)
    if form.validate():
        try:
            update_user_data(
                item, form.key.data, form.value.data, actor=current_actor(), expected_version=form.expected_version()
            )
            db.session.commit()
        except DuplicateKey as error:
            db.session.rollback()
            form.key.errors.append(str(error))
        except DataConflict as conflict:
            return data_conflict(user, item, form, str(conflict))
        except UserError as error:
            abort(409, description=str(error))
        else:
            saved = f"Saved {item.key}."
            return fragment_or_redirect(
                "users/_data_row.html",
                url_for("users.detail", user_id=user.id, _anchor="data"),
                flashed=saved,
                user=user,
                item=item,
                row_notice=saved,
                **offers_for(user),
            )
    item = find_item(user, data_id)
    if item is None:
        return data_gone(user, data_id, form)
    return answer("users/data_edit.html", "users/_data_row_form.html", status=422, user=user, item=item, form=form)


@bp.post("/users/<user_id>/data/<data_id>/delete")
def delete_data(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    item = find_item(user, data_id)
    if item is None:
        return data_gone(user, data_id)
    form = UserDataForm()
    key = item.key
    try:
        delete_user_data(item, actor=current_actor(), expected_version=form.expected_version())
        db.session.commit()
    except DataConflict as conflict:
        form = UserDataForm(formdata=None, obj=item)
        return data_conflict(user, item, form, f"{conflict} Look at the saved pair before deleting it.")
    except UserError as error:
        abort(409, description=str(error))
    # An empty answer: htmx removes the row.
    return fragment_or_redirect(
        None, url_for("users.detail", user_id=user.id, _anchor="data"), flashed=f"Deleted {key}."
    )


# --- metadata ------------------------------------------------------------------------------------

METADATA_LABELS = {"public": "Public metadata", "private": "Private metadata", "unsafe": "Unsafe metadata"}


def metadata_block(user: User, kind: str, form: MetadataForm | None = None, **extra) -> dict:
    """What users/_metadata.html shows of one metadata object: the stored JSON and its editor."""
    column = f"{kind}_metadata"
    stored = getattr(user, column)
    if form is None:
        form = MetadataForm(formdata=None)
        form.value.data = pretty_json(stored) or "{}"
        form.remember(stored)
    return {"kind": kind, "column": column, "label": METADATA_LABELS[kind], "text": stored, "form": form, **extra}


def metadata_answer(user: User, block: dict, status: int):
    """A refused save: the block for htmx, or the user's page around it; what was typed is kept."""

    def page_extras() -> dict:
        extras = detail_extras(user)
        extras["metadata_blocks"] = [block if b["kind"] == block["kind"] else b for b in extras["metadata_blocks"]]
        return extras

    return answer(
        "users/detail.html",
        "users/_metadata.html",
        status=status,
        page_extras=page_extras,
        user=user,
        block=block,
        data_form=UserDataForm(formdata=None),
        waiting=waiting_in_clerk([user.id]).get(user.id, {}) if wants_fragment() else {},
        **offers_for(user),
    )


@bp.post("/users/<user_id>/metadata/<any(public, private, unsafe):kind>")
def edit_metadata(user_id: str, kind: str):
    user = get_user_or_404(user_id)
    ensure(current_actor(), "users.edit", user)
    refuse_if_deleted(user)
    form = MetadataForm()
    if not form.validate():
        return metadata_answer(user, metadata_block(user, kind, form), 422)
    try:
        changed = set_metadata(user, f"{kind}_metadata", form.parsed, actor=current_actor(), expected=form.expected())
        db.session.commit()
    except MetadataError as error:
        db.session.rollback()
        form.value.errors.append(str(error))
        return metadata_answer(user, metadata_block(user, kind, form), 422)
    except EditConflict as conflict:
        db.session.rollback()
        db.session.refresh(user)
        form.remember(getattr(user, f"{kind}_metadata"))  # saving again replaces what is there now
        return metadata_answer(user, metadata_block(user, kind, form, conflict=str(conflict)), 409)
    except UserError as error:
        abort(409, description=str(error))
    label = METADATA_LABELS[kind]
    notice = f"Saved the {label.lower()}." if changed else f"Nothing to save: the {label.lower()} is unchanged."
    report = deliver_to_clerk(announce=not wants_fragment())
    if wants_fragment() and report.stopped:
        notice += " Pending in Clerk."
    elif wants_fragment() and report.failed:
        notice += f" Refused by Clerk: {report.errors[-1]}"
    return fragment_or_redirect(
        "users/_metadata.html",
        url_for("users.detail", user_id=user.id, _anchor=f"metadata-{kind}"),
        flashed=notice,
        user=user,
        block=metadata_block(user, kind, notice=notice),
        waiting=waiting_in_clerk([user.id]).get(user.id, {}),
        **offers_for(user),
    )


# --- Clerk sessions, unlock, delete ------------------------------------------------------------


@bp.get("/users/<user_id>/sessions")
def sessions(user_id: str):
    """The user's active Clerk sessions, asked live with a short timeout (the page loads it after itself)."""
    user = get_user_or_404(user_id)
    ensure(current_actor(), "users.sessions", user)
    refuse_if_deleted(user)
    found = active_sessions(user)
    # Sign out everywhere goes through the outbox: offered while Clerk is down too, not when it has none.
    offer = clerk_connected() and is_clerk_user(user) and bool(found.sessions or found.unavailable)
    return answer("users/sessions.html", "users/_sessions.html", user=user, found=found, offer_sign_out=offer)


@bp.post("/users/<user_id>/sessions/revoke")
def revoke_sessions(user_id: str):
    done = "Signed {label} out everywhere: Clerk ended their active sessions."
    return clerk_action(user_id, sign_out_everywhere, done, anchor="sessions")


@bp.post("/users/<user_id>/unlock")
def unlock(user_id: str):
    return clerk_action(user_id, unlock_user, "Unlocked {label}: they can try to sign in again.")


def render_delete(user: User, form: DeleteForm, status: int = 200):
    return render_template("users/delete.html", user=user, form=form, word=deletion_word(user)), status


@bp.route("/users/<user_id>/delete", methods=["GET", "POST"])
def delete(user_id: str):
    """Super admins: a page that asks for the user's email, then the tombstone and the deletion in Clerk."""
    user = get_user_or_404(user_id, lock=request.method == "POST")
    refuse_if_deleted(user)
    ensure_can_delete(current_actor(), user)
    form = DeleteForm()
    if request.method == "GET":
        return render_delete(user, form)
    ensure_form_accepted(form)
    try:
        delete_user(user, form.confirm.data or "", actor=current_actor())
    except DeletionNotConfirmed as error:
        db.session.rollback()
        form.confirm.errors.append(str(error))
        return render_delete(user, form, 422)
    except UserError as error:
        abort(409, description=str(error))
    db.session.commit()
    flash(f"Deleted {user.label}. The account is read-only here; its history stays.", "success")
    deliver_to_clerk()
    return redirect(url_for("users.detail", user_id=user.id))


# --- fragments for "Cancel" ----------------------------------------------------------------


@bp.get("/users/<user_id>/row")
def row(user_id: str):
    user = get_user_or_404(user_id)
    # After a Cancel, focus returns to the button that asked (`focus` is its target status).
    return fragment_or_redirect(
        "users/_row.html",
        url_for("users.detail", user_id=user.id),
        user=user,
        focus=request.args.get("focus"),
        **row_context(user),
    )


@bp.get("/users/<user_id>/status-panel")
def status_panel(user_id: str):
    user = get_user_or_404(user_id)
    return fragment_or_redirect(
        "users/_status_panel.html",
        url_for("users.detail", user_id=user.id),
        user=user,
        focus=request.args.get("focus"),
        **offers_for(user),
    )


@bp.get("/users/<user_id>/data/<data_id>")
def data_row(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    item = get_item_or_404(user, data_id)
    return fragment_or_redirect(
        "users/_data_row.html",
        url_for("users.detail", user_id=user.id, _anchor="data"),
        user=user,
        item=item,
        **offers_for(user),
    )
