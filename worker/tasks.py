"""Celery tasks: thin wrappers that take ids and call the executor."""

from __future__ import annotations

import time
from functools import cache

from celery import Celery, shared_task

from orchestrator import db, hook_delivery, idempotency, run_queries, schedules
from orchestrator.attempts import earlier_attempts
from orchestrator.effects import Dispatcher
from orchestrator.executor import Executor
from orchestrator.profiles import load_profiles
from worker.dispatch import CeleryDispatcher


@cache
def executor(app: Celery) -> Executor:
    settings = app.conf.orchestrator_settings
    return Executor(settings, load_profiles(settings.agents_file), CeleryDispatcher(app))


def drain_sessions(app: Celery) -> None:
    """Wait for every session this process handed to its waiter, if it made one."""
    if executor.cache_info().currsize:
        executor(app).drain()


# shared_task: each task belongs to the app of the process that runs it (see worker.app)
@shared_task(name="orchestrator.run_step", bind=True)
def run_step(self, run_id: int, step_index: int, attempt: int,
             due_at: float | None = None) -> str:
    wait = 0.0 if due_at is None else due_at - time.time()
    if wait > 0:  # a long retry delay, sent in hops no longer than the broker holds one
        CeleryDispatcher(self.app).send_step(run_id, step_index, attempt, wait)
        return "deferred"
    return executor(self.app).run_step(run_id, step_index, attempt)


@shared_task(name="orchestrator.cancel_session", bind=True)
def cancel_session(self, agent: str, spawn_id: str) -> None:
    executor(self.app).cancel_session(agent, spawn_id)


@shared_task(name="orchestrator.sweep", bind=True)
def sweep(self) -> dict[str, int]:
    return vars(executor(self.app).sweep())


@shared_task(name="orchestrator.purge_idempotency_keys", bind=True)
def purge_idempotency_keys(self) -> int:
    settings = self.app.conf.orchestrator_settings
    with db.session() as s:
        return idempotency.purge_expired(s, settings.idempotency_ttl_seconds)


@shared_task(name="orchestrator.fire_schedules", bind=True)
def fire_schedules(self) -> int:
    return fire_due_schedules(executor(self.app).dispatcher)


def fire_due_schedules(dispatcher: Dispatcher, at: float | None = None) -> int:
    """Fire the schedules that are due (beat's tick, and `up`'s), committing before each
    new run's first step is sent. Another beat firing at once fires none twice."""
    with db.session() as s:
        fired = schedules.fire_due(s, time.time() if at is None else at)
    for f in fired:
        dispatcher.dispatch(f.effects)
    return len(fired)


@shared_task(name="orchestrator.deliver_hooks", bind=True)
def deliver_hooks(self) -> int:
    return deliver_due_hooks(executor(self.app))


def deliver_due_hooks(ex: Executor) -> int:
    """Send the outgoing webhooks that are due (a kick after a transition wrote some,
    beat's tick for retries and for any a lost worker held)."""

    def render(s, run_id: int, step_index: int | None) -> dict:
        from api.schemas import run_detail_json

        run, steps = run_queries.load_run(s, run_id)
        data = {"run": run_detail_json(run, steps, earlier_attempts(s, run, steps),
                                       profiles=ex.profiles)}
        if step_index is not None:
            data["step"] = data["run"]["steps_snapshot"][step_index]
        return data

    return hook_delivery.deliver_due(ex.settings, render)
