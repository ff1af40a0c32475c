"""Reads of runs: one run with its steps (locked, for the write path), the newest runs
with their listed steps, and whether a pipeline id is known. Nothing here writes."""

from __future__ import annotations

from dataclasses import fields
from functools import cache

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from orchestrator.records import (
    PIPELINES,
    RUNS,
    STEPS,
    ListedStep,
    NotFound,
    RunRecord,
    StepRecord,
    records,
)

_RUN = select(RUNS).where(RUNS.c.id == bindparam("run_id"))
_RUN_LOCKED = _RUN.with_for_update()
_STEPS = select(STEPS).where(STEPS.c.run_id == bindparam("run_id")).order_by(STEPS.c.step_index)
_STEPS_UPTO = _STEPS.where(STEPS.c.step_index <= bindparam("upto"))
_STEPS_OF_RUNS = (
    select(*(STEPS.c[f.name] for f in fields(ListedStep)))
    .where(STEPS.c.run_id.in_(bindparam("run_ids", expanding=True)))
    .order_by(STEPS.c.run_id, STEPS.c.step_index)
)


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
    found = records(RunRecord, conn.execute(_RUN_LOCKED if lock else _RUN, {"run_id": run_id}))
    if not found:
        raise NotFound(f"run {run_id} not found")
    if steps_upto is None:
        steps = conn.execute(_STEPS, {"run_id": run_id})
    else:
        steps = conn.execute(_STEPS_UPTO, {"run_id": run_id, "upto": steps_upto})
    return found[0], records(StepRecord, steps)


def recent_runs(
    s: Session, limit: int, pipeline_id: int | None = None, status: str | None = None
) -> list[tuple[RunRecord, list[ListedStep]]]:
    """The newest runs, of one pipeline and/or in one status if given, with their steps."""
    conn = s.connection()
    listed = records(RunRecord, conn.execute(
        _recent_runs(pipeline_id is not None, status is not None),
        {"limit": limit, "pipeline_id": pipeline_id, "status": status}))
    by_run: dict[int, list[ListedStep]] = {run.id: [] for run in listed}
    if listed:
        for step in records(ListedStep, conn.execute(_STEPS_OF_RUNS, {"run_ids": list(by_run)})):
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
