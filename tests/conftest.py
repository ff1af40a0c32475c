"""Shared fixtures: a fresh PostgreSQL database per test session, Redis, and a live stack.

The chain is `database_url → settings → (session | stack)`. `stack` runs the real
production pieces as subprocesses (gunicorn API, Celery worker, Celery beat) on loopback
against this session's database and a broker key prefix of its own, so test sessions
running side by side never see each other's messages.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from orchestrator import db, migrate
from orchestrator.config import Settings
from tests.support import TEST_AGENTS, Api, Stack

# Outgoing webhooks may go to this machine alone, whatever a test (or the fuzzer) stores:
# every app a test makes and every process it starts inherits these (SPEC §15).
os.environ["HOOKS_ALLOW_HOSTS"] = "127.0.0.1,localhost,::1"
os.environ["HOOKS_ALLOW_PRIVATE"] = "true"

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex

START_HINT = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect 15 main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
}


def _unreachable(what: str, detail: str) -> None:
    message = (
        f"{what} is not reachable ({detail}). Start it with: {START_HINT[what]}"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.exit(message, returncode=3)  # in CI a missing service is a failure
    pytest.skip(message)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"orch_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        _unreachable("PostgreSQL", str(exc).strip().splitlines()[0])
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{url}/{name}"
    migrate.upgrade(url)
    yield url
    db.reset()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        _unreachable("Redis", str(exc))
    return REDIS_URL


@pytest.fixture(scope="session")
def agents_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("agents") / "agents.toml"
    path.write_text(TEST_AGENTS)
    return str(path)


@pytest.fixture(scope="session")
def settings(database_url: str, agents_file: str) -> Settings:
    s = Settings(
        database_url=database_url,
        agents_file=agents_file,
        api_key=ADMIN_KEY,
        poll_seconds=0.05,
    )
    db.init(s)
    return s


@pytest.fixture
def session(settings: Settings):
    """A session whose work is rolled back at the end of the test (joined to an outer
    transaction: the service's own flushes and savepoints still happen for real)."""
    engine = db.engine()
    with engine.connect() as conn:
        outer = conn.begin()
        factory = db.sessionmaker(bind=conn, join_transaction_mode="create_savepoint")
        with factory() as s:
            yield s
        outer.rollback()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def stack(database_url: str, redis_url: str, agents_file: str, tmp_path_factory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": redis_url,
        "BROKER_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "AGENTS_FILE": agents_file,
        "API_KEY": ADMIN_KEY,
        "STEP_POLL_SECONDS": "0.05",
        "SWEEP_SECONDS": "1",
        "SCHEDULE_TICK_SECONDS": "1",
        "HOOK_TICK_SECONDS": "0.5",
        "HOOK_RETRY_BASE_SECONDS": "0.3",
        "LOG_LEVEL": "INFO",
    }
    with Stack(env, free_port(), workdir) as live:
        yield live


@pytest.fixture(scope="session")
def api(stack: Stack) -> Api:
    return Api(stack.base_url, ADMIN_KEY)
