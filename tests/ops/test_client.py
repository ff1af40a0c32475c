"""The command-line client against the live service: list, start --follow, show, cancel."""

from __future__ import annotations

import json
import re
import sys

import pexpect
import pytest
from click.testing import CliRunner

from cli.main import main
from tests.conftest import ADMIN_KEY

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def cli(stack):
    runner = CliRunner()
    env = {"ORCHESTRATOR_URL": stack.base_url, "ORCHESTRATOR_API_KEY": ADMIN_KEY}

    def invoke(*args: str, key: str | None = None):
        return runner.invoke(main, list(args), env={**env, **(
            {"ORCHESTRATOR_API_KEY": key} if key is not None else {})})

    return invoke


def follow_in_a_terminal(stack, pipeline_name: str) -> tuple[int, list[str]]:
    """Run `runs start NAME --follow` under a pseudo-terminal; returns the exit status and
    the last drawn block (header and one line per step), escapes removed."""
    child = pexpect.spawn(
        sys.executable, ["-m", "cli", "runs", "start", pipeline_name, "--follow",
                         "--interval", "0.2"],
        env={"ORCHESTRATOR_URL": stack.base_url, "ORCHESTRATOR_API_KEY": ADMIN_KEY,
             "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        encoding="utf-8", timeout=60, dimensions=(40, 160),
    )
    child.expect(pexpect.EOF)
    child.close()
    screen = ANSI.sub("", child.before.replace("\r\n", "\n"))
    frames = [line for line in screen.split("\n") if line.strip()]
    header_at = max(i for i, line in enumerate(frames) if line.startswith("Run #"))
    return child.exitstatus, frames[header_at:]


def test_follow_shows_each_step_and_exits_0_when_the_run_completes(api, stack):
    steps = [api.template("sleep 0.4; echo a", name="Lint")["id"],
             api.template("echo b", agent="echo", name="Unit tests")["id"]]
    pipeline = api.pipeline(*steps, name=f"follow-ok-{steps[0]}")
    status, block = follow_in_a_terminal(stack, pipeline["name"])
    assert status == 0, block
    assert re.match(rf"Run #\d+  {pipeline['name']}  completed  step 2/2", block[0])
    assert re.match(r"\s+✓\s+1 Lint\s+completed\s+\d+s$", block[1]), block
    assert re.match(r"\s+✓\s+2 Unit tests\s+completed\s+\d+s$", block[2]), block


def test_follow_exits_non_zero_when_the_run_fails(api, stack):
    ok = api.template("echo fine", name="Build")["id"]
    bad = api.template("echo nope >&2; exit 4", name="Deploy")["id"]
    pipeline = api.pipeline(ok, bad, ok, name=f"follow-bad-{bad}")
    status, block = follow_in_a_terminal(stack, str(pipeline["id"]))
    assert status == 1, block
    assert "  failed  " in block[0]
    assert re.match(r"\s+✓\s+1 Build\s+completed", block[1])
    assert re.match(r"\s+✗\s+2 Deploy\s+failed\s+\d+s\s+exit status 4: nope", block[2])
    assert re.match(r"\s+↷\s+3 Build\s+skipped", block[3])


def test_start_with_inputs_json_and_plain_follow(api, cli):
    step = api.template("echo x", agent="echo")["id"]
    pipeline = api.pipeline(step, step)
    result = cli("runs", "start", pipeline["name"], "--input", "env=staging",
                 "-i", "replicas:=3", "--follow", "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["run"]
    assert run["status"] == "completed" and run["inputs"] == {"env": "staging", "replicas": 3}
    shown = cli("runs", "show", str(run["id"]))
    assert shown.exit_code == 0
    assert shown.output.splitlines()[0].startswith(f"Run #{run['id']}  {pipeline['name']}  completed")
    listed = cli("pipelines", "list", "--json")
    mine = next(p for p in json.loads(listed.output)["pipelines"] if p["id"] == pipeline["id"])
    assert mine["runs"]["completed"] == 1
    table = cli("pipelines", "list").output
    assert re.search(rf"^{pipeline['id']}\s+{pipeline['name']}\s+2\s+1 \(1 ok", table, re.M)
    # Not on a terminal, --follow prints each change once, top to bottom.
    plain = cli("runs", "start", str(pipeline["id"]), "--follow")
    assert plain.exit_code == 0
    assert plain.output.count("completed") >= 3  # two steps and the closing header


def test_cancel_and_the_apis_errors(api, cli):
    held = api.template("wait", agent="manual")["id"]
    run = api.start(api.pipeline(held, held)["id"])
    result = cli("runs", "cancel", str(run["id"]), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["run"]["status"] == "cancelled"
    again = cli("runs", "cancel", str(run["id"]))
    assert again.exit_code == 3
    assert "(HTTP 409)" in again.output and "Error: " in again.output
    missing = cli("runs", "show", "999999999")
    assert missing.exit_code == 3
    assert "run 999999999 not found (HTTP 404)" in missing.output
    denied = cli("pipelines", "list", key="not-a-key")
    assert denied.exit_code == 3 and "invalid API key (HTTP 401)" in denied.output
    unknown = cli("runs", "start", "no such pipeline")
    assert unknown.exit_code == 3 and "no pipeline named 'no such pipeline'" in unknown.output
    bad_input = cli("runs", "start", "x", "--input", "novalue")
    assert bad_input.exit_code == 2 and "expected KEY=VALUE" in bad_input.output
    cancelled = cli("runs", "show", str(run["id"]), "--follow", "--json")
    assert cancelled.exit_code == 1


def test_an_unreachable_server_is_an_error_not_a_traceback(cli):
    result = CliRunner().invoke(main, ["runs", "list"],
                                env={"ORCHESTRATOR_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 3
    assert "cannot reach http://127.0.0.1:9" in result.output


def test_show_says_what_the_run_spent(api, cli):
    spend = api.template(
        """echo '{"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.021}' """
        """> "$ORCH_USAGE_FILE" """)["id"]
    quiet = api.template("echo nothing")["id"]
    run = api.wait(api.start(api.pipeline(spend, quiet)["id"])["id"])
    shown = cli("runs", "show", str(run["id"]))
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0].endswith("  1,200 in · 300 out · $0.0210")
