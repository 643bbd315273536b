"""The users pages: each view parses input, calls one service, commits and picks a template."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy.orm.exc import StaleDataError

from app.audit.services import Actor
from app.clerk.forms import ClerkActionForm
from app.clerk.outbox import PushReport, deliver_after_request, pending_user_ids
from app.extensions import db
from app.models import User, UserData, UserRole, UserStatus
from app.rendering import page_or_fragment, wants_fragment
from app.users import export
from app.users.forms import BULK_ACTIONS, BulkForm, InviteForm, StatusForm, UserDataForm, UserEditForm
from app.users.history import history_for
from app.users.permissions import can_change_roles, ensure_can_manage
from app.users.queries import PER_PAGE_CHOICES, SORTS, UserFilters, count_users, list_users
from app.users.services import (
    DuplicateEmail,
    DuplicateKey,
    NotAllowed,
    EditConflict,
    UserError,
    add_user_data,
    bulk_set_status,
    delete_user_data,
    edit_user,
    invite_user,
    resend_invitation,
    revoke_invitation,
    set_status,
    update_user_data,
)

bp = Blueprint("users", __name__)

STATUS_VERBS = BULK_ACTIONS


def actor() -> Actor:
    return Actor.staff(g.user, request.remote_addr)


def get_user_or_404(user_id: str) -> User:
    return db.get_or_404(User, user_id, description="There is no user with this id.")


def get_item_or_404(user: User, data_id: str) -> UserData:
    item = db.session.get(UserData, data_id)
    if item is None or item.user_id != user.id:
        abort(404, description="This user has no such key-value entry.")
    return item


def deliver_to_clerk(*, announce: bool = True) -> PushReport:
    """After a commit: try this request's Clerk calls briefly; what does not get through stays pending."""
    report = deliver_after_request(actor=actor())
    if not announce:
        return report
    if report.stopped:
        flash(f"Saved here; pending in Clerk ({report.stopped}). It is sent again automatically.", "warning")
    elif report.failed:
        flash(f"Saved here, but Clerk refused it: {report.errors[-1]}", "error")
    return report


def results_context() -> dict:
    filters = UserFilters.from_args(request.args)
    per_page = filters.per_page or current_app.config["USERS_PER_PAGE"]
    page = list_users(filters, after=request.args.get("after"), before=request.args.get("before"), per_page=per_page)
    # A bulk action re-renders the same page of the same view.
    here = {k: request.args[k] for k in ("after", "before") if request.args.get(k)}
    bulk_url = url_for("users.bulk", **filters.to_args(), **here)
    return {
        "page": page, "filters": filters, "sorts": SORTS, "bulk_form": BulkForm(), "bulk_url": bulk_url,
        "per_page_choices": PER_PAGE_CHOICES,
        # One query for the whole page: which of its users have a change not yet in Clerk.
        "clerk_pending": pending_user_ids(user.id for user in page.users),
    }


# --- list ----------------------------------------------------------------------------------


@bp.get("/users")
def index():
    return page_or_fragment("users/index.html", "users/_results.html", **results_context())


@bp.get("/users/count")
def count():
    filters = UserFilters.from_args(request.args)
    return page_or_fragment("users/_count.html", "users/_count.html", count=count_users(filters))


