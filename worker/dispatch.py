"""Turns effects into Celery messages, after the transaction that produced them committed."""

from __future__ import annotations

import logging

from celery import Celery

from orchestrator.effects import CancelSession, Effect, RunStepMessage

log = logging.getLogger("orchestrator.dispatch")


class CeleryDispatcher:
    def __init__(self, app: Celery):
        self.app = app

    def dispatch(self, effects: list[Effect]) -> None:
        for effect in effects:
            try:
                self._send(effect)
            except Exception:  # broker down: the sweeper resends pending steps later
                log.exception("could not send %s", effect)

    def _send(self, effect: Effect) -> None:
        if isinstance(effect, RunStepMessage):
            self.app.send_task(
                "orchestrator.run_step",
                args=[effect.run_id, effect.step_index, effect.attempt],
                countdown=effect.delay or None,
            )
        elif isinstance(effect, CancelSession):
            self.app.send_task(
                "orchestrator.cancel_session", args=[effect.agent, effect.spawn_id]
            )
