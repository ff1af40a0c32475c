"""The sweeper's decisions, with a recording dispatcher and no worker."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from sqlalchemy import update

from orchestrator import db, run_queries, runs
from orchestrator import transitions as t
from orchestrator.config import Settings
from orchestrator.effects import CancelSession, Recorder, RunStepMessage
from orchestrator.executor import HOST, Executor
from orchestrator.models import PipelineRun, now
from orchestrator.profiles import load_profiles
from tests.factories import make_pipeline, make_template


class QueueRecorder(Recorder):
    def __init__(self, waiting: int):
        super().__init__()
        self.waiting = waiting

    def backlog(self, queue: str) -> int:
        return self.waiting


@pytest.fixture
def own_db(fresh_db, settings):
    db.init(Settings(database_url=fresh_db))
    yield fresh_db
    db.reset()
    db.init(settings)


def started_run(n: int = 2) -> int:
    with db.session() as s:
        return runs.start_run(s, make_pipeline(s, n=n).id, "tests").run.id


def executor(dispatcher, **settings) -> Executor:
    return Executor(Settings(requeue_after_seconds=3, **settings), load_profiles(None),
                    dispatcher)


def age_message(run_id: int, seconds: float) -> None:
    with db.session() as s:
        s.execute(update(PipelineRun).where(PipelineRun.id == run_id)
                  .values(step_due_at=now() - seconds))


def test_lost_message_is_resent_only_when_the_queue_is_empty(own_db):
    rid = started_run()
    age_message(rid, 10)
    busy = QueueRecorder(waiting=50)
    assert executor(busy).sweep().requeued == 0 and busy.effects == []
    idle = QueueRecorder(waiting=0)
    assert executor(idle).sweep().requeued == 1
    assert idle.effects == [RunStepMessage(rid, 0, 1)]
    # sent again just now: not again until REQUEUE_AFTER_SECONDS have passed
    assert executor(idle).sweep().requeued == 0


def test_step_of_a_dead_local_worker_is_failed_without_waiting_for_its_lease(own_db):
    rid = started_run()
    gone = subprocess.Popen(["true"])
    gone.wait()
    agent = subprocess.Popen(["sleep", "30"], start_new_session=True)
    with db.session() as s:
        runs.claim_step(s, rid, 0, 1, f"{HOST}:{gone.pid}", lease_seconds=300)
        runs.record_spawn(s, rid, 0, 1, f"{HOST}:{agent.pid}", holds_worker=True)
    recorder = Recorder()
    report = executor(recorder).sweep()
    assert report.lost == 1
    with db.session() as s:
        run, steps = run_queries.load_run(s, rid)
        assert run.status == "failed"
        assert steps[0].error == f"worker lost: {HOST}:{gone.pid} died while running the step"
        assert steps[1].status == "skipped"
    # the orphaned session is to be ended
    assert CancelSession(rid, 0, "echo", f"{HOST}:{agent.pid}") in recorder.effects
    os.killpg(agent.pid, 9)
    agent.wait()


def test_live_holder_with_a_valid_lease_is_left_alone(own_db):
    rid = started_run()
    with db.session() as s:
        runs.claim_step(s, rid, 0, 1, f"{HOST}:{os.getpid()}", lease_seconds=300)
    assert executor(Recorder()).sweep().lost == 0
    # a redelivered message for the running attempt is a duplicate, not a recovery
    other = Executor(Settings(), load_profiles(None), Recorder(), worker_id=f"{HOST}:1")
    assert other.run_step(rid, 0, 1) == "ignored"


class SendRecorder:
    """Stands in for the Celery app: records what would be published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list, dict | None, float | None]] = []

    def send_task(self, name: str, args: list, kwargs: dict | None = None,
                  countdown: float | None = None) -> None:
        self.sent.append((name, args, kwargs, countdown))


