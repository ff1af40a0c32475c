"""What a `command` session is given of the worker: its environment, and its usage file.
The service's secrets and other profiles' keys are never among them, and a profile that
asks for one is refused at start and at spawn."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest

from orchestrator import db, run_queries
from orchestrator.effects import Recorder
from orchestrator.executor import Executor
from orchestrator.profiles import load_profiles
from orchestrator.runtimes import SpawnError, SpawnRequest, check_profiles, get_runtime
from orchestrator.runtimes.command import BASE_ENV
from tests.factories import make_pipeline, make_run, make_template

ROOT = Path(__file__).resolve().parents[2]
LLM_KEY = "sk-other-profile-key-1234"

AGENTS = """
[agents.llm]
runtime = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "CMD_TEST_LLM_KEY"

[agents.envdump]
runtime = "command"
argv = ["env"]
env = {PROFILE_VAR = "from-profile", PROFILE_NUMBER = 3}
pass_env = ["CMD_TEST_PASSED", "CMD_TEST_NOT_SET"]

[agents.own-key]
runtime = "command"
argv = ["sh", "-c", "printf %s \\"$CMD_TEST_OWN_KEY\\""]
api_key_env = "CMD_TEST_OWN_KEY"
pass_env = ["CMD_TEST_OWN_KEY"]

[agents.usage]
runtime = "command"
argv = ["sh", "-c", "printf %s \\"$ORCH_USAGE_FILE\\"; echo '{}' > \\"$ORCH_USAGE_FILE\\""]
"""


@pytest.fixture
def worker_env(monkeypatch):
    """A worker environment holding every kind of secret there is."""
    for name, value in {
        "API_KEY": "bootstrap-key-in-worker-env", "DATABASE_URL": "postgresql://u:pw@db/x",
        "BROKER_URL": "redis://:pw@redis/0", "FLOWER_BASIC_AUTH": "admin:flower-pw",
        "CMD_TEST_LLM_KEY": LLM_KEY, "CMD_TEST_PASSED": "passed-value",
        "CMD_TEST_UNLISTED": "unlisted-value", "CMD_TEST_OWN_KEY": "own-key-value",
        "LANG": "C.UTF-8", "TZ": "UTC",
    }.items():
        monkeypatch.setenv(name, value)


def profiles(tmp_path: Path, extra: str = ""):
    path = tmp_path / "agents.toml"
    path.write_text(AGENTS + extra)
    return load_profiles(str(path))


def request() -> SpawnRequest:
    return SpawnRequest(run_id=1, step_index=0, attempt=1, template_id=1, template_name="t",
                        model="m", prompt="--version", parameters={}, timeout_seconds=30)


def finished(profile, req: SpawnRequest | None = None):
    runtime = get_runtime(profile)
    session = runtime.spawn(req or request())
    return asyncio.run(asyncio.wait_for(runtime.wait(session), 20))


def test_a_session_gets_the_short_list_its_env_and_pass_env_only(tmp_path, worker_env):
    outcome = finished(profiles(tmp_path)["envdump"])
    assert outcome.success, outcome.error
    env = dict(line.split("=", 1) for line in outcome.output.splitlines())
    expected = {name for name in BASE_ENV if name in os.environ}
    assert set(env) == expected | {"PROFILE_VAR", "PROFILE_NUMBER", "CMD_TEST_PASSED",
                                   "ORCH_USAGE_FILE"}
    assert env["CMD_TEST_PASSED"] == "passed-value" and env["PROFILE_VAR"] == "from-profile"
    assert env["PROFILE_NUMBER"] == "3" and env["LANG"] == "C.UTF-8"
    for secret in ("bootstrap-key-in-worker-env", "pw", LLM_KEY, "unlisted-value"):
        assert secret not in env.values()


def test_a_profile_may_pass_its_own_api_key_env(tmp_path, worker_env):
    assert finished(profiles(tmp_path)["own-key"]).output == "own-key-value"


def test_every_session_has_a_usage_file_of_its_own_removed_when_it_ends(tmp_path, worker_env):
    profile = profiles(tmp_path)["usage"]
    first, second = finished(profile).output, finished(profile).output
    assert first and second and first != second
    assert not os.path.exists(first) and not os.path.exists(second)


@pytest.mark.parametrize("end", ["terminate", "stop"])
def test_an_ended_session_leaves_no_usage_file(tmp_path, worker_env, end):
    where = tmp_path / "where"
    extra = f"""
