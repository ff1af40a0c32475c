"""The single write path for runs: every status change goes through `_transition`.

It locks the run row (SELECT … FOR UPDATE; BEGIN IMMEDIATE on SQLite), asks
`transitions.decide` for a decision, writes the step rows, the run row, the pipeline's
counters and one event per change, and returns the effects to dispatch after commit.
Callers own the transaction. A proposal that no longer fits the state is refused and
changes nothing, which is what makes redelivered messages and double clicks harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, select, update
from sqlalchemy.orm import Session

from orchestrator import transitions as t
from orchestrator.effects import CancelSession, Effect, RunStepMessage
from orchestrator.models import (
    Pipeline,
    PipelineRun,
    PipelineStep,
    RunEvent,
    RunStep,
    WorkflowTemplate,
    now,
)


class NotFound(LookupError):
    pass


@dataclass
class Transition:
    decision: t.Decision
    run: PipelineRun
    steps: list[RunStep]
    effects: list[Effect] = field(default_factory=list)
    # The next step, claimed in the same transaction by the worker that resolved this one.
    claimed_next: Transition | None = None

    @property
    def accepted(self) -> bool:
        return self.decision.accepted


@dataclass(frozen=True)
class StepResult:
    """What a session produced, recorded on the step it resolves."""

    error: str | None = None
    output: str | None = None
    output_truncated: bool = False
    usage: dict[str, Any] | None = None
    spawn_id: str | None = None


def start_run(
    s: Session, pipeline_id: int, triggered_by: str, inputs: dict[str, Any] | None = None
) -> Transition:
    """Create a run from the pipeline as it is now, and plan its first step.

    The pipeline's and templates' counters are written last: concurrent starts of one
    pipeline queue on those rows' locks, which are then held only until the commit.
    """
    ts = now()
    rows = s.execute(
        select(Pipeline.name, PipelineStep.on_failure, PipelineStep.run_if, WorkflowTemplate)
        .join(PipelineStep, PipelineStep.pipeline_id == Pipeline.id)
        .join(WorkflowTemplate, WorkflowTemplate.id == PipelineStep.template_id)
        .where(Pipeline.id == pipeline_id)
        .order_by(PipelineStep.position)
    ).all()
    if not rows:
        raise NotFound(f"pipeline {pipeline_id} not found")
    steps = [_snapshot(i, *row[1:]) for i, row in enumerate(rows)]
    decision = t.plan_start([_step_state(st) for st in steps])
    run = PipelineRun(
        pipeline_id=pipeline_id,
        pipeline_name=rows[0].name,
        status=t.PENDING,
        current_step=0,
        inputs=inputs or {},
        triggered_by=triggered_by,
        created_at=ts,
        # written by _apply below too; set now so the INSERT carries it
        step_due_at=ts if decision.enqueue else None,
    )
    s.add(run)
    s.flush()
    _insert_events(s, [_event(run, None, "run.created", {"status": t.PENDING}, ts)])
    # The steps stay out of the session while the plan is applied to them, then go in as
    # one plain INSERT with their final values: no per-object bookkeeping on this path.
    for step in steps:
        step.run_id = run.id
    transition = _apply(s, run, steps, decision, ts)
    s.execute(insert(RunStep), [_columns(step) for step in steps])
    # Lock the templates in id order (an IN list does not fix the order): two starts of
    # pipelines sharing templates would otherwise deadlock each other.
    in_order = (
        select(WorkflowTemplate.id)
        .where(WorkflowTemplate.id.in_({st.template_id for st in steps}))
        .order_by(WorkflowTemplate.id)
        .with_for_update()
    )
    s.execute(
        update(WorkflowTemplate)
        .where(WorkflowTemplate.id.in_(in_order))
        .values(use_count=WorkflowTemplate.use_count + 1, last_used_at=ts)
        .execution_options(synchronize_session=False)
    )
    counted = s.execute(
        update(Pipeline)
        .where(Pipeline.id == pipeline_id)
        .values(
            use_count=Pipeline.use_count + 1,
            last_used_at=ts,
            runs_total=Pipeline.runs_total + 1,
            runs_running=Pipeline.runs_running + 1,
        )
    )
    if counted.rowcount != 1:  # deleted since we read it: nothing of this run is kept
        raise NotFound(f"pipeline {pipeline_id} not found")
    return transition


_STEP_COLUMNS = [c.key for c in RunStep.__table__.columns if c.key != "id"]


def _columns(step: RunStep) -> dict[str, Any]:
    return {key: getattr(step, key) for key in _STEP_COLUMNS}


def _snapshot(index: int, on_failure: str, run_if: str, tpl: WorkflowTemplate) -> RunStep:
    return RunStep(
        step_index=index,
        template_id=tpl.id,
        template_name=tpl.name,
        on_failure=on_failure,
        run_if=run_if,
        agent=tpl.agent,
        model=tpl.model,
        prompt=tpl.prompt,
        parameters=dict(tpl.parameters or {}),
        timeout_seconds=tpl.timeout_seconds,
        max_attempts=tpl.retries + 1,
        retry_backoff_seconds=tpl.retry_backoff_seconds,
        status=t.PENDING,
        attempt=1,
        output_truncated=False,
    )


def claim_step(
    s: Session, run_id: int, step_index: int, attempt: int, worker: str, lease_seconds: float
) -> Transition:
    """pending → running for exactly one delivery of the step's message."""
    return _transition(
        s, run_id, t.Claim(step_index, attempt), worker=worker, lease_seconds=lease_seconds
    )


