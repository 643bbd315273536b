"""Forms for the users pages: the seed's rules, shown by each field."""

from __future__ import annotations

import json
import unicodedata

from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeSerializer
from wtforms import BooleanField, HiddenField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import URL, DataRequired, Email, Length, Optional, Regexp, ValidationError

from app.models import STATUS_VERBS, UserRole, UserStatus
from app.records.users import normalise_email

KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"
ROLE_CHOICES = [SelectChoice(r.value, r.label) for r in UserRole]
STATUS_CHOICES = [SelectChoice(s.value, s.label) for s in UserStatus]
SETTABLE_STATUS_CHOICES = [
    SelectChoice(s.value, s.label) for s in (UserStatus.ACTIVE, UserStatus.INACTIVE, UserStatus.SUSPENDED)
]


def strip(value):
    return value.strip() if isinstance(value, str) else value


def blank_to_none(value):
    value = strip(value)
    return value or None


MAX_METADATA_BYTES = 8 * 1024
# Characters that reorder or hide text (Trojan Source): "abc\u202edef" would show as "abcfed".
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not standard JSON")


class JSONObject:
    """Metadata is stored as JSON text: a standard JSON object of at most 8 KiB, or nothing."""

    def __call__(self, form, field):
        if not field.data:
            return
        size = len(field.data.encode("utf-8", "surrogatepass"))
        if size > MAX_METADATA_BYTES:
            raise ValidationError(f"At most 8 KiB of JSON ({size:,} bytes given).")
        try:
            parsed = json.loads(field.data, parse_constant=_refuse_constant)
        except RecursionError as exc:
            raise ValidationError("Nested too deeply.") from exc
        except ValueError as exc:
            raise ValidationError(f"Not valid JSON: {exc}.") from exc
        if not isinstance(parsed, dict):
            raise ValidationError('Must be a JSON object, like {"plan": "pro"}.')


class PlainText:
    """One line of ordinary text: no control characters (newlines, tabs, NUL) and no bidi overrides."""

    def __call__(self, form, field):
        if not field.data:
            return
        for char in field.data:
            if char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
                raise ValidationError(
                    f"Must not contain control or text-direction characters (found U+{ord(char):04X})."
                )


class NormalisedEmail:
    """Store one spelling per address: an IDNA domain in Unicode, lower case (user@bücher.de)."""

    def __call__(self, form, field):
        if field.data and not field.errors:
            field.data = normalise_email(field.data)


def email_field(label: str = "Email") -> StringField:
    return StringField(
        label,
        filters=[strip],
        validators=[
            DataRequired("Email is required."),
            Email("Enter a valid email address."),
            Length(max=320),
            PlainText(),
            NormalisedEmail(),
        ],
    )


def name_field(label: str) -> StringField:
    return StringField(
        label,
        filters=[blank_to_none],
        validators=[Optional(), Length(min=2, max=100, message="Must be between 2 and 100 characters."), PlainText()],
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
    username = StringField("Username", filters=[blank_to_none], validators=[Optional(), Length(max=64), PlainText()])
    role = SelectField("Role", choices=ROLE_CHOICES)
    status = SelectField("Status", choices=STATUS_CHOICES)
    image_url = StringField(
        "Image URL",
        filters=[blank_to_none],
        validators=[Optional(), URL(message="Enter a full URL, like https://…"), Length(max=2000)],
    )
    external_id = StringField(
        "External id", filters=[blank_to_none], validators=[Optional(), Length(max=255), PlainText()]
    )
    public_metadata = TextAreaField("Public metadata", filters=[blank_to_none], validators=[Optional(), JSONObject()])
    private_metadata = TextAreaField("Private metadata", filters=[blank_to_none], validators=[Optional(), JSONObject()])
    unsafe_metadata = TextAreaField("Unsafe metadata", filters=[blank_to_none], validators=[Optional(), JSONObject()])
    version = HiddenField()
    # The values as the form was opened, signed: what this admin changed is what differs from them.
    original = HiddenField()

    FIELDS = (
        "email",
        "first_name",
        "last_name",
        "username",
        "role",
        "status",
        "image_url",
        "external_id",
        "public_metadata",
        "private_metadata",
        "unsafe_metadata",
    )
    ORIGINAL_SALT = "user-edit-original"

    @classmethod
    def values_of(cls, user) -> dict:
        """A user's values as this form holds them (text, or None)."""
        values = {name: getattr(user, name) for name in cls.FIELDS}
        values["role"], values["status"] = user.role.value, user.status.value
        return values

    def fill_from(self, user, *, secret_key: str, keep: frozenset[str] = frozenset()) -> None:
        """Show the user's current values (except the fields in `keep`) and remember them as the original."""
        values = self.values_of(user)
        for name in self.FIELDS:
            if name in self and name not in keep:
                self[name].data = values[name]
        self.version.data = user.version
        self.original.data = URLSafeSerializer(secret_key, salt=self.ORIGINAL_SALT).dumps(values)

    def opened_values(self, user, *, secret_key: str) -> dict | None:
        """The values the admin saw when the form was opened, or None when the form did not say."""
        try:
            values = URLSafeSerializer(secret_key, salt=self.ORIGINAL_SALT).loads(self.original.data or "")
        except BadSignature:
            return None
        return values if isinstance(values, dict) and set(values) == set(self.FIELDS) else None

    def changed_fields(self, original: dict) -> set[str]:
        return {
            name
            for name in self.FIELDS
            if name in self and blank_to_none(original.get(name)) != blank_to_none(self[name].data)
        }

    def validate_changed(self, original: dict) -> set[str] | None:
        """The names this admin changed when each passes its rules, else None (errors by the fields).

        The rules bind what this admin changed: a value as Clerk sent it (a one-letter name) stays.
        """
        changed = self.changed_fields(original)  # before validation, which normalises the email
        self.validate()
        for name in self.FIELDS:
            if name in self and name not in changed:
                self[name].errors = []
        return None if self.errors else changed

    def changes(self, names=None) -> dict:
        names = self.FIELDS if names is None else names
        data = {name: self[name].data for name in self.FIELDS if name in self and name in names}
        if "role" in data:
            data["role"] = UserRole(data["role"])
        if "status" in data:
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
    version = HiddenField()

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

    def expected_version(self) -> int | None:
        try:
            return int(self.version.data)
        except (TypeError, ValueError, OverflowError):
            return None


class BulkForm(FlaskForm):
    # Nothing is preselected: Enter on a ticked box must not suspend anyone.
    action = SelectField(
        "With the selected users",
        choices=[
            SelectChoice("", "Choose an action…"),
            *(SelectChoice(value, label) for value, label in STATUS_VERBS.items()),
        ],
        validators=[DataRequired("Choose an action.")],
        default="",
    )
    confirm = BooleanField("Confirmed")
