"""The outbox of calls to Clerk's Backend API (DESIGN §8; docs/clerk-outbound.md), by job:

- `enqueue`: add a call in the caller's transaction, supersede older ones, Retry (never commits);
- `delivery`: the worker that sends calls and commits each outcome;
- `queries`: what the pages read (the /clerk page, "pending in Clerk", the overview's health).

This module holds what the three share: the operations and which rows wait for a Clerk user.
"""

from __future__ import annotations

from typing import Final

from app.models import User

BAN, UNBAN, METADATA = "ban", "unban", "update_metadata"
CREATE_INVITATION, REVOKE_INVITATION = "create_invitation", "revoke_invitation"
OPERATIONS: Final = (BAN, UNBAN, METADATA, CREATE_INVITATION, REVOKE_INVITATION)
# session.info: the users whose calls this transaction enqueued, for delivery after the request.
TOUCHED: Final = "clerk_outbox_touched_users"


def is_clerk_user(user: User) -> bool:
    """Whether the row is a user in Clerk (invited rows hold `local_...` or `inv_...`)."""
    return not user.waits_for_clerk_user and user.deleted_at is None


def waits_for_clerk_user(user: User) -> bool:
    return user.waits_for_clerk_user
