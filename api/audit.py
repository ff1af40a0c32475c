"""The audit trail of API changes: `record_change`, which each changing view calls, and
`GET /api/audit`.

A view calls `record_change` in the transaction that made its change, once the change
succeeded: the entry commits or rolls back with it, and a request that changed nothing
(refused, failed, an idempotent replay, a dry run) calls nothing and records nothing.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, request
from sqlalchemy.orm import Session

from api.auth import require
from api.errors import ApiError
from api.schemas import epoch, int_arg, parse_id, request_json
from orchestrator import audit, db

bp = Blueprint("audit", __name__, url_prefix="/api")

# Request fields worth keeping with an entry; never a key or a prompt. A rerun's entry
# targets the new run, and keeps the run it reran (`run_id`) and from which step.
DETAIL_FIELDS = ("name", "pipeline_id", "run_id", "step_index", "from_step", "success", "role",
                 "action")


def record_change(s: Session, action: str, target_type: str, target_id: int | None) -> None:
    """Add the entry for the change this request just made in `s`: by the caller's key,
    with a few of the request's fields."""
    body = request_json() if request.content_length != 0 else None
    body = body if isinstance(body, dict) else {}
    detail = {k: body[k] for k in DETAIL_FIELDS if k in body and _plain(body[k])}
    detail["request"] = f"{request.method} {request.path}"
    audit.record(s, g.identity.name, g.identity.role, action, target_type, target_id, detail)


def _plain(value: Any) -> bool:
    return isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 200)


def entry_json(e) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": epoch(e.at),
        "actor": e.actor,
        "role": e.role,
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "detail": e.detail,
    }


@bp.get("/audit")
@require("admin")
def list_audit():
    args = request.args
    limit = int_arg(args.get("limit"), "limit", 50, 1, 500)
    before = parse_id(args["before_id"], "before_id") if "before_id" in args else None
    target_type = args.get("target_type")
    if target_type is not None and target_type not in audit.TARGET_TYPES:
        raise ApiError(400, f"target_type must be one of {', '.join(audit.TARGET_TYPES)}")
    target_id = parse_id(args["target_id"], "target_id") if "target_id" in args else None
    with db.read_session() as s:
        entries = audit.recent(s, limit, before, target_type, target_id)
        return {"entries": [entry_json(e) for e in entries]}
