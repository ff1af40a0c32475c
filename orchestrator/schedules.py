"""Schedules: cron expressions in a time zone that start runs of a pipeline, and firing them.

A schedule stores its next fire time. `fire_due(s, now)` (called by beat every few
seconds, with the clock passed in so tests drive it) fires each enabled schedule whose
time has passed: one run for the latest fire time missed (a catch-up after downtime is one
run, not one per missed time), then the next fire time after `now`. Each fire time starts
at most one run however many beats race: a guarded claim of the schedule's next fire time,
then a `schedule_fires` row unique on (schedule, fire time), both in the run's transaction.

Fire times are computed on the zone's wall clock: `0 9 * * *` in Europe/Berlin is 09:00
there in summer and in winter. A wall time the clock skips (spring forward) fires when
the old offset says, i.e. shifted later by the gap; a wall time that occurs twice (fall
back) fires once, at its first occurrence.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator import runs
from orchestrator.effects import Effect
from orchestrator.models import Pipeline, Schedule, ScheduleFire, now
from orchestrator.records import NotFound
from orchestrator.vocab import FireStatus

log = logging.getLogger("orchestrator.schedules")

FIRES = ScheduleFire.__table__
# Schedules fired per call: the rest wait for the next tick (a transaction stays short).
FIRE_BATCH = 100
# A cron expression with no fire time within this many candidates (e.g. `0 0 31 2 *`) is
# refused when saved rather than searched for at every tick.
MAX_CANDIDATES = 1000


# One field of standard cron: `*`, numbers or 3-letter names, ranges, steps, lists. Not the
# extensions croniter also reads (`L`, `#`, `R`, `H`, a seconds field), which other
# schedulers do not share.
_VALUE = r"(?:\d{1,2}|[A-Za-z]{3})"
_TOKEN = rf"(?:\*|{_VALUE}(?:-{_VALUE})?)(?:/\d{{1,2}})?"
_FIELD = re.compile(rf"{_TOKEN}(?:,{_TOKEN})*", re.ASCII)


class InvalidSchedule(ValueError):
    pass


# -- cron and zones (pure) ------------------------------------------------------------------


def check_cron(expr: str) -> str:
    """A standard 5-field cron expression (minute hour day-of-month month day-of-week),
    or InvalidSchedule saying what is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise InvalidSchedule(f"a cron expression has 5 fields (minute hour day month "
                              f"weekday), got {len(fields)} in {expr!r}")
    if not all(_FIELD.fullmatch(f) for f in fields) or not croniter.is_valid(expr):
        raise InvalidSchedule(f"not a valid cron expression: {expr!r}")
    try:
        next_fire(expr, "UTC", 0.0)
    except InvalidSchedule:
        raise InvalidSchedule(f"the cron expression {expr!r} never fires") from None
    return expr


def check_timezone(name: str) -> str:
    """An IANA time zone name (`Europe/Berlin`, `UTC`), or InvalidSchedule."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(f"unknown time zone {name!r} (use an IANA name such as UTC "
                              "or Europe/Berlin)") from None
    return name


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """The epoch time of a wall-clock time in `zone`: the first occurrence of one that
    occurs twice, the old offset's reading of one the clock skips (fold=0 does both)."""
    return wall.replace(tzinfo=zone, fold=0).timestamp()


def _wall(ts: float, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts, zone).replace(tzinfo=None)


def next_fire(expr: str, tz: str, after: float) -> float:
    """The first fire time strictly after `after` (epoch seconds)."""
    zone = ZoneInfo(tz)
    candidates = croniter(expr, _wall(after, zone))
    try:
        for _ in range(MAX_CANDIDATES):
            ts = _instant(candidates.get_next(datetime), zone)
            if ts > after:
                return ts
    except CroniterBadDateError:
        pass
    raise InvalidSchedule(f"cron {expr!r} has no fire time after {after}")


def latest_fire(expr: str, tz: str, at: float) -> float | None:
    """The last fire time at or before `at`, or None if none is found."""
    zone = ZoneInfo(tz)
    # croniter's previous is strictly before its start: start a moment after `at`.
    candidates = croniter(expr, _wall(at, zone) + timedelta(microseconds=1))
    try:
        for _ in range(MAX_CANDIDATES):
            ts = _instant(candidates.get_prev(datetime), zone)
            if ts <= at:
                return ts
    except CroniterBadDateError:
        pass
    return None


# -- the resource -----------------------------------------------------------------------------


def list_schedules(s: Session, pipeline_id: int | None = None) -> list[Schedule]:
    query = select(Schedule).order_by(Schedule.id)
    if pipeline_id is not None:
        query = query.where(Schedule.pipeline_id == pipeline_id)
    return list(s.scalars(query))


def get_schedule(s: Session, schedule_id: int, lock: bool = False) -> Schedule:
    found = s.get(Schedule, schedule_id, with_for_update=lock)
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return found


def _check_pipeline(s: Session, pipeline_id: int) -> None:
    if s.get(Pipeline, pipeline_id) is None:
        raise NotFound(f"pipeline {pipeline_id} not found")


