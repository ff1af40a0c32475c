"""Request limits: the body size of chunked requests, and rate limits on mutations.

Flask refuses a body whose Content-Length is over MAX_BODY_BYTES, but a chunked body has
no length and would be cut short silently; `limit_chunked_body` reads it up to the limit
first, so it too gets a 413.

Rate limits: N mutating requests per window per API key (or client address).

Counters live in Redis when the broker is Redis, so every API process behind a load
balancer shares them (a fixed window: one INCR and one EXPIRE per request). With any
other broker, the embedded in-process one included, each process counts on its own,
which is what a single `orchestrator up` needs. `RATE_LIMIT=off` turns limiting off.
If Redis cannot be reached the request is let through: a limiter must not take the API
down with it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import time
from typing import Protocol

import redis
from flask import Flask, current_app, request

from api.auth import presented_key
from api.errors import error_response
from orchestrator.config import Settings

log = logging.getLogger("orchestrator.api.ratelimit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Counter(Protocol):
    def hit(self, who: str, window: int, seconds: float) -> int:
        """Count one request of `who` in window number `window`; the count so far."""


class MemoryCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def hit(self, who: str, window: int, seconds: float) -> int:
        with self._lock:
            if len(self._counts) > 10_000:  # forget windows that are over
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            count = self._counts.get((who, window), 0) + 1
            self._counts[(who, window)] = count
            return count


class RedisCounter:
    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.prefix = prefix + "ratelimit:"

    def hit(self, who: str, window: int, seconds: float) -> int:
        key = f"{self.prefix}{who}:{window}"
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, math.ceil(seconds) + 1)
        count, _ = pipe.execute()
        return int(count)


def make_counter(settings: Settings) -> Counter:
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return RedisCounter(settings.broker_url, settings.broker_prefix)
    return MemoryCounter()


def client_id() -> str:
    """Whom a request is counted against: its key (hashed: keys are never stored in
    clear, not even in Redis), or its address when it brings none."""
    key = presented_key()
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"addr:{request.remote_addr or 'unknown'}"


def check_rate_limit():
    if request.method not in MUTATING:
        return None
    settings: Settings = current_app.config["SETTINGS"]
    limit, seconds = settings.rate_limit, settings.rate_limit_window_seconds
    if limit <= 0 or seconds <= 0:
        return None
    now = time.time()
    window = int(now // seconds)
    try:
        count = current_app.extensions["rate_limiter"].hit(client_id(), window, seconds)
    except redis.RedisError as exc:
        log.warning("rate limiter unavailable, request let through: %s", exc)
        return None
    if count <= limit:
        return None
    retry_after = max(1, math.ceil((window + 1) * seconds - now))
    return error_response(
        429,
        f"rate limit exceeded: {limit} changes per {seconds:g} s; retry in {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


def limit_chunked_body():
    env = request.environ
    if env.get("CONTENT_LENGTH") or "chunked" not in env.get("HTTP_TRANSFER_ENCODING", ""):
        return None
    limit = current_app.config["SETTINGS"].max_body_bytes
    data = env["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        return error_response(413, "request body too large")
    env["wsgi.input"] = io.BytesIO(data)
    env["CONTENT_LENGTH"] = str(len(data))
    env.pop("HTTP_TRANSFER_ENCODING", None)
    env["wsgi.input_terminated"] = False
    return None


def init_app(app: Flask) -> None:
    app.extensions["rate_limiter"] = make_counter(app.config["SETTINGS"])
    app.before_request(limit_chunked_body)
    app.before_request(check_rate_limit)
