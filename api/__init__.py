"""The Flask app factory: configuration, the database, the Celery app, the blueprints.

The API validates, records and enqueues; it never runs an agent itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import Any

from flask import Flask

from orchestrator import db, masking
from orchestrator.config import Settings
from orchestrator.profiles import load_profiles


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app, on the environment's settings with `config`'s fields (Settings' names,
    e.g. `{"database_url": ...}`) in their place. A key that is no setting is refused: a
    misspelt one would otherwise leave its setting at the default, unnoticed."""
    app = Flask(__name__)
    settings = Settings.from_env()
    unknown = sorted(set(config or {}) - set(Settings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"create_app: unknown config key(s) {', '.join(unknown)}; "
                         f"known: {', '.join(Settings.__dataclass_fields__)}")
    if config:
        settings = dataclasses.replace(settings, **config)
    app.config.update(
        SETTINGS=settings,
        PROFILES=load_profiles(settings.agents_file),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
    )
    # Advances and callbacks store text too: the secrets are masked out of it.
    masking.learn(masking.known_secrets(settings, app.config["PROFILES"]))
    app.json.sort_keys = False
    db.init(settings)
    init_celery(app, settings)

    from api import (
        admin,
        apply,
        audit,
        headers,
        health,
        hooks,
        openapi,
        pipelines,
        ratelimit,
        runs,
        schedules,
        workflows,
    )
    from api.errors import register_error_handlers

    for module in (health, workflows, pipelines, runs, schedules, hooks, admin, apply, audit,
                   openapi):
        app.register_blueprint(module.bp)
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
    """The app's one Celery app (Flask's Celery guide): made from its settings, the
    process's default, and what `orchestrator up` runs its worker on."""
    from worker.app import make_celery
    from worker.dispatch import CeleryDispatcher

    celery = make_celery(settings)
    celery.set_default()
    app.extensions["celery"] = celery
    app.extensions["dispatcher"] = CeleryDispatcher(celery)
