"""Fixtures for the runtime tests: the fake LLM server, the gateway stand-in, and a live
stack of its own (own database, own broker prefix, own agents file pointing at the fakes,
one worker process of concurrency 1), so nothing here shares a sweeper or a worker slot
with the rest of the suite.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from orchestrator import migrate
from tests.runtimes.fakes import FakeLLM, Gateway
from tests.support import Api, Stack

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LLM_KEY = "sk-test-" + uuid.uuid4().hex
LLM_KEY_ENV = "RT_TEST_LLM_KEY"
ADMIN_KEY = "rt-admin-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def llm() -> Iterator[FakeLLM]:
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture(scope="session")
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    yield server
    server.close()


def free_port() -> int:
    """A loopback port nothing listens on (until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agents_toml(llm: FakeLLM, gateway: Gateway) -> str:
    return f"""
[agents.sh]
runtime = "command"
argv = ["bash", "-c", "{{prompt}}"]
injection_scan = "shell"

[agents.echo]
runtime = "echo"

[agents.llm]
runtime = "openai"
base_url = "{llm.base_url}"
api_key_env = "{LLM_KEY_ENV}"
retry_backoff_seconds = 0.05
price_input_per_mtok = 3.0
price_output_per_mtok = 15.0

[agents.llm-down]
runtime = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"

[agents.gw]
runtime = "webhook"
url = "{gateway.url}/spawn"
cancel_url = "{gateway.url}/sessions/{{spawn_id}}/cancel"
"""


@pytest.fixture(scope="session")
def rt_database_url(database_url: str) -> Iterator[str]:
    """A database of this package's own (PostgreSQL's reachability is checked by
    `database_url`, which this depends on for its skip/fail behaviour)."""
    name = f"orch_test_rt_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + "/" + name
    migrate.upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def rt_stack(rt_database_url: str, redis_url: str, llm: FakeLLM, gateway: Gateway,
             tmp_path_factory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("rt-stack")
    agents = workdir / "agents.toml"
    agents.write_text(agents_toml(llm, gateway))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": rt_database_url,
        "BROKER_URL": redis_url,
        "BROKER_PREFIX": f"test-rt-{uuid.uuid4().hex[:8]}:",
        "AGENTS_FILE": str(agents),
        "API_KEY": ADMIN_KEY,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        LLM_KEY_ENV: LLM_KEY,
        "STEP_POLL_SECONDS": "0.05",
        "SWEEP_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    with Stack(env, port, workdir, worker_concurrency=1) as live:
        yield live


@pytest.fixture(scope="session")
def rt_api(rt_stack: Stack) -> Api:
    return Api(rt_stack.base_url, ADMIN_KEY)


@pytest.fixture
def model() -> str:
    """A model name of this test's own: the fakes script their answers by model."""
    return f"model-{uuid.uuid4().hex[:8]}"
