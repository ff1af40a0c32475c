"""Authentication by API key (`x-api-key` or `Authorization: Bearer`) and role checks.

Runs before any validation: an unauthenticated caller learns nothing about the input.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from api.errors import ApiError
from orchestrator import db
from orchestrator.auth import Identity, identify


def presented_key() -> str:
    key = request.headers.get("x-api-key", "")
    if not key:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    return key


def authenticate(key: str | None = None) -> Identity:
    key = presented_key() if key is None else key
    if not key:
        raise ApiError(401, "API key required (x-api-key header or Authorization: Bearer)")
    with db.session() as s:
        identity = identify(s, key, current_app.config["SETTINGS"].api_key)
    if identity is None:
        raise ApiError(401, "invalid API key")
    return identity


def require(role: str) -> Callable:
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any):
            identity = authenticate()
            if not identity.can(role):
                raise ApiError(403, f"this needs the {role} role; your key has {identity.role}")
            g.identity = identity
            return view(*args, **kwargs)

        return wrapped

    return decorate
