"""/api/pipelines: pipeline definitions, with their run statistics."""

from __future__ import annotations

from flask import Blueprint, g, request

from api.audit import record_change
from api.auth import require
from api.errors import ApiError
from api.runs import dispatch
from api.schemas import (
    IdBody,
    PipelineCreate,
    PipelineUpdate,
    json_body,
    page_args,
    pipeline_json,
)
from orchestrator import catalog, db, runs
from orchestrator.models import Pipeline

bp = Blueprint("pipelines", __name__, url_prefix="/api/pipelines")


@bp.get("")
@require("viewer")
def list_pipelines():
    page = page_args(request.args)
    with db.read_session() as s:
        listed = catalog.list_pipelines(s, page)
        return {"pipelines": [pipeline_json(p, steps) for p, steps in listed],
                "total": catalog.count(s, Pipeline)}


@bp.post("")
@require("operator")
def create_pipeline():
    body = PipelineCreate.model_validate(json_body())
    with db.session() as s:
        pipeline = catalog.create_pipeline(s, body.model_dump(), g.identity.name)
        record_change(s, "created", "pipeline", pipeline.id)
        return {"pipeline": pipeline_json(pipeline)}, 201


@bp.put("")
@require("operator")
def update_pipeline():
    data = json_body()
    body = PipelineUpdate.model_validate(data)
    fields = body.model_dump(include=set(data) - {"id"})
    if fields.get("name", "") is None or ("steps" in fields and fields["steps"] is None):
        raise ApiError(400, "name and steps may not be null")  # Mission Control's words
    if "on_limit" in fields and fields["on_limit"] is None:
        raise ApiError(400, "on_limit may not be null")
    with db.session() as s:
        pipeline = catalog.update_pipeline(s, body.id, fields)
        record_change(s, "updated", "pipeline", pipeline.id)
        # A limit raised or removed frees slots: queued runs take them now.
        started = runs.promote_queued(s, pipeline.id) if "max_concurrent_runs" in fields else []
        payload = {"pipeline": pipeline_json(pipeline)}
    dispatch(started)
    return payload


@bp.delete("")
@require("operator")
def delete_pipeline():
    body = IdBody.model_validate(json_body())
    with db.session() as s:
        catalog.delete_pipeline(s, body.id)
        record_change(s, "deleted", "pipeline", body.id)
    return {"success": True}
