"""A pipeline's concurrency limit in the write path: `queue`, `skip` and `cancel_oldest`,
queued runs started oldest first by whatever frees a slot, and what a queued run refuses.
(The races, with 30 concurrent starts over HTTP, are in tests/api/test_concurrency_limits.py.)
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from orchestrator import runs
from orchestrator import transitions as t
from orchestrator.effects import CancelSession, RunStepMessage
from orchestrator.models import PipelineRun, RunEvent
from tests.factories import make_pipeline


def limited(s, limit: int | None, on_limit: str = "queue", n: int = 2):
    pipeline = make_pipeline(s, n=n)
    pipeline.max_concurrent_runs, pipeline.on_limit = limit, on_limit
    s.flush()
    return pipeline


def messages(tr: runs.Transition) -> list[int]:
    return [e.run_id for e in tr.effects if isinstance(e, RunStepMessage)]


def count_runs(s, pipeline_id: int) -> int:
    return s.scalar(select(func.count()).where(PipelineRun.pipeline_id == pipeline_id))


def events(s, run_id: int) -> list[str]:
    return list(s.scalars(select(RunEvent.type).where(RunEvent.run_id == run_id)
                          .order_by(RunEvent.id)))


def test_no_limit_starts_every_run(session):
    pipeline = limited(session, None)
    started = [runs.start_run(session, pipeline.id, "tests") for _ in range(5)]
    assert [tr.run.queued for tr in started] == [False] * 5
    assert all(messages(tr) == [tr.run.id] for tr in started)


def test_queue_waits_and_starts_oldest_first_as_slots_free(session):
    pipeline = limited(session, 2)
    first, second, third, fourth = (runs.start_run(session, pipeline.id, "tests")
                                    for _ in range(4))
    assert [tr.run.queued for tr in (first, second, third, fourth)] == [False, False, True, True]
    assert messages(third) == [] and messages(fourth) == []
    assert (third.run.status, third.run.step_due_at) == (t.PENDING, None)
    assert events(session, third.run.id) == ["run.created", "run.queued"]

    freed = runs.cancel_run(session, first.run.id)
    assert messages(freed) == [third.run.id], "the oldest queued run takes the slot"
    assert events(session, third.run.id)[-1] == "run.dequeued"
    promoted, _ = runs.load_run(session, third.run.id)
    assert (promoted.queued, promoted.step_due_at is not None) == (False, True)

    claimed = runs.claim_step(session, second.run.id, 0, 1, "w", 30)
    done = runs.resolve_step(session, second.run.id, t.Resolve(True, 0, 1, allow_pending=False))
    assert claimed.accepted and done.accepted and messages(done) == [second.run.id]
    # The run moved on to its next step: still active, so no slot freed.
    assert runs.load_run(session, fourth.run.id)[0].queued
    failed = runs.claim_step(session, second.run.id, 1, 1, "w", 30)
    ended = runs.resolve_step(session, second.run.id, t.Resolve(False, 1, 1, allow_pending=False))
    assert failed.accepted and ended.run.status == t.FAILED
    assert messages(ended) == [fourth.run.id], "a failure frees the slot as a cancel does"


def test_a_new_start_queues_behind_runs_already_queued(session):
    pipeline = limited(session, 1)
    runs.start_run(session, pipeline.id, "tests")
    waiting = runs.start_run(session, pipeline.id, "tests")
    pipeline.max_concurrent_runs = 2  # a slot frees without a finish to fill it
    session.flush()
    newest = runs.start_run(session, pipeline.id, "tests")
    assert newest.run.queued, "it does not jump the queue"
    assert messages(newest) == [waiting.run.id], "the oldest takes the free slot"


def test_skip_refuses_and_creates_nothing(session):
    pipeline = limited(session, 1, "skip")
    runs.start_run(session, pipeline.id, "tests")
    session.refresh(pipeline)
    before = (pipeline.runs_total, pipeline.runs_running, count_runs(session, pipeline.id))
    with pytest.raises(runs.AtLimit, match="pipeline is at its concurrency limit"), \
            session.begin_nested():
        runs.start_run(session, pipeline.id, "tests")
    session.refresh(pipeline)
    assert (pipeline.runs_total, pipeline.runs_running,
            count_runs(session, pipeline.id)) == before == (1, 1, 1)


def test_cancel_oldest_cancels_the_oldest_started_run(session):
    pipeline = limited(session, 2, "cancel_oldest")
    oldest, middle = (runs.start_run(session, pipeline.id, "tests") for _ in range(2))
    runs.claim_step(session, oldest.run.id, 0, 1, "w", 30)
    runs.record_spawn(session, oldest.run.id, 0, 1, "sess-1", holds_worker=True)
    newest = runs.start_run(session, pipeline.id, "tests")
    assert not newest.run.queued and messages(newest) == [newest.run.id]
    assert [e.spawn_id for e in newest.effects if isinstance(e, CancelSession)] == ["sess-1"]
    assert runs.load_run(session, oldest.run.id)[0].status == t.CANCELLED
    assert runs.load_run(session, middle.run.id)[0].status == t.PENDING


def test_a_queued_run_refuses_claims_and_advances_but_cancels(session):
    pipeline = limited(session, 1)
    runs.start_run(session, pipeline.id, "tests")
    queued = runs.start_run(session, pipeline.id, "tests")
    claim = runs.claim_step(session, queued.run.id, 0, 1, "w", 30)
    advance = runs.resolve_step(session, queued.run.id, t.Resolve(True))
    assert (claim.decision.code, advance.decision.code) == (t.Refusal.QUEUED, t.Refusal.QUEUED)
    cancelled = runs.cancel_run(session, queued.run.id)
    assert (cancelled.run.status, cancelled.run.queued) == (t.CANCELLED, False)


def test_raising_the_limit_starts_the_queued_runs_it_allows(session):
    pipeline = limited(session, 1)
    starts = [runs.start_run(session, pipeline.id, "tests") for _ in range(4)]
    pipeline.max_concurrent_runs = 3
    session.flush()
    started = runs.promote_queued(session, pipeline.id)
    assert [e.run_id for e in started] == [starts[1].run.id, starts[2].run.id]
    pipeline.max_concurrent_runs = None
    session.flush()
    assert [e.run_id for e in runs.promote_queued(session, pipeline.id)] == [starts[3].run.id]


def test_a_rerun_obeys_the_limit(session):
    pipeline = limited(session, 1)
    first = runs.start_run(session, pipeline.id, "tests")
    runs.cancel_run(session, first.run.id)
    runs.start_run(session, pipeline.id, "tests")
    rerun = runs.rerun_run(session, first.run.id, 0, "tests")
    assert rerun.accepted and rerun.run.queued and messages(rerun) == []
