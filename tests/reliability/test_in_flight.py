"""Sessions in flight without task slots (SPEC §13): a worker with two pool processes
carries hundreds of `command` sessions at once, and cancel, timeouts and a killed worker
still reach every one of them. Real processes: gunicorn, a prefork Celery worker with
`--concurrency 2`, beat, PostgreSQL and Redis.

Nothing here is timed against a target (that is `python -m bench`'s in-flight section);
what is checked is that the sessions overlapped, which two slots holding a session each
could never do.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ADMIN_KEY
from tests.reliability import faults
from tests.reliability.invariants import check
from tests.support import Api, pid_alive

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

SESSIONS = 200


def start_all(api: Api, pipeline_id: int, n: int) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: api.start(pipeline_id)["id"], range(n)))


def wait_all(api: Api, run_ids: list[int], until, timeout: float) -> list[dict]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda rid: api.wait(rid, until, timeout=timeout), run_ids))


def agent_pid(run: dict) -> int:
    return int(run["steps_snapshot"][0]["spawn_id"].rpartition(":")[2])


def spawned(run: dict) -> bool:
    return bool(run["steps_snapshot"][0]["spawn_id"])


def test_two_slots_carry_every_session_at_once_and_cancel_and_timeouts_reach_each(
        fresh_db, redis_url, tmp_path):
    env = faults.fault_env(fresh_db, redis_url, tmp_path, ADMIN_KEY, STEP_POLL_SECONDS="0.25")
    with faults.stack(env, tmp_path / "stack", concurrency=2) as live:
        api = Api(live.base_url, ADMIN_KEY)
        after = api.template("echo after")["id"]  # a pipeline has two steps at least
        gate = tmp_path / "all-spawned"
        sleeper = api.pipeline(api.template(
            f"while [ ! -e {gate} ]; do sleep 0.1; done; sleep 5; echo done")["id"], after)
        runs = start_all(api, sleeper["id"], SESSIONS)
        # Every session is running, none can end before the gate opens: two slots that
        # each held a session would never get past two.
        wait_all(api, runs, spawned, 120)
        gate.touch()
        done = wait_all(api, runs, lambda r: r["status"] in ("completed", "failed"), 120)
        assert [r["status"] for r in done] == ["completed"] * SESSIONS, \
            [r["steps_snapshot"][0]["error"] for r in done if r["status"] != "completed"]
        assert all(r["steps_snapshot"][0]["output"] == "done\n" for r in done)
        steps = [r["steps_snapshot"][0] for r in done]
        assert max(s["started_at"] for s in steps) < min(s["completed_at"] for s in steps)
        assert len({s["spawn_id"] for s in steps}) == SESSIONS

        # Cancel reaches each of a hundred sessions in flight.
        hung = api.pipeline(api.template("sleep 120")["id"], after)
        to_cancel = start_all(api, hung["id"], 100)
        running = wait_all(api, to_cancel, spawned, 60)
        cancelled_at = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda rid: api.ok("POST", "/api/pipelines/run",
                                             {"action": "cancel", "run_id": rid}, 202), to_cancel))
        answered = time.monotonic() - cancelled_at
        faults.wait_until(lambda: not any(pid_alive(agent_pid(r)) for r in running), 20,
                          "every cancelled session ended", every=0.02)
        print(f"\n100 cancels answered in {answered:.2f} s; the last session ended "
              f"{time.monotonic() - cancelled_at:.2f} s after the first cancel")
        assert {api.run(rid)["status"] for rid in to_cancel} == {"cancelled"}

        # And the step's timeout reaches each of a hundred, keeping what they printed.
        slow = api.pipeline(api.template("echo begun; sleep 120", timeout_seconds=10)["id"], after)
        to_time_out = start_all(api, slow["id"], 100)
        running = wait_all(api, to_time_out, spawned, 60)
        ended = wait_all(api, to_time_out, lambda r: r["status"] == "failed", 60)
        assert {r["steps_snapshot"][0]["error"] for r in ended} == {"timed out after 10 s"}
        assert {r["steps_snapshot"][0]["output"] for r in ended} == {"begun\n"}
        faults.wait_until(lambda: not any(pid_alive(agent_pid(r)) for r in running), 10,
                          "every timed-out session ended")
    report = check(fresh_db, [sleeper["id"], hung["id"], slow["id"]])
    assert report.ok, report.summary()
    assert report.runs == SESSIONS + 200


def test_a_killed_pool_process_with_sessions_in_flight_ends_every_run(
        fresh_db, redis_url, tmp_path):
    env = faults.fault_env(fresh_db, redis_url, tmp_path, ADMIN_KEY,
                           STEP_LEASE_SECONDS="3", REQUEUE_AFTER_SECONDS="3")
    with faults.stack(env, tmp_path / "stack", concurrency=2) as live:
        api = Api(live.base_url, ADMIN_KEY)
        after = api.template("echo after")["id"]
        hung = api.pipeline(api.template("sleep 120")["id"], after)
        run_ids = start_all(api, hung["id"], 100)
        running = wait_all(api, run_ids, spawned, 60)
        holder = {r["id"]: faults.holder_pid(fresh_db, r["id"]) for r in running}
        children = faults.worker_children(live.procs["worker"].pid)
        assert set(holder.values()) <= set(children), (set(holder.values()), children)
        victim = max(children, key=list(holder.values()).count)
        lost = [r for r in running if holder[r["id"]] == victim]
        assert lost
        os.kill(victim, signal.SIGKILL)
        ended = wait_all(api, [r["id"] for r in lost], lambda r: r["status"] == "failed", 60)
        assert all(r["steps_snapshot"][0]["error"].startswith("worker lost") for r in ended)
        assert all(r["steps_snapshot"][1]["status"] == "skipped" for r in ended)
        # The killed process's sessions, orphaned by it, are ended by the sweeper.
        faults.wait_until(lambda: not any(pid_alive(agent_pid(r)) for r in lost), 20,
                          "the killed process's sessions ended")
        # The other pool process's sessions never noticed: cancel them to finish.
        kept = [r for r in running if r not in lost]
        assert all(pid_alive(agent_pid(r)) for r in kept)
        for r in kept:
            api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": r["id"]}, 202)
        wait_all(api, [r["id"] for r in kept], lambda r: r["status"] == "cancelled", 60)
    report = check(fresh_db, [hung["id"]])
    assert report.ok, report.summary()
    assert report.runs == 100


def test_a_warm_shutdown_waits_for_the_sessions_in_flight(fresh_db, redis_url, tmp_path):
    env = faults.fault_env(fresh_db, redis_url, tmp_path, ADMIN_KEY)
    with faults.stack(env, tmp_path / "stack", concurrency=2) as live:
        api = Api(live.base_url, ADMIN_KEY)
        pipeline = api.pipeline(api.template("sleep 3; echo done")["id"],
                                api.template("echo after")["id"])
        run_ids = start_all(api, pipeline["id"], 20)
        wait_all(api, run_ids, spawned, 30)
        worker = live.procs.pop("worker")
        os.kill(worker.pid, signal.SIGTERM)  # what a supervisor sends the main process
        worker.wait(timeout=30)
        # Their sessions ended and were recorded before the pool processes exited: the
        # runs wait only for a worker to take their second step.
        with faults.psycopg_conn(fresh_db) as conn:
            steps = conn.execute("SELECT status, output FROM run_steps WHERE step_index = 0 "
                                 "AND run_id = ANY(%s)", (run_ids,)).fetchall()
        assert steps == [("completed", "done\n")] * len(run_ids)
        live.start_worker("worker2")
        done = wait_all(api, run_ids, lambda r: r["status"] == "completed", 60)
        assert all(r["steps_snapshot"][1]["output"] == "after\n" for r in done)
    report = check(fresh_db, [pipeline["id"]])
    assert report.ok, report.summary()
