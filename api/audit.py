"""The audit trail of API changes: `@audited(...)` on a view, and `GET /api/audit`.

`@audited` (placed under `@require`) notes what the request intends. The entry itself is
added by a session hook just before the view's transaction commits, so it is part of the
same transaction as the change: a view that raises (409, 404, a database error) rolls
both back, and a request that wrote nothing (an idempotent replay) records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, g, has_request_context, request
from sqlalchemy import event
from sqlalchemy.orm import Session

from api.auth import require
from api.errors import ApiError
from api.schemas import epoch, int_arg, parse_id, request_json
from orchestrator import audit
from orchestrator.models import ApiKey, Pipeline, PipelineRun, WorkflowTemplate

bp = Blueprint("audit", __name__, url_prefix="/api")

TARGETS: dict[str, type] = {
    "template": WorkflowTemplate,
    "pipeline": Pipeline,
    "run": PipelineRun,
    "key": ApiKey,
}
RUN_ACTIONS = {"start": "started", "advance": "advanced", "cancel": "cancelled",
               "rerun": "rerun"}
# Request fields worth keeping with an entry; never a key or a prompt. A rerun's entry
# targets the new run, and keeps the run it reran (`run_id`) and from which step.
DETAIL_FIELDS = ("name", "pipeline_id", "run_id", "step_index", "from_step", "success", "role",
                 "action")


@dataclass
class Intent:
    action: str
    target_type: str
    target_ids: list[int] = field(default_factory=list)
    written: bool = False


def audited(action: str | Callable[[dict[str, Any]], str | None], target_type: str):
    """Record the view's change. `action` may be a function of the JSON body (runs:
    start/advance/cancel), returning None for a request that changes nothing."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any):
            name = action(_body()) if callable(action) else action
            if name is not None:
                g.audit_intent = Intent(name, target_type)
            return view(*args, **kwargs)

        return wrapped

    return decorate


def run_action(body: dict[str, Any]) -> str | None:
    return RUN_ACTIONS.get(body.get("action")) if isinstance(body.get("action"), str) else None


def _body() -> dict[str, Any]:
    data = request_json() if request.content_length != 0 else None
    return data if isinstance(data, dict) else {}


def _intent() -> Intent | None:
    if not has_request_context():
        return None
    intent = g.get("audit_intent")
    return intent if intent is not None and not intent.written else None


def note_target(session: Session, target_id: int) -> None:
    """Say that the view changed `target_id` in `session`'s transaction. For writes made
    without ORM objects (runs), which `_note_targets` cannot see."""
    intent = _intent()
    if intent is not None:
        intent.target_ids.append(target_id)
        session.info["audit_wrote"] = True


def _note_targets(session: Session, _flush_context: Any) -> None:
    intent = _intent()
    if intent is None:
        return
    model = TARGETS[intent.target_type]
    for obj in [*session.new, *session.dirty, *session.deleted]:
        if isinstance(obj, model) and obj.id is not None:
            intent.target_ids.append(obj.id)
    session.info["audit_wrote"] = True


def _write_entry(session: Session) -> None:
    intent = _intent()
    if intent is None:
        return
    session.flush()  # changes still pending are part of this commit: see them first
    if not session.info.pop("audit_wrote", False):
        return
    body = _body()
    target_id = intent.target_ids[0] if intent.target_ids else None
    if target_id is None:
        raw = body.get("run_id", body.get("id"))
        try:
            target_id = parse_id(raw, "id") if raw is not None else None
        except ApiError:
            target_id = None
    detail = {k: body[k] for k in DETAIL_FIELDS if k in body and _plain(body[k])}
    detail["request"] = f"{request.method} {request.path}"
    identity = g.identity
    audit.record(session, identity.name, identity.role, intent.action, intent.target_type,
                 target_id, detail)
    intent.written = True


def _plain(value: Any) -> bool:
    return isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 200)


_hooked = False


def init_app(app: Flask) -> None:
    global _hooked
    app.register_blueprint(bp)
    if not _hooked:  # session events are process-wide; hook them once
        event.listen(Session, "after_flush", _note_targets)
        event.listen(Session, "before_commit", _write_entry)
        _hooked = True


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
    from orchestrator import db

    args = request.args
    limit = int_arg(args.get("limit"), "limit", 50, 1, 500)
    before = parse_id(args["before_id"], "before_id") if "before_id" in args else None
    target_type = args.get("target_type")
    if target_type is not None and target_type not in TARGETS:
        raise ApiError(400, f"target_type must be one of {', '.join(TARGETS)}")
    target_id = parse_id(args["target_id"], "target_id") if "target_id" in args else None
    with db.read_session() as s:
        entries = audit.recent(s, limit, before, target_type, target_id)
        return {"entries": [entry_json(e) for e in entries]}
