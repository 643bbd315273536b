"""Reading Clerk users into our columns: webhook `data` and the SDK's models agree; odd input is safe."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from clerk_backend_api import models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.clerk.sync import MalformedClerkData, clerk_user_from_dict, ms, ms_to_datetime, primary_email
from app.webhooks.services import parse_event
from tests.clerk_payloads import BASE_MS, clerk_user
from tests.fake_clerk import bapi_user


def test_an_sdk_user_and_a_webhook_user_give_the_same_columns():
    raw = bapi_user(
        email="same@example.com",
        username="same",
        external_id="ext-1",
        last_sign_in_at=BASE_MS + 1,
        public_metadata={"b": 1, "a": [1, 2]},
    )
    sdk_user = models.User.model_validate(raw)

    from_sdk = clerk_user_from_dict(sdk_user.model_dump(mode="python", by_alias=True))
    from_webhook = clerk_user_from_dict(raw)

    assert from_sdk == from_webhook
    assert from_webhook.fields["public_metadata"] == '{"a": [1, 2], "b": 1}'
    assert from_webhook.fields["email"] == "same@example.com"
    assert from_webhook.updated_at == raw["updated_at"]
    assert "role" not in from_webhook.fields and "status" not in from_webhook.fields
    assert from_webhook.email_verified is True


def test_an_sdk_user_and_a_webhook_user_agree_on_an_unverified_email():
    raw = bapi_user(email="unsure@example.com", email_verified=False, extra_emails=("other@example.com",))
    from_sdk = clerk_user_from_dict(models.User.model_validate(raw).model_dump(mode="python", by_alias=True))
    from_webhook = clerk_user_from_dict(raw)
    assert from_sdk == from_webhook
    assert (from_webhook.email, from_webhook.email_verified) == ("unsure@example.com", False)


@pytest.mark.parametrize(
    ("verification", "verified"),
    [
        ({"status": "verified"}, True),
        ({"status": "unverified"}, False),
        ({"status": "expired"}, False),
        (None, False),
        ({}, False),
        ("verified", False),
        ({"status": ["verified"]}, False),
    ],
)
def test_only_a_verified_status_on_the_primary_entry_counts(verification, verified):
    data = {
        "id": "user_1",
        "primary_email_address_id": "b",
        "email_addresses": [
            {"id": "a", "email_address": "a@x.io", "verification": {"status": "verified"}},
            {"id": "b", "email_address": "b@x.io", "verification": verification},
        ],
    }
    assert clerk_user_from_dict(data).email_verified is verified


def test_only_the_keys_a_payload_carries_become_changes():
    parsed = clerk_user_from_dict({"id": "user_1", "first_name": "Only"})
    assert parsed.fields == {"first_name": "Only"}
    assert parsed.updated_at is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {
                "primary_email_address_id": "b",
                "email_addresses": [{"id": "a", "email_address": "a@x.io"}, {"id": "b", "email_address": "b@x.io"}],
            },
            "b@x.io",
        ),
        ({"primary_email_address_id": "gone", "email_addresses": [{"id": "a", "email_address": "a@x.io"}]}, "a@x.io"),
        ({"primary_email_address_id": None, "email_addresses": []}, ""),
        ({"email_addresses": "not a list"}, ""),
        ({"email_addresses": [{"id": "a"}, {"id": "b", "email_address": None}]}, ""),
    ],
)
def test_the_primary_email_is_chosen_by_id(data, expected):
    assert primary_email(data) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1654012591514, 1654012591514),
        (1.5e12, 1_500_000_000_000),
        (0, 0),
        (-1, None),
        (True, None),
        ("1654012591514", None),
        (None, None),
        (float("nan"), None),
        (float("inf"), None),
        (10**20, None),
    ],
)
def test_milliseconds_are_read_strictly(value, expected):
    assert ms(value) == expected


def test_milliseconds_become_exact_utc_datetimes():
    assert ms_to_datetime(1654012591514) == datetime(2022, 5, 31, 15, 56, 31, 514000, tzinfo=UTC)


@pytest.mark.parametrize("data", [None, [], "user_1", {"id": ""}, {"id": "  "}, {"id": None}, {"first_name": "x"}])
def test_a_user_without_an_id_is_malformed(data):
    with pytest.raises(MalformedClerkData):
        clerk_user_from_dict(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
user_keys = st.sampled_from([*sorted(clerk_user()), "birthday", "gender", "whatever"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_type=st.sampled_from(["user.created", "user.updated", "user.deleted", "session.created", "x"]),
    data=st.dictionaries(user_keys, json_values, max_size=10) | json_values,
)
def test_any_json_is_either_an_event_or_malformed_never_a_crash(event_type, data):
    try:
        event = parse_event({"type": event_type, "data": data})
        parsed = clerk_user_from_dict(event.data)
    except MalformedClerkData:
        return
    for value in parsed.fields.values():
        assert value is None or isinstance(value, (str, datetime, bool))  # bool: locked
        if isinstance(value, str):
            value.encode("utf-8")  # storable: no lone surrogates
            assert "\x00" not in value
    for name in ("public_metadata", "private_metadata", "unsafe_metadata"):
        if parsed.fields.get(name) is not None:
            json.loads(parsed.fields[name])
