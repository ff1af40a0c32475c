"""What must happen after a transition commits: messages to send, sessions to end.

The write path returns these instead of acting, because a message sent inside a
transaction can be consumed before the commit that makes it valid. The edge that
committed hands them to a `Dispatcher` (Celery in production, a list in tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RunStepMessage:
    run_id: int
    step_index: int
    attempt: int
    delay: float = 0.0


@dataclass(frozen=True)
class CancelSession:
    run_id: int
    step_index: int
    agent: str
    spawn_id: str


@dataclass(frozen=True)
class DeliverHooks:
    """Deliveries were written to the outbox: send what is due now rather than at the
    next tick."""


Effect = RunStepMessage | CancelSession | DeliverHooks


class Dispatcher(Protocol):
    def dispatch(self, effects: list[Effect]) -> None: ...


class Recorder:
    """A dispatcher that only remembers, for tests and for callers that batch."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []

    def dispatch(self, effects: list[Effect]) -> None:
        self.effects.extend(effects)
