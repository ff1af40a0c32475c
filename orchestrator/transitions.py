"""The run state machine: statuses, and the decision for every proposed transition.

Pure functions over plain dataclasses: no database, no Flask, no Celery. The single write
path (`orchestrator.runs`) locks a run, builds a `RunState`, asks `decide()`, and writes
what the returned `Decision` says. Expected refusals are return values, never exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum

from orchestrator.vocab import OnFailure, RunIf, RunStatus, StepStatus

# Short names for the statuses the decisions below use (a run's and a step's share
# their values; SKIPPED is a step's only).
PENDING = RunStatus.PENDING
RUNNING = RunStatus.RUNNING
COMPLETED = RunStatus.COMPLETED
FAILED = RunStatus.FAILED
CANCELLED = RunStatus.CANCELLED
SKIPPED = StepStatus.SKIPPED

RUN_STATUSES = tuple(RunStatus)
STEP_STATUSES = tuple(StepStatus)
RUN_TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
STEP_TERMINAL = frozenset({COMPLETED, FAILED, SKIPPED})

CANCELLED_ERROR = "cancelled"

# How many steps a pipeline has (SPEC §2).
MIN_STEPS = 2
MAX_STEPS = 50


class Refusal(StrEnum):
    """Why a proposal was refused, for machines (the `code` of a 409); `reason` says it
    for people."""

    ALREADY_FINISHED = "already_finished"  # the run has ended
    STEP_MISMATCH = "step_mismatch"  # the proposal names a step that is not the current one
    ATTEMPT_MISMATCH = "attempt_mismatch"  # ... or an attempt that is not the step's
    STEP_NOT_PENDING = "step_not_pending"  # a claim of a step already claimed or ended
    STEP_NOT_RUNNING = "step_not_running"  # a resolve of a step that is not running
    NOT_FINISHED = "not_finished"  # a rerun of a run that has not ended
    NOTHING_TO_RERUN = "nothing_to_rerun"  # every step completed and none was named
    NO_SUCH_STEP = "no_such_step"  # a rerun from a step the run does not have (INVALID)
    QUEUED = "queued"  # a claim or advance of a run still waiting for a concurrency slot


class Verdict(Enum):
    ACCEPT = "accept"
    REJECT = "reject"  # the proposal conflicts with the run's state (409 at the edge)
    INVALID = "invalid"  # the proposal names what the run does not have (400 at the edge)


@dataclass
class StepState:
    index: int
    status: str = PENDING
    attempt: int = 1
    on_failure: str = OnFailure.STOP
    run_if: str = RunIf.ON_SUCCESS
    max_attempts: int = 1
    # seconds to wait before attempt n+1 is `retry_backoff * 2**(n-1)`
    retry_backoff: float = 0.0


@dataclass
class RunState:
    status: str
    current_step: int
    steps: list[StepState]
    # waiting for a slot under its pipeline's concurrency limit: only a cancel applies
    queued: bool = False


@dataclass(frozen=True)
class Claim:
    """A worker asks to start `step_index` at `attempt` (pending → running)."""

    step_index: int
    attempt: int


@dataclass(frozen=True)
class Resolve:
    """The current step ended. `step_index`/`attempt` None mean "whatever is current".

    Workers and the sweeper pass both and `allow_pending=False`: they resolve only the
    attempt they ran. An operator's advance may resolve a step no worker claimed yet.
    """

    success: bool
    step_index: int | None = None
    attempt: int | None = None
    allow_pending: bool = True


@dataclass(frozen=True)
class Cancel:
    pass


Proposal = Claim | Resolve | Cancel


@dataclass(frozen=True)
class Enqueue:
    step_index: int
    attempt: int
    delay: float = 0.0


@dataclass
class Decision:
    verdict: Verdict
    reason: str = ""
    code: Refusal | None = None  # set on every refusal (REJECT or INVALID)
    # the step the proposal is about (claimed or resolved); None for a cancel
    subject: int | None = None
    run_status: str | None = None
    current_step: int | None = None
    # step index → new status; a retry shows as PENDING with the attempt in `attempts`
    steps: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    enqueue: list[Enqueue] = field(default_factory=list)
    # indices of steps whose live session must be terminated
    terminate: list[int] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT


def reject(code: Refusal, reason: str) -> Decision:
    return Decision(Verdict.REJECT, reason, code)


def decide(state: RunState, proposal: Proposal) -> Decision:
    if state.status in RUN_TERMINAL:
        return reject(Refusal.ALREADY_FINISHED, f"run is already {state.status}")
    if isinstance(proposal, Cancel):
        return _cancel(state)
    if state.queued:
        return reject(Refusal.QUEUED,
                      "run is queued: it starts when its pipeline has a free slot")
    if isinstance(proposal, Claim):
        return _claim(state, proposal)
    return _resolve(state, proposal)


def _cancel(state: RunState) -> Decision:
    d = Decision(Verdict.ACCEPT, "cancelled", run_status=CANCELLED)
    for step in state.steps:
        if step.status == RUNNING:
            d.terminate.append(step.index)
        if step.status in (PENDING, RUNNING):
            d.steps[step.index] = SKIPPED
    return d


def _claim(state: RunState, claim: Claim) -> Decision:
    if claim.step_index != state.current_step:
        return reject(Refusal.STEP_MISMATCH,
                      f"step {claim.step_index} is not the current step ({state.current_step})")
    step = state.steps[claim.step_index]
    if step.attempt != claim.attempt:
        return reject(Refusal.ATTEMPT_MISMATCH,
                      f"step {step.index} is at attempt {step.attempt}, not {claim.attempt}")
    if step.status != PENDING:
        return reject(Refusal.STEP_NOT_PENDING,
                      f"step {step.index} attempt {step.attempt} is already {step.status}")
    return Decision(
        Verdict.ACCEPT,
        "claimed",
        subject=step.index,
        run_status=RUNNING if state.status != RUNNING else None,
        steps={step.index: RUNNING},
    )


def _resolve(state: RunState, proposal: Resolve) -> Decision:
    index = state.current_step if proposal.step_index is None else proposal.step_index
    if index != state.current_step:
        return reject(Refusal.STEP_MISMATCH, f"step {index} is not the current step ({state.current_step})")
    step = state.steps[index]
    if proposal.attempt is not None and proposal.attempt != step.attempt:
        return reject(Refusal.ATTEMPT_MISMATCH,
                      f"step {index} is at attempt {step.attempt}, not {proposal.attempt}")
    allowed = (RUNNING, PENDING) if proposal.allow_pending else (RUNNING,)
    if step.status not in allowed:
        return reject(Refusal.STEP_NOT_RUNNING, f"step {index} is {step.status}, not running")

    d = Decision(Verdict.ACCEPT, "completed" if proposal.success else "failed", subject=index)
    if step.status == RUNNING:
        d.terminate.append(index)
    if state.status == PENDING:
        d.run_status = RUNNING
    if not proposal.success and step.attempt < step.max_attempts:
        delay = step.retry_backoff * (2 ** (step.attempt - 1))
        d.reason = "retrying"
        d.steps[index] = PENDING
        d.attempts[index] = step.attempt + 1
        d.enqueue.append(Enqueue(index, step.attempt + 1, delay))
        return d
    d.steps[index] = COMPLETED if proposal.success else FAILED
    _move_on(state, index, d)
    return d


def _move_on(state: RunState, finished: int, d: Decision) -> None:
    """Pick the next step to run after `finished`, skipping those whose run_if says no."""
    statuses = {s.index: d.steps.get(s.index, s.status) for s in state.steps}
    halted = any(
        statuses[s.index] == FAILED and s.on_failure == OnFailure.STOP for s in state.steps
    )
    any_failed = any(statuses[s.index] == FAILED for s in state.steps)
    for step in state.steps[finished + 1 :]:
        runs = {
            RunIf.ON_SUCCESS: not halted,
            RunIf.ON_FAILURE: any_failed,
            RunIf.ALWAYS: True,
        }[step.run_if]
        if runs:
            d.current_step = step.index
            d.run_status = RUNNING
            d.enqueue.append(Enqueue(step.index, step.attempt))
            return
        d.steps[step.index] = SKIPPED
    d.run_status = FAILED if halted else COMPLETED


def plan_rerun(status: str, steps: list[StepState], from_step: int | None) -> Decision:
    """A new run from a finished one: steps before `from_step` keep how they ended (the
    caller copies them), those from it on start afresh. `subject` is the step rerun from.

    The carried steps count for `run_if` exactly as in the source run: after a carried
    `stop` failure, `on_success` steps are skipped. Rules that limit a new run (a
    pipeline's concurrency, a budget) are to refuse here as they will for a start.
    """
    if status not in RUN_TERMINAL:
        return reject(Refusal.NOT_FINISHED, f"run is {status}: only a finished run can be rerun")
    if from_step is None:
        from_step = next((s.index for s in steps if s.status != COMPLETED), None)
        if from_step is None:
            return reject(Refusal.NOTHING_TO_RERUN,
                          "every step of the run completed: name a step to rerun (from_step)")
    if not 0 <= from_step < len(steps):
        return Decision(Verdict.INVALID,
                        f"from_step must be from 0 to {len(steps) - 1}: the run has {len(steps)} "
                        "steps", Refusal.NO_SUCH_STEP)
    fresh = [StepState(s.index, PENDING, 1, s.on_failure, s.run_if, s.max_attempts,
                       s.retry_backoff) for s in steps[from_step:]]
    d = Decision(Verdict.ACCEPT, "rerun", subject=from_step)
    _move_on(RunState(PENDING, from_step, steps[:from_step] + fresh), from_step - 1, d)
    if d.run_status == RUNNING:
        d.run_status = None  # stays pending until a worker claims the step
    return d


def plan_start(steps: list[StepState]) -> Decision:
    """The first step a new run will run (a run whose steps all say no ends at once)."""
    d = Decision(Verdict.ACCEPT, "started")
    _move_on(RunState(PENDING, 0, steps), -1, d)
    if d.run_status == RUNNING:
        d.run_status = None  # stays pending until a worker claims the step
    return d
