"""Forms for the users pages: the seed's rules, shown by each field."""

from __future__ import annotations

import json
import math
from typing import Any

from flask_wtf import FlaskForm
from itsdangerous import BadSignature, URLSafeSerializer
from wtforms import BooleanField, HiddenField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp, ValidationError

from app.database import line_problem, text_problem
from app.models import STATUS_VERBS, UserRole, UserStatus
from app.records.users import normalise_email
from app.users.services import MAX_METADATA_BYTES, metadata_size

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


# Characters that reorder or hide text (Trojan Source): "abc\u202edef" would show as "abcfed".


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not standard JSON")


class JSONObject:
    """Metadata in the edit form: what the metadata editor takes (`parse_metadata`), or nothing."""

    def __call__(self, form, field):
        if not field.data:
            return
        try:
            parse_metadata(field.data)
        except MetadataRefused as refused:
            raise ValidationError(str(refused)) from refused


class PlainText:
    """One line of ordinary text: no control characters (newlines, tabs, NUL) and no bidi overrides."""

    def __call__(self, form, field):
        problem = line_problem(field.data) if field.data else None
        if problem:
            raise ValidationError(problem)


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


# --- metadata ------------------------------------------------------------------------------------

MAX_METADATA_DEPTH = 32
# Pretty-printed text is larger than its compact form: beyond this, it cannot fit in 8 KiB.
MAX_METADATA_TEXT = 16 * MAX_METADATA_BYTES
JSON_KINDS = {list: "an array", str: "a string", bool: "true or false", int: "a number", float: "a number"}


class MetadataRefused(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MetadataRefused(f"{text[:20]} is too large a number for JSON")
    return value


def _check_tree(value: Any) -> None:
    """Standard JSON only: nesting of at most 32 levels, and text a database can store."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list) and depth > MAX_METADATA_DEPTH:
            raise MetadataRefused(f"Nested more than {MAX_METADATA_DEPTH} levels deep.")
        if isinstance(node, dict):
            for key, item in node.items():
                if problem := text_problem(key):
                    raise MetadataRefused(f"A key {problem}.")
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str) and (problem := text_problem(node)):
            raise MetadataRefused(f"A value {problem}.")


def parse_metadata(text: str) -> dict:
    """A standard JSON object of at most 8 KiB once serialised, or MetadataRefused saying why."""
    if len(text) > MAX_METADATA_TEXT:
        raise MetadataRefused(f"At most {MAX_METADATA_BYTES // 1024} KiB of JSON (Clerk's limit).")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError as exc:
        raise MetadataRefused(f"Nested more than {MAX_METADATA_DEPTH} levels deep.") from exc
    except MetadataRefused:
        raise
    except ValueError as exc:  # invalid JSON, NaN or Infinity, a number of thousands of digits
        raise MetadataRefused(f"Not valid JSON: {exc}.") from exc
    if not isinstance(value, dict):
        given = "null" if value is None else JSON_KINDS.get(type(value), "something else")
        raise MetadataRefused(f'Metadata must be a JSON object, like {{"plan": "pro"}}; {given} was given.')
    _check_tree(value)
    size = metadata_size(value)
    if size > MAX_METADATA_BYTES:
        raise MetadataRefused(
            f"At most {MAX_METADATA_BYTES // 1024} KiB once serialised (Clerk's limit); this is {size:,} bytes."
        )
    return value


class StrictJSONObject:
    """The metadata editor's rule: `parse_metadata`; the parsed object is kept on the form."""

    def __call__(self, form, field):
        try:
            form.parsed = parse_metadata(field.data or "")
        except MetadataRefused as refused:
            raise ValidationError(str(refused)) from refused


# What `expected()` gives for an `original` the form cannot read: never equal to a stored text
# (no database holds a NUL), so saving is a conflict rather than a blind overwrite.
UNREADABLE_ORIGINAL = "\x00unreadable"


class MetadataForm(FlaskForm):
    """One metadata object, as JSON; `original` is the stored text when the form was opened."""

    value = TextAreaField("JSON object", validators=[StrictJSONObject()])
    # As a JSON string literal: browsers rewrite the line breaks of what they send, and the
    # conflict check compares the stored text exactly.
    original = HiddenField()

    parsed: dict | None = None

    def remember(self, stored: str | None) -> None:
        self.original.data = json.dumps(stored or "")

    def expected(self) -> str | None:
        """The stored text the admin started from (None when the form did not say: no check)."""
        if self.original.data is None:
            return None
        try:
            value = json.loads(self.original.data)
        except (ValueError, RecursionError):
            return UNREADABLE_ORIGINAL
        return value if isinstance(value, str) else UNREADABLE_ORIGINAL


class DeleteForm(FlaskForm):
    confirm = StringField("Type the user's email to confirm", filters=[strip])
