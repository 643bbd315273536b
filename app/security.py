"""Security headers on every response, and no caching of anything but static files."""

from __future__ import annotations

from flask import Flask, Response, request

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: https:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ]
)


def clerk_sign_in_policy(frontend_api: str) -> str:
    """The sign-in page runs ClerkJS from the instance's Frontend API; only that page may."""
    fapi = f"https://{frontend_api}"
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' {fapi} https://challenges.cloudflare.com",
            # ClerkJS styles its components with injected <style> elements.
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: https://img.clerk.com",
            f"connect-src 'self' {fapi}",
            "frame-src https://challenges.cloudflare.com",
            "worker-src 'self' blob:",
            "form-action 'self'",
            "base-uri 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
        ]
    )


def init_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.endpoint != "static":
            # Pages, fragments, exports and error pages show user data: no copy in any cache.
            response.headers["Cache-Control"] = "no-store"
        return response
