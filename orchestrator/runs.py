"""The single write path for runs: every status change goes through `_transition`.

It locks the run row (SELECT … FOR UPDATE; BEGIN IMMEDIATE on SQLite), asks
`transitions.decide` for a decision, writes the step rows, the run row, one event per
change, the duration of a step that ended (`durations`) and the pipeline's counters, and
returns the effects to dispatch after commit.
Callers own the transaction. A proposal that no longer fits the state is refused and
changes nothing, which is what makes redelivered messages and double clicks harmless.

Write path: `_apply` turns a decision into the changes it makes, per row and by column
name (`Transition.run_changes`, `.step_changes`), and into the new frozen records
(`records`); `_write` stores exactly those changes, one UPDATE per row naming its columns.
A resolve that claims the next step for the same worker returns that claim as
`Transition.claimed_next`, whose changes are written in the same UPDATEs. SQLAlchemy Core,
not the ORM: every step of every run passes through here, and the ORM's per-object
bookkeeping cost more than the database did. Reads of runs live in `run_queries`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    Table,
    Update,
    and_,
    bindparam,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from orchestrator import durations, hooks, injection_marks, masking
from orchestrator import transitions as t
from orchestrator.effects import CancelSession, DeliverHooks, Effect, RunStepMessage
from orchestrator.models import PipelineRun, PipelineStep, RunEvent, RunStep, now
from orchestrator.models import WorkflowTemplate as Template
from orchestrator.records import PIPELINES, RUNS, STEPS, NotFound, RunRecord, StepRecord, records
from orchestrator.run_queries import load_run
from orchestrator.vocab import HookEvent, OnLimit

EVENTS = RunEvent.__table__
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
         "retry_backoff_seconds", "on_injection", "output_contract", "status", "attempt",
         "output_truncated"],
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
            TEMPLATES.c.output_contract,
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
@dataclass
class Transition:
    decision: t.Decision
    run: RunRecord
    # The run's steps in order: all of them, except after a claim, which needs (and
    # whose worker needs, for the prompt) only the steps up to the one it claims.
    steps: list[StepRecord]
    effects: list[Effect] = field(default_factory=list)
    # The next step, claimed in the same transaction by the worker that resolved this one;
    # its `run` and `steps` are the state after both.
    claimed_next: Transition | None = None
    # What `_write` puts in the database: the columns set on the run and on each step (by
    # step_index), (step_index, type, data) per event, and whether the run has just
    # finished (the pipeline's counters then change).
    run_changes: dict[str, Any] = field(default_factory=dict)
    step_changes: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[int | None, str, dict[str, Any]]] = field(default_factory=list)
    finished: bool = False
    # After a claim: the claimed step's error before it (its last attempt's, on a retry),
    # which the attempt's prompt sees as `previous_error`.
    previous_error: str | None = None

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
    created = records(RunRecord, found)
    if not created:
        raise NotFound(f"pipeline {pipeline_id} not found")
    run = created[0]
    found = conn.execute(_SNAPSHOT_STEPS, {"run_id": run.id, "pipeline_id": pipeline_id})
    steps = sorted(records(StepRecord, found), key=lambda st: st.step_index)
    if not steps:  # deleted after the run row was read from it (the rollback undoes it)
        raise NotFound(f"pipeline {pipeline_id} not found")
    if [st.step_index for st in steps] != list(range(len(steps))):
        raise RuntimeError(f"pipeline {pipeline_id} has gaps in its step positions")
    decision = t.plan_start([_step_state(st) for st in steps])
    # No step to run: the run ends at once, and nothing is due.
    tr = _apply(run, steps, decision, ts,
                run_changes={} if decision.enqueue else {"step_due_at": None})
    tr.events.insert(0, (None, "run.created", {"status": t.PENDING}))
    _write(s, tr, ts, count_finished=False)  # counted with the start, below
    conn.execute(_COUNT_TEMPLATE_USE, {"template_ids": sorted({st.template_id for st in steps}),
                                       "ts": ts})
    finished = tr.run.status if tr.finished else None  # no step to run: over at once
    counted = conn.execute(_count_runs(started=True, finished=finished),
                           {"pipeline_id": pipeline_id, "ts": ts}).first()
    if counted is None:  # deleted since we read it: nothing of this run is kept
        raise NotFound(f"pipeline {pipeline_id} not found")
    return _started(conn, _within_limit(s, tr, counted, ts), ts)


# What a rerun copies of each step: the snapshot always; the outcome only of carried steps.
_SNAPSHOT_COLUMNS = (
    "step_index", "template_id", "template_name", "on_failure", "run_if", "agent", "model",
    "prompt", "parameters", "timeout_seconds", "max_attempts", "retry_backoff_seconds",
    "on_injection", "output_contract",
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
    run = records(RunRecord, found)[0]
    rows = []
    for st in source_steps:
        carried = st.step_index < start
        row = {name: getattr(st, name) if carried else None for name in _OUTCOME_COLUMNS}
        if not carried:
            row.update(status=t.PENDING, attempt=1, output_truncated=False)
        row.update({name: getattr(st, name) for name in _SNAPSHOT_COLUMNS})
        rows.append({**row, "run_id": run.id, "reused": carried})
    steps = records(StepRecord, conn.execute(_INSERT_RERUN_STEPS, rows))
    tr = _apply(run, steps, decision, ts)
    tr.events.insert(0, (None, "run.created", {"status": t.PENDING, "rerun_of": source.id,
                                               "from_step": start}))
    _write(s, tr, ts, count_finished=False)  # counted with the start, below
    rerun_templates = sorted({st.template_id for st in steps[start:]})
    conn.execute(_COUNT_TEMPLATE_USE, {"template_ids": rerun_templates, "ts": ts})
    # The pipeline may be gone: its counters then are nowhere to keep, its limit no longer
    # applies, and the rerun stands.
    counted = conn.execute(
        _count_runs(started=True, finished=tr.run.status if tr.finished else None),
        {"pipeline_id": run.pipeline_id, "ts": ts}).first()
    return _started(conn, tr if counted is None else _within_limit(s, tr, counted, ts), ts)


def _started(conn: Connection, tr: Transition, ts: float) -> Transition:
    """`tr`, a new run, with its `run.started` hook deliveries written unless it queued
    (it is announced when it leaves the queue)."""
    if not tr.run.queued and hooks.outbox(conn, HookEvent.RUN_STARTED, tr.run.id, None, ts):
        tr.effects.append(DeliverHooks())
    return tr


# -- concurrency limits (SPEC §10) -----------------------------------------------------------
#
# A limited pipeline's row lock orders everything that changes how many of its runs are
# started: a start (or rerun) takes it last, with its counters, and only then counts the
# runs started before it; a run that finishes takes it with its counters too, and then
# starts the oldest queued runs the freed slots allow. Both count under the lock, so no
# interleaving can start more runs than the limit. Locks are taken run → pipeline
# everywhere; the two places that need another run while holding a pipeline (promoting a
# queued run, cancelling the oldest) take only rows nobody holds (SKIP LOCKED), so they
# never wait on a transaction that may be waiting on them. The sweeper promotes what such
# a skip left behind.

# Active runs of a pipeline besides one: how many are started, and whether any is queued.
_ACTIVE = (
    select(func.count().filter(RUNS.c.queued.is_(False)),
           func.count().filter(RUNS.c.queued.is_(True)))
    .where(RUNS.c.pipeline_id == bindparam("pipeline_id"),
           RUNS.c.status.in_((t.PENDING, t.RUNNING)),
           RUNS.c.id != bindparam("besides"))
)
# How long a cancel_oldest start looks for an oldest run nobody holds before it queues.
CANCEL_OLDEST_PATIENCE = 0.5


class AtLimit(Exception):
    """A start or rerun refused because its pipeline is at its concurrency limit
    (`on_limit: skip`). Raised inside the caller's transaction, which must roll back."""

    def __init__(self) -> None:
        super().__init__("pipeline is at its concurrency limit")


