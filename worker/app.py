"""The Celery app: late acknowledgement, one message at a time, JSON only.

A process has one Celery app. The API's is made by `create_app` (api.init_celery, as
Flask's Celery guide does), and `orchestrator up` runs its worker on that same app; the
worker-only commands and `celery -A worker.app worker` use `celery` below, made from the
environment on first use. Step messages go to the `orchestrator.steps` queue; cancels,
the sweeper and the schedules' tick to `orchestrator.control`, so a backlog of steps never
delays a cancel.
"""

from __future__ import annotations

import gc

from celery import Celery, current_app
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
)

from orchestrator import db, logs, masking, render_process, tallies
from orchestrator.config import Settings

# Longer than the longest step timeout (3600 s) plus grace: a message is redelivered by
# visibility timeout only when its worker vanished without returning it.
VISIBILITY_TIMEOUT = 2 * 3600


def control_queue(settings: Settings) -> str:
    return settings.queue.rsplit(".", 1)[0] + ".control"


def make_celery(settings: Settings) -> Celery:
    app = Celery("orchestrator", broker=settings.broker_url, include=["worker.tasks"])
    transport: dict[str, object] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if settings.broker_prefix:
        transport["global_keyprefix"] = settings.broker_prefix
    if settings.embedded_broker:
        transport = {"polling_interval": 0.005}
    control = control_queue(settings)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue,
        task_routes={
            "orchestrator.run_step": {"queue": settings.queue},
            "orchestrator.cancel_session": {"queue": control},
            "orchestrator.sweep": {"queue": control},
            "orchestrator.purge_idempotency_keys": {"queue": control},
            "orchestrator.fire_schedules": {"queue": control},
            "orchestrator.deliver_hooks": {"queue": control},
        },
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {"task": "orchestrator.sweep", "schedule": settings.sweep_seconds},
            # A tick that finds nothing due is one indexed query; a late tick fires late,
            # never twice (see orchestrator.schedules). Expires before the next tick, so
            # a backlog of ticks behind a stopped worker is not run all at once.
            "fire-schedules": {"task": "orchestrator.fire_schedules",
                               "schedule": settings.schedule_tick_seconds,
                               "options": {"expires": settings.schedule_tick_seconds}},
            # Retries, and deliveries a lost worker held; a transition's own are sent at once.
            "deliver-hooks": {"task": "orchestrator.deliver_hooks",
                              "schedule": settings.hook_tick_seconds,
                              "options": {"expires": settings.hook_tick_seconds}},
            "purge-idempotency-keys": {
                "task": "orchestrator.purge_idempotency_keys", "schedule": 3600.0,
            },
        },
    )
    app.conf.orchestrator_settings = settings
    return app


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # A forked pool child must not share the parent's database sockets.
    db.reset()
    # What the child inherited lives as long as it does: keep it out of the collector's
    # full passes (long pauses in the middle of a step).
    gc.freeze()
    # Its render process, started now so that the first templated step does not wait.
    render_process.pool_for(current_app.conf.orchestrator_settings).warm()


@worker_process_shutdown.connect
def _finish_sessions(**_kwargs) -> None:
    # A warm shutdown waits for the sessions this pool process awaits, as it waits for
    # its tasks: they were handed off, not dropped (see orchestrator.waiter).
    from worker.tasks import drain_sessions

    drain_sessions(current_app)


@setup_logging.connect
def _structured_logs(loglevel=None, **_kwargs) -> None:
    # Connected, so Celery leaves the root logger and stdout to us.
    settings = Settings.from_env()
    logs.configure(loglevel or "INFO", settings.log_format, masking.known_secrets(settings))


@task_prerun.connect
def _bind_log_context(task=None, args=None, **_kwargs) -> None:
    # Pool threads and processes are reused: start each task with a clean context.
    logs.clear()
    if task is not None and task.name == "orchestrator.run_step" and args:
        logs.bind(run_id=args[0], step_index=args[1])


@task_postrun.connect
def _tally_sweep(task=None, retval=None, **_kwargs) -> None:
    if task is not None and task.name == "orchestrator.sweep" and isinstance(retval, dict):
        tallies.record_sweep(task.app.conf.orchestrator_settings, retval)


_from_env: Celery | None = None


def __getattr__(name: str) -> Celery:
    # `celery` is made when first asked for, not at import: importing this module (as the
    # API does, for its factory) neither reads the environment nor makes a second app.
    global _from_env
    if name != "celery":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _from_env is None:
        _from_env = make_celery(Settings.from_env())
    return _from_env