@bp.get("/users/export.csv")
def export_csv():
    filters = UserFilters.from_args(request.args)
    response = Response(stream_with_context(export.rows(filters)), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{export.filename()}"'
    return response


@bp.post("/users/bulk")
def bulk():
    form = BulkForm()
    ids = [i for i in request.form.getlist("ids") if i][:1000]
    if not form.validate():
        flash("Choose an action for the selected users.", "error")
    elif not ids:
        flash("Select at least one user first.", "error")
    else:
        result = bulk_set_status(ids, UserStatus(form.action.data), actor=actor())
        db.session.commit()
        deliver_to_clerk()
        verb = BULK_ACTIONS[form.action.data].lower()
        flash(f"{len(result.changed)} of {len(ids)} selected users changed ({verb}).", "success")
        if result.refused:
            flash(f"Not allowed for {', '.join(sorted(result.refused))}: {next(iter(result.refused.values()))}", "error")
    if wants_fragment():
        return page_or_fragment("users/index.html", "users/_results.html", **results_context())
    return redirect(url_for("users.index", **request.args.to_dict(flat=False)))


# --- invite --------------------------------------------------------------------------------


def invite_form() -> InviteForm:
    form = InviteForm()
    if not can_change_roles(actor()):
        del form.role  # admins invite users with the role `user`
    return form


@bp.route("/users/new", methods=["GET", "POST"])
def new():
    # The form posts here, so a refused submit (422) leaves /users/new in the address bar.
    if request.method == "POST":
        return create()
    return render_template("users/new.html", form=invite_form())


@bp.post("/users")
def create():
    form = invite_form()
    if form.validate():
        try:
            user = invite_user(
                form.email.data,
                first_name=form.first_name.data,
                last_name=form.last_name.data,
                role=UserRole(form.role.data) if "role" in form else UserRole.USER,
                actor=actor(),
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
        "users/detail.html", user=user, history=history_for(user), data_form=UserDataForm(formdata=None)
    )


@bp.route("/users/<user_id>/edit", methods=["GET", "POST"])
def edit(user_id: str):
    user = get_user_or_404(user_id)
    ensure_can_manage(actor(), user)
    form = UserEditForm(obj=user)
    if not can_change_roles(actor()):
        del form.role  # only super admins see (and may send) the role
    if request.method == "GET":
        form.status.data, form.version.data = user.status.value, user.version
        if "role" in form:
            form.role.data = user.role.value
        return render_template("users/edit.html", user=user, form=form)
    if form.validate():
        try:
            changed = edit_user(user, form.changes(), expected_version=form.expected_version(), actor=actor())
            db.session.commit()
        except DuplicateEmail as error:
            db.session.rollback()
            form.email.errors.append(str(error))
        except NotAllowed as refused:
            db.session.rollback()
            role_changed = "role" in form and form.role.data != user.role.value
            (form.role if role_changed else form.status).errors.append(str(refused))
        except (EditConflict, StaleDataError):
            db.session.rollback()
            db.session.refresh(user)
            return render_template("users/edit.html", user=user, form=form, conflict=True), 409
        else:
            flash("Saved." if changed else "Nothing to save: no field changed.", "success")
            deliver_to_clerk()
            return redirect(url_for("users.detail", user_id=user.id))
    return render_template("users/edit.html", user=user, form=form), 422


@bp.get("/users/<user_id>/status")
def confirm_status(user_id: str):
    user = get_user_or_404(user_id)
    target = request.args.get("to", "")
    view = request.args.get("view", "detail")
    if target not in STATUS_VERBS:
        abort(400, description="Choose a status: suspended, active or inactive.")
    context = {"user": user, "target": target, "verb": STATUS_VERBS[target], "view": view, "form": StatusForm()}
    if wants_fragment():
        template = "users/_row_confirm.html" if view == "row" else "users/_status_confirm.html"
        return render_template(template, **context)
    return render_template("users/status_confirm.html", **context)


@bp.post("/users/<user_id>/status")
def change_status(user_id: str):
    user = get_user_or_404(user_id)
    form = StatusForm()
    if not form.validate():
        abort(400, description="Choose a status: suspended, active or inactive.")
    try:
        set_status(user, UserStatus(form.status.data), actor=actor())
    except UserError as error:
        abort(409, description=str(error))
    db.session.commit()
    report = deliver_to_clerk(announce=not wants_fragment())
    message = f"{user.email} is now {user.status.label}."
    if report.stopped:
        message += " Pending in Clerk."
    elif report.failed:
        message += f" Refused by Clerk: {report.errors[-1]}"
    if wants_fragment():
        view = request.form.get("view", "detail")
        template = "users/_row.html" if view == "row" else "users/_status_panel.html"
        return render_template(template, user=user, notice=message)
    flash(message, "success")
    return redirect(url_for("users.detail", user_id=user.id))


# --- invitations -----------------------------------------------------------------------------


INVITATION_ACTIONS = {
    "revoke": (revoke_invitation, "Revoked the invitation of {email}."),
    "resend": (resend_invitation, "Sent the invitation to {email} again."),
}


@bp.post("/users/<user_id>/invitation/<any(revoke, resend):action>")
def invitation(user_id: str, action: str):
    user = get_user_or_404(user_id)
    if not ClerkActionForm().validate():
        abort(400, description="The form has expired; reload the page and try again.")
    service, done = INVITATION_ACTIONS[action]
    try:
        service(user, actor=actor())
    except UserError as error:
        abort(409, description=str(error))
    db.session.commit()
    flash(done.format(email=user.email), "success")
    deliver_to_clerk()
    return redirect(url_for("users.detail", user_id=user.id))


# --- key-value data ------------------------------------------------------------------------


def render_data(user: User, form: UserDataForm | None = None, status: int = 200, notice: str | None = None):
    form = form or UserDataForm(formdata=None)
    if wants_fragment():
        return render_template("users/_data.html", user=user, data_form=form, notice=notice), status
    return render_template("users/detail.html", user=user, history=history_for(user), data_form=form), status


@bp.post("/users/<user_id>/data")
def add_data(user_id: str):
    user = get_user_or_404(user_id)
    form = UserDataForm()
    if form.validate():
        try:
            add_user_data(user, form.key.data, form.value.data, actor=actor())
            db.session.commit()
        except DuplicateKey as error:
            db.session.rollback()
            form.key.errors.append(str(error))
        else:
            if not wants_fragment():
                flash(f"Added {form.key.data}.", "success")
                return redirect(url_for("users.detail", user_id=user.id, _anchor="data"))
            return render_data(user, notice=f"Added {form.key.data}.")
    return render_data(user, form, 422)


@bp.get("/users/<user_id>/data/<data_id>/edit")
def edit_data(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    item = get_item_or_404(user, data_id)
    form = UserDataForm(obj=item)
    if wants_fragment():
        return render_template("users/_data_row_form.html", user=user, item=item, form=form)
    return render_template("users/data_edit.html", user=user, item=item, form=form)


@bp.post("/users/<user_id>/data/<data_id>")
def update_data(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    item = get_item_or_404(user, data_id)
    form = UserDataForm()
    if form.validate():
        try:
            update_user_data(item, form.key.data, form.value.data, actor=actor())
            db.session.commit()
        except DuplicateKey as error:
            db.session.rollback()
            form.key.errors.append(str(error))
        else:
            if wants_fragment():
                return render_template("users/_data_row.html", user=user, item=item)
            flash(f"Saved {item.key}.", "success")
            return redirect(url_for("users.detail", user_id=user.id, _anchor="data"))
    item = get_item_or_404(user, data_id)
    if wants_fragment():
        return render_template("users/_data_row_form.html", user=user, item=item, form=form), 422
    return render_template("users/data_edit.html", user=user, item=item, form=form), 422


@bp.post("/users/<user_id>/data/<data_id>/delete")
def delete_data(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    item = get_item_or_404(user, data_id)
    key = item.key
    delete_user_data(item, actor=actor())
    db.session.commit()
    if wants_fragment():
        return ""  # htmx removes the row
    flash(f"Deleted {key}.", "success")
    return redirect(url_for("users.detail", user_id=user.id, _anchor="data"))


# --- fragments for "Cancel" ----------------------------------------------------------------


@bp.get("/users/<user_id>/row")
def row(user_id: str):
    user = get_user_or_404(user_id)
    if not wants_fragment():
        return redirect(url_for("users.detail", user_id=user.id))
    # After a Cancel, focus returns to the button that asked (`focus` is its target status).
    return render_template("users/_row.html", user=user, focus=request.args.get("focus"))


@bp.get("/users/<user_id>/status-panel")
def status_panel(user_id: str):
    user = get_user_or_404(user_id)
    if not wants_fragment():
        return redirect(url_for("users.detail", user_id=user.id))
    return render_template("users/_status_panel.html", user=user, focus=request.args.get("focus"))


@bp.get("/users/<user_id>/data/<data_id>")
def data_row(user_id: str, data_id: str):
    user = get_user_or_404(user_id)
    item = get_item_or_404(user, data_id)
    if not wants_fragment():
        return redirect(url_for("users.detail", user_id=user.id, _anchor="data"))
    return render_template("users/_data_row.html", user=user, item=item)