def _within_limit(s: Session, tr: Transition, pipeline: Any, ts: float) -> Transition:
    """`tr`, the start of a run, made to obey its pipeline's limit. Called holding the
    pipeline's row lock (its counters were just written), so the count is exact."""
    limit, on_limit = pipeline.max_concurrent_runs, pipeline.on_limit
    if limit is None or tr.finished:
        return tr
    conn = s.connection()
    started, queued = conn.execute(_ACTIVE, {"pipeline_id": tr.run.pipeline_id,
                                             "besides": tr.run.id}).one()
    if started < limit and (not queued or on_limit != OnLimit.QUEUE):
        return tr
    if on_limit == OnLimit.SKIP:
        raise AtLimit()
    if on_limit == OnLimit.CANCEL_OLDEST:
        cancelled = _cancel_oldest(s, tr.run.pipeline_id, started - limit + 1, tr.run.id)
        if cancelled is not None:
            return replace(tr, effects=cancelled + tr.effects)
    # Queue: the run waits, pending, with its first step planned but its message unsent.
    changes = {"queued": True, "step_due_at": None}
    _set(conn, RUNS, tr.run.id, changes)
    conn.execute(insert(EVENTS), {"run_id": tr.run.id, "pipeline_id": tr.run.pipeline_id,
                                  "step_index": None, "type": "run.queued",
                                  "data": {"status": t.PENDING}, "created_at": ts})
    tr = replace(tr, run=replace(tr.run, **changes),
                 effects=[e for e in tr.effects if not isinstance(e, RunStepMessage)])
    return replace(tr, effects=tr.effects + _promote(conn, tr.run.pipeline_id, limit, ts))


