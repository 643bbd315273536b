"""A bare correct Clerk webhook receiver: the floor benchmarks/webhooks.py measures the dashboard's against.

    DATABASE_URL=postgresql://... CLERK_WEBHOOK_SIGNING_SECRET=whsec_... gunicorn bare_receiver:app

A WSGI app on psycopg alone, over the dashboard's migrated schema. Per delivery: verify the Svix
signature, then in one transaction insert the `webhook_events` row once (ON CONFLICT DO NOTHING:
a copy waits for the first and answers duplicate), upsert the user by Clerk id unless the stored
version is newer or the user was deleted (user.deleted leaves a tombstone, even for an id not
seen yet), record the outcome, commit. Nothing else: no audit trail, counters, claims, outbox.

`bare_flask()` is the same as a tiny Flask app, and `flask_floor()` the same statements inside the
dashboard's own app (benchmarks/webhooks.py --floor).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from svix.webhooks import Webhook, WebhookVerificationError

VERIFIER = Webhook(os.environ["CLERK_WEBHOOK_SIGNING_SECRET"])
DSN = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
USER_COLUMNS = ("email", "first_name", "last_name", "username", "external_id", "image_url", "last_sign_in_at")
METADATA = ("public_metadata", "private_metadata", "unsafe_metadata")
COLUMNS = (*USER_COLUMNS, *METADATA, "locked", "clerk_updated_at")
UPSERT = f"""
INSERT INTO users AS u (id, clerk_id, {", ".join(COLUMNS)})
VALUES (%(id)s, %(clerk_id)s, {", ".join(f"%({c})s" for c in COLUMNS)})
ON CONFLICT (clerk_id) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in COLUMNS)}, updated_at = now()
WHERE u.deleted_at IS NULL AND (u.clerk_updated_at IS NULL OR u.clerk_updated_at <= excluded.clerk_updated_at)
RETURNING id"""
TOMBSTONE = """
INSERT INTO users AS u (id, clerk_id, email, deleted_at) VALUES (%(id)s, %(clerk_id)s, '', now())
ON CONFLICT (clerk_id) DO UPDATE SET deleted_at = now(), updated_at = now() WHERE u.deleted_at IS NULL
RETURNING id"""
INSERT_ONCE = """
INSERT INTO webhook_events (id, type, clerk_user_id, payload, received_at, outcome, error)
VALUES (%(id)s, %(type)s, %(clerk_user_id)s, %(payload)s, now(), 'failed', 'in progress')
ON CONFLICT DO NOTHING RETURNING id"""
FINISH = """
UPDATE webhook_events SET outcome = %(outcome)s, error = NULL, processed_at = now() WHERE id = %(id)s
RETURNING id"""
_connection: psycopg.Connection | None = None


def _user(data: dict) -> dict:
    primary = next(
        (e for e in data.get("email_addresses") or [] if e.get("id") == data.get("primary_email_address_id")), {}
    )
    signed_in = data.get("last_sign_in_at")
    values = {c: data.get(c) for c in USER_COLUMNS} | {
        c: json.dumps(data[c], sort_keys=True) if c in data else None for c in METADATA
    }
    return values | {
        "id": str(uuid.uuid4()),
        "clerk_id": data["id"],
        "email": primary.get("email_address", ""),
        "last_sign_in_at": signed_in and datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=signed_in),
        "locked": data.get("locked") is True,
        "clerk_updated_at": data.get("updated_at"),
    }


def apply(fetch_one, svix_id: str, body: bytes, event: dict) -> str:
    """The delivery's statements, in the caller's transaction; fetch_one(sql, params) runs one."""
    kind, data = event["type"], event["data"]
    row = {"id": svix_id, "type": kind, "clerk_user_id": data.get("id"), "payload": body.decode()}
    if fetch_one(INSERT_ONCE, row) is None:
        return "duplicate"
    if kind in ("user.created", "user.updated"):
        outcome = "applied" if fetch_one(UPSERT, _user(data)) else "stale"
    elif kind == "user.deleted":
        tombstone = {"id": str(uuid.uuid4()), "clerk_id": data["id"]}
        outcome = "applied" if fetch_one(TOMBSTONE, tombstone) else "ignored"
    else:
        outcome = "ignored"
    fetch_one(FINISH, {"outcome": outcome, "id": svix_id})
    return outcome


def _reply(start_response, status: str, answer: dict, *headers: tuple[str, str]) -> list[bytes]:
    start_response(status, [("Content-Type", "application/json"), *headers])
    return [json.dumps(answer).encode() + b"\n"]


def _apply_on_psycopg(svix_id: str, body: bytes, event: dict) -> str | None:
    """apply() in a transaction of this worker's connection; None when the database failed."""
    global _connection
    try:
        if _connection is None or _connection.closed:
            _connection = psycopg.connect(DSN, options="-c timezone=utc")
        with _connection.transaction():
            return apply(lambda sql, params: _connection.execute(sql, params).fetchone(), svix_id, body, event)
    except psycopg.Error:
        if _connection is not None:
            _connection.close()
        _connection = None
        return None


def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_SVIX_")}
    try:
        VERIFIER.verify(body, headers)
        event = json.loads(body)
    except (WebhookVerificationError, ValueError):
        return _reply(start_response, "400 Bad Request", {"error": "refused"})
    outcome = _apply_on_psycopg(headers["svix-id"], body, event)
    if outcome is None:
        return _reply(start_response, "503 Service Unavailable", {"outcome": "failed"}, ("Retry-After", "5"))
    return _reply(start_response, "200 OK", {"id": headers["svix-id"], "outcome": outcome})


def bare_flask():
    """The bare receiver as a tiny Flask app of its own (no extensions, no hooks), on psycopg."""
    from flask import Flask, Response, request

    bare = Flask(__name__)

    @bare.post("/webhooks/clerk")
    def receive():
        body, event = _verified(request)
        if event is None:
            return Response('{"error": "refused"}\n', 400, mimetype="application/json")
        svix_id = request.headers["svix-id"]
        outcome = _apply_on_psycopg(svix_id, body, event)
        if outcome is None:
            return Response('{"outcome": "failed"}\n', 503, {"Retry-After": "5"}, mimetype="application/json")
        return Response(json.dumps({"id": svix_id, "outcome": outcome}) + "\n", 200, mimetype="application/json")

    return bare


def _verified(request) -> tuple[bytes, dict | None]:
    """A Flask request's body and its event, or None when the signature or the JSON does not hold."""
    body = request.get_data()
    try:
        VERIFIER.verify(body, request.headers)
        return body, json.loads(body)
    except (WebhookVerificationError, ValueError):
        return body, None


def flask_floor():
    """The same statements inside the dashboard's own app: its factory, request hooks, session and
    pool settings, at POST /webhooks/floor. What is left between this and the dashboard's receiver
    is the receiver's own work (benchmarks/webhooks.py --floor)."""
    from flask import Response, request

    from app import create_app
    from app.auth.guard import public
    from app.extensions import csrf, db

    dashboard = create_app()

    @public
    @csrf.exempt
    def floor():
        body, event = _verified(request)
        if event is None:
            return Response('{"error": "refused"}\n', 400, mimetype="application/json")
        connection = db.session.connection()
        svix_id = request.headers["svix-id"]
        outcome = apply(lambda sql, params: connection.exec_driver_sql(sql, params).first(), svix_id, body, event)
        db.session.commit()
        return Response(json.dumps({"id": svix_id, "outcome": outcome}) + "\n", 200, mimetype="application/json")

    dashboard.add_url_rule("/webhooks/floor", "webhook_floor", floor, methods=["POST"])
    return dashboard
