"""The Flask app factory: configuration, the database, the Celery app, the blueprints.

The API validates, records and enqueues; it never runs an agent itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import Any

from flask import Flask

from orchestrator import db
from orchestrator.config import Settings
from orchestrator.profiles import load_profiles


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    settings = Settings.from_env()
    overrides = {k: v for k, v in (config or {}).items() if k in Settings.__dataclass_fields__}
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    app.config.update(
        SETTINGS=settings,
        PROFILES=load_profiles(settings.agents_file),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
    )
    app.json.sort_keys = False
    db.init(settings)
    init_celery(app, settings)

    from api import (
        admin,
        audit,
        headers,
        health,
        openapi,
        pipelines,
        ratelimit,
        runs,
        workflows,
    )
    from api.errors import register_error_handlers

    for module in (health, workflows, pipelines, runs, admin, openapi):
        app.register_blueprint(module.bp)
    audit.init_app(app)
    headers.init_app(app)
    ratelimit.init_app(app)
    for optional in ("api.ui", "api.events"):
        if importlib.util.find_spec(optional) is not None:
            app.register_blueprint(importlib.import_module(optional).bp)
    from api import metrics

    metrics.check_metrics_auth(settings.metrics_auth)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(importlib.import_module("api.callbacks").bp)
    register_error_handlers(app)
    return app


def init_celery(app: Flask, settings: Settings) -> None:
    from worker.app import make_celery
    from worker.dispatch import CeleryDispatcher

    celery = make_celery(settings)
    app.extensions["celery"] = celery
    app.extensions["dispatcher"] = CeleryDispatcher(celery)
