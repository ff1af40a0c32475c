"""/healthz (the process answers) and /readyz (database and broker reachable)."""

from __future__ import annotations

from flask import Blueprint, current_app
from sqlalchemy import text

from api.errors import error_response
from orchestrator import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    problems = []
    try:
        with db.read_session() as s:
            s.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; say which
        problems.append(f"database: {type(exc).__name__}")
    try:
        celery = current_app.extensions["celery"]
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        problems.append(f"broker: {type(exc).__name__}")
    if problems:
        return error_response(503, "not ready: " + ", ".join(problems))
    return {"status": "ready"}
