"""The words the product is made of, one enum per concept: run and step statuses, what a
failed step does, when a step runs, roles, the injection guard's settings, audit actions.

Each is a `StrEnum`, so a member is its wire and database value: validation, the OpenAPI
document and the code all read the one list here.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class OnFailure(StrEnum):
    """What a failed step does to the run: halt it, or let the next step run."""

    STOP = "stop"
    CONTINUE = "continue"


class RunIf(StrEnum):
    """When a step runs: `on_success` (default) only while no `stop` failure has halted
    the run; `on_failure` only after some earlier step failed; `always` in every case."""

    ON_SUCCESS = "on_success"
    ON_FAILURE = "on_failure"
    ALWAYS = "always"


class Role(StrEnum):
    """The role ladder, lowest first: each role may do what those before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def at_least(self, other: str) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(Role(other))


class OnInjection(StrEnum):
    """What a step does when what flows into its prompt trips the injection guard."""

    WARN = "warn"
    FAIL = "fail"


class InjectionScan(StrEnum):
    """How an agent profile's prompts are scanned: as prompts, as shell programs, or not."""

    PROMPT = "prompt"
    SHELL = "shell"
    OFF = "off"


class AuditAction(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    STARTED = "started"
    ADVANCED = "advanced"
    CANCELLED = "cancelled"
    RERUN = "rerun"
    REVOKED = "revoked"
    APPLIED = "applied"


class AuditTarget(StrEnum):
    TEMPLATE = "template"
    PIPELINE = "pipeline"
    RUN = "run"
    KEY = "key"
    SCHEDULE = "schedule"
    HOOK = "hook"


class FireStatus(StrEnum):
    """What a schedule's fire did: started a run, or was skipped by the pipeline's
    concurrency limit."""

    STARTED = "started"
    SKIPPED = "skipped"


class OnLimit(StrEnum):
    """What a start does when its pipeline already has `max_concurrent_runs` started."""

    QUEUE = "queue"  # create the run queued; it starts, oldest first, when a slot frees
    SKIP = "skip"  # refuse the start (409); a schedule's fire is recorded as skipped
    CANCEL_OLDEST = "cancel_oldest"  # cancel the oldest started run, start the new one


class HookEvent(StrEnum):
    """What an outgoing webhook may subscribe to (SPEC §10)."""

    RUN_STARTED = "run.started"  # created, or left the queue of its concurrency limit
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    STEP_FAILED = "step.failed"  # its last attempt failed
    STEP_WAITING = "step.waiting"  # a manual step began waiting for a person


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not yet answered 2xx: sent again after a backoff
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up: retries ran out, or the target is not allowed


def values(enum: type[StrEnum]) -> list[str]:
    """The plain strings of an enum, for places that want no enum members (click choices,
    JSON Schema enums)."""
    return [m.value for m in enum]