def _cancel_oldest(s: Session, pipeline_id: int, n: int, besides: int) -> list[Effect] | None:
    """Cancel the `n` oldest started runs of the pipeline (as a cancel does) and return
    what to dispatch; None, having cancelled nothing, if one of them stays held by another
    transaction past the patience. That holder may be the run finishing, waiting on the
    pipeline lock this caller holds (so waiting for its row would deadlock); the caller
    then queues its run, which that finish starts as soon as this transaction commits."""
    started = ((RUNS.c.pipeline_id == pipeline_id) & RUNS.c.status.in_((t.PENDING, t.RUNNING))
               & RUNS.c.queued.is_(False) & (RUNS.c.id != besides))
    oldest = s.scalars(select(RUNS.c.id).where(started).order_by(RUNS.c.id).limit(n)).all()
    lock = (select(RUNS.c.id).where(started, RUNS.c.id.in_(oldest))
            .with_for_update(skip_locked=True))
    deadline = time.monotonic() + CANCEL_OLDEST_PATIENCE
    while len(s.scalars(lock).all()) < len(oldest):
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)  # held by a claim or a resolve that does not finish the run
    effects: list[Effect] = []
    for run_id in oldest:
        effects += cancel_run(s, run_id).effects
    return effects


def _promote(conn: Connection, pipeline_id: int, limit: int | None, ts: float) -> list[Effect]:
    """Start the oldest queued runs of the pipeline that its free slots allow (all of them
    with no limit), and return their first steps' messages. The caller holds the
    pipeline's row lock, or the pipeline is gone."""
    free = None
    if limit is not None:
        started, _ = conn.execute(_ACTIVE, {"pipeline_id": pipeline_id, "besides": 0}).one()
        free = limit - started
        if free <= 0:
            return []
    waiting = conn.execute(
        select(RUNS.c.id, RUNS.c.current_step, STEPS.c.attempt)
        .join_from(RUNS, STEPS, and_(STEPS.c.run_id == RUNS.c.id,
                                     STEPS.c.step_index == RUNS.c.current_step))
        .where(RUNS.c.pipeline_id == pipeline_id, RUNS.c.queued.is_(True),
               RUNS.c.status == t.PENDING)
        .order_by(RUNS.c.id).limit(free)
        .with_for_update(of=RUNS, skip_locked=True)
    ).all()
    effects: list[Effect] = []
    announced = 0
    for run_id, step_index, attempt in waiting:
        _set(conn, RUNS, run_id, {"queued": False, "step_due_at": ts})
        conn.execute(insert(EVENTS), {"run_id": run_id, "pipeline_id": pipeline_id,
                                      "step_index": None, "type": "run.dequeued",
                                      "data": {"status": t.PENDING}, "created_at": ts})
        announced += hooks.outbox(conn, HookEvent.RUN_STARTED, run_id, None, ts)
        effects.append(RunStepMessage(run_id, step_index, attempt))
    return [*effects, DeliverHooks()] if announced else effects


