"""/api/callbacks: where agent gateways report how a `webhook` step's session ended.

The URL itself is the credential (a per-attempt secret, see `orchestrator.callbacks`), so
these views take no API key. A wrong secret is a 404 that changes nothing; a callback for
an attempt that is no longer running (already resolved, cancelled, timed out, retried) is
a 409 that changes nothing, and says what became of the step.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, request
from pydantic import StrictBool, StrictStr

from api.errors import ApiError
from api.schemas import MAX_ID, Strict, json_body, step_json
from orchestrator import callbacks, db
from orchestrator.executor import truncate

bp = Blueprint("callbacks", __name__, url_prefix="/api/callbacks")
log = logging.getLogger("orchestrator.callbacks")

MAX_ERROR_CHARS = 10000


class CallbackBody(Strict):
    success: StrictBool
    error: StrictStr | None = None
    output: StrictStr | None = None
    usage: dict[str, Any] | None = None


_ID = f"int(max={MAX_ID})"  # an id past any stored one is simply unknown: 404, not 500


@bp.post(f"/<{_ID}:run_id>/<{_ID}:step_index>/<{_ID}:attempt>")
def step_callback(run_id: int, step_index: int, attempt: int):
    secret = request.args.get("secret", "")
    settings = current_app.config["SETTINGS"]
    with db.session() as s:
        # The secret is checked before the body is read: without it one learns nothing.
        if not secret or not callbacks.verify(s, run_id, step_index, attempt, secret):
            log.warning("callback refused: unknown secret",
                        extra={"run_id": run_id, "step_index": step_index})
            raise ApiError(404, "unknown callback")
        body = CallbackBody.model_validate(json_body())
        output, truncated = truncate(body.output, settings.output_max_chars)
        report = callbacks.Report(
            success=body.success,
            error=(body.error or "")[:MAX_ERROR_CHARS] or None,
            output=output,
            output_truncated=truncated,
            usage=body.usage,
        )
        tr = callbacks.resolve(s, run_id, step_index, attempt, report)
        step = tr.steps[step_index]
        payload = {"run_id": run_id, "run_status": tr.run.status, "step": step_json(step)}
    if not tr.accepted:
        return {"error": f"step not resolved: {tr.decision.reason}",
                "code": tr.decision.code, **payload}, 409
    current_app.extensions["dispatcher"].dispatch(tr.effects)
    log.info("step resolved by callback",
             extra={"run_id": run_id, "step_index": step_index, "spawn_id": step.spawn_id})
    return payload
