"""A newcomer's first mistakes end in one line that says what to run, and create nothing:
no database, no tables, no broker, a busy port, a bad PORT."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from orchestrator import migrate
from tests.conftest import free_port


def cli(cwd, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "BROKER_URL", "PORT", "API_KEY", "AGENTS_FILE")}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0].removeprefix("Error: ")


@pytest.mark.parametrize("command", [
    ["keys", "create", "--name", "me", "--role", "admin"],
    ["worker"],
    ["api"],
])
def test_a_folder_without_a_database_gets_no_empty_one(tmp_path, command):
    said = one_line(cli(tmp_path, *command))
    assert said == (f"no database at {tmp_path / 'orchestrator.db'}: run `orchestrator up` or "
                    f"`orchestrator db upgrade` in {tmp_path} first, or set DATABASE_URL")
    assert list(tmp_path.iterdir()) == []


def test_a_database_without_tables_says_to_upgrade(tmp_path):
    sqlite3.connect(tmp_path / "orchestrator.db").close()
    said = one_line(cli(tmp_path, "keys", "create", "--name", "me", "--role", "admin"))
    assert said == ("the database at sqlite:///orchestrator.db has no tables: "
                    "run `orchestrator db upgrade`")
    done = cli(tmp_path, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    made = cli(tmp_path, "keys", "create", "--name", "me", "--role", "admin")
    assert made.returncode == 0 and made.stdout.startswith("po_"), made.stderr


def test_a_missing_postgres_database_says_how_to_create_it(tmp_path, database_url):
    missing = database_url.rsplit("/", 1)[0] + "/orch_never_created"
    said = one_line(cli(tmp_path, "db", "upgrade", DATABASE_URL=missing))
    assert 'database "orch_never_created" does not exist' in said
    assert said.endswith("create it (e.g. `createdb orch_never_created`), then run "
                         "`orchestrator db upgrade`")


def test_an_unreachable_database_says_so(tmp_path):
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"
    said = one_line(cli(tmp_path, "keys", "create", "--name", "me", "--role", "admin",
                        DATABASE_URL=down))
    assert said.startswith(f"cannot use the database at {down}: ")
    assert said.endswith("is the database server running, and is DATABASE_URL right?")


def test_an_unreachable_broker_says_so(tmp_path):
    database = f"sqlite:///{tmp_path / 'ok.db'}"
    migrate.upgrade(database)
    broker = f"redis://127.0.0.1:{free_port()}/0"
    for command in ("worker", "beat"):
        said = one_line(cli(tmp_path, command, DATABASE_URL=database, BROKER_URL=broker))
        assert said.startswith(f"cannot reach the broker at {broker} (")
        assert said.endswith("is Redis running, and is BROKER_URL right?")


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_busy_port_says_how_to_pick_another_and_creates_nothing(tmp_path, busy_port):
    hint = (f"port {busy_port} on 127.0.0.1 is in use: pick another with "
            f"--port {busy_port + 1} or PORT={busy_port + 1}")
    assert one_line(cli(tmp_path, "up", "--port", str(busy_port))) == hint
    assert one_line(cli(tmp_path, "up", PORT=str(busy_port))) == hint
    assert list(tmp_path.iterdir()) == []
    database = f"sqlite:///{tmp_path / 'ok.db'}"
    migrate.upgrade(database)
    assert one_line(cli(tmp_path, "api", "--host", "127.0.0.1", PORT=str(busy_port),
                        DATABASE_URL=database)) == hint


def test_a_bad_port_setting_is_one_line_and_help_still_works(tmp_path):
    assert cli(tmp_path, "--help", PORT="abc").returncode == 0
    for command in ("api", "up"):
        assert one_line(cli(tmp_path, command, PORT="abc")) == (
            "PORT must be a port number (1-65535), got 'abc'")
    assert list(tmp_path.iterdir()) == []
