"""The executor in this process, on PostgreSQL, with a dispatcher that only records."""

from __future__ import annotations

import dataclasses

from orchestrator import db, run_queries
from orchestrator.effects import Recorder, RunStepMessage
from orchestrator.executor import Executor
from orchestrator.profiles import Profile, load_profiles
from tests.factories import make_pipeline, make_run, make_template


def executor(settings, chain_steps: int) -> tuple[Executor, Recorder]:
    recorder = Recorder()
    tuned = dataclasses.replace(settings, chain_steps=chain_steps)
    return Executor(tuned, load_profiles(settings.agents_file), recorder, "test:1"), recorder


def new_run(steps: int) -> int:
    with db.session() as s:
        return make_run(s, n=steps).run.id


def test_a_worker_runs_the_next_due_steps_itself(settings):
    ex, sent = executor(settings, chain_steps=20)
    rid = new_run(5)
    assert ex.run_step(rid, 0, 1) == "finished"
    with db.session() as s:
        run, steps = run_queries.load_run(s, rid)
    assert run.status == "completed"
    assert [st.status for st in steps] == ["completed"] * 5
    assert len({st.spawn_id for st in steps}) == 5
    assert not [e for e in sent.effects if isinstance(e, RunStepMessage)]


def test_the_chain_is_bounded_and_then_goes_through_the_broker(settings):
    ex, sent = executor(settings, chain_steps=2)
    rid = new_run(5)
    ex.run_step(rid, 0, 1)
    assert sent.effects == [RunStepMessage(rid, 3, 1)]
    with db.session() as s:
        _, steps = run_queries.load_run(s, rid)
    assert [st.status for st in steps] == ["completed"] * 3 + ["pending"] * 2
    ex.run_step(rid, 3, 1)
    with db.session() as s:
        run, _ = run_queries.load_run(s, rid)
    assert run.status == "completed"


def test_without_chaining_every_step_is_a_message(settings):
    ex, sent = executor(settings, chain_steps=0)
    rid = new_run(3)
    ex.run_step(rid, 0, 1)
    assert sent.effects == [RunStepMessage(rid, 1, 1)]


def test_a_misconfigured_profile_fails_its_step_with_a_readable_error(settings):
    profiles = {**load_profiles(None), "broken": Profile(
        "broken", "command", {"argv": ["true"], "kill_grace_seconds": "5s"})}
    ex = Executor(settings, profiles, Recorder(), "test:1")
    with db.session() as s:
        tpl = make_template(s, agent="broken")
        rid = make_run(s, make_pipeline(s, templates=[tpl, make_template(s)])).run.id
    assert ex.run_step(rid, 0, 1) == "spawn-failed"
    with db.session() as s:
        run, steps = run_queries.load_run(s, rid)
    assert run.status == "failed" and steps[0].status == "failed"
    assert "agent profile 'broken' is misconfigured" in steps[0].error
    assert "'5s'" in steps[0].error  # what was wrong with it


def test_output_the_runtime_cut_is_marked_truncated_on_the_step(settings):
    profiles = {**load_profiles(None), "long": Profile(
        "long", "command", {"argv": ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"]})}
    ex = Executor(settings, profiles, Recorder(), "test:1")
    with db.session() as s:
        tpl = make_template(s, agent="long")
        rid = make_run(s, make_pipeline(s, templates=[tpl, make_template(s)])).run.id
    assert ex.run_step(rid, 0, 1) == "handed"
    assert ex.drain(20)
    with db.session() as s:
        _, steps = run_queries.load_run(s, rid)
    assert steps[0].status == "completed"
    assert steps[0].output_truncated is True and len(steps[0].output) < 300000