def promote_queued(s: Session, pipeline_id: int) -> list[Effect]:
    """Start what the pipeline's limit now allows of its queued runs (after the limit was
    raised or removed, or by the sweeper), taking the pipeline's row lock first. The
    caller dispatches the messages after commit."""
    conn = s.connection()
    limit = conn.execute(
        select(PIPELINES.c.max_concurrent_runs).where(PIPELINES.c.id == pipeline_id)
        .with_for_update()
    ).first()
    return _promote(conn, pipeline_id, None if limit is None else limit[0], now())


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
    holds_worker: bool, waits_for_person: bool = False,
) -> bool:
    """Note the session's id on the running attempt. False if the step moved on meanwhile
    (cancelled or advanced while the session was starting): the caller must end it. A
    step that now waits for a person writes its `step.waiting` hook deliveries."""
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
    if waits_for_person:
        hooks.outbox(s.connection(), HookEvent.STEP_WAITING, run_id, step_index, now())
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


# Keys per statement when reading or renewing held attempts: well under any driver's
# limit on bound parameters.
HELD_CHUNK = 500


def running_among(
    s: Session, keys: list[tuple[int, int, int]], renew_for: float | None = None
) -> set[tuple[int, int, int]]:
    """Which of these (run_id, step_index, attempt) are still running: a worker's one
    question per tick about every session it holds. With `renew_for`, their leases are
    renewed by the same statement (the worker's heartbeat). What is missing has ended
    elsewhere (cancelled, advanced, swept), and the worker must end its session."""
    found: set[tuple[int, int, int]] = set()
    cols = (RunStep.run_id, RunStep.step_index, RunStep.attempt)
    for i in range(0, len(keys), HELD_CHUNK):
        held = and_(RunStep.status == t.RUNNING, tuple_(*cols).in_(keys[i:i + HELD_CHUNK]))
        if renew_for is None:
            rows = s.execute(select(*cols).where(held))
        else:
            rows = s.execute(update(RunStep).where(held)
                             .values(lease_expires_at=now() + renew_for).returning(*cols))
        found.update((r, i_, a) for r, i_, a in rows)
    return found


@dataclass(frozen=True)
class LiveOutput:
    """A running step's output so far, as its worker saw it a moment ago."""

    run_id: int
    step_index: int
    attempt: int
    output: str  # the step's output so far (its last OUTPUT_MAX_CHARS), as GET ?id= shows it
    text: str  # what is new since the last one ("": no event, its events' share is spent)
    offset: int  # where `text` begins in the step's output


def record_output(s: Session, items: list[LiveOutput]) -> int:
    """Store the output so far of running steps, each with its `step.output` event: one
    transaction per tick for every session a worker holds. A step that has ended
    meanwhile keeps what its end recorded, and gets no event. Returns the steps written."""
    written = 0
    for item in items:
        row = s.execute(
            update(RunStep)
            .where(running_attempt(item.run_id, item.step_index, item.attempt))
            .values(output=item.output)
            .returning(RunStep.id)
        ).first()
        if row is not None and item.text:
            _step_event(s, item.run_id, item.step_index, "step.output",
                        {"attempt": item.attempt, "offset": item.offset, "text": item.text})
            written += 1
    return written


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
    return t.RunState(run.status, run.current_step, [_step_state(st) for st in steps],
                      queued=run.queued)


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
    if isinstance(proposal, t.Claim):
        tr.previous_error = steps[proposal.step_index].error
    if continue_as is not None:
        tr = _chain_claim(tr, ts, continue_as, lease_seconds)
    _write(s, tr, ts)
    return tr


def _chain_claim(tr: Transition, ts: float, worker: str, lease_seconds: float) -> Transition:
    """`tr` with the one step it made due at once claimed for `worker`, as `claimed_next`;
    that step's message then leaves `tr.effects`. `tr` itself if there is none to claim."""
    due = [e for e in tr.effects if isinstance(e, RunStepMessage) and not e.delay]
    if len(due) != 1:
        return tr
    decision = t.decide(_run_state(tr.run, tr.steps), t.Claim(due[0].step_index, due[0].attempt))
    if not decision.accepted:
        return tr
    claim = _apply(tr.run, tr.steps, decision, ts, worker=worker, lease_seconds=lease_seconds)
    claim.previous_error = tr.steps[due[0].step_index].error
    return replace(tr, effects=[e for e in tr.effects if e is not due[0]], claimed_next=claim)


