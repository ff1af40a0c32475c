"""`orchestrator runs advance` and `runs rerun`, and "waiting for you" in --follow, run
under a pseudo-terminal against the live service."""

from __future__ import annotations

import json
import re
import sys

import pexpect

from tests.conftest import ADMIN_KEY

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def spawn(stack, *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable, ["-m", "cli", "runs", *args],
        env={"ORCHESTRATOR_URL": stack.base_url, "ORCHESTRATOR_API_KEY": ADMIN_KEY,
             "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        encoding="utf-8", timeout=60, dimensions=(40, 160),
    )


def finish(child: pexpect.spawn) -> tuple[int, str]:
    """Wait for the command to end: its exit status and its screen, escapes removed."""
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, ANSI.sub("", child.before.replace("\r\n", "\n"))


def last_block(screen: str) -> list[str]:
    lines = [line for line in screen.split("\n") if line.strip()]
    return lines[max(i for i, line in enumerate(lines) if line.startswith("Run #")):]


def waiting_run(api) -> dict:
    manual = api.template("approve the release", agent="manual", name="Approve")["id"]
    run = api.start(api.pipeline(manual, manual)["id"])
    api.wait_step(run["id"], 0, "running")
    return run


def test_advance_done_failed_guarded_and_json(api, stack):
    run = waiting_run(api)
    status, screen = finish(spawn(stack, "advance", str(run["id"]), "--done", "--step", "1"))
    assert status == 0, screen
    assert f"run #{run['id']}: step 1 completed; run running" in screen
    api.wait_step(run["id"], 1, "running")

    stale = spawn(stack, "advance", str(run["id"]), "--done", "--step", "1")
    status, screen = finish(stale)
    assert status == 3 and "step 0 is not the current step (1) (HTTP 409)" in screen

    status, screen = finish(spawn(stack, "advance", str(run["id"]), "--failed",
                                  "--error", "not today", "--json"))
    assert status == 0, screen
    answered = json.loads(screen)["run"]
    assert answered["status"] == "failed"
    assert answered["steps_snapshot"][1]["error"] == "not today"

    status, screen = finish(spawn(stack, "advance", str(run["id"]), "--done"))
    assert status == 3 and "(HTTP 409)" in screen
    status, screen = finish(spawn(stack, "advance", str(run["id"])))
    assert status == 2 and "--done or --failed" in screen
    status, screen = finish(spawn(stack, "advance", str(run["id"]), "--done", "--error", "x"))
    assert status == 2 and "--error goes with --failed" in screen


def test_follow_shows_a_manual_step_as_waiting_for_you(api, stack):
    manual = api.template("sign off", agent="manual", name="Sign off")["id"]
    echo = api.template("hi", agent="echo", name="Announce")["id"]
    pipeline = api.pipeline(manual, echo, name=f"waiting-{manual}")
    child = spawn(stack, "start", pipeline["name"], "--follow", "--interval", "0.2")
    child.expect("waiting for you: orchestrator runs advance (\\d+) --done")
    run_id = int(child.match.group(1))
    api.ok("POST", "/api/pipelines/run", {"action": "advance", "run_id": run_id,
                                          "success": True, "step_index": 0}, 202)
    status, screen = finish(child)
    assert status == 0, screen
    block = last_block(screen)
    assert re.match(r"\s+✓\s+1 Sign off\s+completed", block[1]), block
    assert re.match(r"\s+✓\s+2 Announce\s+completed", block[2]), block
    assert len(block) == 3, "the hint stayed after the step was answered"


def test_rerun_follow_runs_only_the_steps_from_the_failed_one(api, stack, tmp_path):
    log, fixed = tmp_path / "spawns", tmp_path / "fixed"
    build = api.template(f"echo b >> {log}", name="Build")["id"]
    deploy = api.template(f"echo d >> {log}; test -f {fixed} || exit 5", name="Deploy")["id"]
    run = api.wait(api.start(api.pipeline(build, deploy, build)["id"])["id"])
    assert run["status"] == "failed"

    status, screen = finish(spawn(stack, "rerun", str(run["id"]), "--follow",
                                  "--interval", "0.2"))
    assert status == 1, screen  # still failing: a followed run that fails exits 1
    fixed.touch()
    status, screen = finish(spawn(stack, "rerun", str(run["id"]), "--from", "2", "--follow",
                                  "--interval", "0.2"))
    assert status == 0, screen
    block = last_block(screen)
    assert re.match(r"Run #\d+  .*  completed  step 3/3", block[0]), block
    assert re.match(r"\s+✓\s+1 Build\s+completed", block[1]), block
    assert re.match(r"\s+✓\s+2 Deploy\s+completed", block[2]), block
    assert log.read_text().split() == ["b", "d", "d", "d", "b"]

    status, screen = finish(spawn(stack, "rerun", str(run["id"]), "--from", "9", "--json"))
    assert status == 3 and "the run has 3 steps (HTTP 400)" in screen
    status, screen = finish(spawn(stack, "rerun", str(run["id"]), "--json"))
    assert status == 0, screen
    rerun = json.loads(screen)["run"]
    assert rerun["rerun_of"] == run["id"] and rerun["current_step"] == 1
