"""In-process app fixtures for the access, audit, idempotency and fuzz tests.

The app runs against this test session's PostgreSQL database with the in-process broker
and no worker: these tests are about what the API accepts, refuses and records.
"""

from __future__ import annotations

import pytest
from flask import Flask

from api import create_app
from orchestrator import db
from orchestrator.auth import create_key
from tests.conftest import ADMIN_KEY, PG_ADMIN_URL
from tests.reliability import faults


def make_app(settings, **overrides) -> Flask:
    config = {
        "database_url": settings.database_url,
        "agents_file": settings.agents_file,
        "api_key": ADMIN_KEY,
        "broker_url": "memory://",
        "rate_limit": 0,
        **overrides,
    }
    app = create_app(config)
    app.testing = True
    return app


@pytest.fixture(scope="module")
def app(settings) -> Flask:
    return make_app(settings)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def role_keys(settings) -> dict[str, str]:
    keys = {"admin": ADMIN_KEY}
    with db.session() as s:
        for role in ("viewer", "operator"):
            _, keys[role] = create_key(s, f"rel-{role}", role)
        _, keys["admin-db"] = create_key(s, "rel-admin", "admin")
    return keys


@pytest.fixture
def fresh_db(database_url):
    """A migrated database of its own, for tests whose sweeper must see only their runs."""
    url, name = faults.fresh_database(PG_ADMIN_URL)
    yield url
    faults.drop_database(PG_ADMIN_URL, name)
