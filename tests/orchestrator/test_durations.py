"""The step-duration histogram: kept by the transitions that end steps, and counted from
the steps already there when the table arrives (migration 0004)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy import create_engine, func, select, text

from orchestrator import db, durations, migrate, runs
from orchestrator import transitions as t
from orchestrator.config import Settings
from orchestrator.models import StepDuration
from tests.conftest import PG_ADMIN_URL
from tests.factories import make_pipeline, make_template


@pytest.mark.parametrize(("seconds", "bucket"), [
    (0.0, 0), (0.1, 0), (0.1000001, 1), (1, 2), (3600, 12), (3600.5, 13), (90000, 13)])
def test_a_duration_goes_in_the_first_bucket_that_holds_it(seconds, bucket):
    assert durations.bucket_of(seconds) == bucket
    bounds = (0.0, *durations.BUCKETS, float("inf"))  # the bucket's (exclusive, inclusive]
    assert bounds[bucket] < seconds <= bounds[bucket + 1] or seconds == bucket == 0


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_db(request, tmp_path):
    """A database with no tables yet, on each backend a user may run."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgraded.db'}"
        return
    name = f"orch_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") \
        + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def kept(conn) -> dict[tuple, tuple[int, float]]:
    """(template, agent, status, bucket) -> (steps, seconds), summed over shards."""
    rows = conn.execute(
        select(StepDuration.template_name, StepDuration.agent, StepDuration.status,
               StepDuration.bucket, func.sum(StepDuration.steps), func.sum(StepDuration.seconds))
        .group_by(StepDuration.template_name, StepDuration.agent, StepDuration.status,
                  StepDuration.bucket))
    return {tuple(r[:4]): (r[4], round(r[5], 6)) for r in rows}


def test_the_migration_counts_the_steps_already_finished(empty_db):
    migrate.upgrade(empty_db, "0003_reliability")
    engine = create_engine(db.normalize_url(empty_db))
    # (run, step, template, agent, status, started, completed)
    steps = [
        (1, 0, "build", "sh", "completed", 100.0, 100.05),   # 0.05 s: bucket 0
        (1, 1, "build", "sh", "completed", 200.0, 200.1),    # exactly 0.1 s: still bucket 0
        (2, 0, "build", "sh", "completed", 300.0, 302.0),    # 2 s: bucket 3 (≤ 2.5)
        (2, 1, "build", "sh", "failed", 400.0, 4400.0),      # 4000 s: past every bound
        (3, 0, "review", "llm", "completed", 10.0, 40.0),    # 30 s: bucket 6
        (3, 1, "review", "llm", "skipped", None, 50.0),      # not a finished attempt
        (3, 2, "review", "llm", "running", 60.0, None),      # not finished
        (4, 0, "review", "llm", "failed", None, 70.0),       # failed before it started
    ]
    with engine.begin() as conn:
        for run_id in {s[0] for s in steps}:
            conn.execute(text(
                "INSERT INTO pipeline_runs (id, pipeline_id, pipeline_name, status, current_step,"
                " inputs, triggered_by, created_at) VALUES (:id, 1, 'p', 'running', 0, '{}',"
                " 'tests', 0)"), {"id": run_id})
        for run_id, index, name, agent, status, started, completed in steps:
            conn.execute(text(
                "INSERT INTO run_steps (run_id, step_index, template_id, template_name,"
                " on_failure, run_if, agent, model, prompt, parameters, timeout_seconds,"
                " max_attempts, retry_backoff_seconds, status, attempt, started_at,"
                " completed_at, output_truncated) VALUES (:run, :index, 1, :name, 'stop',"
                " 'on_success', :agent, '', 'x', '{}', 60, 1, 0, :status, 1, :started,"
                " :completed, false)"),
                {"run": run_id, "index": index, "name": name, "agent": agent,
                 "status": status, "started": started, "completed": completed})
    migrate.upgrade(empty_db)
    with engine.connect() as conn:
        assert kept(conn) == {
            ("build", "sh", "completed", 0): (2, 0.15),
            ("build", "sh", "completed", 3): (1, 2.0),
            ("build", "sh", "failed", 13): (1, 4000.0),
            ("review", "llm", "completed", 6): (1, 30.0),
        }
        shards = conn.execute(select(StepDuration.shard, StepDuration.steps).where(
            StepDuration.template_name == "build", StepDuration.bucket == 0)).all()
        assert sorted(shards) == [(1, 2)]  # both of run 1: shard = run id % SHARDS
    engine.dispose()


