"""Running a step, and sweeping up steps whose worker or message was lost.

`run_step` is what a worker does with one step message: claim the attempt and commit,
spawn the session with no transaction open and note its spawn_id. A session that ended
within its spawn (echo) is resolved at once, and the next step may follow on the same
message. One still running is handed to the process's waiter (orchestrator.waiter), which
renews its lease, watches for a cancel or an advance and enforces its deadline without a
task slot, and resolves it when it ends. Either way the step is resolved in a transaction
of its own and its effects (the next step's message) go to the dispatcher.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, replace

from sqlalchemy import and_, select
from sqlalchemy.exc import DBAPIError, OperationalError

from orchestrator import (
    callbacks,
    contracts,
    db,
    injection_marks,
    logs,
    masking,
    records,
    runs,
    usage,
)
from orchestrator import transitions as t
from orchestrator.config import Settings
from orchestrator.effects import CancelSession, DeliverHooks, Dispatcher, RunStepMessage
from orchestrator.models import PipelineRun, RunStep, now
from orchestrator.profiles import Profile, scan_context
from orchestrator.prompts import PromptError
from orchestrator.render_process import render_bounded
from orchestrator.runtimes import (
    Outcome,
    Runtime,
    SpawnError,
    SpawnRequest,
    get_runtime,
)
from orchestrator.runtimes.command import pid_gone
from orchestrator.vocab import OnInjection
from orchestrator.waiter import Held, Waiter

log = logging.getLogger("orchestrator.executor")



HOST = socket.gethostname()
# At most this many lost step messages are resent per sweep.
REQUEUE_BATCH = 200


def worker_dead(worker: str | None) -> bool:
    """True only for a `host:pid` holder on this host whose process no longer exists."""
    host, _, pid = (worker or "").rpartition(":")
    return host == HOST and pid.isdigit() and pid_gone(int(pid))


def truncate(text: str | None, limit: int) -> tuple[str | None, bool]:
    """Keep the last `limit` characters: an agent's conclusion is at the end."""
    if text is None or len(text) <= limit:
        return text, False
    return text[-limit:], True


@dataclass
class SweepReport:
    lost: int = 0
    timed_out: int = 0
    requeued: int = 0
    promoted: int = 0  # queued runs started into slots that no finish filled


def held_to_contract(step: records.StepRecord, outcome: Outcome) -> Outcome:
    """A successful outcome whose output breaks the step's output contract, as the failure
    that says why (checked on the output as it will be stored: masked, not yet cut)."""
    if not outcome.success:
        return outcome
    why = contracts.violation(step.output_contract, masking.mask(outcome.output))
    return outcome if why is None else replace(outcome, success=False, error=why)


