"""Request validation (pydantic) and response shapes (SPEC §2) for the HTTP API.

Inputs are strict: a wrong type is a 400, never coerced, except ids, which may be
integers or numeric strings. `template_name` in pipeline steps is ignored on input.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from flask import g, request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from api.errors import ApiError
from orchestrator.catalog import StepView
from orchestrator.models import Pipeline, WorkflowTemplate
from orchestrator.runs import RunRecord, StepRecord
from orchestrator.transitions import MAX_STEPS, MIN_STEPS, ON_FAILURE, RUN_IF

MAX_ID = 2**31 - 1


def _parse_id(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be an integer id")
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            raise ValueError("must be an integer id")
        value = int(value)
    if isinstance(value, int) and 1 <= value <= MAX_ID:
        return value
    raise ValueError("must be a positive integer id")


Id = Annotated[int, BeforeValidator(_parse_id)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=200)]
Tag = Annotated[StrictStr, Field(min_length=1, max_length=100)]


def parse_id(value: Any, what: str) -> int:
    try:
        return _parse_id(value)
    except ValueError as exc:
        raise ApiError(400, f"{what}: {exc}") from None


def int_arg(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A query argument that is a whole number from `low` to `high` (ASCII digits only)."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class TemplateFields(Strict):
    name: Name | None = None
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    model: Annotated[StrictStr, Field(min_length=1, max_length=100)] | None = None
    prompt: Annotated[StrictStr, Field(min_length=1, max_length=10000)] | None = None
    task_prompt: Annotated[StrictStr, Field(min_length=1, max_length=10000)] | None = None
    parameters: dict[str, Any] | None = None
    timeout_seconds: Annotated[StrictInt, Field(ge=10, le=3600)] | None = None
    agent: Annotated[StrictStr, Field(min_length=1, max_length=100)] | None = None
    agent_role: Annotated[StrictStr, Field(max_length=100)] | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    retries: Annotated[StrictInt, Field(ge=0, le=10)] | None = None
    retry_backoff_seconds: Annotated[StrictInt | StrictFloat, Field(ge=0, le=3600)] | None = None
    on_injection: Literal["warn", "fail"] | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> TemplateFields:
        if self.prompt is not None and self.task_prompt is not None:
            if self.prompt != self.task_prompt:
                raise ValueError("prompt and task_prompt differ; send one of them")
        if self.prompt is None:
            self.prompt = self.task_prompt
        return self

    def fields(self, sent: set[str]) -> dict[str, Any]:
        """The columns to write: only what the request sent (task_prompt means prompt)."""
        out = {k: getattr(self, k) for k in sent if k in type(self).model_fields}
        if "task_prompt" in out:
            task_prompt = out.pop("task_prompt")
            if task_prompt is not None or "prompt" not in out:
                out["prompt"] = task_prompt
        required_not_null = {"name", "model", "prompt", "parameters", "timeout_seconds",
                             "agent", "tags", "retries", "retry_backoff_seconds", "on_injection"}
        for key in required_not_null & out.keys():
            if out[key] is None:
                raise ApiError(400, f"{key}: may not be null")
        return out


class TemplateCreate(TemplateFields):
    name: Name

    @model_validator(mode="after")
    def _needs_prompt(self) -> TemplateCreate:
        if self.prompt is None:
            raise ValueError("prompt (or task_prompt) is required")
        return self


class TemplateUpdate(TemplateFields):
    id: Id


class StepIn(Strict):
    template_id: Id
    on_failure: Literal[ON_FAILURE] = "stop"  # type: ignore[valid-type]
    run_if: Literal[RUN_IF] = "on_success"  # type: ignore[valid-type]


Steps = Annotated[list[StepIn], Field(min_length=MIN_STEPS, max_length=MAX_STEPS)]


class PipelineCreate(Strict):
    name: Name
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    steps: Steps


class PipelineUpdate(Strict):
    id: Id
    name: Name | None = None
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    steps: Steps | None = None


class IdBody(Strict):
    id: Id


class StartRun(Strict):
    pipeline_id: Id
    inputs: dict[str, Any] | None = None


class AdvanceRun(Strict):
    run_id: Id
    success: StrictBool
    error: Annotated[StrictStr, Field(max_length=10000)] | None = None
    output: StrictStr | None = None
    step_index: Annotated[StrictInt, Field(ge=0)] | None = None


class CancelRun(Strict):
    run_id: Id


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, "body required: send a JSON object")
    data = request_json()
    if data is None:
        raise ApiError(400, "body is not valid JSON")
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    problem = _stored_badly(data)
    if problem:
        raise ApiError(400, problem)
    return data


def request_json() -> Any:
    """The request body parsed by `parse_json`, once per request (the audit hook reads it too)."""
    if "parsed_body" not in g:
        g.parsed_body = parse_json(request.get_data(cache=True))
    return g.parsed_body


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN or Infinity, which no JSON reader accepts back), or None."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Deeper JSON is no one's configuration, and the encoders that store and echo it recurse.
MAX_DEPTH = 64


def _stored_badly(value: Any) -> str | None:
    """Why a parsed body cannot be stored as it is, or None. Walked with a stack of its
    own, so that no depth the parser allowed can exhaust the interpreter's."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str) and "\x00" in item:  # PostgreSQL stores no NUL in text or JSON
            return "body may not contain the NUL character (\\u0000)"
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            return f"body may not be nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, dict):
            stack += [(x, depth + 1) for pair in item.items() for x in pair]
        elif isinstance(item, list):
            stack += [(x, depth + 1) for x in item]
    return None