def _planned(schedule: Schedule, at: float) -> float | None:
    return next_fire(schedule.cron, schedule.timezone, at) if schedule.enabled else None


def create_schedule(s: Session, fields: dict[str, Any], created_by: str,
                    at: float | None = None) -> Schedule:
    """`fields` are validated (cron and timezone checked); its first fire is the first
    fire time after `at` (default: now)."""
    at = now() if at is None else at
    _check_pipeline(s, fields["pipeline_id"])
    schedule = Schedule(**{"timezone": "UTC", "inputs": {}, "enabled": True, **fields},
                        created_by=created_by, created_at=at, updated_at=at)
    schedule.next_fire_at = _planned(schedule, at)
    s.add(schedule)
    s.flush()
    return schedule


# Changing one of these plans the next fire afresh, from the time of the change.
TIMING = ("cron", "timezone", "enabled")


def update_schedule(s: Session, schedule_id: int, fields: dict[str, Any],
                    at: float | None = None) -> Schedule:
    at = now() if at is None else at
    schedule = get_schedule(s, schedule_id, lock=True)
    if "pipeline_id" in fields:
        _check_pipeline(s, fields["pipeline_id"])
    retime = any(k in fields and fields[k] != getattr(schedule, k) for k in TIMING)
    for key, value in fields.items():
        setattr(schedule, key, value)
    if retime:
        schedule.next_fire_at = _planned(schedule, at)
    schedule.updated_at = at
    s.flush()
    return schedule


def delete_schedule(s: Session, schedule_id: int) -> None:
    s.delete(get_schedule(s, schedule_id, lock=True))
    s.flush()


# -- firing -------------------------------------------------------------------------------------


@dataclass
class Fired:
    schedule_id: int
    fire_time: float
    status: str  # a FireStatus
    run_id: int | None = None
    # The new run's first step message: to send once the caller has committed.
    effects: list[Effect] = field(default_factory=list)


def fire_due(s: Session, at: float, limit: int = FIRE_BATCH) -> list[Fired]:
    """Fire every enabled schedule whose next fire time is at or before `at`, in the
    caller's transaction (each in a savepoint of its own, so one that cannot fire leaves
    the others be). The caller commits, then dispatches each `Fired.effects`."""
    due = s.execute(
        select(Schedule.id, Schedule.pipeline_id, Schedule.cron, Schedule.timezone,
               Schedule.inputs, Schedule.next_fire_at)
        .where(Schedule.enabled.is_(True), Schedule.next_fire_at <= at)
        .order_by(Schedule.next_fire_at, Schedule.id)
        .limit(limit)
    ).all()
    fired = []
    for row in due:
        try:
            with s.begin_nested():
                done = _fire(s, row, at)
        except IntegrityError:
            # The fire time's row exists: another beat fired it (and its claim of the
            # schedule should have stopped us first).
            done = None
        except NotFound:
            done = None  # the pipeline went while we fired: its schedule goes with it
        if done is not None:
            fired.append(done)
    return fired


def _fire(s: Session, row: Any, at: float) -> Fired | None:
    """Fire one schedule for its latest fire time at or before `at`, or None if another
    beat claimed it first."""
    fire_time = max(latest_fire(row.cron, row.timezone, at) or row.next_fire_at,
                    row.next_fire_at)
    following = next_fire(row.cron, row.timezone, at)
    if not _claim(s, row.id, row.next_fire_at, following):
        return None
    status, run_id, effects = _start(s, row, fire_time)
    s.execute(insert(FIRES), {"schedule_id": row.id, "fire_time": fire_time,
                              "status": status, "run_id": run_id, "created_at": now()})
    s.execute(update(Schedule).where(Schedule.id == row.id)
              .values(last_fired_at=fire_time, last_fire_status=status))
    log.info("schedule %s fired for %s: %s", row.id, fire_time, status,
             extra={"run_id": run_id})
    return Fired(row.id, fire_time, status, run_id, effects)


def _claim(s: Session, schedule_id: int, expected: float, following: float) -> bool:
    """Move the schedule's next fire time from `expected` to `following`. The guard on
    `expected` is what stops a second beat that read the same due schedule: its UPDATE
    waits for the first one's commit, then matches no row."""
    claimed = s.execute(
        update(Schedule)
        .where(Schedule.id == schedule_id, Schedule.next_fire_at == expected,
               Schedule.enabled.is_(True))
        .values(next_fire_at=following)
        .returning(Schedule.id)
    )
    return claimed.first() is not None


def _start(s: Session, row: Any, fire_time: float) -> tuple[str, int | None, list[Effect]]:
    """Start the run of a fire, or note that the pipeline's concurrency limit skipped it."""
    try:
        with s.begin_nested():
            tr = runs.start_run(s, row.pipeline_id, f"schedule:{row.id}", row.inputs or None)
    except runs.AtLimit as exc:
        log.info("schedule %s skipped its fire for %s: %s", row.id, fire_time, exc)
        return FireStatus.SKIPPED.value, None, []
    return FireStatus.STARTED.value, tr.run.id, tr.effects