class Executor:
    def __init__(
        self,
        settings: Settings,
        profiles: dict[str, Profile],
        dispatcher: Dispatcher,
        worker_id: str | None = None,
    ):
        self.settings = settings
        self.profiles = profiles
        self.dispatcher = dispatcher
        self.worker_id = worker_id or f"{HOST}:{os.getpid()}"
        masking.learn(masking.known_secrets(settings, profiles))
        self._waiter: Waiter | None = None
        self._waiter_pid = 0
        self._waiter_lock = threading.Lock()

    @property
    def waiter(self) -> Waiter:
        """This process's waiter, made on first use (after a pool's fork, never before)."""
        with self._waiter_lock:
            if self._waiter is None or self._waiter_pid != os.getpid():
                self._waiter = Waiter(self.settings, self._resolve_held)
                self._waiter_pid = os.getpid()
            return self._waiter

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every session this process handed off is resolved."""
        return self._waiter is None or self.waiter.drain(timeout)

    # -- one step -------------------------------------------------------------------

    def run_step(self, run_id: int, step_index: int, attempt: int) -> str:
        """Run one delivery of a step message; returns what happened, for logs and tests.

        When the step ends and the next one is due at once, this worker claims it in the
        same transaction and runs it too, up to CHAIN_STEPS steps per message; then the
        next step goes through the broker, so other runs get their turn.
        """
        tr = self._retrying("claim a step", lambda s: runs.claim_step(
            s, run_id, step_index, attempt, self.worker_id, self.settings.lease_seconds))
        if not tr.accepted:
            if self._recover_orphan(run_id, step_index, attempt):
                return "recovered"
            log.info("step message ignored: %s", tr.decision.reason,
                     extra={"run_id": run_id, "step_index": step_index})
            return "ignored"
        chained = 0
        while True:
            what, tr = self._run_claimed(tr, go_on=chained < self.settings.chain_steps)
            if tr is None:
                return what
            chained += 1

    def _run_claimed(
        self, tr: runs.Transition, go_on: bool
    ) -> tuple[str, runs.Transition | None]:
        """Run the attempt `tr` claimed. Returns what happened and, if this worker goes on
        with the next step, that step's claim."""
        run_id, step_index = tr.run.id, tr.decision.subject
        step = tr.steps[step_index]
        attempt = step.attempt
        logs.clear()
        logs.bind(run_id=run_id, step_index=step_index, pipeline=tr.run.pipeline_name)
        try:
            runtime = self._runtime(step.agent)
            request = self._request(tr.run, step, tr.steps[:step_index], tr.previous_error)
            self._check_injection(tr.run, step, tr.steps[:step_index])
            if getattr(runtime, "takes_callback", False):
                request = self._arm_callback(request)
            session = runtime.spawn(request)
        except (SpawnError, PromptError) as exc:
            outcome = Outcome(False, error=str(exc))
            return "spawn-failed", self._finish(run_id, step_index, attempt, outcome, go_on=go_on)
        logs.bind(spawn_id=session.spawn_id)
        if session.outcome is not None:
            return "finished", self._finish(run_id, step_index, attempt,
                                            self._settle(step, session.outcome),
                                            session.spawn_id, go_on=go_on)
        profile = self.profiles.get(step.agent)
        waits_for_person = profile is not None and profile.runtime == "manual"
        try:
            recorded = self._retrying("record a spawn_id", lambda s: runs.record_spawn(
                s, run_id, step_index, attempt, session.spawn_id, runtime.holds_worker,
                waits_for_person))
        except DBAPIError:
            runtime.terminate(session)  # unrecorded, nobody else could ever end it
            raise
        if not recorded:
            runtime.terminate(session)
            return "superseded", None
        if waits_for_person:
            self.dispatcher.dispatch([DeliverHooks()])  # whoever is to be told, now
        if not runtime.holds_worker:
            return "waiting", None
        self.waiter.hold(Held(runtime, session, step, run_id))
        return "handed", None

    def _resolve_held(self, held: Held, outcome: Outcome) -> None:
        """The waiter's end of a session: record it as one ending in the task would be."""
        step = held.step
        self._finish(held.run_id, step.step_index, step.attempt, self._settle(step, outcome),
                     held.session.spawn_id)

    def _settle(self, step: records.StepRecord, outcome: Outcome) -> Outcome:
        """The session's outcome as the step records it: its usage in this service's words
        (priced by the step's profile), and held to the step's output contract."""
        profile = self.profiles.get(step.agent)
        spent = usage.normalize(outcome.usage, usage.prices(profile.options) if profile else None)
        return held_to_contract(step, replace(outcome, usage=spent))

    def _runtime(self, agent: str) -> Runtime:
        profile = self.profiles.get(agent)
        if profile is None:
            raise SpawnError(
                f"unknown agent profile {agent!r} (configured: {', '.join(sorted(self.profiles))})"
            )
        return get_runtime(profile)

    def _request(
        self, run: records.RunRecord, step: records.StepRecord, earlier: list[records.StepRecord],
        previous_error: str | None = None,
    ) -> SpawnRequest:
        prompt = render_bounded(
            self.settings,
            step.prompt,
            run.inputs,
            earlier,
            run={"id": run.id, "pipeline_id": run.pipeline_id, "pipeline_name": run.pipeline_name},
            step={"index": step.step_index, "attempt": step.attempt, "name": step.template_name,
                  "previous_error": previous_error if step.attempt > 1 else None},
        )
        return SpawnRequest(
            run_id=run.id,
            step_index=step.step_index,
            attempt=step.attempt,
            template_id=step.template_id,
            template_name=step.template_name,
            model=step.model,
            prompt=prompt,
            parameters=dict(step.parameters or {}),
            timeout_seconds=step.timeout_seconds,
        )

    def _check_injection(
        self, run: records.RunRecord, step: records.StepRecord, earlier: list[records.StepRecord]
    ) -> None:
        """Mark the step with what flowed into its prompt and tripped the guard (found
        when those values were stored); with `on_injection: fail`, fail it unspawned."""
        context = scan_context(self.profiles.get(step.agent))
        mark = injection_marks.collect(step.prompt, run.inputs_injection, earlier, context)
        if not mark:
            return
        blocked = injection_marks.blocking(mark) if step.on_injection == OnInjection.FAIL else []
        action = (OnInjection.FAIL if blocked else OnInjection.WARN).value
        self._retrying("mark a step", lambda s: runs.record_injection(
            s, run.id, step.step_index, step.attempt, mark, action))
        log.warning("injection guard: %s", injection_marks.describe(mark))
        if blocked:
            raise SpawnError(injection_marks.describe(blocked))

    def _arm_callback(self, req: SpawnRequest) -> SpawnRequest:
        """Give the attempt a fresh callback secret, stored hashed before the gateway can
        possibly call back."""
        secret = callbacks.new_secret()
        with db.session() as s:
            callbacks.arm(s, req.run_id, req.step_index, req.attempt, secret)
        url = callbacks.callback_url(
            self.settings.public_url, req.run_id, req.step_index, req.attempt, secret
        )
        return dataclasses.replace(req, callback_url=url)

    def _finish(
        self,
        run_id: int,
        step_index: int,
        attempt: int,
        outcome: Outcome,
        spawn_id: str | None = None,
        go_on: bool = False,
    ) -> runs.Transition | None:
        """Record the outcome and send what follows; returns the next step's claim when
        `go_on` and it was due at once (its message is then not sent)."""
        ended_at = now()
        output, truncated = truncate(outcome.output, self.settings.output_max_chars)
        result = runs.StepResult(
            error=None if outcome.success else (outcome.error or "failed"),
            output=output,
            output_truncated=truncated or outcome.output_truncated,
            usage=outcome.usage,
            spawn_id=spawn_id,
            ended_at=ended_at,
        )
        proposal = t.Resolve(outcome.success, step_index, attempt, allow_pending=False)
        worker = self.worker_id if go_on else None
        tr = self._retrying("record a step's result", lambda s: runs.resolve_step(
            s, run_id, proposal, result, continue_as=worker,
            lease_seconds=self.settings.lease_seconds))
        if not tr.accepted:
            log.info("step result ignored: %s", tr.decision.reason,
                     extra={"run_id": run_id, "step_index": step_index})
            return None
        status = tr.steps[step_index].status
        log.info("step %s %s", step_index, "retrying" if status == t.PENDING else status)
        # The session that produced this outcome has ended: nothing to cancel.
        self.dispatcher.dispatch([e for e in tr.effects if not isinstance(e, CancelSession)])
        return tr.claimed_next

    def _retrying(self, what: str, work):
        """Run `work(session)` in a transaction, retrying while the database is
        unreachable (restarting, failing over) for up to DB_RETRY_SECONDS: a claim, a
        spawn_id or a result that a worker drops would cost the step. A transaction that
        committed but lost its connection before saying so is retried too; the proposal
        is then refused as already applied, which is harmless."""
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = 0.2
        while True:
            try:
                with db.session() as s:
                    return work(s)
            except DBAPIError as exc:
                transient = isinstance(exc, OperationalError) or exc.connection_invalidated
                if not transient or time.monotonic() >= deadline:
                    raise
                log.warning("database unreachable, will retry to %s: %s", what, exc.orig)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _recover_orphan(self, run_id: int, step_index: int, attempt: int) -> bool:
        """A step message arrived for an attempt that is already running. That happens
        when the worker running it died and the broker redelivered its message (acks_late
        with task_reject_on_worker_lost). If the holder is gone, resolve the step now
        rather than wait for its lease to run out; if it is alive this was a duplicate."""
        with db.session() as s:
            step = s.scalar(select(RunStep).where(
                RunStep.run_id == run_id, RunStep.step_index == step_index,
                RunStep.attempt == attempt, RunStep.status == t.RUNNING))
            holder = None if step is None else step.worker
            lease = None if step is None else step.lease_expires_at
        if lease is None or holder == self.worker_id:
            return False  # not running, or waiting on a callback without a worker
        if lease >= now() and not worker_dead(holder):
            return False
        error = f"worker lost: {holder or 'a worker'} died while running the step"
        return self._sweep_resolve(run_id, step_index, attempt, error) == 1

    # -- sessions known only by id ----------------------------------------------------

    def cancel_session(self, agent: str, spawn_id: str) -> None:
        profile = self.profiles.get(agent)
        if profile is None:
            return
        try:
            get_runtime(profile).cancel(spawn_id)
        except SpawnError:
            log.warning("cannot cancel session %s of profile %s", spawn_id, agent)

    # -- the sweeper ----------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Resolve steps whose worker stopped renewing its lease or whose time is up, and
        resend the message of a current step still pending long after it was sent."""
        report = SweepReport()
        ts = now()
        grace = self.settings.poll_seconds * 4 + 2
        with db.session() as s:
            lost = s.execute(
                select(RunStep.run_id, RunStep.step_index, RunStep.attempt, RunStep.worker)
                .where(RunStep.status == t.RUNNING, RunStep.lease_expires_at < ts)
            ).all()
            # Holders on this host can be checked directly, without waiting for the lease.
            dead = [row for row in s.execute(
                select(RunStep.run_id, RunStep.step_index, RunStep.attempt, RunStep.worker)
                .where(RunStep.status == t.RUNNING, RunStep.lease_expires_at >= ts,
                       RunStep.worker.like(f"{HOST}:%"))
            ).all() if worker_dead(row.worker)]
            overdue = s.execute(
                select(RunStep.run_id, RunStep.step_index, RunStep.attempt,
                       RunStep.timeout_seconds)
                .where(
                    RunStep.status == t.RUNNING,
                    RunStep.deadline_at + grace < ts,
                )
            ).all()
            stale = s.execute(
                select(RunStep.run_id, RunStep.step_index, RunStep.attempt)
                .join(PipelineRun, and_(PipelineRun.id == RunStep.run_id,
                                        PipelineRun.current_step == RunStep.step_index))
                .where(
                    PipelineRun.status.in_((t.PENDING, t.RUNNING)),
                    RunStep.status == t.PENDING,
                    PipelineRun.step_due_at < ts - self.settings.requeue_after_seconds,
                )
            ).all()
        for run_id, index, attempt, worker in lost:
            error = f"worker lost: {worker or 'a worker'} stopped renewing its lease"
            report.lost += self._sweep_resolve(run_id, index, attempt, error)
        for run_id, index, attempt, worker in dead:
            error = f"worker lost: {worker} died while running the step"
            report.lost += self._sweep_resolve(run_id, index, attempt, error)
        for run_id, index, attempt, timeout in overdue:
            error = f"timed out after {timeout} s"
            report.timed_out += self._sweep_resolve(run_id, index, attempt, error)
        if stale and self._queue_backlog():
            # Messages are still queued: a step pending this long is waiting its turn, not
            # lost. Resending now would flood the queue with duplicates under load.
            stale = []
        for run_id, index, attempt in stale[:REQUEUE_BATCH]:
            with db.session() as s:
                runs.mark_resent(s, run_id, index)
            self.dispatcher.dispatch([RunStepMessage(run_id, index, attempt)])
            report.requeued += 1
        report.promoted = self._promote_queued()
        return report

    def _promote_queued(self) -> int:
        """Start queued runs into free slots that a finish left: one whose promotion skipped
        a queued run another transaction held, or a pipeline since deleted (its runs then
        have no limit)."""
        with db.session() as s:
            waiting = s.scalars(select(PipelineRun.pipeline_id).where(PipelineRun.queued)
                                .distinct()).all()
        started = 0
        for pipeline_id in waiting:
            with db.session() as s:
                effects = runs.promote_queued(s, pipeline_id)
            self.dispatcher.dispatch(effects)
            started += len(effects)
        return started

    def _queue_backlog(self) -> int:
        """Messages waiting in the step queue, if the dispatcher can tell (else 0)."""
        count = getattr(self.dispatcher, "backlog", None)
        return (count(self.settings.queue) or 0) if count else 0

    def _sweep_resolve(self, run_id: int, index: int, attempt: int, error: str) -> int:
        proposal = t.Resolve(False, index, attempt, allow_pending=False)
        with db.session() as s:
            tr = runs.resolve_step(s, run_id, proposal, runs.StepResult(error=error))
        if not tr.accepted:
            return 0
        log.warning("swept step: %s", error, extra={"run_id": run_id, "step_index": index})
        self.dispatcher.dispatch(tr.effects)
        return 1
