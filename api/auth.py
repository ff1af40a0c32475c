"""Authentication by API key (`x-api-key` or `Authorization: Bearer`) and role checks.

Runs before any validation: an unauthenticated caller learns nothing about the input.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from api.errors import ApiError
from orchestrator import db
from orchestrator.auth import Identity, hash_key, identify
from orchestrator.vocab import Role


def presented_key() -> str:
    key = request.headers.get("x-api-key", "")
    if not key:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key


# Known keys are remembered for a few seconds, so that a busy client costs no database
# round trip per request; a revoked key stops working within KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 5.0
_known: dict[str, tuple[Identity, float]] = {}


def authenticate(key: str | None = None) -> Identity:
    key = presented_key() if key is None else key
    if not key:
        raise ApiError(401, "API key required (x-api-key header or Authorization: Bearer)")
    digest = hash_key(key)
    cached = _known.get(digest)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    with db.read_session() as s:
        identity = identify(s, key, current_app.config["SETTINGS"].api_key)
    if identity is None:
        raise ApiError(401, "invalid API key")
    if len(_known) > 10_000:
        _known.clear()
    _known[digest] = (identity, time.monotonic() + KEY_CACHE_SECONDS)
    return identity


def key_label(key: str) -> str:
    """A key's name in counters kept outside the database (Redis), where no key is kept
    in clear, nor as the hash the database stores."""
    return hashlib.sha256(b"label:" + key.encode()).hexdigest()[:32]


def known_identity(key: str) -> Identity | None:
    """Who `key` belongs to, or None when it is empty or wrong."""
    if not key:
        return None
    try:
        return authenticate(key)
    except ApiError:
        return None


def require(role: str) -> Callable:
    role = Role(role)  # a misspelt role fails when the view is defined, not when it is called

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any):
            identity = authenticate()
            if not identity.can(role):
                raise ApiError(403, f"this needs the {role} role; your key has {identity.role}")
            g.identity = identity
            return view(*args, **kwargs)

        # The OpenAPI document's x-required-role is checked against this.
        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped

    return decorate
