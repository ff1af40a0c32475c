"""Workflow templates and pipeline definitions: create, read, update, delete.

Inputs arrive validated (api/schemas.py); what is checked here needs the database:
that templates exist, and that a template no pipeline uses is the only kind deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.models import Pipeline, PipelineStep, WorkflowTemplate, now
from orchestrator.records import NotFound
from orchestrator.vocab import OnFailure, RunIf


class Conflict(Exception):
    pass


class UnknownTemplates(ValueError):
    pass


@dataclass(frozen=True)
class Page:
    """A slice of a listing in id order."""

    limit: int
    offset: int = 0


def count(s: Session, model: type) -> int:
    return s.scalar(select(func.count()).select_from(model)) or 0


def _paged(query: Any, page: Page | None) -> Any:
    return query if page is None else query.limit(page.limit).offset(page.offset)


def list_templates(s: Session, page: Page | None = None) -> list[WorkflowTemplate]:
    """Templates in id order: a page of them, or (for apply's plan) all of them."""
    return list(s.scalars(_paged(select(WorkflowTemplate).order_by(WorkflowTemplate.id), page)))


def get_template(s: Session, template_id: int, lock: bool = False) -> WorkflowTemplate:
    tpl = s.get(WorkflowTemplate, template_id, with_for_update=lock)
    if tpl is None:
        raise NotFound(f"template {template_id} not found")
    return tpl


def create_template(s: Session, fields: dict[str, Any], created_by: str) -> WorkflowTemplate:
    ts = now()
    tpl = WorkflowTemplate(**fields, created_by=created_by, created_at=ts, updated_at=ts)
    s.add(tpl)
    s.flush()
    return tpl


def update_template(s: Session, template_id: int, fields: dict[str, Any]) -> WorkflowTemplate:
    tpl = get_template(s, template_id, lock=True)
    for key, value in fields.items():
        setattr(tpl, key, value)
    tpl.updated_at = now()
    s.flush()
    return tpl


def delete_template(s: Session, template_id: int) -> None:
    tpl = get_template(s, template_id, lock=True)
    users = list(
        s.scalars(
            select(Pipeline.name)
            .join(PipelineStep, PipelineStep.pipeline_id == Pipeline.id)
            .where(PipelineStep.template_id == template_id)
            .distinct()
            .limit(5)
        )
    )
    if users:
        raise Conflict(f"template {template_id} is used by pipeline(s): {', '.join(users)}")
    s.delete(tpl)
    s.flush()


@dataclass(frozen=True)
class StepView:
    template_id: int
    template_name: str
    on_failure: str
    run_if: str


def list_pipelines(s: Session, page: Page | None = None) -> list[tuple[Any, list[StepView]]]:
    """A page of pipelines (or all of them) with their steps, as plain rows: two queries,
    no ORM objects, since a listing of many pipelines spends most of its time building
    them otherwise."""
    pipelines = list(s.execute(_paged(select(Pipeline.__table__).order_by(Pipeline.id), page)))
    if not pipelines:
        return []
    steps: dict[int, list[StepView]] = {}
    for row in s.execute(
        select(PipelineStep.pipeline_id, PipelineStep.template_id, WorkflowTemplate.name,
               PipelineStep.on_failure, PipelineStep.run_if)
        .join(WorkflowTemplate, WorkflowTemplate.id == PipelineStep.template_id)
        .where(PipelineStep.pipeline_id.between(pipelines[0].id, pipelines[-1].id))
        .order_by(PipelineStep.pipeline_id, PipelineStep.position)
    ):
        steps.setdefault(row[0], []).append(StepView(*row[1:]))
    return [(p, steps.get(p.id, [])) for p in pipelines]


def get_pipeline(s: Session, pipeline_id: int, lock: bool = False) -> Pipeline:
    pipeline = s.get(Pipeline, pipeline_id, with_for_update=lock)
    if pipeline is None:
        raise NotFound(f"pipeline {pipeline_id} not found")
    return pipeline


def _build_steps(s: Session, steps: list[dict[str, Any]]) -> list[PipelineStep]:
    ids = {st["template_id"] for st in steps}
    found = set(s.scalars(select(WorkflowTemplate.id).where(WorkflowTemplate.id.in_(ids))))
    if found != ids:
        raise UnknownTemplates("One or more template IDs not found")
    return [
        PipelineStep(
            position=i,
            template_id=st["template_id"],
            on_failure=st.get("on_failure", OnFailure.STOP.value),
            run_if=st.get("run_if", RunIf.ON_SUCCESS.value),
        )
        for i, st in enumerate(steps)
    ]


def create_pipeline(s: Session, fields: dict[str, Any], created_by: str) -> Pipeline:
    steps = _build_steps(s, fields.pop("steps"))
    ts = now()
    pipeline = Pipeline(**fields, created_by=created_by, created_at=ts, updated_at=ts)
    pipeline.steps = steps
    s.add(pipeline)
    s.flush()
    return pipeline


def update_pipeline(s: Session, pipeline_id: int, fields: dict[str, Any]) -> Pipeline:
    pipeline = get_pipeline(s, pipeline_id, lock=True)
    if "steps" in fields:
        steps = _build_steps(s, fields.pop("steps"))
        pipeline.steps.clear()
        s.flush()  # free the (pipeline_id, position) pairs before re-adding them
        pipeline.steps.extend(steps)
    for key, value in fields.items():
        setattr(pipeline, key, value)
    pipeline.updated_at = now()
    s.flush()
    return pipeline


def delete_pipeline(s: Session, pipeline_id: int) -> None:
    s.delete(get_pipeline(s, pipeline_id, lock=True))
    s.flush()
