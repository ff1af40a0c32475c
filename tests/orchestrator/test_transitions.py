"""The decision table of the run state machine, with no database."""

from __future__ import annotations

import itertools

import pytest

from orchestrator import transitions as t
from orchestrator.transitions import Cancel, Claim, Refusal, Resolve, RunState, StepState, decide

RUN_STATUSES = t.RUN_STATUSES
STEP_STATUSES = t.STEP_STATUSES


def run(status: str, current: int, *steps: StepState) -> RunState:
    return RunState(status, current, list(steps))


def steps(*statuses: str, on_failure: str = "stop") -> list[StepState]:
    return [StepState(i, s, on_failure=on_failure) for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("run_status", "step_status"), list(itertools.product(RUN_STATUSES, STEP_STATUSES))
)
def test_claim_accepted_only_for_a_pending_step_of_an_active_run(run_status, step_status):
    state = RunState(run_status, 0, steps(step_status, "pending"))
    d = decide(state, Claim(0, 1))
    expected = run_status in ("pending", "running") and step_status == "pending"
    assert d.accepted is expected
    if expected:
        assert d.steps == {0: "running"}
        assert d.run_status == ("running" if run_status == "pending" else None)
    else:
        assert d.steps == {} and d.enqueue == [] and d.reason
        assert d.code == (Refusal.ALREADY_FINISHED if run_status in t.RUN_TERMINAL
                          else Refusal.STEP_NOT_PENDING)


@pytest.mark.parametrize(
    ("run_status", "step_status", "allow_pending"),
    list(itertools.product(RUN_STATUSES, STEP_STATUSES, (True, False))),
)
def test_resolve_accepted_only_for_the_live_current_step(run_status, step_status, allow_pending):
    state = RunState(run_status, 0, steps(step_status, "pending"))
    d = decide(state, Resolve(True, 0, 1, allow_pending=allow_pending))
    live = ("running", "pending") if allow_pending else ("running",)
    expected = run_status in ("pending", "running") and step_status in live
    assert d.accepted is expected
    if expected:
        assert d.steps[0] == "completed"
        assert d.current_step == 1 and d.enqueue == [t.Enqueue(1, 1)]
        assert d.terminate == ([0] if step_status == "running" else [])
    else:
        assert d.code == (Refusal.ALREADY_FINISHED if run_status in t.RUN_TERMINAL
                          else Refusal.STEP_NOT_RUNNING)


@pytest.mark.parametrize("run_status", RUN_STATUSES)
def test_cancel_accepted_only_while_the_run_is_active(run_status):
    state = RunState(run_status, 1, steps("completed", "running", "pending"))
    d = decide(state, Cancel())
    assert d.accepted is (run_status in ("pending", "running"))
    if d.accepted:
        assert d.run_status == "cancelled"
        assert d.steps == {1: "skipped", 2: "skipped"}
        assert d.terminate == [1]
        assert d.code is None
    else:
        assert d.code == Refusal.ALREADY_FINISHED


def test_claim_refuses_a_stale_attempt_and_another_step():
    state = RunState("running", 1, [StepState(0, "completed"), StepState(1, "pending", attempt=2)])
    assert decide(state, Claim(1, 1)).code == Refusal.ATTEMPT_MISMATCH
    assert decide(state, Claim(0, 1)).code == Refusal.STEP_MISMATCH
    assert decide(state, Claim(1, 2)).accepted
    assert decide(state, Resolve(True, 1, 1)).code == Refusal.ATTEMPT_MISMATCH


def test_guard_naming_another_step_is_refused():
    state = RunState("running", 1, steps("completed", "running", "pending"))
    d = decide(state, Resolve(True, step_index=0))
    assert not d.accepted and "not the current step" in d.reason
    assert d.code == Refusal.STEP_MISMATCH
    assert decide(state, Resolve(True, step_index=1)).accepted
    assert decide(state, Resolve(True)).accepted  # no guard: the current step


def test_last_step_success_completes_the_run():
    d = decide(RunState("running", 1, steps("completed", "running")), Resolve(True))
    assert d.run_status == "completed" and d.enqueue == []


def test_stop_failure_skips_the_rest_and_fails_the_run():
    d = decide(RunState("running", 0, steps("running", "pending", "pending")), Resolve(False))
    assert d.steps == {0: "failed", 1: "skipped", 2: "skipped"}
    assert d.run_status == "failed" and d.enqueue == []


def test_continue_failure_goes_on_and_the_run_completes():
    state = RunState("running", 0, steps("running", "pending", on_failure="continue"))
    d = decide(state, Resolve(False))
    assert d.steps == {0: "failed"} and d.current_step == 1 and d.run_status == "running"
    state = RunState("running", 1, steps("failed", "running", on_failure="continue"))
    assert decide(state, Resolve(True)).run_status == "completed"


