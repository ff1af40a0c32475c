"""End to end through HTTP: gunicorn API, Celery worker and beat, PostgreSQL and Redis."""

from __future__ import annotations

import time

from tests.support import pid_alive


def test_three_step_pipeline_completes_by_itself(api, tmp_path):
    marker = tmp_path / "trail"
    steps = [api.template(f"echo step{i} >> {marker}; echo out-{i}")["id"] for i in range(3)]
    pipeline = api.pipeline(*steps)
    run = api.start(pipeline["id"])
    assert run["status"] == "pending" and run["triggered_by"] == "admin"
    done = api.wait(run["id"])
    assert done["status"] == "completed" and done["completed_at"] is not None
    for i, step in enumerate(done["steps_snapshot"]):
        assert step["status"] == "completed"
        assert step["output"] == f"out-{i}\n"
        host, _, pid = step["spawn_id"].rpartition(":")
        assert host and pid.isdigit()
        assert step["started_at"] <= step["completed_at"]
    assert marker.read_text().split() == ["step0", "step1", "step2"]
    listed = api.ok("GET", "/api/pipelines")["pipelines"]
    mine = next(p for p in listed if p["id"] == pipeline["id"])
    assert mine["runs"] == {"total": 1, "completed": 1, "failed": 0, "running": 0}
    assert mine["use_count"] == 1 and mine["last_used_at"] is not None


def test_failing_stop_step_skips_the_rest_and_fails_the_run(api):
    ok = api.template("echo fine")["id"]
    bad = api.template("echo about to fail; echo broken >&2; exit 3")["id"]
    run = api.start(api.pipeline(ok, bad, ok)["id"])
    done = api.wait(run["id"])
    assert done["status"] == "failed"
    assert [s["status"] for s in done["steps_snapshot"]] == ["completed", "failed", "skipped"]
    assert done["steps_snapshot"][1]["error"] == "exit status 3: broken"
    assert done["steps_snapshot"][2]["spawn_id"] is None


def test_failing_continue_step_lets_the_run_complete(api):
    ok = api.template("echo fine")["id"]
    bad = api.template("exit 1")["id"]
    run = api.start(api.pipeline(ok, {"template_id": bad, "on_failure": "continue"}, ok)["id"])
    done = api.wait(run["id"])
    assert done["status"] == "completed"
    assert [s["status"] for s in done["steps_snapshot"]] == ["completed", "failed", "completed"]
    assert done["steps_snapshot"][1]["error"] == "exit status 1"


