"""Run every end-to-end test twice: on the production topology (gunicorn, Celery worker
and beat, PostgreSQL, Redis) and on the embedded default (`orchestrator up` with a SQLite
file and the in-process broker, configured by nothing but AGENTS_FILE and API_KEY)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ADMIN_KEY, free_port
from tests.support import Api, wait_http


@pytest.fixture(scope="session")
def embedded(agents_file, tmp_path_factory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env.update(AGENTS_FILE=agents_file, API_KEY=ADMIN_KEY, STEP_POLL_SECONDS="0.05",
               SWEEP_SECONDS="1")
    with open(workdir / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--port", str(port)], cwd=workdir, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", 30, proc)
        assert (workdir / "orchestrator.db").exists(), "the embedded default is a SQLite file"
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module", params=["postgres-redis", "embedded"])
def api(request) -> Api:
    if request.param == "embedded":
        return Api(request.getfixturevalue("embedded"), ADMIN_KEY)
    return Api(request.getfixturevalue("stack").base_url, ADMIN_KEY)