def test_transitions_count_each_step_once_when_it_ends(empty_db):
    """Completed, failed after its retries (not each failed attempt), cancelled while
    running (not at all): on both backends, each through its own upsert."""
    migrate.upgrade(empty_db)
    saved = (db._factory, db._url)
    db._factory, db._url = None, None
    db.init(Settings(database_url=empty_db))
    try:
        with db.session() as s:
            ok, flaky, slow = (make_template(s), make_template(s, retries=1),
                               make_template(s))
            pipeline = make_pipeline(s, templates=[ok, flaky, slow], on_failure="continue")
            rid = runs.start_run(s, pipeline.id, "tests").run.id
            other = runs.start_run(s, pipeline.id, "tests").run.id
        for attempt, success, index in ((1, True, 0), (1, False, 1), (2, False, 1)):
            with db.session() as s:
                assert runs.claim_step(s, rid, index, attempt, "w:1", 30).accepted
            with db.session() as s:
                resolved = runs.resolve_step(s, rid, t.Resolve(success, index, attempt),
                                             runs.StepResult(error=None if success else "no"))
                assert resolved.accepted
        with db.session() as s:
            assert runs.claim_step(s, rid, 2, 1, "w:1", 30).accepted
            assert runs.cancel_run(s, rid).accepted
        with db.session() as s:  # the same template ending in another run adds to its row
            assert runs.claim_step(s, other, 0, 1, "w:1", 30).accepted
        with db.session() as s:
            assert runs.resolve_step(s, other, t.Resolve(True, 0, 1)).accepted
        with db.engine().connect() as conn:
            got = kept(conn)
            finished = conn.execute(text(
                "SELECT run_id, template_name, status, completed_at - started_at FROM run_steps"
                " WHERE status IN ('completed', 'failed')")).all()
    finally:
        db.reset()
        db._factory, db._url = saved
    counted: dict[tuple, int] = {}  # over buckets: a slow moment can put the two apart
    for key, (n, _) in got.items():
        counted[key[:3]] = counted.get(key[:3], 0) + n
    assert counted == {(ok.name, "echo", "completed"): 2, (flaky.name, "echo", "failed"): 1}
    assert sum(seconds for _, seconds in got.values()) == pytest.approx(
        sum(row[3] for row in finished), abs=1e-5)
    assert len(finished) == 3


def test_a_scrape_turns_the_rows_into_cumulative_buckets():
    from api.metrics import StateCollector
    from orchestrator.profiles import Profile

    collector = StateCollector({"sh": Profile("sh", "command")}, None, None)
    rows = [  # (template, agent, status, bucket, steps, seconds), as summed over shards
        ("build", "sh", "completed", 0, 2, 0.15),
        ("build", "sh", "completed", 3, 1, 2.0),
        ("build", "sh", "completed", 13, 1, 4000.0),
        ("build", "gone", "failed", 6, 1, 30.0),  # a profile no longer configured
    ]
    family = collector._durations(rows)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    build = (("runtime", "command"), ("status", "completed"), ("template", "build"))
    bucket = "orchestrator_step_duration_seconds_bucket"
    assert [got[(bucket, tuple(sorted(build + (("le", le),))))]
            for le in ("0.1", "0.5", "1.0", "2.5", "5.0", "3600.0", "+Inf")] == [2, 2, 2, 3, 3, 3, 4]
    assert got[("orchestrator_step_duration_seconds_count", build)] == 4
    assert got[("orchestrator_step_duration_seconds_sum", build)] == pytest.approx(4002.15)
    gone = (("runtime", "unknown"), ("status", "failed"), ("template", "build"))
    assert got[(bucket, tuple(sorted(gone + (("le", "10.0"),))))] == 0
    assert got[(bucket, tuple(sorted(gone + (("le", "30.0"),))))] == 1
