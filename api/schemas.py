"""Request validation (pydantic) and response shapes (SPEC §2) for the HTTP API.

Inputs are strict: a wrong type is a 400, never coerced, except ids, which may be
integers or numeric strings. `template_name` in pipeline steps is ignored on input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from flask import current_app, g, has_app_context, request
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from api.errors import ApiError
from orchestrator import hooks, usage
from orchestrator.attempts import Attempt
from orchestrator.catalog import Page, StepView
from orchestrator.contracts import InvalidContract, check_contract
from orchestrator.models import Hook, HookDelivery, Pipeline, Schedule, WorkflowTemplate
from orchestrator.records import RunRecord, StepRecord
from orchestrator.schedules import InvalidSchedule, check_cron, check_timezone
from orchestrator.transitions import MAX_STEPS, MIN_STEPS
from orchestrator.vocab import HookEvent, OnFailure, OnInjection, OnLimit, RunIf, StepStatus

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


ID_SCHEMA = {
    "description": "An id: an integer, or a string of ASCII digits",
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        {"type": "string", "pattern": "^[0-9]{1,10}$"},
    ],
}
Id = Annotated[int, BeforeValidator(_parse_id), WithJsonSchema(ID_SCHEMA)]
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
    # The length check first: int() refuses (ValueError) digit strings past ~4300 digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


# Template and pipeline lists: without `limit` a list is every item (as Mission Control
# answers it), but never more than UNPAGED_MAX; with it, at most MAX_PAGE.
MAX_PAGE = 1000
UNPAGED_MAX = 10_000


def page_args(args: Mapping[str, str]) -> Page:
    """`?limit=` (1–MAX_PAGE, default every item up to UNPAGED_MAX) and `?offset=` (>= 0)."""
    limit = int_arg(args.get("limit"), "limit", UNPAGED_MAX, 1, MAX_PAGE)
    return Page(limit, int_arg(args.get("offset"), "offset", 0, 0, MAX_ID))


# `parameters` and `inputs` are rendered into prompts and copied into every run; a few
# of them the size of a whole body would make every listing and render slow.
MAX_OBJECT_BYTES = 64 * 1024


def _small_object(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_OBJECT_BYTES:
        raise ValueError(f"must be at most {MAX_OBJECT_BYTES} bytes (64 KiB) as JSON, "
                         f"got {size}")
    return value


SmallObject = Annotated[dict[str, Any], AfterValidator(_small_object),
                       Field(description="At most 64 KiB as JSON (else 400)")]


class Strict(BaseModel):
    # Enum fields hold their plain string once validated: that is what is stored and sent.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False, use_enum_values=True)


PROMPT_DOC = ("a Jinja template, rendered when the step starts within RENDER_TIMEOUT_SECONDS "
              "and RENDER_MEMORY_MB; one that does not parse is a 400")
Prompt = Annotated[StrictStr, Field(min_length=1, max_length=10000, description=PROMPT_DOC)]
# Validated as an int or a float; documented as the one JSON type both are.
Seconds = Annotated[StrictInt | StrictFloat, Field(ge=0, le=3600),
                    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 3600})]


def _contract(value: Any) -> Any:
    try:
        return check_contract(value)
    except InvalidContract as exc:  # a ValueError is what pydantic reports (a 400)
        raise ValueError(str(exc)) from None


OutputContract = Annotated[dict[str, Any], AfterValidator(_contract), WithJsonSchema({
    "oneOf": [{"type": "object", "properties": {"json_schema": {"type": "object"}},
               "required": ["json_schema"], "additionalProperties": False},
              {"type": "object", "properties": {"regex": {"type": "string", "minLength": 1,
                                                          "maxLength": 2000}},
               "required": ["regex"], "additionalProperties": False}],
    "description": "What the step's output must satisfy: a JSON Schema, or a regex searched "
                   "for in it"})]


class TemplateFields(Strict):
    name: Name | None = None
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    model: Annotated[StrictStr, Field(min_length=1, max_length=100)] | None = None
    prompt: Prompt | None = None
    task_prompt: Prompt | None = None
    parameters: SmallObject | None = None
    timeout_seconds: Annotated[StrictInt, Field(ge=10, le=3600)] | None = None
    agent: Annotated[StrictStr, Field(min_length=1, max_length=100,
                                      description="an agent profile name")] | None = None
    agent_role: Annotated[StrictStr, Field(max_length=100)] | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    retries: Annotated[StrictInt, Field(ge=0, le=10)] | None = None
    retry_backoff_seconds: Seconds | None = None
    on_injection: OnInjection | None = None
    output_contract: OutputContract | None = None

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
    model_config = ConfigDict(json_schema_extra={
        "anyOf": [{"required": ["prompt"]}, {"required": ["task_prompt"]}]})
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
    on_failure: OnFailure = OnFailure.STOP.value  # type: ignore[assignment]
    run_if: RunIf = RunIf.ON_SUCCESS.value  # type: ignore[assignment]


Steps = Annotated[list[StepIn], Field(min_length=MIN_STEPS, max_length=MAX_STEPS)]


# At most this many runs of the pipeline started at once (null: no limit), SPEC §10.
MaxConcurrentRuns = Annotated[StrictInt, Field(ge=1, le=1000)] | None


class PipelineCreate(Strict):
    name: Name
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    steps: Steps
    max_concurrent_runs: MaxConcurrentRuns = None
    on_limit: OnLimit = OnLimit.QUEUE.value  # type: ignore[assignment]


class PipelineUpdate(Strict):
    id: Id
    name: Name | None = None
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    steps: Steps | None = None
    max_concurrent_runs: MaxConcurrentRuns = None
    on_limit: OnLimit | None = None


class IdBody(Strict):
    id: Id


class StartRun(Strict):
    pipeline_id: Id
    inputs: SmallObject | None = None


class RerunRun(Strict):
    run_id: Id
    from_step: Annotated[StrictInt, Field(ge=0)] | None = Field(
        None, description="The first step to run again (default: the first that did not "
                          "complete); the steps before it are carried over as they ended")
    inputs: SmallObject | None = Field(None, description="Default: the source run's inputs")


class AdvanceRun(Strict):
    run_id: Id
    success: StrictBool
    error: Annotated[StrictStr, Field(max_length=10000)] | None = None
    output: StrictStr | None = None
    step_index: Annotated[StrictInt, Field(ge=0)] | None = None


class CancelRun(Strict):
    run_id: Id


def _checked(check):
    def validate(value: str) -> str:
        try:
            return check(value)
        except InvalidSchedule as exc:  # a ValueError is what pydantic reports (a 400)
            raise ValueError(str(exc)) from None
    return AfterValidator(validate)


Cron = Annotated[StrictStr, Field(min_length=1, max_length=200, description=(
    "A standard 5-field cron expression: minute hour day-of-month month day-of-week")),
    _checked(check_cron)]
TimeZone = Annotated[StrictStr, Field(min_length=1, max_length=64, description=(
    "An IANA time zone name; fire times follow its wall clock")), _checked(check_timezone)]
ScheduleName = Annotated[StrictStr, Field(min_length=1, max_length=200, description=(
    "Optional: what `apply` knows the schedule by within its pipeline (else: its cron "
    "and timezone)"))]


class ScheduleCreate(Strict):
    pipeline_id: Id
    cron: Cron
    timezone: TimeZone = "UTC"
    inputs: SmallObject = Field(default_factory=dict)
    enabled: StrictBool = True
    name: ScheduleName | None = None


def sent_fields(body: BaseModel, sent: set[str], nullable: str) -> dict[str, Any]:
    """The fields of an update `body` that its request sent (`sent`: the JSON's keys),
    but its id; null only for the one field that may be cleared."""
    out = {k: getattr(body, k) for k in sent if k in type(body).model_fields and k != "id"}
    for key, value in out.items():
        if value is None and key != nullable:
            raise ApiError(400, f"{key}: may not be null")
    return out


class ScheduleUpdate(Strict):
    id: Id
    pipeline_id: Id | None = None
    cron: Cron | None = None
    timezone: TimeZone | None = None
    inputs: SmallObject | None = None
    enabled: StrictBool | None = None
    name: ScheduleName | None = None

    def fields(self, sent: set[str]) -> dict[str, Any]:
        """The columns to write: what the request sent (only `name` may be null)."""
        return sent_fields(self, sent, nullable="name")


def _unique_events(events: list[str]) -> list[str]:
    return sorted(set(events))


HookEvents = Annotated[list[HookEvent], Field(min_length=1, max_length=20),
                       AfterValidator(_unique_events)]
HookUrl = Annotated[StrictStr, Field(min_length=1, max_length=2000, description=(
    "http:// or https://; loopback and private addresses only with HOOKS_ALLOW_PRIVATE"))]


class HookCreate(Strict):
    url: HookUrl
    events: HookEvents
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    enabled: StrictBool = True


class HookUpdate(Strict):
    id: Id
    url: HookUrl | None = None
    events: HookEvents | None = None
    description: Annotated[StrictStr, Field(max_length=5000)] | None = None
    enabled: StrictBool | None = None

    def fields(self, sent: set[str]) -> dict[str, Any]:
        """The columns to write: what the request sent (only `description` may be null)."""
        return sent_fields(self, sent, nullable="description")


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
    """The request body parsed by `parse_json`, once per request (the audit entry reads it too)."""
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


def duration_ms(started: float | None, ended: float | None) -> int | None:
    """Milliseconds from start to end (times are stored to the sub-second); None until
    both are known."""
    if started is None or ended is None:
        return None
    return max(0, round((ended - started) * 1000))


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
        "output_contract": tpl.output_contract,
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
        "max_concurrent_runs": p.max_concurrent_runs,
        "on_limit": p.on_limit,
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


def schedule_json(sc: Schedule) -> dict[str, Any]:
    return {
        "id": sc.id,
        "pipeline_id": sc.pipeline_id,
        "name": sc.name,
        "cron": sc.cron,
        "timezone": sc.timezone,
        "inputs": sc.inputs,
        "enabled": sc.enabled,
        "next_fire_at": epoch(sc.next_fire_at),
        "last_fired_at": epoch(sc.last_fired_at),
        "last_fire_status": sc.last_fire_status,
        "created_by": sc.created_by,
        "created_at": epoch(sc.created_at),
        "updated_at": epoch(sc.updated_at),
    }


def hook_json(hook: Hook, with_secret: bool = False) -> dict[str, Any]:
    """A hook; its `secret` only in the answer that created it."""
    out = {
        "id": hook.id,
        "url": hook.url,
        "events": hooks.events_of(hook),
        "description": hook.description,
        "enabled": hook.enabled,
        "created_by": hook.created_by,
        "created_at": epoch(hook.created_at),
        "updated_at": epoch(hook.updated_at),
    }
    if with_secret:
        out["secret"] = hook.secret
    return out


def delivery_json(d: HookDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "hook_id": d.hook_id,
        "webhook_id": d.webhook_id,
        "type": d.event_type,
        "run_id": d.run_id,
        "step_index": d.step_index,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "next_attempt_at": epoch(d.next_attempt_at) if d.status == "pending" else None,
        "created_at": epoch(d.created_at),
        "delivered_at": epoch(d.delivered_at),
    }


def waits_for_person(st: StepRecord, profiles: dict[str, Any] | None = None) -> bool:
    """True while the step runs on a profile whose runtime is `manual`: nothing will end it
    but a person's Step Done / Step Failed (or a cancel). The profiles are the app's unless
    given (a worker rendering a webhook's body has no app)."""
    if st.status != StepStatus.RUNNING:
        return False
    if profiles is None:
        if not has_app_context():
            return False
        profiles = current_app.config["PROFILES"]
    profile = profiles.get(st.agent)
    return profile is not None and profile.runtime == "manual"


def step_json(st: StepRecord, omit_output: bool = False,
              profiles: dict[str, Any] | None = None) -> dict[str, Any]:
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
        "output": None if omit_output else st.output,
        "output_truncated": st.output_truncated,
        "usage": st.usage,
        "duration_ms": duration_ms(st.started_at, st.completed_at),
        "reused": st.reused,
        "agent": st.agent,
        "waiting_for_person": waits_for_person(st, profiles),
        "injection": st.injection,
    }


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "status": StepStatus.FAILED.value,  # an attempt before the latest is one that failed and was retried
        "error": a.error,
        "spawn_id": a.spawn_id,
        "started_at": epoch(a.started_at),
        "completed_at": epoch(a.completed_at),
        "duration_ms": duration_ms(a.started_at, a.completed_at),
    }


