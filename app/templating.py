"""Jinja filters and globals shared by every template."""

from __future__ import annotations

import json
from datetime import datetime

from flask import Flask

from app.models import UserRole, UserStatus


def format_datetime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    return value.strftime(fmt) + " UTC"


def pretty_json(text: str | None) -> str:
    """Metadata is stored as JSON text; show it indented, or as it is when it is not JSON."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text


def init_templating(app: Flask) -> None:
    app.jinja_env.filters["datetime"] = format_datetime
    app.jinja_env.filters["pretty_json"] = pretty_json
    from app.rendering import wants_fragment

    app.jinja_env.globals.update(UserRole=UserRole, UserStatus=UserStatus, wants_fragment=wants_fragment)
