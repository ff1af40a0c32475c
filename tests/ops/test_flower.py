"""Flower, started by `orchestrator flower` on the stack's broker, sees our worker and tasks."""

from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import free_port


@pytest.fixture(scope="module")
def flower(stack):
    port = free_port()
    with stack.serving("flower", port, "/healthcheck", "flower", "--address", "127.0.0.1",
                       "--port", str(port), env={"FLOWER_UNAUTHENTICATED_API": "true"}) as base:
        yield base


def poll(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s")
        time.sleep(0.5)


def test_flower_lists_our_worker_queues_and_tasks(flower, api):
    def workers():
        data = requests.get(flower + "/api/workers", params={"refresh": "1"}, timeout=20).json()
        return {name: info for name, info in data.items() if name.startswith("worker@")}

    found = poll(workers)
    info = next(iter(found.values()))
    assert "orchestrator.run_step" in info["registered"]
    assert {"orchestrator.cancel_session", "orchestrator.sweep"} <= set(info["registered"])
    assert {q["name"] for q in info["active_queues"]} == {"orchestrator.steps",
                                                          "orchestrator.control"}

    # Workers send task events only once Flower has switched them on (it does so every
    # few seconds): runs started before that are not in Flower's list, so keep starting.
    pipeline = api.pipeline(*[api.template("echo seen by flower", agent="echo")["id"]] * 2)

    def our_tasks():
        run = api.wait(api.start(pipeline["id"])["id"])
        assert run["status"] == "completed"
        time.sleep(0.5)
        tasks = requests.get(flower + "/api/tasks", timeout=10).json().values()
        return [t for t in tasks if t.get("name") == "orchestrator.run_step"
                and t.get("args", "").startswith(f"[{run['id']}, ")]

    seen = poll(our_tasks)
    assert {t["state"] for t in seen} == {"SUCCESS"}
    assert all(t["worker"].startswith("worker@") for t in seen)

    # The sweeper runs every second from beat; its first event after Flower switched
    # events on may come a moment after our run's, so wait for it rather than race it.
    def task_types():
        types = requests.get(flower + "/api/task/types", timeout=10).json()["task-types"]
        return {"orchestrator.run_step", "orchestrator.sweep"} <= set(types)

    poll(task_types)
