"""Runs and steps as read from the database: frozen records over SQLAlchemy Core rows.

A record never changes. The write path (`runs`) states the columns a transition sets
and makes the new record from the old one and those changes (`dataclasses.replace`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Result

from orchestrator.models import Pipeline, PipelineRun, RunStep

RUNS = PipelineRun.__table__
STEPS = RunStep.__table__
PIPELINES = Pipeline.__table__


class NotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A `pipeline_runs` row (columns as in `models.PipelineRun`)."""

    id: int
    pipeline_id: int
    pipeline_name: str
    status: str
    current_step: int
    inputs: dict[str, Any]
    inputs_injection: dict[str, Any] | None
    triggered_by: str
    started_at: float | None
    completed_at: float | None
    created_at: float
    step_due_at: float | None
    rerun_of: int | None
    queued: bool


@dataclass(frozen=True, slots=True)
class ListedStep:
    """What a run list shows of a step: its place, its outcome and its times. The rest
    (the prompt, the parameters, the lease) stays in the database rather than be decoded
    for nothing."""

    run_id: int
    step_index: int
    template_id: int
    template_name: str
    on_failure: str
    run_if: str
    status: str
    attempt: int
    spawn_id: str | None
    started_at: float | None
    completed_at: float | None
    error: str | None
    output: str | None
    output_truncated: bool
    usage: dict[str, Any] | None
    reused: bool
    agent: str
    injection: list[Any] | None


@dataclass(frozen=True, slots=True)
class StepRecord(ListedStep):
    """A `run_steps` row (columns as in `models.RunStep`)."""

    id: int
    model: str
    prompt: str
    parameters: dict[str, Any]
    timeout_seconds: int
    max_attempts: int
    retry_backoff_seconds: float
    on_injection: str
    output_injection: list[Any] | None
    output_contract: dict[str, Any] | None
    worker: str | None
    lease_expires_at: float | None
    deadline_at: float | None
    callback_secret_hash: str | None


R = TypeVar("R", RunRecord, ListedStep, StepRecord)


def records(kind: type[R], found: Result[Any]) -> list[R]:
    """The rows of `found` as records of `kind`."""
    keys = tuple(found.keys())
    return [kind(**dict(zip(keys, row, strict=True))) for row in found.all()]
