"""Forms for the users pages: the seed's rules, shown by each field."""

from __future__ import annotations

import json

from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import URL, DataRequired, Email, Length, Optional, Regexp, ValidationError

from app.models import UserRole, UserStatus

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
ROLE_CHOICES = [SelectChoice(r.value, r.label) for r in UserRole]
STATUS_CHOICES = [SelectChoice(s.value, s.label) for s in UserStatus]
SETTABLE_STATUS_CHOICES = [
    SelectChoice(s.value, s.label) for s in (UserStatus.ACTIVE, UserStatus.INACTIVE, UserStatus.SUSPENDED)
]
BULK_ACTIONS = {"suspended": "Suspend", "active": "Reactivate", "inactive": "Mark inactive"}


def strip(value):
    return value.strip() if isinstance(value, str) else value


def blank_to_none(value):
    value = strip(value)
    return value or None


class JSONObject:
    """Metadata is stored as JSON text: accept an object, or nothing."""

    def __call__(self, form, field):
        if not field.data:
            return
        try:
            parsed = json.loads(field.data)
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}.") from exc
        if not isinstance(parsed, dict):
            raise ValidationError("Must be a JSON object, like {\"plan\": \"pro\"}.")


def email_field(label: str = "Email") -> StringField:
    return StringField(
        label,
        filters=[strip],
        validators=[DataRequired("Email is required."), Email("Enter a valid email address."), Length(max=320)],
    )


def name_field(label: str) -> StringField:
    return StringField(
        label,
        filters=[blank_to_none],
        validators=[Optional(), Length(min=2, max=100, message="Must be between 2 and 100 characters.")],
    )


class InviteForm(FlaskForm):
    email = email_field()
    first_name = name_field("First name")
    last_name = name_field("Last name")
    role = SelectField("Role", choices=ROLE_CHOICES, default=UserRole.USER.value)


class UserEditForm(FlaskForm):
    """Field names are the column names."""

    email = email_field()
    first_name = name_field("First name")
    last_name = name_field("Last name")
    username = StringField("Username", filters=[blank_to_none], validators=[Optional(), Length(max=64)])
    role = SelectField("Role", choices=ROLE_CHOICES)
    status = SelectField("Status", choices=STATUS_CHOICES)
    image_url = StringField(
        "Image URL", filters=[blank_to_none],
        validators=[Optional(), URL(message="Enter a full URL, like https://…"), Length(max=2000)],
    )
    external_id = StringField("External id", filters=[blank_to_none], validators=[Optional(), Length(max=255)])
    public_metadata = TextAreaField("Public metadata", filters=[blank_to_none], validators=[Optional(), JSONObject()])
    private_metadata = TextAreaField("Private metadata", filters=[blank_to_none], validators=[Optional(), JSONObject()])
    unsafe_metadata = TextAreaField("Unsafe metadata", filters=[blank_to_none], validators=[Optional(), JSONObject()])
    version = HiddenField()

    FIELDS = (
        "email", "first_name", "last_name", "username", "role", "status", "image_url", "external_id",
        "public_metadata", "private_metadata", "unsafe_metadata",
    )

    def changes(self) -> dict:
        data = {name: self[name].data for name in self.FIELDS if name in self}
        if "role" in data:
            data["role"] = UserRole(data["role"])
        data["status"] = UserStatus(data["status"])
        return data

    def expected_version(self) -> int | None:
        try:
            return int(self.version.data)
        except (TypeError, ValueError):
            return None


class StatusForm(FlaskForm):
    status = SelectField("Status", choices=SETTABLE_STATUS_CHOICES)


class UserDataForm(FlaskForm):
    key = StringField(
        "Key",
        filters=[strip],
        validators=[
            DataRequired("Key is required."),
            Length(max=255, message="At most 255 characters."),
            Regexp(KEY_PATTERN, message="Letters, digits and _ . : - only, starting with a letter or digit."),
        ],
    )
    value = TextAreaField(
        "Value",
        validators=[DataRequired("Value is required."), Length(max=10_000, message="At most 10,000 characters.")],
    )


class BulkForm(FlaskForm):
    action = SelectField(
        "With the selected users",
        choices=[SelectChoice(value, label) for value, label in BULK_ACTIONS.items()],
    )
