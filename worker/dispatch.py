"""Turns effects into Celery messages, after the transaction that produced them committed."""

from __future__ import annotations

import logging
import time

from celery import Celery

from orchestrator.effects import CancelSession, DeliverHooks, Effect, RunStepMessage
from worker.app import VISIBILITY_TIMEOUT

log = logging.getLogger("orchestrator.dispatch")

# A worker holds a delayed message, unacknowledged, until it is due; held past the broker's
# visibility timeout, the broker would hand out a second copy. So a message never waits
# longer than this: a longer delay goes in hops (see `send_step`).
MAX_COUNTDOWN = VISIBILITY_TIMEOUT / 2


class CeleryDispatcher:
    def __init__(self, app: Celery):
        self.app = app

    def dispatch(self, effects: list[Effect]) -> None:
        for effect in effects:
            try:
                self._send(effect)
            except Exception:  # broker down: the sweeper resends pending steps later
                log.exception("could not send %s", effect)

    def backlog(self, queue: str) -> int | None:
        """How many messages wait in `queue`; None if the broker cannot say."""
        try:
            with self.app.connection_for_write() as conn:
                # declaring is idempotent (workers declare it too) and answers with its length
                ok = conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
                return ok.message_count
        except Exception:
            log.warning("cannot read the length of queue %s", queue, exc_info=True)
            return None

    def send_step(self, run_id: int, step_index: int, attempt: int, delay: float = 0.0) -> None:
        """The step's message, to arrive in `delay` seconds. Past MAX_COUNTDOWN it arrives
        after MAX_COUNTDOWN carrying its due time, and the worker that takes it sends it on
        (`worker.tasks.run_step`) until it is due."""
        kwargs = {"due_at": time.time() + delay} if delay > MAX_COUNTDOWN else None
        self.app.send_task(
            "orchestrator.run_step",
            args=[run_id, step_index, attempt],
            kwargs=kwargs,
            countdown=min(delay, MAX_COUNTDOWN) or None,
        )

    def _send(self, effect: Effect) -> None:
        if isinstance(effect, RunStepMessage):
            self.send_step(effect.run_id, effect.step_index, effect.attempt, effect.delay)
        elif isinstance(effect, CancelSession):
            self.app.send_task(
                "orchestrator.cancel_session", args=[effect.agent, effect.spawn_id]
            )
        elif isinstance(effect, DeliverHooks):
            # A backlog of kicks is pointless: one sends everything that is due.
            self.app.send_task("orchestrator.deliver_hooks", expires=60)
