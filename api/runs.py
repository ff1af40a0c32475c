"""/api/pipelines/run: list runs, and the start / rerun / advance / cancel commands.

A command is one transaction through `orchestrator.runs`; its effects (the next step's
message, a session to cancel) are dispatched only after that transaction commits.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, g, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.audit import record_change
from api.auth import require
from api.errors import ApiError
from api.schemas import (
    AdvanceRun,
    CancelRun,
    RerunRun,
    StartRun,
    int_arg,
    json_body,
    parse_id,
    run_detail_json,
    run_json,
)
from orchestrator import db, idempotency, run_queries, runs
from orchestrator import transitions as t
from orchestrator.attempts import earlier_attempts
from orchestrator.executor import truncate

bp = Blueprint("runs", __name__, url_prefix="/api/pipelines/run")

INVALID_ACTION = "Invalid action. Use: start, advance, cancel, rerun"
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


def dispatch(effects) -> None:
    current_app.extensions["dispatcher"].dispatch(effects)


@bp.get("")
@require("viewer")
def list_runs():
    args = request.args
    if "id" in args:
        with db.read_session() as s:
            run, steps = run_queries.load_run(s, parse_id(args["id"], "id"))
            attempts = earlier_attempts(s, run, steps)
        return {"run": run_detail_json(run, steps, attempts)}
    limit = int_arg(args.get("limit"), "limit", 20, 1, 200)
    pipeline_id = parse_id(args["pipeline_id"], "pipeline_id") if "pipeline_id" in args else None
    status = args.get("status")
    if status is not None and status not in t.RUN_STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(t.RUN_STATUSES)}")
    with db.read_session() as s:
        listed = run_queries.recent_runs(s, limit, pipeline_id, status)
        if not listed and pipeline_id is not None and not run_queries.pipeline_known(s, pipeline_id):
            raise ApiError(404, f"pipeline {pipeline_id} not found")
    return {"runs": [run_json(run, steps, omit_output=True) for run, steps in listed]}


@bp.post("")
@require("operator")
def command():
    data = json_body()
    action = data.get("action")
    if action == "start":
        return _start(StartRun.model_validate(data))
    if action == "advance":
        return _advance(AdvanceRun.model_validate(data))
    if action == "cancel":
        return _cancel(CancelRun.model_validate(data))
    if action == "rerun":
        return _rerun(RerunRun.model_validate(data))
    raise ApiError(400, INVALID_ACTION)


def _start(body: StartRun):
    def create(s) -> runs.Transition:
        tr = runs.start_run(s, body.pipeline_id, g.identity.name, body.inputs)
        record_change(s, "started", "run", tr.run.id)
        return tr

    return _create_run(create, body.model_dump())


def _rerun(body: RerunRun):
    def create(s) -> runs.Transition:
        tr = runs.rerun_run(s, body.run_id, body.from_step, g.identity.name, body.inputs)
        if not tr.accepted:
            raise refused(tr.decision)
        record_change(s, "rerun", "run", tr.run.id)
        return tr

    # The action is part of the fingerprint: a key used for a start is not a rerun's.
    return _create_run(create, {"action": "rerun", **body.model_dump()})


def refused(d: t.Decision) -> ApiError:
    """A refused proposal as an error: 400 if it names what the run lacks, else 409; the
    body carries the machine `code` beside the text."""
    status = 400 if d.verdict is t.Verdict.INVALID else 409
    return ApiError(status, d.reason, extra={"code": d.code})


def _create_run(create: Callable[[Session], runs.Transition], request_body: dict[str, Any]):
    """Create a run in one transaction and send its first step after the commit; with an
    Idempotency-Key, a repeat of the request answers with the run the first one made (and,
    having changed nothing, is not audited: `create` is what records the entry)."""
    key = _idempotency_key()
    if key is None:
        with db.session() as s:
            tr = create(s)
            payload = run_json(tr.run, tr.steps)
        dispatch(tr.effects)
        return {"run": payload}, 201
    fingerprint = idempotency.fingerprint(request_body)
    ttl = current_app.config["SETTINGS"].idempotency_ttl_seconds
    try:
        return _create_once(create, key, fingerprint, ttl)
    except IntegrityError:
        # A twin request with the same key committed first: answer with its run.
        return _create_once(create, key, fingerprint, ttl)


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    # Visible ASCII only: proxies may trim spaces at a header's ends, and stacks decode other
    # bytes differently, either of which would quietly turn a retry into a new key.
    if not 1 <= len(key) <= idempotency.MAX_KEY_LENGTH or not _VISIBLE_ASCII.fullmatch(key):
        raise ApiError(400, "Idempotency-Key must be 1 to 255 visible ASCII characters "
                            "(no spaces)")
    return key


def _create_once(create: Callable[[Session], runs.Transition], key: str, fingerprint: str,
                 ttl: float):
    with db.session() as s:
        try:
            earlier = idempotency.remembered(s, g.identity.name, key, fingerprint, ttl)
        except idempotency.KeyReused as exc:
            raise ApiError(409, str(exc)) from None
        if earlier is not None:
            run, steps = run_queries.load_run(s, earlier)
            return {"run": run_json(run, steps)}, 201, {"Idempotent-Replayed": "true"}
        tr = create(s)
        idempotency.remember(s, g.identity.name, key, fingerprint, tr.run.id)
        payload = run_json(tr.run, tr.steps)
    dispatch(tr.effects)
    return {"run": payload}, 201


def _advance(body: AdvanceRun):
    error = body.error
    if not body.success and not error:
        error = f"marked failed by {g.identity.name}"
    proposal = t.Resolve(body.success, body.step_index, None, allow_pending=True)
    output, truncated = truncate(body.output, current_app.config["SETTINGS"].output_max_chars)
    result = runs.StepResult(error=None if body.success else error, output=output,
                             output_truncated=truncated)
    with db.session() as s:
        tr = runs.resolve_step(s, body.run_id, proposal, result)
        if not tr.accepted:
            raise refused(tr.decision)
        record_change(s, "advanced", "run", tr.run.id)
        payload = run_json(tr.run, tr.steps)
    dispatch(tr.effects)
    return {"run": payload}, 202


def _cancel(body: CancelRun):
    with db.session() as s:
        tr = runs.cancel_run(s, body.run_id)
        if not tr.accepted:
            raise refused(tr.decision)
        record_change(s, "cancelled", "run", tr.run.id)
        payload = run_json(tr.run, tr.steps)
    dispatch(tr.effects)
    return {"run": payload}, 202
