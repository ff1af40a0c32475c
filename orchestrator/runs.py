"""The single write path for runs: every status change goes through `_transition`.

It locks the run row (SELECT … FOR UPDATE; BEGIN IMMEDIATE on SQLite), asks
`transitions.decide` for a decision, writes the step rows, the run row, one event per
change, the duration of a step that ended (`durations`) and the pipeline's counters, and
returns the effects to dispatch after commit.
Callers own the transaction. A proposal that no longer fits the state is refused and
changes nothing, which is what makes redelivered messages and double clicks harmless.

Runs and steps are read and written here as `Record`s over SQLAlchemy Core, not as ORM
objects: every step of every run passes through this module, and the ORM's per-object
bookkeeping cost more than the database did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    Update,
    and_,
    bindparam,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

from orchestrator import durations, injection_marks, masking
from orchestrator import transitions as t
from orchestrator.effects import CancelSession, Effect, RunStepMessage
from orchestrator.models import Pipeline, PipelineRun, PipelineStep, RunEvent, RunStep, now
from orchestrator.models import WorkflowTemplate as Template

RUNS = PipelineRun.__table__
STEPS = RunStep.__table__
EVENTS = RunEvent.__table__
PIPELINES = Pipeline.__table__
TEMPLATES = Template.__table__
PIPELINE_STEPS = PipelineStep.__table__

# The statements of the hot path, built once and run on the session's connection: building
# SQLAlchemy constructs per call, and the ORM layer around them, cost more than the database.
# A start copies the pipeline into the run inside the database: the run from the pipeline
# row, the steps from its steps and their templates (positions are 0..n-1, as saved).
_INSERT_RUN = (
    insert(RUNS)
    .from_select(
        ["pipeline_id", "pipeline_name", "status", "current_step", "inputs", "inputs_injection",
         "triggered_by", "created_at", "step_due_at"],
        select(
            PIPELINES.c.id,
            PIPELINES.c.name,
            literal(t.PENDING),
            literal(0),
            bindparam("inputs", type_=RUNS.c.inputs.type),
            bindparam("inputs_injection", type_=RUNS.c.inputs_injection.type),
            bindparam("triggered_by", type_=String),
            bindparam("ts", type_=Float),
            bindparam("ts", type_=Float),  # the first step's message goes with the commit
        ).where(PIPELINES.c.id == bindparam("pipeline_id")),
    )
    .returning(*RUNS.c)
)
_SNAPSHOT_STEPS = (
    insert(STEPS)
    .from_select(
        ["run_id", "step_index", "template_id", "template_name", "on_failure", "run_if",
         "agent", "model", "prompt", "parameters", "timeout_seconds", "max_attempts",
         "retry_backoff_seconds", "on_injection", "status", "attempt", "output_truncated"],
        select(
            bindparam("run_id", type_=Integer),
            PIPELINE_STEPS.c.position,
            TEMPLATES.c.id,
            TEMPLATES.c.name,
            PIPELINE_STEPS.c.on_failure,
            PIPELINE_STEPS.c.run_if,
            TEMPLATES.c.agent,
            TEMPLATES.c.model,
            TEMPLATES.c.prompt,
            TEMPLATES.c.parameters,
            TEMPLATES.c.timeout_seconds,
            TEMPLATES.c.retries + 1,
            TEMPLATES.c.retry_backoff_seconds,
            TEMPLATES.c.on_injection,
            literal(t.PENDING),
            literal(1),
            literal(False),
        )
        .join_from(PIPELINE_STEPS, TEMPLATES, TEMPLATES.c.id == PIPELINE_STEPS.c.template_id)
        .where(PIPELINE_STEPS.c.pipeline_id == bindparam("pipeline_id")),
    )
    .returning(*STEPS.c)
)
# Lock the templates in id order (an IN list does not fix the order): two starts of
# pipelines sharing templates would otherwise deadlock each other.
_COUNT_TEMPLATE_USE = (
    update(TEMPLATES)
    .where(TEMPLATES.c.id.in_(
        select(TEMPLATES.c.id)
        .where(TEMPLATES.c.id.in_(bindparam("template_ids", expanding=True)))
        .order_by(TEMPLATES.c.id)
        .with_for_update()
    ))
    .values(use_count=TEMPLATES.c.use_count + 1, last_used_at=bindparam("ts"))
)
_RUN = select(RUNS).where(RUNS.c.id == bindparam("run_id"))
_RUN_LOCKED = _RUN.with_for_update()
_STEPS = select(STEPS).where(STEPS.c.run_id == bindparam("run_id")).order_by(STEPS.c.step_index)
_STEPS_UPTO = _STEPS.where(STEPS.c.step_index <= bindparam("upto"))
# A listing shows of each step its place, its outcome and its times; the rest (the
# prompt, the parameters, the lease) stays in the database rather than be decoded for
# nothing. Its records have only these columns.
_LISTED_STEP_COLUMNS = (
    "run_id", "step_index", "template_id", "template_name", "on_failure", "run_if", "status",
    "attempt", "spawn_id", "started_at", "completed_at", "error", "output", "output_truncated",
    "usage", "reused", "agent", "injection",
)
_STEPS_OF_RUNS = (
    select(*(STEPS.c[name] for name in _LISTED_STEP_COLUMNS))
    .where(STEPS.c.run_id.in_(bindparam("run_ids", expanding=True)))
    .order_by(STEPS.c.run_id, STEPS.c.step_index)
)
# No .values(): the SET clause is the columns named in the parameters, i.e. the changes.
_UPDATE_RUN = update(RUNS).where(RUNS.c.id == bindparam("run_key"))
_UPDATE_STEP = update(STEPS).where(STEPS.c.id == bindparam("step_key"))


class NotFound(LookupError):
    pass


class Record:
    """A row of a run or a step: its columns as plain attributes.

    `changes()` is what has been assigned since the row was read or last written, so a
    transition writes back only the columns it changed."""

    __slots__ = ("__dict__", "_saved")

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__ = values  # the record owns `values` from now on
        self._saved = values.copy()

    def values(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def changes(self) -> dict[str, Any]:
        saved = self._saved
        return {k: v for k, v in self.__dict__.items() if k not in saved or saved[k] != v}

    def mark_saved(self) -> None:
        self._saved = self.__dict__.copy()


class RunRecord(Record):
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


class StepRecord(Record):
    """A `run_steps` row (columns as in `models.RunStep`)."""

    id: int
    run_id: int
    step_index: int
    template_id: int
    template_name: str
    on_failure: str
    run_if: str
    agent: str
    model: str
    prompt: str
    parameters: dict[str, Any]
    timeout_seconds: int
    max_attempts: int
    retry_backoff_seconds: float
    on_injection: str
    status: str
    attempt: int
    spawn_id: str | None
    started_at: float | None
    completed_at: float | None
    error: str | None
    output: str | None
    output_truncated: bool
    usage: dict[str, Any] | None
    output_injection: list[Any] | None
    injection: list[Any] | None
    worker: str | None
    lease_expires_at: float | None
    deadline_at: float | None
    callback_secret_hash: str | None
    reused: bool


@dataclass
class Transition:
    decision: t.Decision
    run: RunRecord
    # The run's steps in order: all of them, except after a claim, which needs (and
    # whose worker needs, for the prompt) only the steps up to the one it claims.
    steps: list[StepRecord]
    effects: list[Effect] = field(default_factory=list)
    # The next step, claimed in the same transaction by the worker that resolved this one.
    claimed_next: Transition | None = None
    # What `_write` puts in the database: (step_index, type, data) per event, and
    # whether the run has just finished (the pipeline's counters then change).
    events: list[tuple[int | None, str, dict[str, Any]]] = field(default_factory=list)
    finished: bool = False

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
    # When the session ended, if the caller saw it end (a worker); else the transition's time.
    ended_at: float | None = None
    # The injection guard's findings in `output`: scanned here, where the result is made,
    # so outside the transaction that stores it, and for every path that stores one.
    output_injection: list[Any] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_injection", injection_marks.scan_output(self.output))


def start_run(
    s: Session, pipeline_id: int, triggered_by: str, inputs: dict[str, Any] | None = None
) -> Transition:
    """Create a run from the pipeline as it is now, and plan its first step.

    The pipeline's and templates' counters are written last: concurrent starts of one
    pipeline queue on those rows' locks, which are then held only until the commit.
    """
    ts = now()
    conn = s.connection()
    found = conn.execute(_INSERT_RUN, {"pipeline_id": pipeline_id, "inputs": inputs or {},
                                       "inputs_injection": injection_marks.scan_inputs(inputs),
                                       "triggered_by": triggered_by, "ts": ts})
    row = found.first()
    if row is None:
        raise NotFound(f"pipeline {pipeline_id} not found")
    run = RunRecord(dict(zip(found.keys(), row, strict=True)))
    found = conn.execute(_SNAPSHOT_STEPS, {"run_id": run.id, "pipeline_id": pipeline_id})
    keys = tuple(found.keys())
    steps = sorted((StepRecord(dict(zip(keys, st, strict=True))) for st in found.all()),
                   key=lambda st: st.step_index)
    if not steps:  # deleted after the run row was read from it (the rollback undoes it)
        raise NotFound(f"pipeline {pipeline_id} not found")
    if [st.step_index for st in steps] != list(range(len(steps))):
        raise RuntimeError(f"pipeline {pipeline_id} has gaps in its step positions")
    decision = t.plan_start([_step_state(st) for st in steps])
    if not decision.enqueue:
        run.step_due_at = None  # no step to run: the run ends at once
    tr = _apply(run, steps, decision, ts)
    tr.events.insert(0, (None, "run.created", {"status": t.PENDING}))
    _write(s, tr, ts, count_finished=False)  # counted with the start, below
    conn.execute(_COUNT_TEMPLATE_USE, {"template_ids": sorted({st.template_id for st in steps}),
                                       "ts": ts})
    finished = tr.run.status if tr.finished else None  # no step to run: over at once
    counted = conn.execute(_count_runs(started=True, finished=finished),
                           {"pipeline_id": pipeline_id, "ts": ts})
    if counted.rowcount != 1:  # deleted since we read it: nothing of this run is kept
        raise NotFound(f"pipeline {pipeline_id} not found")
    return tr


# What a rerun copies of each step: the snapshot always; the outcome only of carried steps.
_SNAPSHOT_COLUMNS = (
    "step_index", "template_id", "template_name", "on_failure", "run_if", "agent", "model",
    "prompt", "parameters", "timeout_seconds", "max_attempts", "retry_backoff_seconds",
    "on_injection",
)
# A carried step keeps what the injection guard found in its output, and its own mark.
_OUTCOME_COLUMNS = (
    "status", "attempt", "spawn_id", "started_at", "completed_at", "error", "output",
    "output_truncated", "usage", "output_injection", "injection",
)
_INSERT_RERUN = insert(RUNS).returning(*RUNS.c)
_INSERT_RERUN_STEPS = insert(STEPS).returning(*STEPS.c, sort_by_parameter_order=True)


def rerun_run(
    s: Session, run_id: int, from_step: int | None, triggered_by: str,
    inputs: dict[str, Any] | None = None,
) -> Transition:
    """A new run from the finished run `run_id`'s own snapshot (not its pipeline as it is
    now): the steps before `from_step` carried over as they ended, with `reused`, and
    nothing spawned for them; the others planned as in a start.

    A refused rerun is returned as the `Transition` of the source run, which it left as it
    was. The source is not locked: a finished run never changes, and two reruns of it are
    two runs (callers that want one send an Idempotency-Key).
    """
    source, source_steps = load_run(s, run_id)
    decision = t.plan_rerun(source.status, [_step_state(st) for st in source_steps], from_step)
    if not decision.accepted:
        return Transition(decision, source, source_steps)
    start = decision.subject
    ts = now()
    conn = s.connection()
    found = conn.execute(_INSERT_RERUN, {
        "pipeline_id": source.pipeline_id, "pipeline_name": source.pipeline_name,
        "status": t.PENDING, "current_step": start,
        "inputs": source.inputs if inputs is None else inputs,
        # Values are scanned once, when written: the source's inputs were at its start.
        "inputs_injection": (source.inputs_injection if inputs is None
                             else injection_marks.scan_inputs(inputs)),
        "triggered_by": triggered_by, "created_at": ts,
        "step_due_at": ts if decision.enqueue else None, "rerun_of": source.id,
    })
    run = RunRecord(dict(zip(found.keys(), found.one(), strict=True)))
    rows = []
    for st in source_steps:
        carried = st.step_index < start
        row = {name: getattr(st, name) if carried else None for name in _OUTCOME_COLUMNS}
        if not carried:
            row.update(status=t.PENDING, attempt=1, output_truncated=False)
        row.update({name: getattr(st, name) for name in _SNAPSHOT_COLUMNS})
        rows.append({**row, "run_id": run.id, "reused": carried})
    found = conn.execute(_INSERT_RERUN_STEPS, rows)
    keys = tuple(found.keys())
    steps = [StepRecord(dict(zip(keys, st, strict=True))) for st in found.all()]
    tr = _apply(run, steps, decision, ts)
    tr.events.insert(0, (None, "run.created", {"status": t.PENDING, "rerun_of": source.id,
                                               "from_step": start}))
    _write(s, tr, ts, count_finished=False)  # counted with the start, below
    rerun_templates = sorted({st.template_id for st in steps[start:]})
    conn.execute(_COUNT_TEMPLATE_USE, {"template_ids": rerun_templates, "ts": ts})
    # The pipeline may be gone: its counters then are nowhere to keep, and the rerun stands.
    conn.execute(_count_runs(started=True, finished=tr.run.status if tr.finished else None),
                 {"pipeline_id": run.pipeline_id, "ts": ts})
    return tr


def claim_step(
    s: Session, run_id: int, step_index: int, attempt: int, worker: str, lease_seconds: float
) -> Transition:
    """pending → running for exactly one delivery of the step's message."""
    return _transition(
        s, run_id, t.Claim(step_index, attempt), worker=worker, lease_seconds=lease_seconds,
        steps_upto=step_index,
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
    return _transition(s, run_id, proposal, result=result or StepResult(),
                       continue_as=continue_as, lease_seconds=lease_seconds)


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
    _step_event(s, run_id, step_index, "step.spawned", {"spawn_id": spawn_id, "attempt": attempt})
    return True


def _step_event(s: Session, run_id: int, step_index: int, kind: str, data: dict[str, Any]) -> None:
    pipeline_id = select(RUNS.c.pipeline_id).where(RUNS.c.id == run_id).scalar_subquery()
    s.execute(insert(EVENTS).values(
        run_id=run_id, pipeline_id=pipeline_id, step_index=step_index, type=kind, data=data,
        created_at=now(),
    ))


def record_injection(
    s: Session, run_id: int, step_index: int, attempt: int, mark: list[dict[str, Any]],
    action: str,
) -> bool:
    """Mark the running attempt with what flowed into its prompt and tripped the guard,
    with a `step.injection` event. False if the attempt is no longer running."""
    res = s.execute(
        update(RunStep)
        .where(running_attempt(run_id, step_index, attempt))
        .values(injection=mark)
        .returning(RunStep.id)
    )
    if res.first() is None:
        return False
    _step_event(s, run_id, step_index, "step.injection",
                {"attempt": attempt, "action": action, "injection": mark})
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


def _step_state(step: StepRecord) -> t.StepState:
    return t.StepState(
        index=step.step_index,
        status=step.status,
        attempt=step.attempt,
        on_failure=step.on_failure,
        run_if=step.run_if,
        max_attempts=step.max_attempts,
        retry_backoff=step.retry_backoff_seconds,
    )


def _run_state(run: RunRecord, steps: list[StepRecord]) -> t.RunState:
    return t.RunState(run.status, run.current_step, [_step_state(st) for st in steps])


def load_run(
    s: Session, run_id: int, lock: bool = False, steps_upto: int | None = None
) -> tuple[RunRecord, list[StepRecord]]:
    """The run and its steps (those up to `steps_upto`, if given); with `lock`, the run
    row is locked first.

    Two queries on purpose: a join locking only the run would, after waiting for the
    lock, still return the step rows as they were before the wait (PostgreSQL re-reads
    only the locked row), and two claims of one step would both see it pending.
    """
    conn = s.connection()
    found = conn.execute(_RUN_LOCKED if lock else _RUN, {"run_id": run_id})
    row = found.first()
    if row is None:
        raise NotFound(f"run {run_id} not found")
    run = RunRecord(dict(zip(found.keys(), row, strict=True)))
    if steps_upto is None:
        found = conn.execute(_STEPS, {"run_id": run_id})
    else:
        found = conn.execute(_STEPS_UPTO, {"run_id": run_id, "upto": steps_upto})
    keys = tuple(found.keys())
    return run, [StepRecord(dict(zip(keys, st, strict=True))) for st in found.all()]


def recent_runs(
    s: Session, limit: int, pipeline_id: int | None = None, status: str | None = None
) -> list[tuple[RunRecord, list[StepRecord]]]:
    """The newest runs, of one pipeline and/or in one status if given, with their steps."""
    conn = s.connection()
    found = conn.execute(_recent_runs(pipeline_id is not None, status is not None),
                         {"limit": limit, "pipeline_id": pipeline_id, "status": status})
    keys = tuple(found.keys())
    listed = [RunRecord(dict(zip(keys, row, strict=True))) for row in found.all()]
    by_run: dict[int, list[StepRecord]] = {run.id: [] for run in listed}
    if listed:
        found = conn.execute(_STEPS_OF_RUNS, {"run_ids": list(by_run)})
        keys = tuple(found.keys())
        for row in found.all():
            step = StepRecord(dict(zip(keys, row, strict=True)))
            by_run[step.run_id].append(step)
    return [(run, by_run[run.id]) for run in listed]


def pipeline_known(s: Session, pipeline_id: int) -> bool:
    """True if the pipeline exists, or runs of it do (a deleted pipeline's runs are kept,
    so its id is still a valid filter)."""
    conn = s.connection()
    return (conn.execute(select(PIPELINES.c.id).where(PIPELINES.c.id == pipeline_id)).first()
            or conn.execute(select(RUNS.c.id).where(RUNS.c.pipeline_id == pipeline_id)
                            .limit(1)).first()) is not None


@cache
def _recent_runs(by_pipeline: bool, by_status: bool) -> Select:
    query = select(RUNS).order_by(RUNS.c.id.desc()).limit(bindparam("limit"))
    if by_pipeline:
        query = query.where(RUNS.c.pipeline_id == bindparam("pipeline_id"))
    if by_status:
        query = query.where(RUNS.c.status == bindparam("status"))
    return query


def _transition(
    s: Session,
    run_id: int,
    proposal: t.Proposal,
    *,
    result: StepResult | None = None,
    worker: str | None = None,
    lease_seconds: float = 0.0,
    continue_as: str | None = None,
    steps_upto: int | None = None,
) -> Transition:
    run, steps = load_run(s, run_id, lock=True, steps_upto=steps_upto)
    decision = t.decide(_run_state(run, steps), proposal)
    if not decision.accepted:
        return Transition(decision, run, steps)
    ts = now()
    tr = _apply(run, steps, decision, ts, result=result, worker=worker,
                lease_seconds=lease_seconds)
    if continue_as is not None:
        tr.claimed_next = _claim_due(tr, ts, continue_as, lease_seconds)
    _write(s, tr, ts)
    return tr


def _claim_due(tr: Transition, ts: float, worker: str, lease_seconds: float) -> Transition | None:
    """Claim for `worker` the one step `tr` made due at once; its message is then not sent."""
    due = [e for e in tr.effects if isinstance(e, RunStepMessage) and not e.delay]
    if len(due) != 1:
        return None
    decision = t.decide(_run_state(tr.run, tr.steps), t.Claim(due[0].step_index, due[0].attempt))
    if not decision.accepted:
        return None
    tr.effects.remove(due[0])
    return _apply(tr.run, tr.steps, decision, ts, worker=worker, lease_seconds=lease_seconds)


def _apply(
    run: RunRecord,
    steps: list[StepRecord],
    d: t.Decision,
    ts: float,
    *,
    result: StepResult | None = None,
    worker: str | None = None,
    lease_seconds: float = 0.0,
) -> Transition:
    """Change the records as the decision says; `_write` then stores the changes."""
    tr = Transition(d, run, steps)
    for index in d.terminate:
        step = steps[index]
        if step.spawn_id:
            tr.effects.append(CancelSession(run.id, index, step.agent, step.spawn_id))
    for index, status in sorted(d.steps.items()):
        step = steps[index]
        if index == d.subject:
            _write_step(step, status, d.attempts.get(index), ts, result, worker, lease_seconds)
        else:
            # A step swept along: skipped by a cancel, or by the run's course.
            cancelled = d.run_status == t.CANCELLED
            _write_step(step, status, None, ts, StepResult(
                error=t.CANCELLED_ERROR if cancelled else None), None, 0.0)
        tr.events.append((index, f"step.{status}", _step_data(step)))
    for msg in d.enqueue:
        run.step_due_at = ts + msg.delay
        tr.effects.append(RunStepMessage(run.id, msg.step_index, msg.attempt, msg.delay))
    if d.current_step is not None:
        run.current_step = d.current_step
    if d.run_status is not None and d.run_status != run.status:
        tr.finished = _write_run(run, d.run_status, ts)
        tr.events.append((None, f"run.{run.status}", _run_data(run)))
    return tr


# A step that ends so is counted in the duration histogram (a failure with a retry to come
# is pending instead, and is counted when its last attempt ends).
_FINAL = (t.COMPLETED, t.FAILED)


def _write(s: Session, tr: Transition, ts: float, count_finished: bool = True) -> None:
    """Store what `tr` (and the claim chained to it) changed: steps, run, events, the
    duration of a step that ended, and last the pipeline's counters when the run finished
    (those rows are hot: hold their locks briefly)."""
    conn = s.connection()
    both = [tr] if tr.claimed_next is None else [tr, tr.claimed_next]
    for index in sorted({i for x in both for i in x.decision.steps}):
        step = tr.steps[index]
        changed = step.changes()
        if changed:
            conn.execute(_UPDATE_STEP, {"step_key": step.id, **changed})
            step.mark_saved()
    changed = tr.run.changes()
    if changed:
        conn.execute(_UPDATE_RUN, {"run_key": tr.run.id, **changed})
        tr.run.mark_saved()
    events = [
        {"run_id": tr.run.id, "pipeline_id": tr.run.pipeline_id, "step_index": index,
         "type": kind, "data": data, "created_at": ts}
        for x in both for index, kind, data in x.events
    ]
    if events:
        conn.execute(insert(EVENTS), events)
    for index, status in sorted(tr.decision.steps.items()):  # (at most one: the subject)
        step = tr.steps[index]
        if status in _FINAL and step.started_at is not None and step.completed_at is not None:
            durations.observe(conn, tr.run.id, step.template_name, step.agent, status,
                              step.completed_at - step.started_at)
    if count_finished and tr.finished:
        conn.execute(_count_runs(started=False, finished=tr.run.status),
                     {"pipeline_id": tr.run.pipeline_id})


@cache
def _count_runs(started: bool, finished: str | None) -> Update:
    """The pipeline's run counters after a start and/or a run's finish (`finished` is its
    status). With a start, also its use: `use_count` and `last_used_at`."""
    values: dict[str, Any] = {
        "runs_running": PIPELINES.c.runs_running + int(started) - int(finished is not None)
    }
    if started:
        values.update(runs_total=PIPELINES.c.runs_total + 1,
                      use_count=PIPELINES.c.use_count + 1, last_used_at=bindparam("ts"))
    if finished == t.COMPLETED:
        values["runs_completed"] = PIPELINES.c.runs_completed + 1
    elif finished == t.FAILED:
        values["runs_failed"] = PIPELINES.c.runs_failed + 1
    return update(PIPELINES).where(PIPELINES.c.id == bindparam("pipeline_id")).values(values)


def _write_step(
    step: StepRecord,
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
        step.injection = None  # the mark is the attempt's: a retry is checked afresh
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
        # Whoever reported it (a session, a gateway, a person), a known secret in the text
        # is never stored: a viewer may read every step.
        step.error = masking.mask(result.error)
        if result.output is not None:
            step.output = masking.mask(result.output, cut=result.output_truncated)
            step.output_truncated = result.output_truncated
            step.output_injection = result.output_injection
        if result.usage is not None:
            step.usage = result.usage
    if status == t.PENDING:  # a retry: the next attempt starts afresh
        step.attempt = attempt or step.attempt + 1
        step.spawn_id = None
        step.started_at = None
        step.completed_at = None
        return
    ended = result.ended_at if result is not None and result.ended_at is not None else ts
    step.completed_at = min(ts, max(ended, step.started_at or ended))


def _write_run(run: RunRecord, status: str, ts: float) -> bool:
    """Set the run's status and times; True if the run has just finished."""
    run.status = status
    if status == t.RUNNING and run.started_at is None:
        run.started_at = ts
    if status in t.RUN_TERMINAL:
        run.completed_at = ts
        return True
    return False


def _step_data(step: StepRecord) -> dict[str, Any]:
    return {
        "status": step.status,
        "attempt": step.attempt,
        "spawn_id": step.spawn_id,
        "error": step.error,
    }


def _run_data(run: RunRecord) -> dict[str, Any]:
    return {"status": run.status, "current_step": run.current_step}
