"""Turns effects into Celery messages, after the transaction that produced them committed."""

from __future__ import annotations

import logging

from celery import Celery

from orchestrator.effects import CancelSession, Effect, RunStepMessage
from worker.app import VISIBILITY_TIMEOUT

log = logging.getLogger("orchestrator.dispatch")

# A worker holds a delayed message, unacknowledged, until it is due; held past the broker's
# visibility timeout, the broker would hand out a second copy. A retry delayed longer is
# not sent: the sweeper sends the step once it is due (`step_due_at`).
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

    def _send(self, effect: Effect) -> None:
        if isinstance(effect, RunStepMessage):
            if effect.delay > MAX_COUNTDOWN:
                log.info("step %s of run %s is due in %.0f s: the sweeper will send it",
                         effect.step_index, effect.run_id, effect.delay)
                return
            self.app.send_task(
                "orchestrator.run_step",
                args=[effect.run_id, effect.step_index, effect.attempt],
                countdown=effect.delay or None,
            )
        elif isinstance(effect, CancelSession):
            self.app.send_task(
                "orchestrator.cancel_session", args=[effect.agent, effect.spawn_id]
            )
