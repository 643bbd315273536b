"""Forms for the organization pages: the services' rules (app/organizations/services.py), shown by
each field. Roles are a choice among CLERK_ORGANIZATION_ROLES (and a member's current role)."""

from __future__ import annotations

import sqlalchemy as sa
from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length, StopValidation, ValidationError

from app.database import line_problem
from app.extensions import db
from app.forms import VersionedForm
from app.models import User
from app.organizations.services import (
    EMAIL_MAX,
    name_problem,
    role_label,
    roles_for,
    slug_problem,
)
from app.records.users import find_live_user_by_email, normalise_email


def strip(value):
    return value.strip() if isinstance(value, str) else value


class PlainText:
    """One line of ordinary text: no control characters (newlines, tabs, NUL) and no bidi overrides."""

    def __call__(self, form, field):
        if field.data and (problem := line_problem(field.data)):
            raise ValidationError(problem)


class OrganizationName:
    def __call__(self, form, field):
        if problem := name_problem(field.data or ""):
            raise ValidationError(problem)


class Slug:
    def __call__(self, form, field):
        if field.data and (problem := slug_problem(field.data)):
            raise ValidationError(problem)


class NormalisedEmail:
    """Store one spelling per address: an IDNA domain in Unicode, lower case (user@bücher.de)."""

    def __call__(self, form, field):
        if field.data and not field.errors:
            field.data = normalise_email(field.data)


def role_choices(current: str | None = None) -> list[SelectChoice]:
    return [SelectChoice(role, role_label(role)) for role in roles_for(current)]


def default_role() -> str | None:
    """What the add and invite forms preselect: the plain member role when offered."""
    roles = roles_for()
    return "org:member" if "org:member" in roles else (roles[-1] if roles else None)


class RoleField(SelectField):
    """A role among the form's choices; anything else is refused by name, with what may be given."""

    def pre_validate(self, form) -> None:
        offered = [(str(value), str(label)) for value, label, *_ in self.iter_choices()]
        if not any(value == self.data for value, _ in offered):
            names = ", ".join(label for _, label in offered)
            raise ValidationError(f"Not a role that may be given here; choose one of: {names}.")


def role_field() -> SelectField:
    # The choices are the app's (set when the form is made, in a request or app context).
    return RoleField("Role", choices=[], validate_choice=True)


class OrganizationEditForm(VersionedForm):
    """Rename: the name (2 to 256 characters) and the slug (Clerk's rule)."""

    name = StringField("Name", filters=[strip], validators=[OrganizationName()])
    slug = StringField("Slug", filters=[strip], validators=[Slug()])

    def fill_from(self, organization) -> None:
        self.name.data, self.slug.data = organization.name, organization.slug
        self.version.data = organization.version

    def slug_value(self) -> str | None:
        return self.slug.data or None


class AddMemberForm(FlaskForm):
    """`user` is a user's id or email (typed, or picked from a search); `member` is that user once valid."""

    user = StringField(
        "User",
        filters=[strip],
        validators=[DataRequired("Choose a user: their email or id."), Length(max=EMAIL_MAX), PlainText()],
    )
    role = role_field()

    member: User | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.role.choices = role_choices()
        if self.role.raw_data is None and self.role.data is None:  # opened, not posted: preselect
            self.role.data = default_role()

    def validate_user(self, field) -> None:
        if field.errors:  # too long, or characters no id or email holds: nothing to look up
            raise StopValidation()
        self.member = find_member(field.data)
        if self.member is None:
            shown = field.data if len(field.data) <= 80 else field.data[:79] + "…"
            raise ValidationError(f"No user has the id or email {shown!r}.")


def find_member(text: str) -> User | None:
    """The user an admin named: by our id, by Clerk id, else the live user with that email."""
    text = (text or "").strip()
    if not text:
        return None
    by_id = db.session.scalars(sa.select(User).where(sa.or_(User.id == text, User.clerk_id == text)).limit(1)).first()
    if by_id is not None:
        return by_id
    if "@" in text:
        return find_live_user_by_email(text)
    return None


class MemberRoleForm(VersionedForm):
    """A member's role: the configured roles, and the one they hold (a custom role Clerk gave them)."""

    role = role_field()

    def __init__(self, *args, current_role: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.role.choices = role_choices(current_role)
        if self.role.raw_data is None and self.role.data is None:  # opened, not posted: their role
            self.role.data = current_role


class OrganizationInviteForm(FlaskForm):
    email = StringField(
        "Email",
        filters=[strip],
        validators=[
            DataRequired("Email is required."),
            Email("Enter a valid email address."),
            Length(max=EMAIL_MAX),
            PlainText(),
            NormalisedEmail(),
        ],
    )
    role = role_field()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.role.choices = role_choices()
        if self.role.raw_data is None and self.role.data is None:  # opened, not posted: preselect
            self.role.data = default_role()


class DeleteOrganizationForm(FlaskForm):
    """Deleting asks for the organization's slug (its name, when it has none), typed."""

    # No length rule: ensure_form_accepted would answer any refusal as an expired form; the service
    # compares whatever was typed and says what to type.
    confirm = StringField("Type the organization's slug to confirm", filters=[strip])
