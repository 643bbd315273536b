"""Clerk payloads shaped like real deliveries, signed exactly as Svix signs them.

The user object has the key set of a real received `user.created` (docs/clerk.md): undocumented
keys (banned, locked, passkeys, has_image, ...) are present, documented `birthday`/`gender` are
not, and the envelope has no `instance_id`.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from svix.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"clerk-user-admin-test-signing-key").decode()
BASE_MS = 1_760_000_000_000  # Clerk timestamps are milliseconds since the epoch
_ids = itertools.count(1)


def clerk_id(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:27]}"


def email_address(address: str, *, at: int = BASE_MS, verified: bool = True) -> dict[str, Any]:
    return {
        "created_at": at,
        "email_address": address,
        "id": clerk_id("idn"),
        "linked_to": [],
        "matches_sso_connection": False,
        "object": "email_address",
        "reserved": False,
        "updated_at": at,
        "verification": {
            "attempts": 1,
            "expire_at": at + 600_000,
            "object": "verification_otp",
            "status": "verified" if verified else "unverified",
            "strategy": "email_code",
        },
    }


def clerk_user(
    *,
    id: str | None = None,
    email: str | None = None,
    first_name: str | None = "Ada",
    last_name: str | None = "Lovelace",
    username: str | None = None,
    updated_at: int | None = None,
    created_at: int = BASE_MS,
    last_sign_in_at: int | None = None,
    public_metadata: dict | None = None,
    private_metadata: dict | None = None,
    unsafe_metadata: dict | None = None,
    external_id: str | None = None,
    extra_emails: tuple[str, ...] = (),
    email_verified: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """A User object as Clerk puts it in `data` of user.created / user.updated."""
    n = next(_ids)
    primary = email_address(email or f"user{n}@example.com", at=created_at, verified=email_verified)
    others = [email_address(e, at=created_at) for e in extra_emails]
    user = {
        "backup_code_enabled": False,
        "banned": False,
        "create_organization_enabled": True,
        "created_at": created_at,
        "delete_self_enabled": True,
        # The primary address is deliberately not first: only its id says which one it is.
        "email_addresses": [*others, primary],
        "external_accounts": [],
        "external_id": external_id,
        "first_name": first_name,
        "has_image": False,
        "id": id or clerk_id(),
        "image_url": f"https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9{n}",
        "last_active_at": created_at,
        "last_name": last_name,
        "last_sign_in_at": last_sign_in_at,
        "legal_accepted_at": None,
        "locked": False,
        "lockout_expires_in_seconds": None,
        "mfa_disabled_at": None,
        "mfa_enabled_at": None,
        "object": "user",
        "passkeys": [],
        "password_enabled": True,
        "phone_numbers": [],
        "primary_email_address_id": primary["id"],
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "private_metadata": private_metadata if private_metadata is not None else {},
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "public_metadata": public_metadata if public_metadata is not None else {},
        "saml_accounts": [],
        "totp_enabled": False,
        "two_factor_enabled": False,
        "unsafe_metadata": unsafe_metadata if unsafe_metadata is not None else {},
        "updated_at": updated_at if updated_at is not None else created_at,
        "username": username,
        "verification_attempts_remaining": 100,
        "web3_wallets": [],
    }
    user.update(overrides)
    return user


def envelope(event_type: str, data: dict[str, Any], *, timestamp: int | None = None) -> dict[str, Any]:
    """The event around `data`, as really received: event_attributes, no instance_id."""
    return {
        "data": data,
        "event_attributes": {"http_request": {"client_ip": "", "user_agent": "clerk/clerk-sdk-go@v2.0.0"}},
        "object": "event",
        "timestamp": timestamp if timestamp is not None else data.get("updated_at", BASE_MS),
        "type": event_type,
    }


def user_created(user: dict[str, Any]) -> dict[str, Any]:
    return envelope("user.created", user)


def user_updated(user: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """user.updated with the changes applied and updated_at moved forward (unless given)."""
    data = {**user, **changes}
    if "updated_at" not in changes:
        data["updated_at"] = user["updated_at"] + 1_000
    return envelope("user.updated", data)


def user_deleted(user_id: str, *, timestamp: int = BASE_MS) -> dict[str, Any]:
    return envelope("user.deleted", {"deleted": True, "id": user_id, "object": "user"}, timestamp=timestamp)


def session_created(user_id: str, *, at: int, user: dict[str, Any] | None = None) -> dict[str, Any]:
    data = {
        "abandon_at": at + 30 * 86_400_000,
        "actor": None,
        "client_id": clerk_id("client"),
        "created_at": at,
        "expire_at": at + 7 * 86_400_000,
        "id": clerk_id("sess"),
        "last_active_at": at,
        "last_active_organization_id": None,
        "object": "session",
        "status": "active",
        "updated_at": at,
        "user_id": user_id,
    }
    if user is not None:
        data["user"] = user
    return envelope("session.created", data, timestamp=at)


# --- Organizations, memberships, invitations (docs/clerk.md §6: shaped as Clerk sends them) ---------


def clerk_organization(
    *,
    id: str | None = None,
    name: str = "Acme",
    slug: str | None = "acme",
    created_at: int = BASE_MS,
    updated_at: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """An Organization object as in `data` of organization.created / .updated (every field optional but id)."""
    organization = {
        "admin_delete_enabled": True,
        "created_at": created_at,
        "created_by": clerk_id(),
        "has_image": False,
        "id": id or clerk_id("org"),
        "image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9",
        "max_allowed_memberships": 5,
        "name": name,
        "object": "organization",
        "private_metadata": {},
        "public_metadata": {},
        "slug": slug,
        "updated_at": updated_at if updated_at is not None else created_at,
    }
    organization.update(overrides)
    return organization


def clerk_membership(
    organization: dict[str, Any],
    user_id: str,
    *,
    id: str | None = None,
    role: str = "org:member",
    identifier: str | None = None,
    created_at: int = BASE_MS,
    updated_at: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """An OrganizationMembership as in every organizationMembership.* event: the organization embedded,
    the member as public_user_data (no user object), permissions as role keys."""
    membership = {
        "created_at": created_at,
        "id": id or clerk_id("orgmem"),
        "object": "organization_membership",
        "organization": organization,
        "permissions": ["org:sys_memberships:read"] + (["org:sys_memberships:manage"] if role == "org:admin" else []),
        "public_metadata": {},
        "public_user_data": {
            "first_name": "Ada",
            "has_image": False,
            "identifier": identifier or f"{user_id}@example.com",
            "image_url": "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9",
            "last_name": "Lovelace",
            "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
            "user_id": user_id,
        },
        "role": role,
        "updated_at": updated_at if updated_at is not None else created_at,
    }
    membership.update(overrides)
    return membership


def clerk_org_invitation(
    organization: dict[str, Any],
    email: str,
    *,
    id: str | None = None,
    role: str = "org:member",
    status: str = "pending",
    created_at: int = BASE_MS,
    updated_at: int | None = None,
    expires_at: int | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """An OrganizationInvitation as in organizationInvitation.* events."""
    invitation = {
        "created_at": created_at,
        "email_address": email,
        "expires_at": expires_at if expires_at is not None else created_at + 30 * 86_400_000,
        "id": id or clerk_id("orginv"),
        "object": "organization_invitation",
        "organization_id": organization["id"],
        "private_metadata": {},
        "public_metadata": {},
        "public_organization_data": {
            "has_image": False,
            "id": organization["id"],
            "image_url": organization.get("image_url"),
            "name": organization.get("name"),
            "slug": organization.get("slug"),
        },
        "role": role,
        "role_name": "Member" if role == "org:member" else "Admin",
        "status": status,
        "updated_at": updated_at if updated_at is not None else created_at,
        "url": None,
    }
    invitation.update(overrides)
    return invitation


def organization_deleted(organization_id: str, *, timestamp: int = BASE_MS, slug: str | None = None) -> dict[str, Any]:
    data = {"deleted": True, "id": organization_id, "object": "organization"}
    if slug is not None:
        data["slug"] = slug
    return envelope("organization.deleted", data, timestamp=timestamp)


@dataclass(frozen=True)
class Signed:
    """One delivery: the exact bytes and the headers Svix would send with them."""

    body: bytes
    headers: dict[str, str]
    msg_id: str

    def post(self, client, **header_changes: str | None):
        headers = {**self.headers, **header_changes}
        headers = {k: v for k, v in headers.items() if v is not None}
        return client.post("/webhooks/clerk", data=self.body, headers=headers)


def sign(
    payload: dict[str, Any] | str,
    *,
    msg_id: str | None = None,
    secret: str = SECRET,
    at: int | None = None,
) -> Signed:
    """Sign as Svix does: the body as str, the timestamp an aware UTC datetime (seconds)."""
    # Compact, as Svix delivers Clerk's events; any re-serialisation would change the bytes.
    body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    msg_id = msg_id or f"msg_{uuid.uuid4().hex[:27]}"
    seconds = int(time.time()) if at is None else at
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(seconds, tz=UTC), body)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(seconds),
        "svix-signature": signature,
        "content-type": "application/json",
    }
    return Signed(body.encode("utf-8"), headers, msg_id)


# Clerk's documented example (Dashboard catalog): it has instance_id, birthday and gender, and
# lacks most of what real deliveries carry. Both shapes must work.
DOCS_EXAMPLE_USER_CREATED = """{"data": {"birthday": "", "created_at": 1654012591514, "email_addresses": [{
"email_address": "example@example.org", "id": "idn_29w83yL7CwVlJXylYLxcslromF1", "linked_to": [],
"object": "email_address", "verification": {"status": "verified", "strategy": "ticket"}}],
"external_accounts": [], "external_id": "567772", "first_name": "Example", "gender": "",
"id": "user_29w83sxmDNGwOuEthce5gg56FcC", "image_url": "https://img.clerk.com/xxxxxx",
"last_name": "Example", "last_sign_in_at": 1654012591514, "object": "user", "password_enabled": true,
"phone_numbers": [], "primary_email_address_id": "idn_29w83yL7CwVlJXylYLxcslromF1",
"primary_phone_number_id": null, "primary_web3_wallet_id": null, "private_metadata": {},
"profile_image_url": "https://www.gravatar.com/avatar?d=mp", "public_metadata": {},
"two_factor_enabled": false, "unsafe_metadata": {}, "updated_at": 1654012591835, "username": null,
"web3_wallets": []}, "instance_id": "ins_123", "object": "event", "timestamp": 1654012591835,
"type": "user.created"}"""
