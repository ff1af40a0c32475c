"""Every error is JSON `{"error": "..."}` with a fitting status; nothing leaks a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

from orchestrator.catalog import Conflict, UnknownTemplates
from orchestrator.records import NotFound
from orchestrator.runs import AtLimit

log = logging.getLogger("orchestrator.api")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}  # keys the error body carries beside `error`


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None):
    resp = jsonify(error=message, **(extra or {}))
    resp.status_code = status
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers, exc.extra)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        return error_response(400, describe_validation(exc))

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound):
        return error_response(404, str(exc))

    @app.errorhandler(AtLimit)
    def _at_limit(exc: AtLimit):
        return error_response(409, str(exc), extra={"code": "at_limit"})

    @app.errorhandler(UnknownTemplates)
    def _unknown_templates(exc: UnknownTemplates):
        return error_response(400, str(exc))

    @app.errorhandler(Conflict)
    def _conflict(exc: Conflict):
        return error_response(409, str(exc))

    @app.errorhandler(OperationalError)
    def _db_down(exc: OperationalError):
        log.warning("database unavailable: %s", exc.orig)
        return error_response(503, "database unavailable, try again shortly", {"Retry-After": "2"})

    @app.errorhandler(IntegrityError)
    def _raced(exc: IntegrityError):
        # Validation passed, then a concurrent change (a template deleted while a pipeline
        # was being saved with it) made the write impossible: nothing was written.
        log.info("write refused by a constraint: %s", exc.orig)
        return error_response(409, "this conflicts with a change made at the same time; "
                                   "reload and try again")

    @app.errorhandler(DBAPIError)
    def _db_error(exc: DBAPIError):
        if exc.connection_invalidated:
            return error_response(503, "database connection lost, try again", {"Retry-After": "1"})
        log.exception("database error")
        return error_response(500, "internal error")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        messages = {
            404: "not found",
            405: "method not allowed",
            413: "request body too large",
        }
        return error_response(exc.code or 500, messages.get(exc.code or 0, exc.description))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal error")
