"""Counters for work that leaves no row behind, shared by every process of an install.

The sweeper's actions (steps failed for a lost worker or an overrun, messages resent)
run in whichever worker took the sweep task, while /metrics is served by any API
process. With a Redis broker the tallies live in one Redis hash next to the queues; with
the in-process broker everything is one process, so a dict does.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from orchestrator.config import Settings

SWEEP_ACTIONS = ("lost", "timed_out", "requeued")
_KEY = "orchestrator:tallies:sweeper"

_local: Counter[str] = Counter()
_lock = threading.Lock()
_clients: dict[str, Any] = {}


def _redis(settings: Settings):
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    client = _clients.get(settings.broker_url)
    if client is None:
        import redis

        client = redis.Redis.from_url(
            settings.broker_url, socket_connect_timeout=2, socket_timeout=2
        )
        _clients[settings.broker_url] = client
    return client


def record_sweep(settings: Settings, report: dict[str, int]) -> None:
    """Add one sweep's counts (the sweeper's report) to the shared tallies."""
    counts = {k: int(report.get(k) or 0) for k in SWEEP_ACTIONS}
    counts = {k: v for k, v in counts.items() if v}
    if not counts:
        return
    client = _redis(settings)
    if client is None:
        with _lock:
            _local.update(counts)
        return
    pipe = client.pipeline(transaction=False)
    for action, n in counts.items():
        pipe.hincrby(settings.broker_prefix + _KEY, action, n)
    pipe.execute()


def read_sweep(settings: Settings) -> dict[str, int]:
    client = _redis(settings)
    if client is None:
        with _lock:
            return {k: _local[k] for k in SWEEP_ACTIONS}
    raw = client.hgetall(settings.broker_prefix + _KEY)
    values = {k.decode(): int(v) for k, v in raw.items()}
    return {k: values.get(k, 0) for k in SWEEP_ACTIONS}
