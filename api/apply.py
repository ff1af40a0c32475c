"""POST /api/apply: templates, pipelines and schedules as code, all of a document or none.

The document names things (steps name their templates, schedules their pipelines); the plan
and every item's checks come first, and only a document with no refused item is written,
in one transaction.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.audit import record_change
from api.auth import require
from api.errors import ApiError, describe_validation
from api.runs import dispatch
from api.schemas import (
    PipelineUpdate,
    ScheduleCreate,
    ScheduleUpdate,
    TemplateCreate,
    TemplateUpdate,
    json_body,
    pipeline_json,
    schedule_json,
    template_json,
)
from api.workflows import check_template
from orchestrator import catalog, db, runs, schedules
from orchestrator import pipelines_file as pf
from orchestrator.effects import Effect

bp = Blueprint("apply", __name__, url_prefix="/api")

# When items are refused for different reasons, the answer's status: a forbidden item
# first (as authorisation comes before validation), then an invalid one, then a flagged one.
STATUS_ORDER = (403, 400, 422)
# Any constant: applies take this transaction-scoped lock on PostgreSQL, so that two of
# them never plan against the same state and both create the same template.
APPLY_LOCK = 0x6F726368


class Refused(ApiError):
    def __init__(self, items: list[dict[str, Any]]):
        self.items = [{k: v for k, v in item.items() if k != "status"} for item in items]
        status = min((item["status"] for item in items),
                     key=lambda st: STATUS_ORDER.index(st) if st in STATUS_ORDER else 0)
        first = items[0]
        super().__init__(status, f"{len(items)} item(s) cannot be applied, nothing was: "
                                 f"{first['kind']} {first['name']!r}: {first['error']}")


@bp.errorhandler(Refused)
def _refused(exc: Refused):
    resp = jsonify(error=exc.message, items=exc.items)
    resp.status_code = exc.status
    return resp


@bp.post("/apply")
@require("operator")
def apply_document():
    data = json_body()
    dry_run = data.pop("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ApiError(400, "dry_run: must be true or false")
    doc, problems = pf.parse_items(data, "body")
    items = [_item(p, 400) for p in problems]
    started: list[Effect] = []  # queued runs that a raised limit started
    with db.session() as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": APPLY_LOCK})
        templates = [template_json(t) for t in catalog.list_templates(s)]
        pipelines = [pipeline_json(p, steps) for p, steps in catalog.list_pipelines(s)]
        stored = [schedule_json(sc) for sc in schedules.list_schedules(s)]
        changes, problems = pf.plan_items(doc, templates, pipelines, stored)
        items += [_item(p, 400) for p in problems]
        writes = [(c, *_checked(s, c)) for c in changes if c.action != "unchanged"]
        items += [item for _, _, item in writes if item is not None]
        if items:
            raise Refused(items)  # rolls the transaction back: it has written nothing
        if not dry_run and writes:
            ids = {t["name"]: t["id"] for t in templates}  # names steps may use unreferenced
            ids.update({c.ref: c.id for c in changes if c.kind == "template" and c.id})
            started = _write(s, writes, ids, {p["name"]: p["id"] for p in pipelines})
            # One entry for the document, on the first pipeline it writes (if it writes one)
            written = [c.id for c, _, _ in writes if c.kind == "pipeline"]
            record_change(s, "applied", "pipeline", written[0] if written else None)
    dispatch(started)
    return {"dry_run": dry_run, "changes": [_change_json(c) for c in changes]}


def _item(problem: pf.Problem, status: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A refused item; `extra` is what the error carries besides its text (the injection
    guard's rules), as POST /api/workflows would answer it."""
    return {"kind": problem.kind, "name": problem.name, "error": problem.error,
            **(extra or {}), "status": status}


def _checked(s: Session, c: pf.Change) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The fields to write for `c`, and its refusal (None if it passes every rule a write
    through /api/workflows or /api/pipelines would)."""
    try:
        if c.kind == "template" and c.action == "create":
            body = TemplateCreate.model_validate(c.body)
            fields = {k: v for k, v in body.model_dump(exclude={"task_prompt"}).items()
                      if v is not None or k == "description"}
            check_template(fields)
        elif c.kind == "template":
            fields = TemplateUpdate.model_validate({"id": c.id, **c.body}).fields(set(c.body))
            check_template(fields, catalog.get_template(s, c.id))
        elif c.kind == "schedule":
            fields = _schedule_fields(c)
        else:
            # the steps' templates may not exist yet: any id stands in, to check the rest
            PipelineUpdate.model_validate({"id": 1, **pf.pipeline_body(c.body, _AnyId())})
            fields = c.body
    except ValidationError as exc:
        return {}, _item(pf.Problem(c.kind, c.name, describe_validation(exc)), 400)
    except ApiError as exc:
        return {}, _item(pf.Problem(c.kind, c.name, exc.message), exc.status, exc.extra)
    return fields, None


def _schedule_fields(c: pf.Change) -> dict[str, Any]:
    """A schedule's fields as POST or PUT /api/schedules validates them; its pipeline is
    still a name (the pipeline may not exist yet: any id stands in)."""
    body = {k: v for k, v in c.body.items() if k != "pipeline"}
    if c.action == "create":
        fields = ScheduleCreate.model_validate({"pipeline_id": 1, **body}).model_dump()
        return {**fields, "pipeline": c.body["pipeline"]}
    return ScheduleUpdate.model_validate({"id": c.id, **body}).fields(set(body))


class _AnyId(dict):
    def __missing__(self, _key: str) -> int:
        return 1


def _write(s: Session, writes: list[tuple[pf.Change, dict[str, Any], None]],
           template_ids: dict[str, int], pipeline_ids: dict[str, int]) -> list[Effect]:
    """Templates first, so that pipelines can name the ones this document creates; then
    pipelines, which schedules name. Returns the first steps of queued runs that a raised
    limit started, to send after the commit."""
    started: list[Effect] = []
    for c, fields, _ in writes:
        if c.kind != "template":
            continue
        if c.action == "create":
            c.id = catalog.create_template(s, fields, g.identity.name).id
        else:
            catalog.update_template(s, c.id, fields)
        template_ids[c.ref] = c.id
    for c, fields, _ in writes:
        if c.kind != "pipeline":
            continue
        body = pf.pipeline_body(fields, template_ids)
        if c.action == "create":
            c.id = catalog.create_pipeline(s, body, g.identity.name).id
        else:
            catalog.update_pipeline(s, c.id, body)
            if "max_concurrent_runs" in body:
                started.extend(runs.promote_queued(s, c.id))
        pipeline_ids[c.name] = c.id
    for c, fields, _ in writes:
        if c.kind != "schedule":
            continue
        if c.action == "create":
            pipeline = fields["pipeline"]
            fields = {k: v for k, v in fields.items() if k != "pipeline"}
            fields["pipeline_id"] = pipeline_ids[pipeline]
            c.id = schedules.create_schedule(s, fields, g.identity.name).id
        else:
            schedules.update_schedule(s, c.id, fields)
    return started


def _change_json(c: pf.Change) -> dict[str, Any]:
    return {"kind": c.kind, "action": c.action, "name": c.name, "id": c.id,
            "fields": sorted(c.diff),
            "diff": {k: {"from": old, "to": new} for k, (old, new) in c.diff.items()}}
