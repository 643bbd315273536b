"""The one way to build a Clerk Backend API client.

The SDK's default retry policy keeps retrying 5xx answers and refused connections for an hour;
here retries are bounded (30 s in all unless CLERK_API_RETRY_MAX_MS says otherwise; 0 turns
them off) and every call has a timeout.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final
from urllib.parse import urlsplit

from clerk_backend_api import Clerk
from clerk_backend_api.utils import BackoffStrategy, RetryConfig
from flask import current_app

DEFAULT_TIMEOUT_MS: Final = 10_000
DEFAULT_RETRY_MAX_MS: Final = 30_000
_FROM_CONFIG: Final = object()


class ClerkNotConfigured(RuntimeError):
    """CLERK_SECRET_KEY is missing; the message tells the operator what to set."""


def clerk_connected() -> bool:
    """Whether dashboard actions reach Clerk: only with a secret key (DESIGN §8)."""
    return bool(current_app.config.get("CLERK_SECRET_KEY"))


def api_server_url(url: str) -> str:
    """The SDK wants the version in the URL: `https://api.clerk.com` becomes `.../v1`."""
    url = url.rstrip("/")
    return url if urlsplit(url).path not in ("", "/") else f"{url}/v1"


def bounded_retry(max_elapsed_ms: int) -> RetryConfig | None:
    """Exponential backoff on 5xx and connection errors, giving up after `max_elapsed_ms`."""
    if max_elapsed_ms <= 0:
        return None
    return RetryConfig(
        "backoff",
        BackoffStrategy(initial_interval=500, max_interval=5_000, exponent=2.0, max_elapsed_time=max_elapsed_ms),
        retry_connection_errors=True,
    )


def clerk_client(
    *,
    secret_key: str | None = None,
    api_url: str | None = None,
    retry_config: RetryConfig | object | None = _FROM_CONFIG,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> Clerk:
    """A client for CLERK_API_URL with CLERK_SECRET_KEY; use it as `with clerk_client() as clerk:`.

    `retry_config=None` turns retries off (for callers with their own backoff, like an outbox).
    """
    secret_key = secret_key or current_app.config.get("CLERK_SECRET_KEY")
    if not secret_key:
        raise ClerkNotConfigured("CLERK_SECRET_KEY is not set: calls to Clerk's API need a secret key (sk_...)")
    if retry_config is _FROM_CONFIG:
        retry_config = bounded_retry(int(current_app.config.get("CLERK_API_RETRY_MAX_MS", DEFAULT_RETRY_MAX_MS)))
    return Clerk(
        bearer_auth=secret_key,
        server_url=api_server_url(api_url or current_app.config["CLERK_API_URL"]),
        retry_config=retry_config,  # type: ignore[arg-type]  # narrowed above: a RetryConfig or None
        timeout_ms=timeout_ms,
    )


@contextmanager
def quiet_sdk_deprecations() -> Iterator[None]:
    """Around SDK calls: the SDK reads its own deprecated request fields while building requests."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*\*\* DEPRECATED \*\*", category=DeprecationWarning)
        yield