def resolve_step(
    s: Session,
    run_id: int,
    proposal: t.Resolve,
    result: StepResult | None = None,
    *,
    continue_as: str | None = None,
    lease_seconds: float = 0.0,
) -> Transition:
    """Resolve the current step. With `continue_as` (a worker's id), a next step that is
    due at once is claimed for that worker in the same transaction, and its message is
    not sent: the worker runs it next, one transaction and no broker hop later."""
    tr = _transition(s, run_id, proposal, result=result or StepResult())
    if continue_as is None or not tr.accepted:
        return tr
    due = [e for e in tr.effects if isinstance(e, RunStepMessage) and not e.delay]
    if len(due) != 1:
        return tr
    state = t.RunState(tr.run.status, tr.run.current_step, [_step_state(st) for st in tr.steps])
    decision = t.decide(state, t.Claim(due[0].step_index, due[0].attempt))
    if decision.accepted:
        tr.claimed_next = _apply(s, tr.run, tr.steps, decision, now(), worker=continue_as,
                                 lease_seconds=lease_seconds)
        tr.effects.remove(due[0])
    return tr


def cancel_run(s: Session, run_id: int) -> Transition:
    return _transition(s, run_id, t.Cancel())


def running_attempt(run_id: int, step_index: int, attempt: int) -> ColumnElement[bool]:
    """A step's running attempt. Writes guarded by it change nothing once the attempt has
    ended (resolved, advanced, cancelled), which is what keeps late writers harmless."""
    return and_(
        RunStep.run_id == run_id,
        RunStep.step_index == step_index,
        RunStep.attempt == attempt,
        RunStep.status == t.RUNNING,
    )


def record_spawn(
    s: Session, run_id: int, step_index: int, attempt: int, spawn_id: str | None,
    holds_worker: bool,
) -> bool:
    """Note the session's id on the running attempt. False if the step moved on meanwhile
    (cancelled or advanced while the session was starting): the caller must end it."""
    values: dict[str, Any] = {"spawn_id": spawn_id}
    if not holds_worker:
        values["lease_expires_at"] = None
    res = s.execute(
        update(RunStep)
        .where(running_attempt(run_id, step_index, attempt))
        .values(**values)
        .returning(RunStep.id)
    )
    if res.first() is None:
        return False
    pipeline_id = s.scalar(select(PipelineRun.pipeline_id).where(PipelineRun.id == run_id))
    s.add(
        RunEvent(
            run_id=run_id,
            pipeline_id=pipeline_id,
            step_index=step_index,
            type="step.spawned",
            data={"spawn_id": spawn_id, "attempt": attempt},
            created_at=now(),
        )
    )
    return True


def renew_lease(
    s: Session, run_id: int, step_index: int, attempt: int, lease_seconds: float
) -> bool:
    """Heartbeat of a worker holding a session. False once the attempt is no longer
    running, which tells the worker to end the session."""
    res = s.execute(
        update(RunStep)
        .where(running_attempt(run_id, step_index, attempt))
        .values(lease_expires_at=now() + lease_seconds)
        .returning(RunStep.id)
    )
    return res.first() is not None


def still_running(s: Session, run_id: int, step_index: int, attempt: int) -> bool:
    found = s.scalar(
        select(RunStep.id).where(running_attempt(run_id, step_index, attempt))
    )
    return found is not None


def mark_resent(s: Session, run_id: int, step_index: int) -> None:
    s.execute(
        update(PipelineRun)
        .where(PipelineRun.id == run_id, PipelineRun.current_step == step_index)
        .values(step_due_at=now())
    )


def _step_state(step: RunStep) -> t.StepState:
    return t.StepState(
        index=step.step_index,
        status=step.status,
        attempt=step.attempt,
        on_failure=step.on_failure,
        run_if=step.run_if,
        max_attempts=step.max_attempts,
        retry_backoff=step.retry_backoff_seconds,
    )


def load_run(s: Session, run_id: int, lock: bool = False) -> tuple[PipelineRun, list[RunStep]]:
    """The run and its steps; with `lock`, the run row is locked first.

    Two queries on purpose: a join locking only the run would, after waiting for the
    lock, still return the step rows as they were before the wait (PostgreSQL re-reads
    only the locked row), and two claims of one step would both see it pending.
    """
    run = s.get(PipelineRun, run_id, with_for_update=lock, populate_existing=lock)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    steps = list(
        s.scalars(
            select(RunStep)
            .where(RunStep.run_id == run_id)
            .order_by(RunStep.step_index)
            .execution_options(populate_existing=lock)
        )
    )
    return run, steps


