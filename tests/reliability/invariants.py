"""The invariants every run must satisfy once the dust settles, checked run by run.

Used by the fault-injection tests and by `bench/soak.py`. It reads the database directly
(not the API), so it also sees the event log and the counters the API only summarises:

- every run is terminal, with `completed_at`, and its status agrees with its steps;
- no step is left pending or running; every step that ended has `completed_at`;
- times are ordered: created ≤ started ≤ completed for the run and for each step, and a
  step starts only after the step before it ended (and, unless a rerun carried it over
  from its source run, after its run started);
- nothing ran twice: per (run, step, attempt) at most one `step.running` (claim) and at
  most one `step.spawned` event;
- the pipeline's counters (runs_total/completed/failed/running) match its run rows;
- the step-duration histogram kept with transitions matches a count of every finished
  step in the database (all runs: it is one histogram), carried-over steps counted once,
  in the run that ran them.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import psycopg

from orchestrator.durations import BUCKETS

TERMINAL = {"completed", "failed", "cancelled"}
# Clocks are read by different processes on one host; allow float noise only.
EPS = 1e-3


@dataclass
class Report:
    runs: int = 0
    steps: int = 0
    by_status: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        head = f"invariants: {self.runs} runs and {self.steps} steps checked ({statuses}): "
        if self.ok:
            return head + "all hold"
        shown = "\n  ".join(self.problems[:30])
        more = f"\n  … and {len(self.problems) - 30} more" if len(self.problems) > 30 else ""
        return head + f"{len(self.problems)} violations\n  {shown}{more}"


def _pg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def check(database_url: str, pipeline_ids: list[int] | None = None,
          conn: psycopg.Connection | None = None) -> Report:
    """Check every run of `pipeline_ids` (all runs if None) and those pipelines' counters.
    `conn` reads through an open connection (and sees its uncommitted writes)."""
    report = Report()
    with contextlib.nullcontext(conn) if conn else psycopg.connect(_pg(database_url)) as conn:
        where, params = ("", ()) if pipeline_ids is None else (
            "WHERE pipeline_id = ANY(%s)", (list(pipeline_ids),))
        runs = conn.execute(
            "SELECT id, pipeline_id, status, created_at, started_at, completed_at "
            f"FROM pipeline_runs {where} ORDER BY id", params).fetchall()
        run_ids = [r[0] for r in runs]
        steps = defaultdict(list)
        for row in conn.execute(
            "SELECT run_id, step_index, status, on_failure, attempt, started_at, "
            "completed_at, error, reused FROM run_steps WHERE run_id = ANY(%s) "
            "ORDER BY run_id, step_index", (run_ids,)):
            steps[row[0]].append(row[1:])
        events = conn.execute(
            "SELECT run_id, step_index, type, data->>'attempt' FROM run_events "
            "WHERE run_id = ANY(%s) AND type IN ('step.running', 'step.spawned')",
            (run_ids,)).fetchall()
        counters = conn.execute(
            "SELECT id, runs_total, runs_completed, runs_failed, runs_running FROM pipelines "
            + ("" if pipeline_ids is None else "WHERE id = ANY(%s)"),
            () if pipeline_ids is None else (list(pipeline_ids),)).fetchall()
        histogram = conn.execute(HISTOGRAM_MISMATCHES).fetchall()

    for run_id, _pid, status, created, started, completed in runs:
        report.runs += 1
        report.by_status[status] += 1
        report.steps += len(steps[run_id])
        report.problems += [f"run {run_id}: {p}" for p in _check_run(
            status, created, started, completed, steps[run_id])]
    for (run_id, index, kind, attempt), n in Counter(events).items():
        if n > 1:
            report.problems.append(
                f"run {run_id}: step {index} attempt {attempt} has {n} {kind} events")
    report.problems += _check_counters(runs, counters)
    report.problems += [
        f"duration histogram {key}: {kept} steps, {kept_s} s kept, but {counted} steps, "
        f"{counted_s} s finished" for *key, counted, kept, counted_s, kept_s in histogram]
    return report


_BUCKET = "CASE " + " ".join(f"WHEN d <= {b} THEN {i}" for i, b in enumerate(BUCKETS)) + \
    f" ELSE {len(BUCKETS)} END"
# One statement, so one snapshot: a step that ends meanwhile is in both counts or neither.
HISTOGRAM_MISMATCHES = f"""
WITH counted AS (
  SELECT template_name, agent, status, {_BUCKET} AS bucket, count(*) AS steps,
         sum(d) AS seconds
  FROM (SELECT template_name, agent, status, completed_at - started_at AS d FROM run_steps
        WHERE status IN ('completed', 'failed') AND started_at IS NOT NULL
        AND completed_at IS NOT NULL AND NOT reused) AS finished
  GROUP BY 1, 2, 3, 4),
