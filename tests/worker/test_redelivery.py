"""A step message delivered twice (redelivery, a duplicate send) spawns one session."""

from __future__ import annotations

import time

import psycopg

from orchestrator.config import Settings
from worker.app import make_celery


def spawn_events(database_url: str, run_id: int) -> list[tuple]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT step_index, data->>'attempt' FROM run_events "
            "WHERE run_id = %s AND type = 'step.spawned' ORDER BY id", (run_id,)
        ).fetchall()


def wait_finished(stack, task_ids: list[str], timeout: float = 30) -> None:
    """Return once the worker has logged the end of every one of these messages."""
    deadline = time.monotonic() + timeout
    while missing := [t for t in task_ids if f"[{t}] succeeded" not in stack.log("worker")]:
        assert time.monotonic() < deadline, f"the worker never finished {missing}"
        time.sleep(0.05)


def test_same_step_message_twice_spawns_once(stack, api, database_url, tmp_path):
    trail = tmp_path / "spawned"
    step = api.template(f"echo $$ >> {trail}; sleep 1", agent="sh")["id"]
    run = api.start(api.pipeline(step, step)["id"])
    celery = make_celery(Settings(broker_url=stack.env["BROKER_URL"],
                                  broker_prefix=stack.env["BROKER_PREFIX"]))
    # duplicates of step 0's message: while it is pending or running, then after it ended
    sent = [celery.send_task("orchestrator.run_step", args=[run["id"], 0, 1]).id
            for _ in range(3)]
    api.wait_step(run["id"], 0, "completed")
    sent += [celery.send_task("orchestrator.run_step", args=[run["id"], 0, 1]).id,
             celery.send_task("orchestrator.run_step", args=[run["id"], 1, 1]).id]
    done = api.wait(run["id"])
    wait_finished(stack, sent)
    assert done["status"] == "completed"
    assert len(trail.read_text().split()) == 2, "a step's session was spawned twice"
    assert spawn_events(database_url, run["id"]) == [(0, "1"), (1, "1")]
    assert api.run(run["id"]) == done