def test_a_retry_delayed_past_the_brokers_patience_goes_in_hops(own_db, monkeypatch):
    """A message held past the broker's visibility timeout would be handed out twice, so a
    longer retry delay is sent as hops of at most MAX_COUNTDOWN, each carrying the due time;
    a worker that takes one early sends it on, and only a due one runs the step."""
    from worker import tasks
    from worker.dispatch import MAX_COUNTDOWN, CeleryDispatcher

    with db.session() as s:
        slow = make_template(s, retries=2, retry_backoff_seconds=MAX_COUNTDOWN / 2 + 1)
        rid = runs.start_run(s, make_pipeline(s, templates=[slow, slow]).id, "tests").run.id
    app = SendRecorder()
    publish = CeleryDispatcher(app)
    for attempt, delay in ((1, MAX_COUNTDOWN / 2 + 1), (2, MAX_COUNTDOWN + 2)):
        with db.session() as s:
            runs.claim_step(s, rid, 0, attempt, "w:1", lease_seconds=30)
            tr = runs.resolve_step(s, rid, t.Resolve(False, 0, attempt),
                                   runs.StepResult(error="flaky"))
        assert tr.effects == [RunStepMessage(rid, 0, attempt + 1, delay)]
        before = time.time()
        publish.dispatch(tr.effects)
    short, long = app.sent
    assert short == ("orchestrator.run_step", [rid, 0, 2], None, MAX_COUNTDOWN / 2 + 1)
    name, args, kwargs, countdown = long
    assert (name, args, countdown) == ("orchestrator.run_step", [rid, 0, 3], MAX_COUNTDOWN)
    assert before + MAX_COUNTDOWN + 2 <= kwargs["due_at"] <= time.time() + MAX_COUNTDOWN + 2
    # The hop arrives MAX_COUNTDOWN later, 2 s early: the worker sends it on, not runs it.
    hops = SendRecorder()
    monkeypatch.setattr(tasks.run_step.app, "send_task", hops.send_task)
    monkeypatch.setattr(tasks.time, "time", lambda: kwargs["due_at"] - 2)
    assert tasks.run_step.run(rid, 0, 3, due_at=kwargs["due_at"]) == "deferred"
    (name, args, again, countdown), = hops.sent
    assert (name, args, again) == ("orchestrator.run_step", [rid, 0, 3], None)
    assert countdown == pytest.approx(2, abs=0.01)
    with db.session() as s:  # nothing ran: the step still waits for its third attempt
        assert run_queries.load_run(s, rid)[1][0].status == "pending"
    # Nor does the sweeper send it before it is due.
    assert executor(QueueRecorder(waiting=0)).sweep().requeued == 0


def test_a_lost_worker_frees_its_slot_and_a_left_behind_queued_run_is_started(own_db):
    with db.session() as s:
        pipeline = make_pipeline(s, n=2)
        pipeline.max_concurrent_runs = 1
        s.flush()
        first, second, third = (runs.start_run(s, pipeline.id, "tests").run.id
                                for _ in range(3))
        pipeline_id = pipeline.id
    with db.session() as s:
        assert runs.claim_step(s, first, 0, 1, "elsewhere:1", lease_seconds=-1).accepted
    recorder = QueueRecorder(waiting=0)
    report = executor(recorder).sweep()
    assert report.lost == 1
    assert RunStepMessage(second, 0, 1) in recorder.effects, "the sweep's finish starts the next"
    # A promotion that skipped a held row leaves a free slot: the sweeper fills it.
    with db.session() as s:
        assert runs.cancel_run(s, second).accepted
        s.execute(update(PipelineRun).where(PipelineRun.id == third).values(queued=True))
        s.execute(update(PipelineRun).where(PipelineRun.id == third).values(step_due_at=None))
    recorder = QueueRecorder(waiting=0)
    assert executor(recorder).sweep().promoted == 1
    assert recorder.effects == [RunStepMessage(third, 0, 1)]
    with db.session() as s:
        assert run_queries.load_run(s, third)[0].queued is False
        assert runs.promote_queued(s, pipeline_id) == []