kept AS (
  SELECT template_name, agent, status, bucket, sum(steps) AS steps, sum(seconds) AS seconds
  FROM step_durations GROUP BY 1, 2, 3, 4)
SELECT template_name, agent, status, bucket, counted.steps, kept.steps, counted.seconds,
       kept.seconds
FROM counted FULL JOIN kept USING (template_name, agent, status, bucket)
WHERE counted.steps IS DISTINCT FROM kept.steps
   OR abs(coalesce(counted.seconds, 0) - coalesce(kept.seconds, 0)) > 1e-6
"""


def _check_run(status, created, started, completed, steps) -> list[str]:
    problems = []
    if status not in TERMINAL:
        return [f"is still {status}"]
    if completed is None:
        problems.append(f"is {status} without completed_at")
    if started is not None and started + EPS < created:
        problems.append("started before it was created")
    if started is not None and completed is not None and completed + EPS < started:
        problems.append("completed before it started")
    statuses = [s[1] for s in steps]
    if {"pending", "running"} & set(statuses):
        problems.append(f"is {status} with steps {statuses}")
    halted = any(s[1] == "failed" and s[2] == "stop" for s in steps)
    if status == "completed" and halted:
        problems.append(f"completed although a stop step failed: {statuses}")
    if status == "failed" and not halted:
        problems.append(f"failed with no failed stop step: {statuses}")
    if status == "cancelled" and not any(
            s[1] == "skipped" and s[6] == "cancelled" for s in steps):
        problems.append(f"cancelled with no step skipped by the cancel: {statuses}")
    previous_end = None
    for index, st, _on_failure, attempt, s_started, s_completed, error, reused in steps:
        name = f"step {index} ({st}, attempt {attempt})"
        if st in ("completed", "failed", "skipped") and s_completed is None:
            problems.append(f"{name} has no completed_at")
        if st == "failed" and not error:
            problems.append(f"{name} failed with no error")
        if s_started is not None:
            if s_completed is not None and s_completed + EPS < s_started:
                problems.append(f"{name} completed before it started")
            if previous_end is not None and s_started + EPS < previous_end:
                problems.append(f"{name} started before the step before it ended")
            # A step a rerun carried over ran in the source run, before this one started.
            if started is not None and s_started + EPS < started and not reused:
                problems.append(f"{name} started before its run")
        if completed is not None and s_completed is not None and completed + EPS < s_completed:
            problems.append(f"{name} ended after its run")
        if s_completed is not None and st != "skipped":
            previous_end = s_completed
    return problems


def _check_counters(runs, counters) -> list[str]:
    actual: dict[int, Counter] = defaultdict(Counter)
    for _id, pipeline_id, status, *_ in runs:
        actual[pipeline_id]["total"] += 1
        actual[pipeline_id][status] += 1
    problems = []
    for pipeline_id, total, completed, failed, running in counters:
        a = actual[pipeline_id]
        want = (a["total"], a["completed"], a["failed"], a["pending"] + a["running"])
        if (total, completed, failed, running) != want:
            problems.append(
                f"pipeline {pipeline_id}: counters total/completed/failed/running "
                f"{(total, completed, failed, running)} but its runs say {want}")
    return problems
