"""The service commands: `db upgrade` and `keys create` against the session's database."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator import migrate
from tests.conftest import free_port


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_db_upgrade_is_idempotent(database_url):
    first = run_cli(database_url, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout
    assert run_cli(database_url, "db", "upgrade").returncode == 0


def test_keys_create_prints_a_key_that_works_with_its_role(stack, api, database_url):
    made = run_cli(database_url, "keys", "create", "--name", "ci-bot", "--role", "operator")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("po_") and len(key) > 30
    assert api.call("GET", "/api/me", key=key).json() == {"name": "ci-bot", "role": "operator"}
    assert api.call("GET", "/api/keys", key=key).status_code == 403
    bad = run_cli(database_url, "keys", "create", "--name", "x", "--role", "root")
    assert bad.returncode != 0 and "root" in bad.stderr


def test_worker_and_beat_log_at_log_level(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from cli.main import main
    from worker.app import celery

    database = f"sqlite:///{tmp_path / 'ready.db'}"
    migrate.upgrade(database)
    seen: list[list[str]] = []
    monkeypatch.setattr(celery, "worker_main", lambda argv: seen.append(argv))
    monkeypatch.setattr(celery, "start", lambda argv: seen.append(argv))
    runner = CliRunner(env={"LOG_LEVEL": "warning", "DATABASE_URL": database})
    for command in ("worker", "beat"):
        assert runner.invoke(main, [command]).exit_code == 0
    assert [argv[argv.index("--loglevel") + 1] for argv in seen] == ["WARNING", "WARNING"]



@pytest.mark.parametrize(("agents", "says"), [
    ("[agents.x\n", "cannot read AGENTS_FILE"),
    ('[agents.gw]\nruntime = "webhook"\nurl = "http://127.0.0.1:99999/spawn"\n',
     "agent profile 'gw': url has a bad port"),
    ('[agents.llm]\nruntime = "ollama"\n', "agent profile 'llm' names unknown runtime 'ollama'"),
    ('[agents.sh]\nruntime = "command"\nargv = "bash -c"\n',
     "agent profile 'sh': argv must be a list of strings"),
])
def test_serving_commands_refuse_a_broken_agents_file(tmp_path, monkeypatch, agents, says):
    """A worker started with a profile that cannot run would fail every step that uses it,
    or, with an unreadable file, every step: it does not start at all, and says why."""
    from click.testing import CliRunner

    from cli.main import main
    from worker.app import celery

    agents_file = tmp_path / "agents.toml"
    agents_file.write_text(agents)
    database = tmp_path / "never.db"
    started: list[object] = []
    monkeypatch.setattr(celery, "worker_main", started.append)
    monkeypatch.setattr(os, "execvp", lambda *argv: started.append(argv))
    runner = CliRunner(env={"AGENTS_FILE": str(agents_file),
                            "DATABASE_URL": f"sqlite:///{database}"})
    for command in ("worker", "api", "up"):
        done = runner.invoke(main, [command])
        assert done.exit_code == 1, (command, done.output)
        assert says in done.output, (command, done.output)
    assert started == [] and not database.exists()


def test_serving_commands_start_with_a_good_agents_file(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cli.main import main
    from worker.app import celery

    agents_file = tmp_path / "agents.toml"
    agents_file.write_text('[agents.sh]\nruntime = "command"\nargv = ["bash", "-c", "{prompt}"]\n'
                           '[agents.gw]\nruntime = "webhook"\nurl = "http://127.0.0.1:8080/s"\n')
    database = f"sqlite:///{tmp_path / 'ready.db'}"
    migrate.upgrade(database)
    started: list[object] = []
    monkeypatch.setattr(celery, "worker_main", started.append)
    monkeypatch.setattr(os, "execvp", lambda *argv: started.append(argv))
    runner = CliRunner(env={"AGENTS_FILE": str(agents_file), "DATABASE_URL": database,
                            "PORT": str(free_port())})
    for command in ("worker", "api"):
        assert runner.invoke(main, [command]).exit_code == 0
    assert len(started) == 2
