"""Fault injection against real processes: workers killed with SIGKILL (a pool child, and
the whole worker), Redis killed and restarted, PostgreSQL crashed and restarted. After
each, every run is checked against the invariants, run by run.

These start their own stacks with short leases and their own throwaway servers; they
take about a minute together. `pytest -m faults` runs only them, `-m "not faults"` skips.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from tests.conftest import ADMIN_KEY
from tests.reliability import faults
from tests.reliability.invariants import check
from tests.support import Api, pid_alive

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

FAST = {"STEP_LEASE_SECONDS": "3", "REQUEUE_AFTER_SECONDS": "3"}


def pid_of(step: dict) -> int:
    return int(step["spawn_id"].rpartition(":")[2])


def assert_invariants(database_url: str, pipeline_ids: list[int], runs: int) -> None:
    report = check(database_url, pipeline_ids)
    assert report.ok, report.summary()
    assert report.runs == runs


def test_killed_pool_child_and_killed_worker_leave_no_run_stuck(
        fresh_db, redis_url, tmp_path):
    env = faults.fault_env(fresh_db, redis_url, tmp_path, ADMIN_KEY, **FAST)
    with faults.stack(env, tmp_path / "stack") as live:
        api = Api(live.base_url, ADMIN_KEY)
        sleeper = api.template("sleep 60")["id"]
        # succeeds when re-run: the first attempt hangs, the second returns at once
        mark = tmp_path / "first-attempt-ran"
        flaky = api.template(f"if [ -e {mark} ]; then echo second; else touch {mark}; sleep 60; fi",
                             retries=1)["id"]
        after = api.template("echo after")["id"]
        stop_pipe = api.pipeline(sleeper, after)
        retry_pipe = api.pipeline(flaky, after)

        # 1. SIGKILL the pool child running a step: its message is redelivered and the
        # step is resolved at once as lost; its orphaned process is killed.
        run = api.start(stop_pipe["id"])
        step = api.wait(run["id"], lambda r: r["steps_snapshot"][0]["spawn_id"])
        agent_pid = pid_of(step["steps_snapshot"][0])
        child = faults.holder_pid(fresh_db, run["id"], 0)
        assert child in faults.worker_children(live.procs["worker"].pid)
        killed_at = time.monotonic()
        os.kill(child, signal.SIGKILL)
        done = api.wait(run["id"], timeout=20)
        assert time.monotonic() - killed_at < 10
        first = done["steps_snapshot"][0]
        assert done["status"] == "failed", done
        assert first["status"] == "failed" and first["error"].startswith("worker lost")
        assert done["steps_snapshot"][1]["status"] == "skipped"  # on_failure: stop
        faults.wait_until(lambda: not pid_alive(agent_pid), 10, "orphan killed")

        # 2. The same with retries: the lost attempt is re-run and the run completes.
        run = api.start(retry_pipe["id"])
        step = api.wait(run["id"], lambda r: r["steps_snapshot"][0]["spawn_id"])
        os.kill(faults.holder_pid(fresh_db, run["id"], 0), signal.SIGKILL)
        done = api.wait(run["id"], timeout=20)
        assert done["status"] == "completed", done
        assert done["steps_snapshot"][0]["attempt"] == 2
        assert done["steps_snapshot"][0]["output"] == "second\n"

        # 3. SIGKILL the whole worker (main process and pool) with runs in flight.
        quick = api.template("sleep 0.2; echo ok")["id"]
        busy = api.pipeline(quick, quick, quick)
        hung = api.start(stop_pipe["id"])
        hung_step = api.wait(hung["id"], lambda r: r["steps_snapshot"][0]["spawn_id"])
        started = [api.start(busy["id"])["id"] for _ in range(6)]
        time.sleep(0.3)
        live.stop("worker", signal.SIGKILL)
        assert pid_alive(pid_of(hung_step["steps_snapshot"][0]))  # orphaned by the kill
        live.start_worker("worker2")
        done = api.wait(hung["id"], timeout=30)
        assert done["steps_snapshot"][0]["error"].startswith("worker lost")
        faults.wait_until(lambda: not pid_alive(pid_of(hung_step["steps_snapshot"][0])), 10,
                          "orphan of the killed worker killed")
        for rid in started:
            assert api.wait(rid, timeout=45)["status"] in ("completed", "failed")
    assert_invariants(fresh_db, [stop_pipe["id"], retry_pipe["id"], busy["id"]], 9)


def supervise(live) -> bool:
    """Do what the deployment's supervisor does (docker-compose `restart: unless-stopped`):
    start the worker again if it exited. Celery 5.7's Redis transport can exit the worker
    with "Unrecoverable error: AttributeError ... 'hostname'" when the broker connection
    drops while it restores unacknowledged messages; nothing lives in the worker, so a
    fresh one carries on."""
    name = next(n for n in live.procs if n.startswith("worker"))
    if live.procs[name].poll() is not None:
        live.procs.pop(name)
        live.start_worker(f"worker-{time.monotonic_ns()}")
    return False


def test_redis_restart_mid_run_loses_no_run(fresh_db, tmp_path):
    with faults.ThrowawayRedis(tmp_path) as broker:
        env = faults.fault_env(fresh_db, broker.url, tmp_path, ADMIN_KEY, **FAST)
        with faults.stack(env, tmp_path / "stack") as live:
            api = Api(live.base_url, ADMIN_KEY)
            step = api.template("sleep 0.3; echo ok")["id"]
            pipe = api.pipeline(step, step, step)
            before = [api.start(pipe["id"])["id"] for _ in range(8)]
            time.sleep(0.5)
            broker.kill()  # every queued message is lost with it
            # starts while the broker is down are still accepted, and not lost
            during = [api.start(pipe["id"])["id"] for _ in range(3)]
            time.sleep(1)
            broker.start()
            supervise(live)
            for rid in before + during:
                done = api.wait(rid, timeout=60, until=lambda r: supervise(live) or
                                r["status"] in ("completed", "failed", "cancelled"))
                assert done["status"] == "completed", done
    assert_invariants(fresh_db, [pipe["id"]], 11)


def test_postgres_restart_answers_503_and_every_run_finishes(tmp_path, redis_url):
    with faults.ThrowawayPostgres() as pg:
        url = pg.create_database("orch_fault")
        env = faults.fault_env(url, redis_url, tmp_path, ADMIN_KEY, REQUEUE_AFTER_SECONDS="5")
        with faults.stack(env, tmp_path / "stack") as live:
            api = Api(live.base_url, ADMIN_KEY)
            step = api.template("sleep 0.5; echo ok")["id"]
            pipe = api.pipeline(step, step, step)
            started = [api.start(pipe["id"])["id"] for _ in range(6)]
            time.sleep(0.6)
            pg.stop("immediate")
            down_at = time.monotonic()
            for method, path, body in [
                ("GET", "/api/pipelines", None),
                ("GET", f"/api/pipelines/run?id={started[0]}", None),
                ("POST", "/api/pipelines/run", {"action": "start", "pipeline_id": pipe["id"]}),
                ("POST", "/api/workflows", {"name": "x", "prompt": "y"}),
            ]:
                resp = api.call(method, path, body)
                assert resp.status_code == 503, (path, resp.status_code, resp.text)
                assert set(resp.json()) == {"error"} and "Traceback" not in resp.text
            ready = requests.get(live.base_url + "/readyz", timeout=10)
            assert ready.status_code == 503 and "database" in ready.json()["error"]
            time.sleep(max(0.0, 4 - (time.monotonic() - down_at)))
            pg.start()
            for rid in started:
                done = api.wait(rid, timeout=60)
                assert done["status"] == "completed", done
            assert "database unreachable, will retry" in live.log("worker")
            runs = api.ok("GET", f"/api/pipelines/run?pipeline_id={pipe['id']}&limit=50")
            assert len(runs["runs"]) == 6  # the start refused with 503 created nothing
        assert_invariants(url, [pipe["id"]], 6)


def test_duplicate_and_late_messages_change_nothing(fresh_db, redis_url, tmp_path):
    """A step message sent again by hand, while the step runs and after it ended."""
    from celery import Celery

    env = faults.fault_env(fresh_db, redis_url, tmp_path, ADMIN_KEY)
    with faults.stack(env, tmp_path / "stack") as live:
        api = Api(live.base_url, ADMIN_KEY)
        slow = api.template("sleep 1; echo once")["id"]
        pipe = api.pipeline(slow, slow)
        run = api.start(pipe["id"])
        api.wait_step(run["id"], 0, "running")
        sender = Celery(broker=redis_url)
        sender.conf.broker_transport_options = {"global_keyprefix": env["BROKER_PREFIX"]}
        for _ in range(3):
            sender.send_task("orchestrator.run_step", args=[run["id"], 0, 1],
                             queue="orchestrator.steps")
        done = api.wait(run["id"], timeout=20)
        for _ in range(2):
            sender.send_task("orchestrator.run_step", args=[run["id"], 1, 1],
                             queue="orchestrator.steps")
        time.sleep(1)
        assert api.run(run["id"]) == done
        assert done["status"] == "completed"
    assert_invariants(fresh_db, [pipe["id"]], 1)


def test_invariant_checker_catches_what_it_should(fresh_db, settings):
    """The checker must be able to fail: break a finished run's rows and look."""
    import psycopg

    from orchestrator import db, runs
    from orchestrator.config import Settings
    from orchestrator.effects import Recorder
    from orchestrator.executor import Executor
    from orchestrator.profiles import load_profiles
    from tests.factories import make_pipeline

    db.init(Settings(database_url=fresh_db))
    try:
        with db.session() as s:
            pipeline = make_pipeline(s, n=2)
            rid = runs.start_run(s, pipeline.id, "tests").run.id
        executor = Executor(Settings(database_url=fresh_db, chain_steps=0),
                            load_profiles(None), Recorder())
        for index in (0, 1):
            assert executor.run_step(rid, index, 1) == "finished"
    finally:
        db.reset()
        db.init(settings)
    assert check(fresh_db, [pipeline.id]).ok
    breakages = [
        "UPDATE pipelines SET runs_completed = runs_completed + 1",
        "UPDATE run_steps SET status = 'running' WHERE step_index = 1",
        "UPDATE pipeline_runs SET status = 'failed'",
        "INSERT INTO run_events (run_id, pipeline_id, step_index, type, data, created_at) "
        f"VALUES ({rid}, {pipeline.id}, 0, 'step.running', '{{\"attempt\": 1}}', 0)",
        "UPDATE run_steps SET started_at = completed_at + 5 WHERE step_index = 1",
        "UPDATE step_durations SET steps = steps + 1",
        "UPDATE step_durations SET seconds = seconds + 0.5",
        "DELETE FROM step_durations",
    ]
    with psycopg.connect(fresh_db.replace("+psycopg", "")) as conn:
        for sql in breakages:
            conn.execute(sql)
            report = check(fresh_db, [pipeline.id], conn=conn)
            conn.rollback()
            assert not report.ok, sql
        assert check(fresh_db, [pipeline.id], conn=conn).ok
