"""Counters under concurrency, on PostgreSQL: signed webhooks over HTTP while bulk actions run."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from app.audit.services import Actor
from app.clerk.sync import clerk_user_from_dict, upsert_clerk_user
from app.models import User, UserStatus
from app.users.services import bulk_set_status
from tests.clerk_payloads import clerk_user, session_created, sign, user_created, user_deleted, user_updated
from tests.test_stats import assert_exact

pytestmark = pytest.mark.postgresql


def ms(days_ago: float) -> int:
    return int((datetime.now(UTC) - timedelta(days=days_ago)).timestamp() * 1000)


def test_concurrent_webhooks_and_bulk_actions_keep_the_counters_exact(app, db, live_server, signing_secret):
    shared = [clerk_user(email=f"shared{i}@example.com", last_sign_in_at=ms(i)) for i in range(12)]
    for data in shared:
        upsert_clerk_user(clerk_user_from_dict(data), actor=Actor.webhook())
    db.session.commit()
    ids = list(db.session.scalars(sa.select(User.id).order_by(User.id)))
    failures: list[str] = []

    def deliveries(worker: int) -> None:
        rng = random.Random(worker)
        with httpx.Client(base_url=live_server, timeout=30) as http:
            for i in range(12):
                own = clerk_user(email=f"w{worker}-{i}@example.com", last_sign_in_at=ms(rng.uniform(0, 40)))
                other = rng.choice(shared)
                for payload in (
                    user_created(own),
                    session_created(other["id"], at=ms(rng.uniform(0, 40))),
                    user_updated(other, last_sign_in_at=ms(rng.uniform(0, 40))),
                    *((user_deleted(own["id"]),) if i % 4 == 0 else ()),
                ):
                    signed = sign(payload)
                    response = http.post("/webhooks/clerk", content=signed.body, headers=signed.headers)
                    if response.status_code != 200:
                        failures.append(f"webhook {response.status_code}: {response.text[:200]}")

    def bulk(worker: int) -> None:
        rng = random.Random(100 + worker)
        with app.app_context():
            for i in range(12):
                status = (UserStatus.SUSPENDED, UserStatus.ACTIVE, UserStatus.INACTIVE)[(i + worker) % 3]
                try:
                    bulk_set_status(rng.sample(ids, 6), status, actor=Actor.cli())
                    db.session.commit()
                except Exception as error:  # noqa: BLE001 - reported below
                    db.session.rollback()
                    failures.append(f"bulk: {error!r}")

    threads = [threading.Thread(target=deliveries, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=bulk, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:5]
    assert_exact(db, "after concurrent webhooks and bulk actions")
    live = db.session.scalar(sa.select(sa.func.count()).select_from(User).where(User.deleted_at.is_(None)))
    assert live == 12 + 4 * 12 - 4 * 3