def _apply(
    run: RunRecord,
    steps: list[StepRecord],
    d: t.Decision,
    ts: float,
    *,
    result: StepResult | None = None,
    worker: str | None = None,
    lease_seconds: float = 0.0,
    run_changes: dict[str, Any] | None = None,
) -> Transition:
    """The columns the decision sets on each row, and the records after them (`run_changes`
    are set on the run besides); `_write` then stores those columns."""
    effects: list[Effect] = []
    for index in d.terminate:
        step = steps[index]
        if step.spawn_id:
            effects.append(CancelSession(run.id, index, step.agent, step.spawn_id))
    steps = list(steps)
    step_changes: dict[int, dict[str, Any]] = {}
    events: list[tuple[int | None, str, dict[str, Any]]] = []
    for index, status in sorted(d.steps.items()):
        if index == d.subject:
            changes = _step_changes(steps[index], status, d.attempts.get(index), ts, result,
                                    worker, lease_seconds)
        else:
            # A step swept along: skipped by a cancel, or by the run's course.
            cancelled = d.run_status == t.CANCELLED
            changes = _step_changes(steps[index], status, None, ts, StepResult(
                error=t.CANCELLED_ERROR if cancelled else None), None, 0.0)
        steps[index] = step = replace(steps[index], **changes)
        step_changes[index] = changes
        events.append((index, f"step.{status}", _step_data(step)))
    run_changes = dict(run_changes or {})
    for msg in d.enqueue:
        run_changes["step_due_at"] = ts + msg.delay
        effects.append(RunStepMessage(run.id, msg.step_index, msg.attempt, msg.delay))
    if d.current_step is not None:
        run_changes["current_step"] = d.current_step
    moved = d.run_status is not None and d.run_status != run.status
    if moved:
        run_changes.update(_run_status_changes(run, d.run_status, ts))
    if run_changes:
        run = replace(run, **run_changes)
    if moved:
        events.append((None, f"run.{run.status}", _run_data(run)))
    return Transition(d, run, steps, effects, run_changes=run_changes, step_changes=step_changes,
                      events=events, finished=moved and run.status in t.RUN_TERMINAL)


# A step that ends so is counted in the duration histogram (a failure with a retry to come
# is pending instead, and is counted when its last attempt ends).
_FINAL = (t.COMPLETED, t.FAILED)


def _write(s: Session, tr: Transition, ts: float, count_finished: bool = True) -> None:
    """Store what `tr` and the claim chained to it set: one UPDATE per row changed (the
    claim's columns over the resolve's, where both set a row), the events, the duration
    of a step that ended, and last the pipeline's counters when the run finished (those
    rows are hot: hold their locks briefly)."""
    conn = s.connection()
    chain = [tr] if tr.claimed_next is None else [tr, tr.claimed_next]
    step_changes: dict[int, dict[str, Any]] = {}
    for x in chain:
        for index, changes in x.step_changes.items():
            step_changes[index] = {**step_changes.get(index, {}), **changes}
    for index in sorted(step_changes):
        _set(conn, STEPS, tr.steps[index].id, step_changes[index])
    run_changes = {k: v for x in chain for k, v in x.run_changes.items()}
    if run_changes:
        _set(conn, RUNS, tr.run.id, run_changes)
    events = [
        {"run_id": tr.run.id, "pipeline_id": tr.run.pipeline_id, "step_index": index,
         "type": kind, "data": data, "created_at": ts}
        for x in chain for index, kind, data in x.events
    ]
    if events:
        conn.execute(insert(EVENTS), events)
        # The outbox, in this transaction: a crash can neither lose nor invent a delivery.
        announced = sum(hooks.outbox(conn, e["type"], e["run_id"], e["step_index"], ts)
                        for e in events if e["type"] in hooks.TRANSITION_EVENTS)
        if announced:
            tr.effects.append(DeliverHooks())
    # Only a step that ran and ended (completed or failed) has a duration to count.
    for index, status in sorted(tr.decision.steps.items()):
        step = tr.steps[index]
        if status in _FINAL and step.started_at is not None and step.completed_at is not None:
            durations.observe(conn, tr.run.id, step.template_name, step.agent, status,
                              step.completed_at - step.started_at)
    if count_finished and tr.finished:
        counted = conn.execute(_count_runs(started=False, finished=tr.run.status),
                               {"pipeline_id": tr.run.pipeline_id}).first()
        if counted is not None and counted.max_concurrent_runs is not None:
            # A slot freed: the oldest queued run takes it, in this transaction.
            tr.effects.extend(_promote(conn, tr.run.pipeline_id, counted.max_concurrent_runs,
                                       ts))