# -- responses ----------------------------------------------------------------------


def epoch(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


def template_json(tpl: WorkflowTemplate) -> dict[str, Any]:
    return {
        "id": tpl.id,
        "name": tpl.name,
        "description": tpl.description,
        "model": tpl.model,
        "prompt": tpl.prompt,
        "task_prompt": tpl.prompt,
        "parameters": tpl.parameters,
        "timeout_seconds": tpl.timeout_seconds,
        "agent": tpl.agent,
        "agent_role": tpl.agent_role,
        "tags": tpl.tags,
        "retries": tpl.retries,
        "retry_backoff_seconds": tpl.retry_backoff_seconds,
        "on_injection": tpl.on_injection,
        "created_by": tpl.created_by,
        "created_at": epoch(tpl.created_at),
        "updated_at": epoch(tpl.updated_at),
        "use_count": tpl.use_count,
        "last_used_at": epoch(tpl.last_used_at),
    }


def pipeline_json(p: Pipeline, steps: list[StepView] | None = None) -> dict[str, Any]:
    """`p` is a Pipeline, or a row of its table with its `steps` given beside it."""
    if steps is None:
        steps = [StepView(st.template_id, st.template.name, st.on_failure, st.run_if)
                 for st in p.steps]
    return {
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "steps": [
            {
                "template_id": st.template_id,
                "template_name": st.template_name,
                "on_failure": st.on_failure,
                "run_if": st.run_if,
            }
            for st in steps
        ],
        "use_count": p.use_count,
        "last_used_at": epoch(p.last_used_at),
        "runs": {
            "total": p.runs_total,
            "completed": p.runs_completed,
            "failed": p.runs_failed,
            "running": p.runs_running,
        },
        "created_by": p.created_by,
        "created_at": epoch(p.created_at),
        "updated_at": epoch(p.updated_at),
    }


def step_json(st: StepRecord) -> dict[str, Any]:
    return {
        "step_index": st.step_index,
        "template_id": st.template_id,
        "template_name": st.template_name,
        "on_failure": st.on_failure,
        "run_if": st.run_if,
        "status": st.status,
        "spawn_id": st.spawn_id,
        "started_at": epoch(st.started_at),
        "completed_at": epoch(st.completed_at),
        "error": st.error,
        "attempt": st.attempt,
        "output": st.output,
        "output_truncated": st.output_truncated,
        "usage": st.usage,
        "injection": st.injection,
    }


def run_json(run: RunRecord, steps: list[StepRecord]) -> dict[str, Any]:
    return {
        "id": run.id,
        "pipeline_id": run.pipeline_id,
        "pipeline_name": run.pipeline_name,
        "status": run.status,
        "current_step": run.current_step,
        "steps_snapshot": [step_json(st) for st in steps],
        "inputs": run.inputs,
        "started_at": epoch(run.started_at),
        "completed_at": epoch(run.completed_at),
        "triggered_by": run.triggered_by,
        "created_at": epoch(run.created_at),
    }
