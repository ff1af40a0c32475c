"""/api/schedules: cron schedules that start runs of a pipeline (fired by beat, see
orchestrator.schedules). Body-id style, like /api/workflows and /api/pipelines."""

from __future__ import annotations

from flask import Blueprint, g, request

from api.audit import record_change
from api.auth import require
from api.schemas import (
    IdBody,
    ScheduleCreate,
    ScheduleUpdate,
    json_body,
    parse_id,
    schedule_json,
)
from orchestrator import catalog, db, schedules

bp = Blueprint("schedules", __name__, url_prefix="/api/schedules")


@bp.get("")
@require("viewer")
def list_schedules():
    args = request.args
    pipeline_id = parse_id(args["pipeline_id"], "pipeline_id") if "pipeline_id" in args else None
    with db.read_session() as s:
        if pipeline_id is not None:
            catalog.get_pipeline(s, pipeline_id)  # 404 if there is no such pipeline
        return {"schedules": [schedule_json(sc)
                              for sc in schedules.list_schedules(s, pipeline_id)]}


@bp.post("")
@require("operator")
def create_schedule():
    body = ScheduleCreate.model_validate(json_body())
    with db.session() as s:
        schedule = schedules.create_schedule(s, body.model_dump(), g.identity.name)
        record_change(s, "created", "schedule", schedule.id)
        return {"schedule": schedule_json(schedule)}, 201


@bp.put("")
@require("operator")
def update_schedule():
    data = json_body()
    body = ScheduleUpdate.model_validate(data)
    with db.session() as s:
        schedule = schedules.update_schedule(s, body.id, body.fields(set(data)))
        record_change(s, "updated", "schedule", schedule.id)
        return {"schedule": schedule_json(schedule)}


@bp.delete("")
@require("operator")
def delete_schedule():
    body = IdBody.model_validate(json_body())
    with db.session() as s:
        schedules.delete_schedule(s, body.id)
        record_change(s, "deleted", "schedule", body.id)
    return {"success": True}
