"""Live reads from Clerk for a page: a user's active sessions, asked with a short timeout.

What is not kept in our database is asked of Clerk when a page needs it; a slow, down or
unconnected Clerk gives a sentence to show instead, never a slow page or an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import httpx
from clerk_backend_api import models

from app.clerk.client import clerk_client, clerk_connected, quiet_sdk_deprecations
from app.clerk.outbox.delivery import clerk_message
from app.clerk.sync import EPOCH, ms_to_datetime
from app.models import User

LIVE_TIMEOUT_MS: Final = 1_500
MAX_SESSIONS: Final = 50


@dataclass(frozen=True)
class SessionInfo:
    id: str
    device: str  # "Chrome on desktop, Berlin DE, 203.0.113.7" or "" when Clerk gives nothing
    last_active_at: datetime | None
    created_at: datetime | None


@dataclass
class SessionsAnswer:
    sessions: list[SessionInfo] = field(default_factory=list)
    unavailable: str | None = None  # why Clerk could not be asked, in a sentence


def _device(session: models.Session) -> str:
    activity = session.latest_activity
    if not isinstance(activity, models.SessionActivityResponse):
        return ""
    browser = " ".join(p for p in (activity.browser_name, activity.browser_version) if p)
    kind = activity.device_type or ("mobile" if activity.is_mobile else "")
    place = " ".join(p for p in (activity.city, activity.country) if p)
    what = " on ".join(p for p in (browser, kind) if p)
    return ", ".join(p for p in (what, place, activity.ip_address) if p)


def active_sessions(user: User, *, timeout_ms: int = LIVE_TIMEOUT_MS) -> SessionsAnswer:
    """The user's active Clerk sessions, newest activity first, or why they cannot be shown."""
    if not clerk_connected():
        return SessionsAnswer(unavailable="Clerk is not connected (CLERK_SECRET_KEY is not set).")
    if user.waits_for_clerk_user or user.deleted_at is not None:
        return SessionsAnswer(unavailable="This user has no account in Clerk.")
    try:
        with clerk_client(retry_config=None, timeout_ms=timeout_ms) as clerk, quiet_sdk_deprecations():
            found = clerk.sessions.list(
                user_id=user.clerk_id,
                status=models.QueryParamStatus.ACTIVE,
                limit=MAX_SESSIONS,
                timeout_ms=timeout_ms,
            )
    except models.ClerkBaseError as error:
        return SessionsAnswer(unavailable=f"{clerk_message(error)}.")
    except httpx.TimeoutException:
        return SessionsAnswer(unavailable=f"Clerk did not answer within {timeout_ms / 1000:g} s.")
    except (httpx.HTTPError, models.NoResponseError) as error:
        return SessionsAnswer(unavailable=f"Clerk is unreachable ({type(error).__name__}).")
    sessions = [
        SessionInfo(s.id, _device(s), ms_to_datetime(s.last_active_at), ms_to_datetime(s.created_at))
        for s in found or []
    ]
    sessions.sort(key=lambda s: s.last_active_at or EPOCH, reverse=True)
    return SessionsAnswer(sessions)