def test_failure_with_attempts_left_retries_with_backoff():
    step = StepState(0, "running", attempt=2, max_attempts=3, retry_backoff=1.5)
    d = decide(RunState("running", 0, [step, StepState(1)]), Resolve(False, 0, 2))
    assert d.reason == "retrying"
    assert d.steps == {0: "pending"} and d.attempts == {0: 3}
    assert d.enqueue == [t.Enqueue(0, 3, 3.0)]
    assert d.run_status is None


def test_last_attempt_failure_applies_on_failure():
    step = StepState(0, "running", attempt=3, max_attempts=3)
    d = decide(RunState("running", 0, [step, StepState(1)]), Resolve(False, 0, 3))
    assert d.steps == {0: "failed", 1: "skipped"} and d.run_status == "failed"


def test_recovery_steps_run_after_a_stop_failure():
    state = RunState("running", 0, [
        StepState(0, "running"),
        StepState(1, run_if="on_success"),
        StepState(2, run_if="on_failure"),
        StepState(3, run_if="always"),
    ])
    d = decide(state, Resolve(False))
    assert d.steps == {0: "failed", 1: "skipped"}
    assert d.current_step == 2 and d.run_status == "running"


def test_on_failure_steps_are_skipped_when_nothing_failed():
    state = RunState("running", 0, [
        StepState(0, "running"), StepState(1, run_if="on_failure"), StepState(2, run_if="always"),
    ])
    d = decide(state, Resolve(True))
    assert d.steps == {0: "completed", 1: "skipped"} and d.current_step == 2


def test_halted_run_ends_failed_after_its_recovery_steps():
    state = RunState("running", 1, [
        StepState(0, "failed"), StepState(1, "running", run_if="on_failure"), StepState(2),
    ])
    d = decide(state, Resolve(True))
    assert d.steps == {1: "completed", 2: "skipped"} and d.run_status == "failed"


def test_plan_start_picks_the_first_runnable_step():
    d = t.plan_start([StepState(0, run_if="on_failure"), StepState(1)])
    assert d.steps == {0: "skipped"} and d.current_step == 1 and d.run_status is None
    d = t.plan_start([StepState(0, run_if="on_failure"), StepState(1, run_if="on_failure")])
    assert d.run_status == "completed"


@pytest.mark.parametrize("run_status", RUN_STATUSES)
def test_rerun_accepted_only_for_a_finished_run(run_status):
    d = t.plan_rerun(run_status, steps("completed", "failed", "skipped"), None)
    assert d.accepted is (run_status in t.RUN_TERMINAL)
    if not d.accepted:
        assert d.verdict is t.Verdict.REJECT and d.steps == {} and d.enqueue == []
        assert run_status in d.reason and d.code == Refusal.NOT_FINISHED


@pytest.mark.parametrize(
    ("statuses", "from_step", "subject"),
    [
        (("completed", "failed", "skipped"), None, 1),
        (("failed", "skipped", "skipped"), None, 0),
        (("completed", "skipped", "skipped"), None, 1),  # a cancelled run's skipped steps
        (("completed", "completed", "completed"), 2, 2),
        (("completed", "failed", "skipped"), 0, 0),
    ],
)
def test_rerun_starts_afresh_from_the_named_or_first_unfinished_step(statuses, from_step,
                                                                      subject):
    d = t.plan_rerun("failed", steps(*statuses), from_step)
    assert d.accepted and d.subject == subject
    assert d.current_step == subject and d.enqueue == [t.Enqueue(subject, 1)]
    assert d.run_status is None  # pending until a worker claims it
    assert d.steps == {}  # the carried steps are the caller's to copy, unchanged


def test_rerun_of_a_fully_completed_run_must_name_a_step():
    d = t.plan_rerun("completed", steps("completed", "completed"), None)
    assert d.verdict is t.Verdict.REJECT and "from_step" in d.reason
    assert d.code == Refusal.NOTHING_TO_RERUN


@pytest.mark.parametrize("from_step", [2, 3, 50])
def test_rerun_from_a_step_the_run_does_not_have_is_invalid(from_step):
    d = t.plan_rerun("failed", steps("completed", "failed"), from_step)
    assert d.verdict is t.Verdict.INVALID and "from 0 to 1" in d.reason
    assert d.code == Refusal.NO_SUCH_STEP


def test_rerun_after_a_carried_stop_failure_skips_on_success_steps():
    carried = [StepState(0, "failed", on_failure="stop"), StepState(1, "skipped"),
               StepState(2, "skipped", run_if="always"), StepState(3, "skipped")]
    d = t.plan_rerun("failed", carried, 1)
    assert d.accepted and d.steps == {1: "skipped"}
    assert d.current_step == 2 and d.enqueue == [t.Enqueue(2, 1)]


def test_rerun_whose_every_later_step_is_skipped_ends_at_once():
    carried = [StepState(0, "failed", on_failure="stop"), StepState(1, "skipped")]
    d = t.plan_rerun("failed", carried, 1)
    assert d.accepted and d.steps == {1: "skipped"} and d.enqueue == []
    assert d.run_status == "failed"
