"""Beat's hourly purge of idempotency keys older than IDEMPOTENCY_TTL_SECONDS."""

from __future__ import annotations

import time

from sqlalchemy import select

from orchestrator import db
from orchestrator.models import IdempotencyKey
from worker.app import celery
from worker.tasks import purge_idempotency_keys


def test_expired_keys_are_purged_and_fresh_ones_kept(settings):
    ttl = celery.conf.orchestrator_settings.idempotency_ttl_seconds
    with db.session() as s:
        s.add_all([
            IdempotencyKey(actor="a", key="old", fingerprint="f", run_id=1,
                           created_at=time.time() - ttl - 60),
            IdempotencyKey(actor="a", key="new", fingerprint="f", run_id=2,
                           created_at=time.time()),
        ])
    assert purge_idempotency_keys() >= 1
    with db.session() as s:
        keys = set(s.scalars(select(IdempotencyKey.key).where(IdempotencyKey.actor == "a")))
    assert keys == {"new"}
    assert "purge-idempotency-keys" in celery.conf.beat_schedule