def run_detail_json(
    run: RunRecord, steps: list[StepRecord], attempts: dict[int, list[Attempt]],
    profiles: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run as `GET ?id=` shows it: each step also with its earlier attempts."""
    out = run_json(run, steps, profiles=profiles)
    for step in out["steps_snapshot"]:
        step["attempts"] = [attempt_json(a) for a in attempts.get(step["step_index"], [])]
    return out


def run_json(run: RunRecord, steps: list[StepRecord], omit_output: bool = False,
             profiles: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run as `GET ?id=` shows it; `omit_output` (run lists) keeps every key but sends
    step outputs as null and the inputs as {}, which are most of a run's size."""
    return {
        "id": run.id,
        "pipeline_id": run.pipeline_id,
        "pipeline_name": run.pipeline_name,
        "status": run.status,
        "current_step": run.current_step,
        "steps_snapshot": [step_json(st, omit_output, profiles) for st in steps],
        "inputs": {} if omit_output else run.inputs,
        "output_omitted": omit_output,
        "started_at": epoch(run.started_at),
        "completed_at": epoch(run.completed_at),
        "triggered_by": run.triggered_by,
        "created_at": epoch(run.created_at),
        "duration_ms": duration_ms(run.started_at, run.completed_at),
        "rerun_of": run.rerun_of,
        "queued": run.queued,
        "usage": usage.total(st.usage for st in steps),
    }