[agents.slow]
runtime = "command"
argv = ["sh", "-c", "printf %s \\"$ORCH_USAGE_FILE\\" > {where}; sleep 30"]
"""
    runtime = get_runtime(profiles(tmp_path, extra)["slow"])
    session = runtime.spawn(request())
    deadline = time.monotonic() + 10
    while not (where.exists() and where.read_text()):
        assert time.monotonic() < deadline, "the session did not start"
        time.sleep(0.05)
    usage_file = where.read_text()
    assert os.path.exists(usage_file)
    if end == "terminate":  # a session never handed to the waiter
        runtime.terminate(session)
    else:
        asyncio.run(runtime.stop(session))
    assert not os.path.exists(usage_file)


REFUSED = ["API_KEY", "DATABASE_URL", "BROKER_URL", "FLOWER_BASIC_AUTH", "CMD_TEST_LLM_KEY"]


def leaky(name: str) -> str:
    return f"""
[agents.leaky]
runtime = "command"
argv = ["env"]
pass_env = ["HOME", "{name}"]
"""


@pytest.mark.parametrize("name", REFUSED)
def test_pass_env_naming_a_secret_is_refused_at_start(tmp_path, name):
    problems = check_profiles(profiles(tmp_path, leaky(name)))
    assert len(problems) == 1
    assert "'leaky'" in problems[0] and name in problems[0]
    if name == "CMD_TEST_LLM_KEY":
        assert "'llm'" in problems[0]  # whose key it is


@pytest.mark.parametrize("name", REFUSED)
def test_pass_env_naming_a_secret_stops_the_command_at_spawn(tmp_path, settings, worker_env,
                                                             name):
    ex = Executor(settings, profiles(tmp_path, leaky(name)), Recorder(), "test:1")
    with db.session() as s:
        tpl = make_template(s, agent="leaky")
        rid = make_run(s, make_pipeline(s, templates=[tpl])).run.id
    assert ex.run_step(rid, 0, 1) == "spawn-failed"
    with db.session() as s:
        _, steps = run_queries.load_run(s, rid)
    assert "agent profile 'leaky'" in steps[0].error and name in steps[0].error
    assert steps[0].output is None


@pytest.mark.parametrize("options", [
    'env = "PATH=/tmp"',
    "env = {A = [1]}",
    "env = {A = true}",
    'env = {"BAD NAME" = "x"}',
    'pass_env = "HOME"',
    "pass_env = [1]",
    'pass_env = ["A=B"]',
])
def test_env_and_pass_env_of_the_wrong_shape_are_refused_at_start(tmp_path, options):
    extra = f'\n[agents.odd]\nruntime = "command"\nargv = ["env"]\n{options}\n'
    problems = check_profiles(profiles(tmp_path, extra))
    assert len(problems) == 1 and "'odd'" in problems[0], problems
    with pytest.raises(SpawnError):
        get_runtime(profiles(tmp_path, extra)["odd"])


def test_the_example_shell_profile_reads_a_dashed_prompt_as_the_script():
    """With `--`, a prompt such as `--version` is a command, not an option of bash."""
    sh = load_profiles(str(ROOT / "examples" / "agents.toml"))["sh"]
    outcome = finished(sh)
    assert not outcome.success and "GNU bash" not in (outcome.output or "")
    assert "--version" in outcome.error and "not found" in outcome.error


def test_secrets_a_session_prints_are_stored_masked(tmp_path, settings, worker_env):
    key = "Bootstrap-Key-For-Masking-0123456789"
    password = "Db-Password-4567"
    masked_settings = dataclasses.replace(
        settings, api_key=key,
        database_url=settings.database_url.replace("://postgres@", f"://postgres:{password}@"))
    extra = '\n[agents.echo]\nruntime = "echo"\n\n[agents.sh]\nruntime = "command"\n' \
            'argv = ["sh", "-c", "{prompt}"]\n'
    ex = Executor(masked_settings, profiles(tmp_path, extra), Recorder(), "test:1")
    with db.session() as s:
        said = make_template(s, prompt=f"key {key.upper()} and {password.upper()}", agent="echo")
        failed = make_template(s, agent="sh", prompt=(
            f"echo {LLM_KEY.upper()}; echo {password.lower()} >&2; exit 4"))
        rid = make_run(s, make_pipeline(s, templates=[said, failed])).run.id
    ex.run_step(rid, 0, 1)
    assert ex.drain(20)
    with db.session() as s:
        _, steps = run_queries.load_run(s, rid)
    assert steps[0].output == "key *** and ***"
    assert steps[1].status == "failed"
    assert steps[1].output.strip() == "***" and steps[1].error == "exit status 4: ***"
