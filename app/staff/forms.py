"""The staff pages' forms: the services' rules (app/staff/services.py), shown by each field.

A group's name and description are checked by the same functions the services use, so the form
and `flask staff` refuse the same things with the same words."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from app.database import line_problem
from app.forms import VersionedForm
from app.models import StaffGroup
from app.permissions import CATALOGUE, PERMISSIONS
from app.staff.services import MAX_DESCRIPTION, MAX_NAME, StaffError, clean_description, clean_name

EMAIL_MAX = 320


def strip(value):
    return value.strip() if isinstance(value, str) else value


class GroupName:
    def __call__(self, form, field):
        try:
            clean_name(field.data or "")
        except StaffError as error:
            raise ValidationError(str(error)) from None


class GroupDescription:
    def __call__(self, form, field):
        try:
            clean_description(field.data or "")
        except StaffError as error:
            raise ValidationError(str(error)) from None


class GroupForm(FlaskForm):
    """A new group: its name (unique, one line) and what it is for."""

    name = StringField(
        "Name",
        filters=[strip],
        validators=[DataRequired("A group needs a name."), Length(max=MAX_NAME), GroupName()],
    )
    description = TextAreaField(
        "Description",
        filters=[strip],
        validators=[Length(max=MAX_DESCRIPTION), GroupDescription()],
    )


class GroupEditForm(GroupForm, VersionedForm):
    """A group's name and description (a built-in group keeps its name)."""

    def fill_from(self, group: StaffGroup) -> None:
        self.name.data, self.description.data = group.name, group.description
        self.version.data = group.version


class PermissionsField(SelectMultipleField):
    """The ticked boxes of the grid: names from the catalogue, anything else refused by name."""

    def pre_validate(self, form) -> None:
        unknown = [name for name in self.data or () if name not in PERMISSIONS]
        if unknown:
            shown = ", ".join(name if len(name) <= 60 else name[:59] + "…" for name in unknown[:3])
            raise ValidationError(f"No such permission: {shown}.")


class PermissionsForm(VersionedForm):
    """The grid: the permissions the group grants from now on (none ticked: it grants nothing)."""

    permissions = PermissionsField("Permissions", choices=[SelectChoice(p.name, p.name) for p in CATALOGUE])

    def fill_from(self, group: StaffGroup) -> None:
        self.permissions.data = group.permission_names
        self.version.data = group.version

    def ticked(self) -> set[str]:
        return set(self.permissions.data or ())


class PlainText:
    """One line of ordinary text: no control characters and no bidi overrides."""

    def __call__(self, form, field):
        if field.data and (problem := line_problem(field.data)):
            raise ValidationError(problem)


class MemberForm(FlaskForm):
    """Add a member by their email (an admin: super admins hold everything already)."""

    email = StringField(
        "Email",
        filters=[strip],
        validators=[DataRequired("Type the email of an admin."), Length(max=EMAIL_MAX), PlainText()],
    )


class StaffActionForm(FlaskForm):
    """Remove a member: a POST with a CSRF token and nothing else."""


class DeleteGroupForm(VersionedForm):
    """Delete a group: the version it was confirmed on, so a group changed meanwhile is not deleted unseen."""
