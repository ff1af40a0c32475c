"""Schedules: fire times on a zone's wall clock, firing with a clock the test drives, the
catch-up after downtime, skips, and two beats racing over the same fire times."""

from __future__ import annotations

import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, func, select

from orchestrator import db, runs, schedules
from orchestrator.config import Settings
from orchestrator.models import PipelineRun, Schedule, ScheduleFire
from orchestrator.schedules import InvalidSchedule, check_cron, check_timezone, next_fire
from tests.conftest import PG_ADMIN_URL
from tests.factories import make_pipeline
from tests.reliability import faults

UTC = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def ts(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


# -- cron and zones --------------------------------------------------------------------------


@pytest.mark.parametrize("expr", ["* * * * * *", "* * * *", "61 * * * *", "0 0 31 2 *",
                                  "every day", "", "* * L * *", "r * * * *", "*/0 * * * *",
                                  "0 0 * * 8", "١ * * * *", "@daily"])
def test_a_bad_cron_is_refused(expr):
    with pytest.raises(InvalidSchedule):
        check_cron(expr)


@pytest.mark.parametrize("expr", ["* * * * *", "*/15 9-17 * * 1-5", "0 0 1 1 *", "30 2 * * sun",
                                  "0 0 29 2 *", "5,35 */2 1-15 jan-jun mon-fri"])
def test_a_standard_cron_is_accepted(expr):
    assert check_cron(expr) == expr


def test_an_unknown_timezone_is_refused():
    for name in ("Mars/Olympus", "../etc/passwd", "", "utc+2"):
        with pytest.raises(InvalidSchedule):
            check_timezone(name)
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"


def test_next_fire_is_strictly_after():
    at = ts(UTC, 2026, 5, 4, 10, 7)
    assert utc(next_fire("*/15 * * * *", "UTC", at)) == "2026-05-04 10:15"
    on_time = ts(UTC, 2026, 5, 4, 10, 15)
    assert utc(next_fire("*/15 * * * *", "UTC", on_time)) == "2026-05-04 10:30"


def test_a_daily_time_stays_on_the_wall_clock_across_dst():
    """09:00 in Berlin is 08:00 UTC before the spring change and 07:00 UTC after it."""
    at = ts(BERLIN, 2026, 3, 28, 12, 0)
    first = next_fire("0 9 * * *", "Europe/Berlin", at)
    second = next_fire("0 9 * * *", "Europe/Berlin", first)
    assert (utc(first), utc(second)) == ("2026-03-29 07:00", "2026-03-30 07:00")
    before = next_fire("0 9 * * *", "Europe/Berlin", ts(BERLIN, 2026, 3, 27, 12, 0))
    assert utc(before) == "2026-03-28 08:00"


def test_a_skipped_wall_time_fires_shifted_and_a_repeated_one_fires_once():
    # 2026-03-08 02:30 does not exist in New York: it fires at 03:30 EDT (07:30 UTC)
    spring = next_fire("30 2 * * *", "America/New_York", ts(NEW_YORK, 2026, 3, 7, 12, 0))
    assert utc(spring) == "2026-03-08 07:30"
    # 2026-11-01 01:30 happens twice: it fires at the first (EDT, 05:30 UTC) only
    fall = next_fire("30 1 * * *", "America/New_York", ts(NEW_YORK, 2026, 10, 31, 12, 0))
    after = next_fire("30 1 * * *", "America/New_York", fall)
    assert (utc(fall), utc(after)) == ("2026-11-01 05:30", "2026-11-02 06:30")


# -- firing with a controlled clock ------------------------------------------------------------

T0 = ts(UTC, 2026, 1, 5, 8, 0)  # a Monday, on the hour
HOUR = 3600.0


def _schedule(s, cron: str = "0 * * * *", at: float = T0, **fields) -> Schedule:
    pipeline = fields.pop("pipeline", None) or make_pipeline(s, n=2)
    return schedules.create_schedule(
        s, {"pipeline_id": pipeline.id, "cron": cron, **fields}, "tests", at=at)


def _runs_of(s, schedule: Schedule) -> list[PipelineRun]:
    return list(s.scalars(select(PipelineRun).where(
        PipelineRun.triggered_by == f"schedule:{schedule.id}").order_by(PipelineRun.id)))


def test_a_schedule_fires_once_at_its_time(session):
    sched = _schedule(session, inputs={"env": "prod"})
    assert sched.next_fire_at == T0 + HOUR
    assert schedules.fire_due(session, T0 + HOUR - 1) == []
    fired = schedules.fire_due(session, T0 + HOUR + 2)
    assert [(f.schedule_id, f.fire_time, f.status) for f in fired] == [
        (sched.id, T0 + HOUR, "started")]
    assert fired[0].effects, "the run's first step is sent after the commit"
    assert schedules.fire_due(session, T0 + HOUR + 3) == []  # the same time, again: nothing
    session.refresh(sched)
    assert (sched.next_fire_at, sched.last_fired_at, sched.last_fire_status) == (
        T0 + 2 * HOUR, T0 + HOUR, "started")
    [run] = _runs_of(session, sched)
    assert (run.id, run.inputs, run.status) == (fired[0].run_id, {"env": "prod"}, "pending")


def test_after_downtime_one_catch_up_run_for_the_latest_missed_time(session):
    sched = _schedule(session)
    # down from 08:00 to 13:30: the fires of 09, 10, 11, 12 and 13 were missed
    fired = schedules.fire_due(session, T0 + 5.5 * HOUR)
    assert [f.fire_time for f in fired] == [T0 + 5 * HOUR]
    session.refresh(sched)
    assert sched.next_fire_at == T0 + 6 * HOUR  # then on schedule
    assert [f.fire_time for f in schedules.fire_due(session, T0 + 6 * HOUR)] == [T0 + 6 * HOUR]
    assert len(_runs_of(session, sched)) == 2


def test_fire_times_follow_the_zone_across_dst(session):
    """A weekday-morning schedule in Berlin, driven over the spring change."""
    start = ts(BERLIN, 2026, 3, 27, 12, 0)  # Friday
    sched = _schedule(session, cron="0 9 * * *", timezone="Europe/Berlin", at=start)
    times = []
    clock = start
    for _ in range(3):
        clock = sched.next_fire_at + 30
        times += [utc(f.fire_time) for f in schedules.fire_due(session, clock)]
        session.refresh(sched)
    assert times == ["2026-03-28 08:00", "2026-03-29 07:00", "2026-03-30 07:00"]


def test_a_disabled_schedule_does_not_fire_and_resumes_from_now(session):
    sched = _schedule(session)
    schedules.update_schedule(session, sched.id, {"enabled": False}, at=T0 + 60)
    assert sched.next_fire_at is None
    assert schedules.fire_due(session, T0 + 3 * HOUR) == []
    schedules.update_schedule(session, sched.id, {"enabled": True}, at=T0 + 3.5 * HOUR)
    assert sched.next_fire_at == T0 + 4 * HOUR  # no catch-up for the time it was off


def test_changing_the_cron_plans_afresh_and_inputs_do_not(session):
    sched = _schedule(session)
    schedules.update_schedule(session, sched.id, {"inputs": {"a": 1}}, at=T0 + 1800)
    assert sched.next_fire_at == T0 + HOUR
    schedules.update_schedule(session, sched.id, {"cron": "*/10 * * * *"}, at=T0 + 1800)
    assert sched.next_fire_at == T0 + 2400


def test_a_fire_the_concurrency_limit_refuses_is_recorded_as_skipped(session):
    pipeline = make_pipeline(session, n=2)
    pipeline.max_concurrent_runs, pipeline.on_limit = 1, "skip"
    session.flush()
    runs.start_run(session, pipeline.id, "tests")  # takes the one slot
    sched = _schedule(session, pipeline=pipeline)
    fired = schedules.fire_due(session, T0 + HOUR)
    assert [(f.status, f.run_id) for f in fired] == [("skipped", None)]
    session.refresh(sched)
    assert (sched.last_fire_status, sched.next_fire_at) == ("skipped", T0 + 2 * HOUR)
    fire = session.scalar(select(ScheduleFire).where(ScheduleFire.schedule_id == sched.id))
    assert (fire.status, fire.run_id) == ("skipped", None)
    assert _runs_of(session, sched) == []


def test_a_fire_time_has_one_row_at_most(session):
    sched = _schedule(session)
    schedules.fire_due(session, T0 + HOUR)
    with pytest.raises(Exception, match="unique|duplicate"), session.begin_nested():
        session.add(ScheduleFire(schedule_id=sched.id, fire_time=T0 + HOUR, status="started"))
        session.flush()


# -- two beats racing ----------------------------------------------------------------------------

RACERS = 2
SCHEDULES = 3
TICKS = 8


@pytest.fixture
def own_db(settings):
    """A database of this test's own: the session's live stack has a beat of its own, which
    would fire these schedules (their times are long past) between the racers' ticks."""
    url, name = faults.fresh_database(PG_ADMIN_URL)
    db.init(Settings(database_url=url))
    yield url
    db.reset()
    db.init(settings)
    faults.drop_database(PG_ADMIN_URL, name)


def test_two_beats_racing_fire_each_time_exactly_once(own_db):
    """Two threads (each its own connection, as two beat-driven workers would be) call
    fire_due together at every tick, one or the other with a clock 20 s ahead: every fire time
    of every schedule starts exactly one run."""
    with db.session() as s:
        pipeline = make_pipeline(s, n=2)
        ids = [_schedule(s, cron="* * * * *", pipeline=pipeline).id for _ in range(SCHEDULES)]
    barrier = threading.Barrier(RACERS)
    fires: list[list[schedules.Fired]] = [[] for _ in range(RACERS)]
    errors: list[BaseException] = []

    def beat(n: int) -> None:
        try:
            for tick in range(1, TICKS + 1):
                barrier.wait()
                with db.session() as s:
                    fires[n] += schedules.fire_due(s, T0 + tick * 60 + 1 + 20 * ((n + tick) % 2))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=beat, args=(n,)) for n in range(RACERS)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        with db.session() as s:
            made = s.execute(
                select(PipelineRun.triggered_by, func.count())
                .where(PipelineRun.triggered_by.in_([f"schedule:{i}" for i in ids]))
                .group_by(PipelineRun.triggered_by)).all()
            times = s.execute(select(ScheduleFire.schedule_id, ScheduleFire.fire_time)
                              .where(ScheduleFire.schedule_id.in_(ids))).all()
    finally:
        with db.session() as s:  # a beat of a later test must not find these due
            s.execute(delete(Schedule).where(Schedule.id.in_(ids)))
    every = [f for per in fires for f in per]
    assert len(every) == SCHEDULES * TICKS, [len(per) for per in fires]
    assert sorted((f.schedule_id, f.fire_time) for f in every) == sorted(
        (i, T0 + tick * 60) for i in ids for tick in range(1, TICKS + 1))
    assert sorted(times) == sorted((f.schedule_id, f.fire_time) for f in every)
    assert dict(made) == {f"schedule:{i}": TICKS for i in ids}
    print(f"race: {RACERS} beats x {TICKS} ticks x {SCHEDULES} schedules: "
          f"{len(every)} fires ({[len(per) for per in fires]} per beat), "
          f"{sum(n for _, n in made)} runs")
