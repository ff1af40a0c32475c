"""Celery tasks: thin wrappers that take ids and call the executor."""

from __future__ import annotations

import time
from functools import cache

from orchestrator import db, idempotency
from orchestrator.executor import Executor
from orchestrator.profiles import load_profiles
from worker.app import celery
from worker.dispatch import CeleryDispatcher


@cache
def executor() -> Executor:
    settings = celery.conf.orchestrator_settings
    return Executor(settings, load_profiles(settings.agents_file), CeleryDispatcher(celery))


@celery.task(name="orchestrator.run_step")
def run_step(run_id: int, step_index: int, attempt: int, due_at: float | None = None) -> str:
    wait = 0.0 if due_at is None else due_at - time.time()
    if wait > 0:  # a long retry delay, sent in hops no longer than the broker holds one
        CeleryDispatcher(celery).send_step(run_id, step_index, attempt, wait)
        return "deferred"
    return executor().run_step(run_id, step_index, attempt)


@celery.task(name="orchestrator.cancel_session")
def cancel_session(agent: str, spawn_id: str) -> None:
    executor().cancel_session(agent, spawn_id)


@celery.task(name="orchestrator.sweep")
def sweep() -> dict[str, int]:
    return vars(executor().sweep())


@celery.task(name="orchestrator.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    settings = celery.conf.orchestrator_settings
    with db.session() as s:
        return idempotency.purge_expired(s, settings.idempotency_ttl_seconds)
