"""`Idempotency-Key` on start: the same caller, key and body within the TTL get the run
the first request created; the same key with another body is a conflict.

The key row is inserted in the transaction that creates the run, under a unique
(actor, key) constraint. Two identical requests racing each other therefore cannot both
create a run: the second insert waits for the first transaction and then fails, the
second transaction rolls back, and the caller looks the key up again (`remembered`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from orchestrator.models import IdempotencyKey, now

MAX_KEY_LENGTH = 255


class KeyReused(Exception):
    """The key was used before with a different request body."""


def fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def remembered(
    s: Session, actor: str, key: str, body_fingerprint: str, ttl_seconds: float
) -> int | None:
    """The run an earlier request with this key created, or None if there is none in
    the TTL (an expired row is removed so the key can be used afresh)."""
    row = s.scalar(
        select(IdempotencyKey).where(IdempotencyKey.actor == actor, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    if row.created_at < now() - ttl_seconds:
        s.delete(row)
        s.flush()
        return None
    if row.fingerprint != body_fingerprint:
        raise KeyReused(
            "Idempotency-Key was already used with a different request body"
        )
    return row.run_id


def remember(s: Session, actor: str, key: str, body_fingerprint: str, run_id: int) -> None:
    s.add(IdempotencyKey(
        actor=actor, key=key, fingerprint=body_fingerprint, run_id=run_id, created_at=now()
    ))
    s.flush()  # a concurrent twin fails here, inside its own transaction


def purge_expired(s: Session, ttl_seconds: float) -> int:
    res = s.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < now() - ttl_seconds))
    return res.rowcount or 0
