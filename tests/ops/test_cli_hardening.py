"""Hardening at start: `orchestrator flower` binds loopback unless told otherwise and needs
authentication elsewhere; a short bootstrap key is warned about; the API keeps threads
that event streams cannot take."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from cli.main import main
from orchestrator import preflight
from worker.app import celery


@pytest.fixture
def started(monkeypatch) -> list[list[str]]:
    seen: list[list[str]] = []
    monkeypatch.setattr(celery, "start", lambda argv: seen.append(argv))
    monkeypatch.setattr(celery, "worker_main", lambda argv: seen.append(argv))
    monkeypatch.setattr(os, "execvp", lambda _file, argv: seen.append(argv))
    # What these tests check comes before serving; the database, port and broker checks
    # (tests/test_cli_preflight.py) would stop the commands first on this bare folder.
    for check in ("check_schema", "check_port", "check_broker"):
        monkeypatch.setattr(preflight, check, lambda *_a, **_k: None)
    return seen


def flower(env: dict[str, str], *args: str):
    # Flower reads the FLOWER_* variables itself: only what the command passes is shown.
    clean = {name: None for name in os.environ if name.startswith("FLOWER_")}
    return CliRunner(env={**clean, **env}).invoke(main, ["flower", *args])


@pytest.mark.parametrize("env,args,options", [
    ({}, [], ["--address=127.0.0.1"]),
    ({"FLOWER_PORT": "5601"}, [], ["--address=127.0.0.1"]),  # its own variable applies
    ({"FLOWER_ADDRESS": "::1"}, [], ["--address=::1"]),
    ({}, ["--port", "5602"], ["--address=127.0.0.1", "--port=5602"]),
    ({"FLOWER_ADDRESS": "0.0.0.0", "FLOWER_BASIC_AUTH": "ops:pw"}, [], ["--address=0.0.0.0"]),
    ({"FLOWER_AUTH": ".*@example.com"}, ["--address", "10.0.0.5"], ["--address=10.0.0.5"]),
    ({}, ["--address", "0.0.0.0", "--basic-auth=ops:pw"],
     ["--address=0.0.0.0", "--basic-auth=ops:pw"]),
])
def test_flower_binds_loopback_by_default_and_honours_its_variables(started, env, args, options):
    done = flower(env, *args)
    assert done.exit_code == 0, done.output
    assert started == [["flower", *options]]


@pytest.mark.parametrize("env,args", [
    ({"FLOWER_ADDRESS": "0.0.0.0"}, []),
    ({}, ["--address", "0.0.0.0"]),
    ({}, ["--address", ""]),
    ({}, ["--address", "flower.internal"]),
])
def test_flower_refuses_other_addresses_without_authentication(started, env, args):
    done = flower(env, *args)
    assert done.exit_code == 1
    assert "needs authentication" in done.output and "FLOWER_BASIC_AUTH" in done.output
    assert len(done.output.strip().splitlines()) == 1
    assert started == []


@pytest.mark.parametrize("command", ["worker", "api", "up"])
def test_a_short_bootstrap_key_is_warned_about_at_start(started, monkeypatch, tmp_path, command):
    import cli.main

    monkeypatch.setattr(cli.main.migrate, "upgrade", lambda url: None)
    monkeypatch.setattr(cli.main, "_bootstrap_key", lambda settings: None)
    monkeypatch.setattr("werkzeug.serving.make_server", lambda *a, **k: pytest.fail("served"))
    runner = CliRunner(env={"API_KEY": "x" * 22, "DATABASE_URL": f"sqlite:///{tmp_path}/o.db"})
    if command == "up":
        # `up` goes on to serve: stop it right after the warning.
        monkeypatch.setattr(cli.main.db, "init", lambda settings: (_ for _ in ()).throw(
            SystemExit(0)))
    done = runner.invoke(main, [command])
    assert "warning: API_KEY has 22 characters; use at least 32" in done.output, done.output
    long_key = CliRunner(env={"API_KEY": "x" * 32}).invoke(main, ["worker"])
    assert "warning" not in long_key.output


def test_api_refuses_a_stream_cap_that_leaves_no_threads(started):
    done = CliRunner(env={"EVENTS_MAX_STREAMS_PER_PROCESS": "16"}).invoke(main, ["api"])
    assert done.exit_code == 1 and "EVENTS_MAX_STREAMS_PER_PROCESS" in done.output
    assert started == []
    assert CliRunner(env={"EVENTS_MAX_STREAMS_PER_PROCESS": "15"}).invoke(
        main, ["api"]).exit_code == 0