def _transition(
    s: Session,
    run_id: int,
    proposal: t.Proposal,
    *,
    result: StepResult | None = None,
    worker: str | None = None,
    lease_seconds: float = 0.0,
) -> Transition:
    run, steps = load_run(s, run_id, lock=True)
    state = t.RunState(run.status, run.current_step, [_step_state(st) for st in steps])
    decision = t.decide(state, proposal)
    if not decision.accepted:
        return Transition(decision, run, steps)
    return _apply(
        s, run, steps, decision, now(), result=result, worker=worker, lease_seconds=lease_seconds
    )


def _apply(
    s: Session,
    run: PipelineRun,
    steps: list[RunStep],
    d: t.Decision,
    ts: float,
    *,
    result: StepResult | None = None,
    worker: str | None = None,
    lease_seconds: float = 0.0,
) -> Transition:
    effects: list[Effect] = []
    events: list[dict[str, Any]] = []
    for index in d.terminate:
        step = steps[index]
        if step.spawn_id:
            effects.append(CancelSession(run.id, index, step.agent, step.spawn_id))
    for index, status in sorted(d.steps.items()):
        step = steps[index]
        if index == d.subject:
            _write_step(step, status, d.attempts.get(index), ts, result, worker, lease_seconds)
        else:
            # A step swept along: skipped by a cancel, or by the run's course.
            cancelled = d.run_status == t.CANCELLED
            _write_step(step, status, None, ts, StepResult(
                error=t.CANCELLED_ERROR if cancelled else None), None, 0.0)
        events.append(_event(run, index, f"step.{status}", _step_data(step), ts))
    for msg in d.enqueue:
        run.step_due_at = ts + msg.delay
        effects.append(RunStepMessage(run.id, msg.step_index, msg.attempt, msg.delay))
    if d.current_step is not None:
        run.current_step = d.current_step
    finished = False
    if d.run_status is not None and d.run_status != run.status:
        finished = _write_run(run, d.run_status, ts)
        events.append(_event(run, None, f"run.{run.status}", _run_data(run), ts))
    _insert_events(s, events)
    if finished:
        _count_finished(s, run)  # last: the pipeline row is hot, hold its lock briefly
    return Transition(d, run, steps, effects)


def _write_step(
    step: RunStep,
    status: str,
    attempt: int | None,
    ts: float,
    result: StepResult | None,
    worker: str | None,
    lease_seconds: float,
) -> None:
    step.status = status
    if status == t.RUNNING:
        step.started_at = ts
        step.completed_at = None
        step.error = None
        step.spawn_id = None
        step.worker = worker
        step.lease_expires_at = ts + lease_seconds
        step.deadline_at = ts + step.timeout_seconds
        return
    step.worker = None
    step.lease_expires_at = None
    step.deadline_at = None
    if result is not None:
        if result.spawn_id is not None:
            step.spawn_id = result.spawn_id
        step.error = result.error
        if result.output is not None:
            step.output = result.output
            step.output_truncated = result.output_truncated
        if result.usage is not None:
            step.usage = result.usage
    if status == t.PENDING:  # a retry: the next attempt starts afresh
        step.attempt = attempt or step.attempt + 1
        step.spawn_id = None
        step.started_at = None
        step.completed_at = None
        return
    step.completed_at = ts


def _write_run(run: PipelineRun, status: str, ts: float) -> bool:
    """Set the run's status and times; True if the run has just finished."""
    run.status = status
    if status == t.RUNNING and run.started_at is None:
        run.started_at = ts
    if status in t.RUN_TERMINAL:
        run.completed_at = ts
        return True
    return False


def _count_finished(s: Session, run: PipelineRun) -> None:
    counter = {
        t.COMPLETED: {"runs_completed": Pipeline.runs_completed + 1},
        t.FAILED: {"runs_failed": Pipeline.runs_failed + 1},
        t.CANCELLED: {},
    }[run.status]
    s.execute(
        update(Pipeline)
        .where(Pipeline.id == run.pipeline_id)
        .values(runs_running=Pipeline.runs_running - 1, **counter)
    )


def _step_data(step: RunStep) -> dict[str, Any]:
    return {
        "status": step.status,
        "attempt": step.attempt,
        "spawn_id": step.spawn_id,
        "error": step.error,
    }


def _run_data(run: PipelineRun) -> dict[str, Any]:
    return {"status": run.status, "current_step": run.current_step}


def _event(
    run: PipelineRun, step_index: int | None, kind: str, data: dict[str, Any], ts: float
) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "pipeline_id": run.pipeline_id,
        "step_index": step_index,
        "type": kind,
        "data": data,
        "created_at": ts,
    }


def _insert_events(s: Session, events: list[dict[str, Any]]) -> None:
    # A plain INSERT: events are never read back in the transaction that writes them.
    if events:
        s.execute(insert(RunEvent), events)