def _set(conn: Connection, table: Table, row_id: int, changes: dict[str, Any]) -> None:
    """UPDATE one row of `table`, setting the columns named in `changes`."""
    conn.execute(_update(table, tuple(changes)),
                 {"row_id": row_id, **{f"set_{name}": v for name, v in changes.items()}})


@cache
def _update(table: Table, columns: tuple[str, ...]) -> Update:
    """`UPDATE table SET column = :set_column, … WHERE id = :row_id`, built once per set of
    columns (a transition sets one of a handful)."""
    return (
        update(table)
        .where(table.c.id == bindparam("row_id"))
        .values({name: bindparam(f"set_{name}", type_=table.c[name].type) for name in columns})
    )


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
    return (update(PIPELINES).where(PIPELINES.c.id == bindparam("pipeline_id")).values(values)
            .returning(PIPELINES.c.max_concurrent_runs, PIPELINES.c.on_limit))


def _step_changes(
    step: StepRecord,
    status: str,
    attempt: int | None,
    ts: float,
    result: StepResult | None,
    worker: str | None,
    lease_seconds: float,
) -> dict[str, Any]:
    """The columns a step moving to `status` sets."""
    if status == t.RUNNING:
        return {
            "status": status, "started_at": ts, "completed_at": None, "error": None,
            "spawn_id": None,
            "injection": None,  # the mark is the attempt's: a retry is checked afresh
            "worker": worker, "lease_expires_at": ts + lease_seconds,
            "deadline_at": ts + step.timeout_seconds,
        }
    changes: dict[str, Any] = {
        "status": status, "worker": None, "lease_expires_at": None, "deadline_at": None,
    }
    if result is not None:
        if result.spawn_id is not None:
            changes["spawn_id"] = result.spawn_id
        # Whoever reported it (a session, a gateway, a person), a known secret in the text
        # is never stored: a viewer may read every step.
        changes["error"] = masking.mask(result.error)
        if result.output is not None:
            changes["output"] = masking.mask(result.output, cut=result.output_truncated)
            changes["output_truncated"] = result.output_truncated
            changes["output_injection"] = result.output_injection
        if result.usage is not None:
            changes["usage"] = result.usage
    if status == t.PENDING:  # a retry: the next attempt starts afresh
        changes.update(attempt=attempt or step.attempt + 1, spawn_id=None, started_at=None,
                       completed_at=None)
        return changes
    ended = result.ended_at if result is not None and result.ended_at is not None else ts
    changes["completed_at"] = min(ts, max(ended, step.started_at or ended))
    return changes


def _run_status_changes(run: RunRecord, status: str, ts: float) -> dict[str, Any]:
    """The columns a run moving to `status` sets: the status and its times."""
    changes: dict[str, Any] = {"status": status}
    if status == t.RUNNING and run.started_at is None:
        changes["started_at"] = ts
    if status in t.RUN_TERMINAL:
        changes["completed_at"] = ts
        if run.queued:  # a queued run cancelled: it no longer waits for a slot
            changes["queued"] = False
    return changes


def _step_data(step: StepRecord) -> dict[str, Any]:
    return {
        "status": step.status,
        "attempt": step.attempt,
        "spawn_id": step.spawn_id,
        "error": step.error,
    }


def _run_data(run: RunRecord) -> dict[str, Any]:
    return {"status": run.status, "current_step": run.current_step}
