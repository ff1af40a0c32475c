"""Tables: API keys, workflow templates, pipelines and their steps, runs, run steps, events,
the step-duration histogram, schedules and their fires.

A run copies everything it needs from its pipeline and templates into `run_steps` when it
starts, so editing or deleting them later never changes a run. `run_events` is append-only
and written in the same transaction as every state change. Times are epoch seconds.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from orchestrator.vocab import OnFailure, OnInjection, OnLimit, RunIf, RunStatus, StepStatus

JSONType = JSON().with_variant(JSONB(), "postgresql")
# For columns where None means "nothing" and must be SQL NULL (JSON stores a JSON null).
NullableJSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # a vocab.Role
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class WorkflowTemplate(Base):
    __tablename__ = "workflow_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(100), default="sonnet")
    prompt: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=300)
    agent: Mapped[str] = mapped_column(String(100), default="default")
    agent_role: Mapped[str | None] = mapped_column(String(100))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_backoff_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # What a step does when what flows into its prompt trips the injection guard.
    on_injection: Mapped[str] = mapped_column(String(8), default=OnInjection.WARN.value,
                                              server_default=OnInjection.WARN.value)
    # What the step's output must satisfy (orchestrator.contracts), or None.
    output_contract: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    created_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    last_used_at: Mapped[float | None] = mapped_column(Float)


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    use_count: Mapped[int] = mapped_column(Integer, default=0)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    # Run statistics kept in step with run transitions, so listing never counts runs.
    # `runs_running` counts runs not yet finished (pending or running).
    runs_total: Mapped[int] = mapped_column(Integer, default=0)
    runs_completed: Mapped[int] = mapped_column(Integer, default=0)
    runs_failed: Mapped[int] = mapped_column(Integer, default=0)
    runs_running: Mapped[int] = mapped_column(Integer, default=0)
    # The concurrency limit (SPEC §10): at most this many runs started and active at once
    # (None: no limit), and what a start beyond it does.
    max_concurrent_runs: Mapped[int | None] = mapped_column(Integer)
    on_limit: Mapped[str] = mapped_column(String(16), default=OnLimit.QUEUE.value)

    steps: Mapped[list[PipelineStep]] = relationship(
        order_by="PipelineStep.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class PipelineStep(Base):
    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("pipeline_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    # RESTRICT: a template still used by a pipeline cannot be deleted.
    template_id: Mapped[int] = mapped_column(
        ForeignKey("workflow_templates.id", ondelete="RESTRICT"), index=True
    )
    on_failure: Mapped[str] = mapped_column(String(10), default=OnFailure.STOP.value)
    run_if: Mapped[str] = mapped_column(String(12), default=RunIf.ON_SUCCESS.value)

    template: Mapped[WorkflowTemplate] = relationship(lazy="selectin")


class Schedule(Base):
    """A cron expression that starts runs of a pipeline (see `orchestrator.schedules`)."""

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "enabled", "next_fire_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Deleting a pipeline deletes its schedules (its runs are kept: they have no key).
    pipeline_id: Mapped[int] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    # What `apply` knows the schedule by within its pipeline (else its cron and timezone).
    name: Mapped[str | None] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The next fire time; null while disabled. Beat fires a schedule once this has passed.
    next_fire_at: Mapped[float | None] = mapped_column(Float)
    last_fired_at: Mapped[float | None] = mapped_column(Float)
    last_fire_status: Mapped[str | None] = mapped_column(String(12))  # a vocab.FireStatus
    created_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class Hook(Base):
    """An outgoing webhook: where to POST which events, signed with its secret."""

    __tablename__ = "hooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    # The subscribed vocab.HookEvent values, comma-separated between commas
    # (",run.failed,step.waiting,"), so that a LIKE finds a subscriber on every backend.
    events: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # "whsec_" + base64 of the HMAC key; the service must sign with it, so it is stored.
    secret: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class HookDelivery(Base):
    """One event for one hook: the outbox row, written in the transaction of the
    transition that caused it, then sent (and retried) by workers until a 2xx."""

    __tablename__ = "hook_deliveries"
    __table_args__ = (
        Index("ix_hook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_hook_deliveries_hook", "hook_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    hook_id: Mapped[int] = mapped_column(ForeignKey("hooks.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(32))  # a vocab.HookEvent
    run_id: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int | None] = mapped_column(Integer)
    event_at: Mapped[float] = mapped_column(Float)
    # Set at the first attempt and kept: every retry sends the same id and the same body.
    webhook_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="pending")  # a DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the next attempt is due; while one is in flight, when it counts as lost.
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    delivered_at: Mapped[float | None] = mapped_column(Float)


class ScheduleFire(Base):
    """One fire time of a schedule, written in the transaction that starts its run: the
    unique key is what makes a fire time start at most one run, whoever fires it."""

    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("schedule_id", "fire_time"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_time: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(12))  # a vocab.FireStatus
    run_id: Mapped[int | None] = mapped_column(Integer)  # null when skipped
    created_at: Mapped[float] = mapped_column(Float, default=now)


class PipelineRun(Base):
    __tablename__ = "pipeline_runs"
    __table_args__ = (
        Index("ix_runs_pipeline_id", "pipeline_id", "id"),
        Index("ix_runs_status_id", "status", "id"),
        Index("ix_runs_pipeline_status_id", "pipeline_id", "status", "id"),
        Index("ix_runs_queued", "pipeline_id", "id", postgresql_where=text("queued"),
              sqlite_where=text("queued")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No foreign key: a deleted pipeline's runs are kept with their pipeline_name.
    pipeline_id: Mapped[int] = mapped_column(Integer)
    pipeline_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default=RunStatus.PENDING.value)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The injection guard's findings per input name, scanned when the run was created.
    inputs_injection: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    triggered_by: Mapped[str] = mapped_column(String(200), default="system")
    started_at: Mapped[float | None] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    # When the current step's message was due (sent, plus any retry backoff): the sweeper
    # resends it if the step is still pending long after.
    step_due_at: Mapped[float | None] = mapped_column(Float)
    # The finished run this one reruns (no foreign key, like `pipeline_id`).
    rerun_of: Mapped[int | None] = mapped_column(Integer)
    # Waiting for a slot under its pipeline's concurrency limit (pending, no step sent).
    queued: Mapped[bool] = mapped_column(Boolean, default=False)

    steps: Mapped[list[RunStep]] = relationship(
        order_by="RunStep.step_index", lazy="raise", cascade="all, delete-orphan"
    )


class RunStep(Base):
    __tablename__ = "run_steps"
    __table_args__ = (
        UniqueConstraint("run_id", "step_index"),
        Index("ix_run_steps_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    step_index: Mapped[int] = mapped_column(Integer)
    # Snapshot of the pipeline step and its template, taken when the run started.
    template_id: Mapped[int] = mapped_column(Integer)
    template_name: Mapped[str] = mapped_column(String(200))
    on_failure: Mapped[str] = mapped_column(String(10))
    run_if: Mapped[str] = mapped_column(String(12), default=RunIf.ON_SUCCESS.value)
    agent: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    timeout_seconds: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    retry_backoff_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    on_injection: Mapped[str] = mapped_column(String(8), default=OnInjection.WARN.value,
                                              server_default=OnInjection.WARN.value)
    # Execution state
    status: Mapped[str] = mapped_column(String(12), default=StepStatus.PENDING.value)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    spawn_id: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[float | None] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    output_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The injection guard's findings in `output`, scanned when it was stored; and the mark:
    # what flowed into this step's prompt and tripped it (rule, description, source).
    output_injection: Mapped[list[Any] | None] = mapped_column(NullableJSON)
    # The template's output contract when the run started (orchestrator.contracts).
    output_contract: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON)
    injection: Mapped[list[Any] | None] = mapped_column(NullableJSON)
    # Who holds the running attempt, until when (renewed by heartbeats), and when the
    # step must be over. A step waiting on an external session has no lease.
    worker: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    deadline_at: Mapped[float | None] = mapped_column(Float)
    # SHA-256 of the running attempt's callback secret (webhook steps); never the secret.
    callback_secret_hash: Mapped[str | None] = mapped_column(String(64))
    # Carried over as it ended from the run this one reruns: nothing was spawned for it.
    reused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RunEvent(Base):
    __tablename__ = "run_events"
    __table_args__ = (Index("ix_run_events_run_id", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    pipeline_id: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class AuditEntry(Base):
    """Who did what through the API; written in the transaction that made the change."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[float] = mapped_column(Float, default=now)
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # a vocab.Role
    # created | updated | deleted | started | advanced | cancelled | rerun | revoked | applied
    action: Mapped[str] = mapped_column(String(20))  # a vocab.AuditAction
    target_type: Mapped[str] = mapped_column(String(20))  # a vocab.AuditTarget
    target_id: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IdempotencyKey(Base):
    """A start request's `Idempotency-Key`, per caller, and the run it created."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("actor", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(255))
    # sha256 of the request body in canonical JSON: same key + other body is a conflict
    fingerprint: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)


class StepDuration(Base):
    """The step-duration histogram, kept in step with transitions (see `durations`): per
    template, agent profile, final status and bucket, how many steps ended so (`steps`)
    and their seconds in all. Each key is spread over a few `shard` rows, so that steps of
    one template ending at once do not all wait on one row."""

    __tablename__ = "step_durations"

    template_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    agent: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(12), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
