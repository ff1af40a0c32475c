"""Request limits: the body size of chunked requests, and rate limits (Flask-Limiter).

Flask refuses a body whose Content-Length is over MAX_BODY_BYTES, but a chunked body has
no length and would be cut short silently; `limit_chunked_body` reads it up to the limit
first, so it too gets a 413.

Rate limits, RATE_LIMIT requests per RATE_LIMIT_WINDOW_SECONDS in three kinds of bucket:
- by client address: every request that did not authenticate (no key, a wrong key, a
  callback with a wrong secret), reads included, so guessing keys is throttled too;
- by API key: the mutations of a key that authenticated (its reads are not limited);
- by callback step: callbacks carrying their step's valid secret, so a gateway that
  reports for many sessions is not one noisy address.
Counters live in the broker's Redis when the broker is Redis, so every API process shares
them; otherwise in the process. `RATE_LIMIT=off` turns limiting off. If Redis cannot be
reached the request is let through: a limiter must not take the API down with it.
"""

from __future__ import annotations

import io
import math
import time

from flask import Flask, current_app, g, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from sqlalchemy.exc import SQLAlchemyError

from api.auth import key_label, known_identity, presented_key
from api.errors import error_response
from orchestrator import callbacks, db
from orchestrator.config import Settings

MUTATING = ("POST", "PUT", "PATCH", "DELETE")
# What reads nothing stored and is fetched often from one address (load balancer probes,
# the UI's files, this API's document) is not counted.
UNCOUNTED = frozenset({"health.healthz", "health.readyz", "ui.index", "ui.static",
                       "openapi.openapi_json"})
CALLBACK = "callbacks.step_callback"
EVENTS = "events.events"


def address() -> str:
    return f"addr:{request.remote_addr or 'unknown'}"


def request_key() -> str:
    """The key a request brings: event streams may bring it as `?key=` (see api.events)."""
    key = presented_key()
    if not key and request.endpoint == EVENTS:
        key = request.args.get("key", "")
    return key


def key_id() -> str:
    return "key:" + key_label(request_key())


def callback_step() -> str:
    args = request.view_args or {}
    return f"callback:{args.get('run_id')}:{args.get('step_index')}"


def authenticated() -> bool:
    """The request's key is valid (cached in api.auth)."""
    if "rate_identity" not in g:
        g.rate_identity = known_identity(request_key())
    return g.rate_identity is not None


def callback_verified() -> bool:
    """The request is a callback whose secret is its attempt's. Checked here, before the
    limits are, because a valid callback is never counted by address: a gateway whose
    address also sent refused requests must still be able to report its sessions."""
    if request.endpoint != CALLBACK:
        return False
    if "callback_verified" not in g:
        args, secret = request.view_args or {}, request.args.get("secret", "")
        try:
            with db.read_session() as s:
                g.callback_verified = bool(secret) and callbacks.verify(
                    s, args["run_id"], args["step_index"], args["attempt"], secret)
        except SQLAlchemyError:
            g.callback_verified = False  # the view answers 503; count it by address
    return g.callback_verified


def buckets(settings: Settings) -> list[ApplicationLimit]:
    rate = f"{settings.rate_limit} per {settings.rate_limit_window_seconds:g} seconds"
    return [
        ApplicationLimit(
            rate, key_function=address, scope="address",
            exempt_when=lambda: (request.endpoint in UNCOUNTED or authenticated()
                                 or callback_verified()),
        ),
        ApplicationLimit(
            rate, key_function=key_id, scope="key", methods=MUTATING,
            exempt_when=lambda: not request_key(),
            deduct_when=lambda _resp: authenticated(),
        ),
        ApplicationLimit(
            rate, key_function=callback_step, scope="callback",
            exempt_when=lambda: not callback_verified(),
        ),
    ]


def make_limiter(settings: Settings) -> Limiter:
    on_redis = settings.broker_url.startswith(("redis://", "rediss://"))
    return Limiter(
        address,
        application_limits=buckets(settings),
        storage_uri=settings.broker_url if on_redis else "memory://",
        storage_options={"socket_timeout": 0.5, "socket_connect_timeout": 0.5} if on_redis else {},
        key_prefix=settings.broker_prefix + "ratelimit",
        strategy="fixed-window",
        swallow_errors=True,
        headers_enabled=False,
    )


def too_many(exc: RateLimitExceeded):
    limiter: Limiter = current_app.extensions["rate_limiter"]
    breached = limiter.current_limit
    reset_at = breached.reset_at if breached is not None else time.time() + 1
    retry_after = max(1, math.ceil(reset_at - time.time()))
    return error_response(
        429, f"rate limit exceeded: {exc.limit.limit}; retry in {retry_after} s",
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
    app.before_request(limit_chunked_body)
    settings: Settings = app.config["SETTINGS"]
    if settings.rate_limit > 0 and settings.rate_limit_window_seconds > 0:
        limiter = make_limiter(settings)
        limiter.init_app(app)
        app.extensions["rate_limiter"] = limiter
        app.register_error_handler(RateLimitExceeded, too_many)
