"""Rerun from a step (SPEC §9) on the live stack: only the steps from `from_step` spawn,
carried steps keep how they ended and feed later prompts, the source run stays as it was."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.reliability.invariants import check
from tests.support import state_digest

RUN = "/api/pipelines/run"


def spawned(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def failing_pipeline(api, tmp_path: Path) -> tuple[dict, Path, Path]:
    """Five command steps that append their number to a file; step 2 fails until a flag
    file exists. Later prompts use the outputs of earlier steps."""
    log, fixed = tmp_path / "spawns", tmp_path / "fixed"
    prompts = [
        f"echo 0 >> {log}; echo out-0",
        f"echo 1 >> {log}; echo out-1",
        f"echo 2 >> {log}; test -f {fixed} || exit 7; echo 'got {{{{ steps[1].output | trim }}}}'",
        f"echo 3 >> {log}; echo '{{{{ steps[0].output | trim }}}}+{{{{ steps[2].output | trim }}}}'",
        f"echo 4 >> {log}; echo done",
    ]
    templates = [api.template(p, name=f"Step {i}")["id"] for i, p in enumerate(prompts)]
    return api.pipeline(*templates), log, fixed


def rerun(api, run_id: int, **extra) -> dict:
    return api.ok("POST", RUN, {"action": "rerun", "run_id": run_id, **extra}, 201)["run"]


def test_rerun_from_the_failed_step_spawns_only_it_and_the_later_ones(api, tmp_path,
                                                                     database_url):
    pipeline, log, fixed = failing_pipeline(api, tmp_path)
    source = api.wait(api.start(pipeline["id"], inputs={"env": "staging"})["id"])
    assert source["status"] == "failed" and source["rerun_of"] is None
    assert [s["reused"] for s in source["steps_snapshot"]] == [False] * 5
    assert spawned(log) == ["0", "1", "2"]
    fixed.touch()

    new = rerun(api, source["id"])
    assert new["rerun_of"] == source["id"] and new["id"] != source["id"]
    assert new["status"] == "pending" and new["current_step"] == 2
    assert new["inputs"] == {"env": "staging"}
    assert new["triggered_by"] == source["triggered_by"]
    done = api.wait(new["id"])
    assert done["status"] == "completed", done
    assert spawned(log) == ["0", "1", "2", "2", "3", "4"], "a carried step was spawned again"
    steps = done["steps_snapshot"]
    for carried, was in zip(steps[:2], source["steps_snapshot"][:2], strict=True):
        assert carried["reused"] is True
        for key in ("status", "output", "spawn_id", "started_at", "completed_at", "usage",
                    "error", "attempt", "duration_ms"):
            assert carried[key] == was[key], key
    assert [s["reused"] for s in steps[2:]] == [False, False, False]
    assert steps[2]["output"].strip() == "got out-1"
    assert steps[3]["output"].strip() == "out-0+got out-1"
    assert api.run(source["id"]) == source, "the source run changed"
    counted = next(p for p in api.ok("GET", "/api/pipelines")["pipelines"]
                   if p["id"] == pipeline["id"])
    assert counted["runs"] == {"total": 2, "completed": 1, "failed": 1, "running": 0}
    assert counted["use_count"] == 2

    # A rerun of the rerun, from a later step: carried from the rerun, not from the source.
    again = api.wait(rerun(api, done["id"], from_step=3, inputs={"env": "prod"})["id"])
    assert again["status"] == "completed" and again["rerun_of"] == done["id"]
    assert again["inputs"] == {"env": "prod"}
    assert spawned(log) == ["0", "1", "2", "2", "3", "4", "3", "4"]
    assert [s["reused"] for s in again["steps_snapshot"]] == [True, True, True, False, False]
    assert again["steps_snapshot"][2]["spawn_id"] == steps[2]["spawn_id"]
    assert again["steps_snapshot"][3]["output"].strip() == "out-0+got out-1"
    report = check(database_url, [pipeline["id"]])
    assert report.ok, report.summary()


def test_rerun_uses_the_source_snapshot_after_edits_and_deletes(api, tmp_path):
    pipeline, log, fixed = failing_pipeline(api, tmp_path)
    source = api.wait(api.start(pipeline["id"])["id"])
    fixed.touch()
    for step in pipeline["steps"]:
        api.ok("PUT", "/api/workflows", {"id": step["template_id"], "prompt": "echo edited"})
    other = api.template("echo other")["id"]
    api.ok("PUT", "/api/pipelines", {"id": pipeline["id"], "steps": [{"template_id": other}] * 2})
    edited = api.wait(rerun(api, source["id"])["id"])
    assert edited["status"] == "completed" and len(edited["steps_snapshot"]) == 5
    assert spawned(log) == ["0", "1", "2", "2", "3", "4"]

    api.ok("DELETE", "/api/pipelines", {"id": pipeline["id"]})
    for step in pipeline["steps"]:
        api.ok("DELETE", "/api/workflows", {"id": step["template_id"]})
    gone = api.wait(rerun(api, edited["id"], from_step=4)["id"])
    assert gone["status"] == "completed"
    assert gone["pipeline_name"] == pipeline["name"] and gone["pipeline_id"] == pipeline["id"]
    assert spawned(log) == ["0", "1", "2", "2", "3", "4", "4"]
    # Past a carried `stop` failure the `on_success` steps are skipped, as in any run.
    halted = rerun(api, source["id"], from_step=4)
    assert halted["status"] == "failed" and halted["steps_snapshot"][4]["status"] == "skipped"
    assert len(spawned(log)) == 7


@pytest.fixture(scope="module")
def finished(api, tmp_path_factory):
    """A failed 5-step run, a fully completed run, and a run waiting for a person."""
    pipeline, _, _ = failing_pipeline(api, tmp_path_factory.mktemp("bounds"))
    failed = api.wait(api.start(pipeline["id"])["id"])
    echo = api.template("hi", agent="echo")["id"]
    completed = api.wait(api.start(api.pipeline(echo, echo)["id"])["id"])
    manual = api.template("wait for me", agent="manual")["id"]
    waiting = api.start(api.pipeline(manual, manual)["id"])
    api.wait_step(waiting["id"], 0, "running")
    return {"failed": failed, "completed": completed, "waiting": waiting}


BAD_RERUNS = [
    ({"from_step": 5}, 400, "from_step must be from 0 to 4"),
    ({"from_step": 50}, 400, "from_step must be from 0 to 4"),
    ({"from_step": -1}, 400, "from_step"),
    ({"from_step": "2"}, 400, "from_step"),
    ({"from_step": True}, 400, "from_step"),
    ({"from_step": 1.5}, 400, "from_step"),
    ({"inputs": ["x"]}, 400, "inputs"),
    ({"run_id": "abc"}, 400, "run_id"),
    ({"run_id": None}, 400, "run_id"),
    ({"run_id": 999999999}, 404, "run 999999999 not found"),
]


@pytest.mark.parametrize(("extra", "status", "error"), BAD_RERUNS)
def test_a_bad_rerun_is_refused_and_changes_nothing(api, database_url, finished, extra, status,
                                                    error):
    before = state_digest(database_url)
    resp = api.call("POST", RUN, {"action": "rerun", "run_id": finished["failed"]["id"],
                                  **extra})
    assert resp.status_code == status, resp.text
    assert error in resp.json()["error"]
    assert state_digest(database_url) == before


def test_an_active_run_or_a_completed_one_without_from_step_is_a_409(api, database_url,
                                                                      finished):
    before = state_digest(database_url)
    active = api.call("POST", RUN, {"action": "rerun", "run_id": finished["waiting"]["id"]})
    assert active.status_code == 409 and "only a finished run" in active.json()["error"]
    whole = api.call("POST", RUN, {"action": "rerun", "run_id": finished["completed"]["id"]})
    assert whole.status_code == 409 and "name a step" in whole.json()["error"]
    assert [active.json()["code"], whole.json()["code"]] == ["not_finished", "nothing_to_rerun"]
    assert state_digest(database_url) == before
    named = api.wait(rerun(api, finished["completed"]["id"], from_step=1)["id"])
    assert named["status"] == "completed"
    assert [s["reused"] for s in named["steps_snapshot"]] == [True, False]


def test_the_invalid_action_message_names_rerun(api):
    resp = api.call("POST", RUN, {"action": "retry", "run_id": 1})
    assert resp.status_code == 400
    assert resp.json() == {"error": "Invalid action. Use: start, advance, cancel, rerun"}


def test_concurrent_reruns_both_create_runs_and_a_key_makes_one(api, finished):
    source = finished["failed"]["id"]
    barrier = threading.Barrier(4)
    answers: list = []

    def go(key: str | None):
        barrier.wait()
        headers = {"Idempotency-Key": key} if key else {}
        answers.append((key, api.call("POST", RUN, {"action": "rerun", "run_id": source},
                                      headers=headers)))

    threads = [threading.Thread(target=go, args=(key,))
               for key in (None, None, f"rerun-{source}", f"rerun-{source}")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert [r.status_code for _, r in answers] == [201] * 4, [r.text for _, r in answers]
    plain = {r.json()["run"]["id"] for k, r in answers if k is None}
    keyed = {r.json()["run"]["id"] for k, r in answers if k is not None}
    assert len(plain) == 2 and len(keyed) == 1 and not plain & keyed
    assert all(r.json()["run"]["rerun_of"] == source for _, r in answers)
    # The key belongs to this rerun: the same key on another request is a conflict.
    clash = api.call("POST", RUN, {"action": "rerun", "run_id": source, "from_step": 0},
                     headers={"Idempotency-Key": f"rerun-{source}"})
    assert clash.status_code == 409 and "Idempotency-Key" in clash.json()["error"]


def test_a_rerun_is_audited_against_the_new_run(api, finished):
    source = finished["failed"]["id"]
    new = rerun(api, source, from_step=2)
    entries = api.ok("GET", f"/api/audit?target_type=run&target_id={new['id']}")["entries"]
    assert [e["action"] for e in entries] == ["rerun"]
    assert entries[0]["detail"]["run_id"] == source and entries[0]["detail"]["from_step"] == 2


def test_earlier_attempts_and_durations_in_the_run_detail(api, tmp_path):
    marker = tmp_path / "tried"
    flaky = api.template(f"if [ -f {marker} ]; then echo ok; else touch {marker}; "
                         "echo first try >&2; exit 3; fi", retries=1)["id"]
    fails = api.template("exit 9")["id"]
    run = api.wait(api.start(api.pipeline(flaky, fails)["id"])["id"])
    first, second = run["steps_snapshot"]
    assert first["status"] == "completed" and first["attempt"] == 2
    assert [(a["attempt"], a["status"], a["error"]) for a in first["attempts"]] == [
        (1, "failed", "exit status 3: first try")]
    earlier = first["attempts"][0]
    assert isinstance(earlier["duration_ms"], int) and earlier["spawn_id"]
    assert earlier["started_at"] <= earlier["completed_at"] <= first["started_at"]
    assert second["attempts"] == []
    assert isinstance(run["duration_ms"], int) and isinstance(first["duration_ms"], int)
    assert run["duration_ms"] >= first["duration_ms"]
    # A listing has durations but no attempts; a carried step keeps its history.
    listed = api.ok("GET", f"{RUN}?limit=50")["runs"]
    mine = next(r for r in listed if r["id"] == run["id"])
    assert "attempts" not in mine["steps_snapshot"][0]
    assert mine["duration_ms"] == run["duration_ms"]
    again = api.wait(rerun(api, run["id"])["id"])
    assert again["steps_snapshot"][0]["reused"] is True
    assert again["steps_snapshot"][0]["attempts"] == first["attempts"]
