"""The OpenAPI 3.1 document of the whole HTTP API, served at `/api/openapi.json`.

Built here as plain data. The document lists every operation this codebase defines and
`build()` keeps those whose route the running app registers, so a test can hold the two
together: every route is documented, every documented operation answers as described.
Schemas are no stricter than the validation in api/schemas.py (unknown body fields are
ignored), so that input the document calls invalid is input the API refuses.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app
from pydantic import TypeAdapter

from api.admin import KeyCreate
from api.callbacks import CallbackBody
from api.schemas import (
    ID_SCHEMA,
    MAX_ID,
    MAX_PAGE,
    UNPAGED_MAX,
    AdvanceRun,
    CancelRun,
    HookCreate,
    HookUpdate,
    IdBody,
    PipelineCreate,
    PipelineUpdate,
    RerunRun,
    ScheduleCreate,
    ScheduleUpdate,
    StartRun,
    TemplateCreate,
    TemplateUpdate,
)
from orchestrator.vocab import (
    AuditAction,
    AuditTarget,
    DeliveryStatus,
    FireStatus,
    HookEvent,
    OnFailure,
    OnInjection,
    OnLimit,
    Role,
    RunIf,
    RunStatus,
    StepStatus,
    values,
)

bp = Blueprint("openapi", __name__)

ERROR_STATUSES = {
    "400": "Invalid input",
    "401": "No API key, or an unknown one",
    "403": "The key's role is too low",
    "404": "Unknown id",
    "409": "State conflict",
    "413": "Body too large",
    "422": "Refused by the injection guard: the rules the prompt tripped (per item for /api/apply)",
    "429": "Rate limited (see Retry-After)",
    "503": "A dependency (database, broker) is down",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def string(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> dict:
    out: dict[str, Any] = {"type": ["string", "null"] if nullable else "string"}
    if lo is not None:
        out["minLength"] = lo
    if hi is not None:
        out["maxLength"] = hi
    return out


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict:
    out: dict[str, Any] = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = required
    return out


EPOCH = {"type": "integer", "description": "Unix epoch seconds"}
EPOCH_OR_NULL = {"type": ["integer", "null"], "description": "Unix epoch seconds"}

# Request bodies: generated from the pydantic models that validate them, so the document
# cannot drift from validation. The run actions add the `action` the view dispatches on.
REQUEST_MODELS = (TemplateCreate, TemplateUpdate, PipelineCreate, PipelineUpdate, IdBody,
                  StartRun, AdvanceRun, CancelRun, RerunRun, KeyCreate, CallbackBody,
                  ScheduleCreate, ScheduleUpdate, HookCreate, HookUpdate)
RUN_ACTIONS = {"StartRun": "start", "AdvanceRun": "advance", "CancelRun": "cancel",
               "RerunRun": "rerun"}
RENAMED = {"PipelineStepIn": "StepIn", "Callback": "CallbackBody"}
# Enums responses carry (request models bring their own): one component per vocab enum.
RESPONSE_ENUMS = (RunStatus, StepStatus, OnFailure, RunIf, OnInjection, Role, AuditAction,
                  AuditTarget, FireStatus, OnLimit, HookEvent, DeliveryStatus)


def generated_schemas() -> dict[str, Any]:
    out: dict[str, Any] = {e.__name__: TypeAdapter(e).json_schema() for e in RESPONSE_ENUMS}
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        action = RUN_ACTIONS.get(model.__name__)
        if action is not None:
            schema["properties"] = {"action": {"const": action}, **schema["properties"]}
            schema["required"] = ["action", *schema["required"]]
        out[model.__name__] = schema
    # The names these had when written by hand, kept for clients generated from them.
    for old, new in RENAMED.items():
        out[old] = {"$ref": f"#/components/schemas/{new}"}
    return out


GENERATED = generated_schemas()

SCHEMAS: dict[str, Any] = {
    **GENERATED,
    "Error": obj({
        "error": {"type": "string"},
        "items": {"type": "array", "description": "POST /api/apply: each refused item",
                  "items": obj({"kind": {"enum": ["template", "pipeline", "schedule",
                                                  "document"]},
                                "name": {"type": "string"}, "error": {"type": "string"}},
                               ["kind", "name", "error"])},
    }, ["error"]),
    "InjectionError": obj({
        "error": {"const": "Task prompt blocked: potentially unsafe content detected"},
        "injection": {"type": "array", "items": obj(
            {"rule": {"type": "string"}, "description": {"type": "string"}},
            ["rule", "description"])},
    }, ["error", "injection"]),
    "InjectionMark": obj({
        "rule": {"type": "string"},
        "description": {"type": "string"},
        "severity": {"enum": ["critical", "warning"]},
        "source": {"type": "string", "description": "inputs.<name> or steps[<i>].output"},
    }, ["rule", "description", "source"]),
    "Success": obj({"success": {"const": True}}, ["success"]),
    "Id": ID_SCHEMA,
    "Template": obj({
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "model": {"type": "string"},
        "prompt": {"type": "string"},
        "task_prompt": {"type": "string"},
        "parameters": {"type": "object"},
        "timeout_seconds": {"type": "integer"},
        "agent": {"type": "string"},
        "agent_role": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "retries": {"type": "integer"},
        "retry_backoff_seconds": {"type": "number"},
        "on_injection": ref("OnInjection"),
        "output_contract": {"type": ["object", "null"],
                            "description": "{json_schema} or {regex}; null: none"},
        "created_by": {"type": "string"},
        "created_at": EPOCH,
        "updated_at": EPOCH,
        "use_count": {"type": "integer"},
        "last_used_at": EPOCH_OR_NULL,
    }, ["id", "name", "prompt", "task_prompt", "model", "parameters", "timeout_seconds",
        "agent", "tags", "created_at", "updated_at", "use_count"]),
    "ApplyDocument": obj({
        "templates": {"type": "array", "items": {
            **obj({**GENERATED["TemplateCreate"]["properties"], "name": string(1, 200),
                   "id": {"type": "integer", "minimum": 1,
                          "description": "The stored template this item is (else: the "
                                         "one with this name)"},
                   "ref": {"type": "string", "minLength": 1,
                           "description": "What steps call it (default: its name)"}},
                  ["name"]),
            "anyOf": GENERATED["TemplateCreate"]["anyOf"]}},
        "pipelines": {"type": "array", "items": obj({
            "id": {"type": "integer", "minimum": 1},
            "name": string(1, 200),
            "description": string(None, 5000, nullable=True),
            "steps": {"type": "array", "minItems": 2, "maxItems": 50, "items": {"oneOf": [
                {"type": "string", "description": "A template's ref or name"},
                obj({"template": {"type": "string"},
                     "on_failure": ref("OnFailure"), "run_if": ref("RunIf")},
                    ["template"])]}},
        }, ["name", "steps"])},
        "schedules": {"type": "array", "items": obj({
            "pipeline": {"type": "string", "description": "The pipeline's name"},
            "name": {**string(1, 200), "description": (
                "What the schedule is known by within its pipeline (default: its cron "
                "and timezone, so that changing either makes another schedule)")},
            "cron": GENERATED["ScheduleCreate"]["properties"]["cron"],
            "timezone": {**string(1, 64), "default": "UTC"},
            "inputs": {"type": "object"},
            "enabled": {"type": "boolean", "default": True},
        }, ["pipeline", "cron"])},
        "dry_run": {"type": "boolean", "default": False},
    }),
    "ApplyChange": obj({
        "kind": {"enum": ["template", "pipeline", "schedule"]},
        "action": {"enum": ["create", "update", "unchanged"]},
        "name": {"type": "string"},
        "id": {"type": ["integer", "null"], "description": "null for a create in a dry run"},
        "fields": {"type": "array", "items": {"type": "string"}},
        "diff": {"type": "object", "additionalProperties": obj(
            {"from": {}, "to": {}}, ["from", "to"])},
    }, ["kind", "action", "name", "id", "fields", "diff"]),
    "PipelineStep": obj({
        "template_id": {"type": "integer"},
        "template_name": {"type": "string"},
        "on_failure": ref("OnFailure"),
        "run_if": ref("RunIf"),
    }, ["template_id", "template_name", "on_failure"]),
    "Pipeline": obj({
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "steps": {"type": "array", "items": ref("PipelineStep")},
        "max_concurrent_runs": {
            "type": ["integer", "null"], "minimum": 1, "maximum": 1000,
            "description": "At most this many runs started at once (pending or running, "
                           "not queued); null: no limit"},
        "on_limit": ref("OnLimit"),
        "use_count": {"type": "integer"},
        "last_used_at": EPOCH_OR_NULL,
        "runs": obj({k: {"type": "integer", "minimum": 0} for k in
                     ("total", "completed", "failed", "running")},
                    ["total", "completed", "failed", "running"]),
        "created_by": {"type": "string"},
        "created_at": EPOCH,
        "updated_at": EPOCH,
    }, ["id", "name", "steps", "use_count", "runs", "created_at", "updated_at"]),
    "Schedule": obj({
        "id": {"type": "integer"},
        "pipeline_id": {"type": "integer"},
        "name": {"type": ["string", "null"]},
        "cron": {"type": "string"},
        "timezone": {"type": "string"},
        "inputs": {"type": "object"},
        "enabled": {"type": "boolean"},
        "next_fire_at": {**EPOCH_OR_NULL, "description": "Unix epoch seconds; null while "
                                                          "disabled"},
        "last_fired_at": {**EPOCH_OR_NULL, "description": "The last fire time (epoch "
                                                           "seconds), or null"},
        "last_fire_status": {"anyOf": [ref("FireStatus"), {"type": "null"}]},
        "created_by": {"type": "string"},
        "created_at": EPOCH,
        "updated_at": EPOCH,
    }, ["id", "pipeline_id", "name", "cron", "timezone", "inputs", "enabled", "next_fire_at",
        "last_fired_at", "last_fire_status", "created_by", "created_at", "updated_at"]),
    "Hook": obj({
        "id": {"type": "integer"},
        "url": {"type": "string"},
        "events": {"type": "array", "items": ref("HookEvent")},
        "description": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "secret": {"type": "string", "description": "whsec_ + base64 of the HMAC key: "
                                                    "only in the answer of the create"},
        "created_by": {"type": "string"},
        "created_at": EPOCH,
        "updated_at": EPOCH,
    }, ["id", "url", "events", "description", "enabled", "created_by", "created_at",
        "updated_at"]),
    "HookDelivery": obj({
        "id": {"type": "integer"},
        "hook_id": {"type": "integer"},
        "webhook_id": {"type": ["string", "null"],
                       "description": "The webhook-id header: set at the first attempt, "
                                      "the same on every retry"},
        "type": ref("HookEvent"),
        "run_id": {"type": "integer"},
        "step_index": {"type": ["integer", "null"]},
        "status": ref("DeliveryStatus"),
        "attempts": {"type": "integer", "minimum": 0},
        "last_status_code": {"type": ["integer", "null"]},
        "last_error": {"type": ["string", "null"]},
        "next_attempt_at": {**EPOCH_OR_NULL, "description": "When it is sent (again); "
                                                             "null once delivered or failed"},
        "created_at": EPOCH,
        "delivered_at": EPOCH_OR_NULL,
    }, ["id", "hook_id", "webhook_id", "type", "run_id", "step_index", "status", "attempts",
        "last_status_code", "last_error", "next_attempt_at", "created_at", "delivered_at"]),
    "RunStep": obj({
        "step_index": {"type": "integer", "minimum": 0},
        "template_id": {"type": "integer"},
        "template_name": {"type": "string"},
        "on_failure": ref("OnFailure"),
        "run_if": ref("RunIf"),
        "status": ref("StepStatus"),
        "spawn_id": {"type": ["string", "null"]},
        "started_at": EPOCH_OR_NULL,
        "completed_at": EPOCH_OR_NULL,
        "error": {"type": ["string", "null"]},
        "attempt": {"type": "integer", "minimum": 1},
        "output": {"type": ["string", "null"],
                   "description": "null in run lists (see the run's output_omitted)"},
        "output_truncated": {"type": "boolean"},
        "usage": {"type": ["object", "null"],
                  "description": "What the runtime reported, plus input_tokens, "
                                 "output_tokens and cost_usd (null when no price is known)"},
        "duration_ms": {"type": ["integer", "null"], "minimum": 0,
                        "description": "From start to end, to the millisecond; null until "
                                       "both are known"},
        "reused": {"type": "boolean",
                   "description": "Carried over as it ended from the run this one reruns"},
        "agent": {"type": "string", "description": "The agent profile the step runs on"},
        "waiting_for_person": {"type": "boolean",
                               "description": "Running on a manual profile: only Step Done "
                                              "/ Step Failed (advance) ends it"},
        "attempts": {"type": "array", "items": ref("Attempt"),
                     "description": "GET ?id= only: the step's earlier (failed, retried) "
                                    "attempts, oldest first"},
        "injection": {"type": ["array", "null"], "items": ref("InjectionMark"),
                      "description": "what flowed into the prompt and tripped the guard"},
    }, ["step_index", "template_id", "template_name", "on_failure", "status", "spawn_id",
        "started_at", "completed_at", "error", "attempt"]),
    "Attempt": obj({
        "attempt": {"type": "integer", "minimum": 1},
        "status": {"const": StepStatus.FAILED.value},
        "error": {"type": ["string", "null"]},
        "spawn_id": {"type": ["string", "null"]},
        "started_at": EPOCH_OR_NULL,
        "completed_at": EPOCH_OR_NULL,
        "duration_ms": {"type": ["integer", "null"], "minimum": 0},
    }, ["attempt", "status", "error", "spawn_id", "started_at", "completed_at",
        "duration_ms"]),
    "Run": obj({
        "id": {"type": "integer"},
        "pipeline_id": {"type": "integer"},
        "pipeline_name": {"type": "string"},
        "status": ref("RunStatus"),
        "current_step": {"type": "integer", "minimum": 0},
        "steps_snapshot": {"type": "array", "items": ref("RunStep")},
        "inputs": {"type": "object", "description": "{} in run lists"},
        "output_omitted": {
            "type": "boolean",
            "description": "true in run lists, which send step outputs as null and inputs "
                           "as {}; GET ?id= has them whole"},
        "started_at": EPOCH_OR_NULL,
        "completed_at": EPOCH_OR_NULL,
        "triggered_by": {"type": "string"},
        "created_at": EPOCH,
        "duration_ms": {"type": ["integer", "null"], "minimum": 0,
                        "description": "From start to end, to the millisecond; null until "
                                       "the run has ended"},
        "rerun_of": {"type": ["integer", "null"],
                     "description": "The run this one reruns, or null"},
        "queued": {"type": "boolean",
                   "description": "true while the run waits for a slot under its "
                                  "pipeline's concurrency limit"},
        "usage": {"type": ["object", "null"],
                  "description": "The sum of its steps' usage: input_tokens, output_tokens, "
                                 "cost_usd (null when no step's cost is known); null when no "
                                 "step reported any"},
    }, ["id", "pipeline_id", "pipeline_name", "status", "current_step", "steps_snapshot",
        "started_at", "completed_at", "triggered_by", "created_at"]),
    "Key": obj({
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "role": ref("Role"),
        "prefix": {"type": "string"},
        "created_at": EPOCH,
        "revoked": {"type": "boolean"},
    }, ["id", "name", "role", "prefix", "created_at", "revoked"]),
    "AuditEntry": obj({
        "id": {"type": "integer"},
        "at": EPOCH,
        "actor": {"type": "string"},
        "role": ref("Role"),
        "action": ref("AuditAction"),
        "target_type": ref("AuditTarget"),
        "target_id": {"type": ["integer", "null"]},
        "detail": {"type": "object"},
    }, ["id", "at", "actor", "role", "action", "target_type", "target_id", "detail"]),
}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def ok(status: str, description: str, props: dict[str, Any]) -> dict[str, Any]:
    return {status: {"description": description,
                     "content": json_content(obj(props, list(props)))}}


def errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def operation(summary: str, responses: dict[str, Any], *, role: str | None,
              body: str | dict | None = None, params: list[dict] | None = None,
              mutating: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary}
    codes = ["400"] if (body or params) else []
    if role is not None:
        op["security"] = [{"ApiKey": []}, {"Bearer": []}]
        op["x-required-role"] = role
        codes += ["401", "403"]
        if role != Role.VIEWER or mutating:
            op["summary"] += f" ({role})"
    if body is not None:
        schema = ref(body) if isinstance(body, str) else body
        op["requestBody"] = {"required": True, "content": json_content(schema)}
        codes += ["413"]
    if role is not None or body is not None:
        codes += ["429"]  # refused requests count by address, mutations by key too
    if params:
        op["parameters"] = params
    if role is not None or body is not None:
        codes += ["503"]
    op["responses"] = {**responses, **errors(*sorted(set(codes) - set(responses)))}
    return op


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


QUERY_ID = {"type": "string", "pattern": "^[0-9]{1,10}$"}
TEMPLATE = {"template": ref("Template")}
PIPELINE = {"pipeline": ref("Pipeline")}
SCHEDULE = {"schedule": ref("Schedule")}
HOOK = {"hook": ref("Hook")}
RUN = {"run": ref("Run")}

EDIT_ROLE = ('A template on an agent profile with edit_role = "admin" (one whose prompt '
             "runs as a program, say) is created or changed only by an admin: 403 otherwise, "
             "after the body is validated.")
TOTAL = {"type": "integer", "minimum": 0, "description": "How many items the whole list has"}
PAGE_PARAMS = [
    query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
          f"Page size (default: every item, up to {UNPAGED_MAX:,})"),
    query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_ID},
          "Items to skip (default 0)"),
]

# (path, method) → operation; the Flask rule is the path with no braces.
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/healthz", "get"): operation(
        "The process answers", ok("200", "Up", {"status": {"const": "ok"}}), role=None),
    ("/readyz", "get"): operation(
        "Database and broker reachable",
        {**ok("200", "Ready", {"status": {"const": "ready"}}),
         "503": {"$ref": "#/components/responses/E503"}}, role=None),
    ("/api/openapi.json", "get"): operation(
        "This document", {"200": {"description": "OpenAPI 3.1",
                                  "content": json_content({"type": "object"})}}, role=None),
    ("/api/workflows", "get"): operation(
        "List workflow templates in id order",
        ok("200", "Templates", {"templates": {"type": "array", "items": ref("Template")},
                                "total": TOTAL}),
        role=Role.VIEWER, params=PAGE_PARAMS),
    ("/api/workflows", "post"): {**operation(
        "Create a template", {**ok("201", "Created", TEMPLATE), **errors("422")},
        role=Role.OPERATOR, body="TemplateCreate", mutating=True), "description": EDIT_ROLE},
    ("/api/workflows", "put"): {**operation(
        "Update a template (only the fields sent)",
        {**ok("200", "Updated", TEMPLATE), **errors("404", "422")},
        role=Role.OPERATOR, body="TemplateUpdate", mutating=True), "description": EDIT_ROLE},
    ("/api/workflows", "delete"): operation(
        "Delete a template no pipeline uses (409 otherwise)",
        {"200": {"description": "Deleted", "content": json_content(ref("Success"))},
         **errors("404", "409")},
        role=Role.OPERATOR, body="IdBody", mutating=True),
    ("/api/pipelines", "get"): operation(
        "List pipelines with their run statistics, in id order",
        ok("200", "Pipelines", {"pipelines": {"type": "array", "items": ref("Pipeline")},
                                "total": TOTAL}),
        role=Role.VIEWER, params=PAGE_PARAMS),
    ("/api/pipelines", "post"): operation(
        "Create a pipeline (2 to 50 steps)", ok("201", "Created", PIPELINE),
        role=Role.OPERATOR, body="PipelineCreate", mutating=True),
    ("/api/pipelines", "put"): operation(
        "Update a pipeline", {**ok("200", "Updated", PIPELINE), **errors("404")},
        role=Role.OPERATOR, body="PipelineUpdate", mutating=True),
    ("/api/pipelines", "delete"): operation(
        "Delete a pipeline; its runs are kept",
        {"200": {"description": "Deleted", "content": json_content(ref("Success"))},
         **errors("404")},
        role=Role.OPERATOR, body="IdBody", mutating=True),
    ("/api/schedules", "get"): operation(
        "List schedules in id order",
        {**ok("200", "Schedules", {"schedules": {"type": "array", "items": ref("Schedule")}}),
         **errors("404")},
        role=Role.VIEWER, params=[query("pipeline_id", QUERY_ID, "Only this pipeline's")]),
    ("/api/schedules", "post"): operation(
        "Create a schedule: a cron expression in a time zone that starts runs of a pipeline",
        {**ok("201", "Created", SCHEDULE), **errors("404")},
        role=Role.OPERATOR, body="ScheduleCreate", mutating=True),
    ("/api/schedules", "put"): operation(
        "Update a schedule (only the fields sent; a new cron, timezone or enabled plans "
        "the next fire from now)",
        {**ok("200", "Updated", SCHEDULE), **errors("404")},
        role=Role.OPERATOR, body="ScheduleUpdate", mutating=True),
    ("/api/schedules", "delete"): operation(
        "Delete a schedule; the runs it started are kept",
        {"200": {"description": "Deleted", "content": json_content(ref("Success"))},
         **errors("404")},
        role=Role.OPERATOR, body="IdBody", mutating=True),
    ("/api/hooks", "get"): operation(
        "List outgoing webhooks (without their secrets)",
        ok("200", "Hooks", {"hooks": {"type": "array", "items": ref("Hook")}}),
        role=Role.ADMIN),
    ("/api/hooks", "post"): operation(
        "Create an outgoing webhook; the answer carries its signing secret, once",
        ok("201", "Created", HOOK), role=Role.ADMIN, body="HookCreate", mutating=True),
    ("/api/hooks", "put"): operation(
        "Update an outgoing webhook (only the fields sent)",
        {**ok("200", "Updated", HOOK), **errors("404")},
        role=Role.ADMIN, body="HookUpdate", mutating=True),
    ("/api/hooks", "delete"): operation(
        "Delete an outgoing webhook and its delivery log",
        {"200": {"description": "Deleted", "content": json_content(ref("Success"))},
         **errors("404")},
        role=Role.ADMIN, body="IdBody", mutating=True),
    ("/api/hooks/deliveries", "get"): operation(
        "The delivery log, newest first: status, attempts, last response",
        {**ok("200", "Deliveries", {"deliveries": {"type": "array",
                                                   "items": ref("HookDelivery")}}),
         **errors("404")},
        role=Role.ADMIN,
        params=[query("hook_id", QUERY_ID, "Only this hook's"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 200},
                      "How many (default 50)")]),
    ("/api/pipelines/run", "get"): operation(
        "List runs newest first, or one run with ?id=",
        {"200": {"description": "Runs, or one run", "content": json_content({"oneOf": [
            obj({"runs": {"type": "array", "items": ref("Run")}}, ["runs"]),
            obj(RUN, ["run"])]})},
         **errors("404")},
        role=Role.VIEWER,
        params=[
            query("limit", {"type": "integer", "minimum": 1, "maximum": 200},
                  "How many runs (default 20)"),
            query("pipeline_id", QUERY_ID, "Only this pipeline's runs"),
            query("status", {"enum": values(RunStatus)}, "Only runs in this status"),
            query("id", QUERY_ID, "One run"),
        ]),
    ("/api/pipelines/run", "post"): {
        **operation(
            "Start, advance, cancel or rerun a run (rerun: a new run of a finished run's "
            "snapshot, from a step)",
            {**ok("201", "Started or rerun (or the run an earlier request with the same "
                  "Idempotency-Key created)", RUN),
             **ok("202", "Advanced or cancelled", RUN), **errors("404", "409")},
            role=Role.OPERATOR,
            body={"oneOf": [ref("StartRun"), ref("AdvanceRun"), ref("CancelRun"),
                            ref("RerunRun")]},
            mutating=True,
            params=[{"name": "Idempotency-Key", "in": "header", "required": False,
                     "description": "On start and rerun: the same key and body within 24 hours "
                                    "return the same run; another body is a 409",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                "pattern": "^[\\x21-\\x7e]+$"}}]),
    },
    ("/api/apply", "post"): operation(
        "Apply a document of templates, pipelines and schedules, all of it or none",
        {**ok("200", "The plan, carried out unless dry_run",
              {"dry_run": {"type": "boolean"},
               "changes": {"type": "array", "items": ref("ApplyChange")}}),
         **errors("422")},
        role=Role.OPERATOR, body="ApplyDocument", mutating=True),
    ("/api/me", "get"): operation(
        "Who the key belongs to",
        ok("200", "Identity", {"name": {"type": "string"},
                               "role": ref("Role")}),
        role=Role.VIEWER),
    ("/api/agents", "get"): operation(
        "Configured agent profiles",
        ok("200", "Profiles", {"agents": {"type": "array", "items": obj(
            {"name": {"type": "string"}, "runtime": {"type": "string"}},
            ["name", "runtime"])}}),
        role=Role.VIEWER),
    ("/api/keys", "get"): operation(
        "List API keys", ok("200", "Keys", {"keys": {"type": "array", "items": ref("Key")}}),
        role=Role.ADMIN),
    ("/api/keys", "post"): operation(
        "Create an API key (shown once)",
        {"201": {"description": "Created", "content": json_content({
            "allOf": [ref("Key"), obj({"key": {"type": "string"}}, ["key"])]})}},
        role=Role.ADMIN, body="KeyCreate", mutating=True),
    ("/api/keys", "delete"): operation(
        "Revoke an API key",
        {"200": {"description": "Revoked", "content": json_content(ref("Success"))},
         **errors("404")},
        role=Role.ADMIN, body="IdBody", mutating=True),
    ("/api/audit", "get"): operation(
        "The audit log, newest first",
        ok("200", "Entries", {"entries": {"type": "array", "items": ref("AuditEntry")}}),
        role=Role.ADMIN,
        params=[
            query("limit", {"type": "integer", "minimum": 1, "maximum": 500},
                  "How many entries (default 50)"),
            query("before_id", QUERY_ID, "Entries older than this one"),
            query("target_type", {"enum": values(AuditTarget)},
                  "Only changes to this kind of object"),
            query("target_id", QUERY_ID, "Only changes to this object"),
        ]),
    ("/api/callbacks/{run_id}/{step_index}/{attempt}", "post"): {
        **operation(
            "An agent gateway reports how a webhook step's session ended (no API key: "
            "the per-attempt secret in the URL is the credential; a wrong one is a 404)",
            {**ok("200", "The step is resolved", {
                "run_id": {"type": "integer"}, "run_status": {"type": "string"},
                "step": ref("RunStep")}),
             **errors("404", "409")},
            role=None, body="CallbackBody", mutating=True,
            params=[
                *({"name": n, "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}
                  for n in ("run_id", "step_index", "attempt")),
                {"name": "secret", "in": "query", "required": False,
                 "schema": {"type": "string"}, "description": "the step's callback secret"},
            ]),
    },
    ("/metrics", "get"): operation(
        "Prometheus metrics (any key by default; METRICS_AUTH=none opens it)",
        {"200": {"description": "Prometheus text format",
                 "content": {"text/plain": {"schema": {"type": "string"}}}}},
        role=Role.VIEWER),
    ("/api/events", "get"): operation(
        "Run events as a server-sent event stream (also takes the key as ?key=); "
        "429 past the open-stream caps",
        {"200": {"description": "text/event-stream",
                 "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
        role=Role.VIEWER,
        params=[
            query("run_id", QUERY_ID, "Only this run's events"),
            query("pipeline_id", QUERY_ID, "Only this pipeline's events"),
            query("after", {"type": "string"}, "Start after this event id"),
            query("max_duration", {"type": "integer", "minimum": 1, "maximum": 3600},
                  "Seconds before the stream ends (default 300)"),
            query("key", {"type": "string"}, "The API key, for EventSource"),
        ]),
}

# Routes that are not part of the JSON API: the web UI and its static files.
UNDOCUMENTED_ENDPOINTS = ("static", "ui.")


def openapi_path(rule: str) -> str:
    """`/a/<int:run_id>` (Flask) → `/a/{run_id}` (OpenAPI)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def registered_operations(app: Flask) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(UNDOCUMENTED_ENDPOINTS):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            out.add((openapi_path(rule.rule), method.lower()))
    return out


def build(app: Flask) -> dict[str, Any]:
    present = registered_operations(app)
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), op in OPERATIONS.items():
        if (path, method) in present:
            paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pipeline Orchestrator",
            "version": "1",
            "description": "Chains AI-agent workflow templates into multi-step pipelines "
                           "that advance by themselves. Every error is JSON "
                           '{"error": "..."}; times are Unix epoch seconds.',
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                f"E{code}": {"description": text, "content": json_content(
                    # /api/apply answers a 422 as an Error whose `items` carry the rules
                    {"anyOf": [ref("InjectionError"), ref("Error")]} if code == "422"
                    else ref("Error"))}
                for code, text in ERROR_STATUSES.items()
            },
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


@bp.get("/api/openapi.json")
def openapi_json():
    doc = current_app.extensions.get("openapi")
    if doc is None:
        doc = current_app.extensions["openapi"] = build(current_app)
    return doc
