"""The audit log: who did what (created, updated, deleted, started, advanced, cancelled,
rerun, revoked, applied a document).

An entry is added to the session that makes the change, so it commits or rolls back with
it: a refused or failed request leaves no entry, and no change goes unrecorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from orchestrator.models import AuditEntry, now
from orchestrator.vocab import AuditAction, AuditTarget

ACTIONS = tuple(AuditAction)
TARGET_TYPES = tuple(AuditTarget)


def record(
    s: Session,
    actor: str,
    role: str,
    action: str,
    target_type: str,
    target_id: int | None,
    detail: dict[str, Any] | None = None,
) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if target_type not in TARGET_TYPES:
        raise ValueError(f"unknown audit target type {target_type!r}")
    s.execute(insert(AuditEntry.__table__), {
        "at": now(),
        "actor": actor,
        "role": role,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "detail": detail or {},
    })


def recent(
    s: Session,
    limit: int,
    before_id: int | None = None,
    target_type: str | None = None,
    target_id: int | None = None,
) -> list[AuditEntry]:
    """Newest first; `before_id` pages back through older entries."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    return list(s.scalars(query))