def test_cancel_ends_the_run_and_kills_its_process_within_two_seconds(api):
    sleeper = api.template("sleep 60")["id"]
    run = api.start(api.pipeline(sleeper, sleeper)["id"])
    running = api.wait(run["id"], lambda r: r["steps_snapshot"][0]["spawn_id"] is not None)
    pid = int(running["steps_snapshot"][0]["spawn_id"].rpartition(":")[2])
    assert pid_alive(pid)
    started = time.monotonic()
    resp = api.call("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]})
    assert resp.status_code == 202, resp.text
    assert resp.json()["run"]["status"] == "cancelled"
    while pid_alive(pid) and time.monotonic() - started < 2:
        time.sleep(0.02)
    assert not pid_alive(pid), "the step's process outlived the cancel by 2 s"
    final = api.run(run["id"])
    assert final["status"] == "cancelled"
    assert [(s["status"], s["error"]) for s in final["steps_snapshot"]] == [
        ("skipped", "cancelled"), ("skipped", "cancelled")]
    again = api.call("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]})
    assert again.status_code == 409


def test_timeout_fails_the_step_with_an_error_that_says_so(api):
    slow = api.template("sleep 30", timeout_seconds=10)["id"]
    after = api.template("echo never")["id"]
    started = time.monotonic()
    run = api.start(api.pipeline(slow, after)["id"])
    done = api.wait(run["id"], timeout=25)
    assert done["status"] == "failed"
    step = done["steps_snapshot"][0]
    assert step["status"] == "failed" and step["error"] == "timed out after 10 s"
    assert time.monotonic() - started < 16
    pid = int(step["spawn_id"].rpartition(":")[2])
    assert not pid_alive(pid)


def test_manual_steps_advance_with_and_without_the_guard(api):
    manual = api.template("review the release", agent="manual")["id"]
    run = api.start(api.pipeline(manual, manual, manual)["id"])
    rid = run["id"]
    api.wait_step(rid, 0, "running")
    # the guard names another step: refused, nothing moves
    stale = api.call("POST", "/api/pipelines/run",
                     {"action": "advance", "run_id": rid, "success": True, "step_index": 1})
    assert stale.status_code == 409
    assert api.run(rid)["current_step"] == 0
    ok = api.call("POST", "/api/pipelines/run",
                  {"action": "advance", "run_id": rid, "success": True, "step_index": 0})
    assert ok.status_code == 202, ok.text
    assert ok.json()["run"]["current_step"] == 1
    # a double click: the same guarded advance again is refused
    twice = api.call("POST", "/api/pipelines/run",
                     {"action": "advance", "run_id": rid, "success": True, "step_index": 0})
    assert twice.status_code == 409
    # without the guard: resolves whatever step is current
    api.wait_step(rid, 1, "running")
    unguarded = api.call("POST", "/api/pipelines/run",
                         {"action": "advance", "run_id": rid, "success": True})
    assert unguarded.status_code == 202
    failed = api.call("POST", "/api/pipelines/run", {
        "action": "advance", "run_id": rid, "success": False, "error": "looked wrong"})
    assert failed.status_code == 202
    done = api.run(rid)
    assert done["status"] == "failed"
    assert [s["status"] for s in done["steps_snapshot"]] == ["completed", "completed", "failed"]
    assert done["steps_snapshot"][2]["error"] == "looked wrong"
    late = api.call("POST", "/api/pipelines/run",
                    {"action": "advance", "run_id": rid, "success": True})
    assert late.status_code == 409


def test_echo_pipeline_of_many_steps_runs_through(api):
    echo = api.template("hello", agent="echo")["id"]
    run = api.start(api.pipeline(*[echo] * 20)["id"])
    done = api.wait(run["id"])
    assert done["status"] == "completed"
    assert all(s["output"] == "hello" for s in done["steps_snapshot"])
    assert len({s["spawn_id"] for s in done["steps_snapshot"]}) == 20


def test_runs_list_is_newest_first_and_filters(api):
    echo = api.template("x", agent="echo")["id"]
    pipeline = api.pipeline(echo, echo)
    ids = [api.start(pipeline["id"])["id"] for _ in range(3)]
    for rid in ids:
        api.wait(rid)
    runs = api.ok("GET", f"/api/pipelines/run?pipeline_id={pipeline['id']}&limit=2")["runs"]
    assert [r["id"] for r in runs] == sorted(ids, reverse=True)[:2]
    runs = api.ok("GET", f"/api/pipelines/run?pipeline_id={pipeline['id']}&status=failed")
    assert runs["runs"] == []
    runs = api.ok("GET", f"/api/pipelines/run?pipeline_id={pipeline['id']}")  # default limit 20
    assert len(runs["runs"]) == 3


def test_rerun_from_the_failed_step_on_both_topologies(api, tmp_path):
    marker, fixed = tmp_path / "trail", tmp_path / "fixed"
    ok = api.template(f"echo ok >> {marker}; echo first")["id"]
    flaky = api.template(f"echo try >> {marker}; test -f {fixed} && echo "
                         "'after {{ steps[0].output | trim }}'")["id"]
    source = api.wait(api.start(api.pipeline(ok, flaky)["id"], inputs={"n": 1})["id"])
    assert source["status"] == "failed"
    fixed.touch()
    resp = api.call("POST", "/api/pipelines/run", {"action": "rerun", "run_id": source["id"]})
    assert resp.status_code == 201, resp.text
    done = api.wait(resp.json()["run"]["id"])
    assert done["status"] == "completed" and done["rerun_of"] == source["id"]
    assert done["inputs"] == {"n": 1}
    assert [s["reused"] for s in done["steps_snapshot"]] == [True, False]
    assert done["steps_snapshot"][1]["output"] == "after first\n"
    assert marker.read_text().split() == ["ok", "try", "try"]
