"""The earlier attempts of retried steps, read back from `run_events`.

A step row holds only its latest attempt; each earlier one left a `step.running` event
(its start), maybe a `step.spawned` (its session) and a `step.pending` (its failure, with
the error, as the retry was planned). A step a rerun carried over has its history in the
run it came from, which the chain of `rerun_of` leads back to.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from orchestrator.models import PipelineRun, RunEvent, RunStep
from orchestrator.records import RunRecord, StepRecord

_TYPES = ("step.running", "step.spawned", "step.pending")


@dataclass
class Attempt:
    attempt: int
    started_at: float | None = None
    completed_at: float | None = None
    spawn_id: str | None = None
    error: str | None = None


def earlier_attempts(
    s: Session, run: RunRecord, steps: list[StepRecord]
) -> dict[int, list[Attempt]]:
    """step_index → its attempts before the latest, oldest first (only retried steps)."""
    origin = _origins(s, run, [st for st in steps if st.attempt > 1])
    if not origin:
        return {}
    found = s.execute(
        select(RunEvent.run_id, RunEvent.step_index, RunEvent.type, RunEvent.data,
               RunEvent.created_at)
        .where(tuple_(RunEvent.run_id, RunEvent.step_index).in_(
            [(rid, index) for index, rid in origin.items()]))
        .where(RunEvent.type.in_(_TYPES))
        .order_by(RunEvent.id)
    )
    latest = {st.step_index: st.attempt for st in steps}
    history: dict[int, dict[int, Attempt]] = {index: {} for index in origin}
    for _rid, index, kind, data, at in found:
        if kind == "step.pending":  # the retry of the attempt before the one it names
            number = data.get("attempt", 1) - 1
        else:
            number = data.get("attempt", 1)
        if not 1 <= number < latest[index]:
            continue
        attempt = history[index].setdefault(number, Attempt(number))
        if kind == "step.running":
            attempt.started_at = at
        elif kind == "step.spawned":
            attempt.spawn_id = data.get("spawn_id")
        else:
            attempt.completed_at = at
            attempt.error = data.get("error")
    return {index: [by_number[n] for n in sorted(by_number)]
            for index, by_number in history.items() if by_number}


def _origins(s: Session, run: RunRecord, retried: list[StepRecord]) -> dict[int, int]:
    """step_index → the run whose events hold the step's attempts: its own, or for a
    carried step the first run up the `rerun_of` chain that ran it."""
    origin = {st.step_index: run.id for st in retried}
    carried = {st.step_index for st in retried if st.reused}
    source = run.rerun_of
    seen = {run.id}
    while carried and source is not None and source not in seen:
        seen.add(source)
        for index, reused in s.execute(
            select(RunStep.step_index, RunStep.reused)
            .where(RunStep.run_id == source, RunStep.step_index.in_(carried))
        ):
            origin[index] = source
            if not reused:
                carried.discard(index)
        source = s.scalar(select(PipelineRun.rerun_of).where(PipelineRun.id == source))
    return origin
