"""The service commands: `db upgrade` and `keys create` against the session's database."""

from __future__ import annotations

import os
import subprocess
import sys


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


def test_worker_and_beat_log_at_log_level(monkeypatch):
    from click.testing import CliRunner

    from cli.main import main
    from worker.app import celery

    seen: list[list[str]] = []
    monkeypatch.setattr(celery, "worker_main", lambda argv: seen.append(argv))
    monkeypatch.setattr(celery, "start", lambda argv: seen.append(argv))
    runner = CliRunner(env={"LOG_LEVEL": "warning"})
    for command in ("worker", "beat"):
        assert runner.invoke(main, [command]).exit_code == 0
    assert [argv[argv.index("--loglevel") + 1] for argv in seen] == ["WARNING", "WARNING"]

