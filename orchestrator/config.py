"""Configuration read from the environment, with the embedded defaults.

Every knob the service has is a field here, so docs/configuration.md's table and the
code cannot drift apart: `Settings.from_env()` is the only place that reads os.environ.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from orchestrator.vocab import Role

DEFAULT_DATABASE_URL = "sqlite:///orchestrator.db"
IN_PROCESS_BROKER = "memory://"


def _float(env: dict[str, str], name: str, default: float, zero_ok: bool = False) -> float:
    """A number of seconds (or a size) from the environment: finite, and more than 0
    (or 0 and more, where 0 means "off")."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {raw!r}")
    if value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{name} must be {'0 or more' if zero_ok else 'more than 0'}, got {raw!r}")
    return value


def _int(env: dict[str, str], name: str, default: int, zero_ok: bool = False) -> int:
    raw = (env.get(name) or "").strip()
    if raw and not (raw.isascii() and raw.isdigit()):
        raise ValueError(f"{name} must be a whole number, got {env[name]!r}")
    return int(_float(env, name, default, zero_ok))


def _bool(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be true or false, got {env[name]!r}")


def _rate_limit(raw: str | None) -> int:
    """`RATE_LIMIT`: a count per window, or `off` (also `0`) to turn limiting off."""
    if raw is None or raw.strip() == "":
        return 600
    if raw.strip().lower() in ("off", "0", "false", "no"):
        return 0
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"RATE_LIMIT must be a whole number or 'off', got {raw!r}") from exc
    if value < 0:
        raise ValueError(f"RATE_LIMIT must not be negative, got {raw!r}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(raw: str | None) -> str:
    level = (raw or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _port(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return 3000
    value = raw.strip()
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 65535):
        raise ValueError(f"PORT must be a port number (1-65535), got {raw!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = IN_PROCESS_BROKER
    broker_prefix: str = ""
    queue: str = "orchestrator.steps"
    api_key: str | None = None
    agents_file: str | None = None
    public_url: str = "http://127.0.0.1:3000"
    # How long a worker's claim on a running step lasts without a heartbeat; past it the
    # sweeper takes the worker for lost.
    lease_seconds: float = 30.0
    # How often a worker waiting on a session re-reads the step (cancel, advance) and
    # renews its lease.
    poll_seconds: float = 0.25
    sweep_seconds: float = 5.0
    # Sessions one worker process awaits at once (orchestrator.waiter); past it, a step's
    # task waits for one to end before it spawns another.
    worker_max_sessions: int = 1000
    # How often beat checks for schedules whose fire time has passed.
    schedule_tick_seconds: float = 5.0
    # Steps a worker runs back to back from one message, claiming each next step in the
    # transaction that resolves the last; 0 sends every step through the broker.
    chain_steps: int = 20
    # A pending current step whose message was sent longer ago than this is sent again.
    requeue_after_seconds: float = 60.0
    output_max_chars: int = 65536
    max_body_bytes: int = 1024 * 1024
    db_pool_size: int = 5
    # Requests allowed per window in each rate-limit bucket (by address before a key
    # authenticates, by key for its mutations, by step for callbacks); 0 turns it off.
    rate_limit: int = 600
    rate_limit_window_seconds: float = 60.0
    # How long an `Idempotency-Key` on a start is remembered.
    idempotency_ttl_seconds: float = 24 * 3600.0
    # How long a worker keeps retrying a database write it must not lose (a claim, a
    # spawn_id, a step's result) while the database is unreachable.
    db_retry_seconds: float = 120.0
    # `json`, `text`, or empty: JSON unless stderr is a terminal.
    log_format: str = ""
    # Who may read /metrics: `viewer` (any API key) or `none` (open, for a private network).
    metrics_auth: str = Role.VIEWER.value
    # Bounds on rendering one prompt (in a render process of the worker's): wall-clock
    # seconds, and memory it may allocate.
    render_timeout_seconds: float = 2.0
    render_memory_mb: int = 256
    # The HTTP port `up` and `api` listen on when no --port is given.
    port: int = 3000
    # Level of the service's own logs, and of Celery's and gunicorn's.
    log_level: str = "INFO"
    # Open /api/events streams: per API key (all hosts), per API host, and per API process.
    # Each stream holds a server thread for now, so a process keeps some threads for the
    # rest of the API: `orchestrator api` runs 16 threads and refuses a cap of 16 or more.
    events_max_streams_per_key: int = 8
    events_max_streams: int = 2000
    events_max_streams_per_process: int = 12
    # Outgoing webhooks (SPEC §10, §15): loopback and private targets are refused unless
    # allowed; when `hooks_allow_hosts` names hosts, deliveries go to those alone.
    hooks_allow_private: bool = False
    hooks_allow_hosts: tuple[str, ...] = ()
    # The first retry of a failed delivery waits this long, each next one twice as long
    # (at most an hour); a delivery is retried for HOOK_RETRY_HOURS before it is given up.
    hook_retry_base_seconds: float = 10.0
    hook_retry_hours: float = 26.0
    # How often beat sends deliveries that are due (retries, and any a lost worker held).
    hook_tick_seconds: float = 5.0
    hook_timeout_seconds: float = 10.0

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        settings = cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            broker_url=env.get("BROKER_URL") or IN_PROCESS_BROKER,
            broker_prefix=env.get("BROKER_PREFIX", ""),
            queue=env.get("QUEUE_NAME") or "orchestrator.steps",
            api_key=env.get("API_KEY") or None,
            agents_file=env.get("AGENTS_FILE") or None,
            public_url=(env.get("PUBLIC_URL") or "http://127.0.0.1:3000").rstrip("/"),
            lease_seconds=_float(env, "STEP_LEASE_SECONDS", 30.0),
            poll_seconds=_float(env, "STEP_POLL_SECONDS", 0.25),
            sweep_seconds=_float(env, "SWEEP_SECONDS", 5.0),
            worker_max_sessions=_int(env, "WORKER_MAX_SESSIONS", 1000),
            schedule_tick_seconds=_float(env, "SCHEDULE_TICK_SECONDS", 5.0),
            chain_steps=_int(env, "CHAIN_STEPS", 20, zero_ok=True),
            requeue_after_seconds=_float(env, "REQUEUE_AFTER_SECONDS", 60.0),
            output_max_chars=_int(env, "OUTPUT_MAX_CHARS", 65536),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 1024 * 1024),
            db_pool_size=_int(env, "DB_POOL_SIZE", 5),
            rate_limit=_rate_limit(env.get("RATE_LIMIT")),
            rate_limit_window_seconds=_float(env, "RATE_LIMIT_WINDOW_SECONDS", 60.0),
            idempotency_ttl_seconds=_float(env, "IDEMPOTENCY_TTL_SECONDS", 24 * 3600.0),
            db_retry_seconds=_float(env, "DB_RETRY_SECONDS", 120.0, zero_ok=True),
            log_format=(env.get("LOG_FORMAT") or "").lower(),
            metrics_auth=(env.get("METRICS_AUTH") or Role.VIEWER.value).lower(),
            render_timeout_seconds=_float(env, "RENDER_TIMEOUT_SECONDS", 2.0),
            render_memory_mb=_int(env, "RENDER_MEMORY_MB", 256),
            port=_port(env.get("PORT")),
            log_level=_log_level(env.get("LOG_LEVEL")),
            events_max_streams_per_key=_int(env, "EVENTS_MAX_STREAMS_PER_KEY", 8),
            events_max_streams=_int(env, "EVENTS_MAX_STREAMS", 2000),
            events_max_streams_per_process=_int(env, "EVENTS_MAX_STREAMS_PER_PROCESS", 12),
            hooks_allow_private=_bool(env, "HOOKS_ALLOW_PRIVATE"),
            hooks_allow_hosts=tuple(h.strip().lower() for h in
                                    (env.get("HOOKS_ALLOW_HOSTS") or "").split(",") if h.strip()),
            hook_retry_base_seconds=_float(env, "HOOK_RETRY_BASE_SECONDS", 10.0),
            hook_retry_hours=_float(env, "HOOK_RETRY_HOURS", 26.0),
            hook_tick_seconds=_float(env, "HOOK_TICK_SECONDS", 5.0),
            hook_timeout_seconds=_float(env, "HOOK_TIMEOUT_SECONDS", 10.0),
        )
        # A worker renews its lease every third of it, between two polls of its session.
        if settings.poll_seconds >= settings.lease_seconds / 3:
            raise ValueError(
                f"STEP_POLL_SECONDS ({settings.poll_seconds:g}) must be less than a third of "
                f"STEP_LEASE_SECONDS ({settings.lease_seconds:g}), or leases run out"
            )
        return settings
