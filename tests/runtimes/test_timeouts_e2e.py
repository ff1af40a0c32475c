"""A timeout ends every kind of session: the HTTP request is aborted and the gateway is told.
(The `command` runtime's process-group kill is covered in tests/e2e.)"""

from __future__ import annotations

import time

import requests

from tests.runtimes import fakes


def test_timeouts_abort_the_request_and_tell_the_gateway(rt_api, llm, gateway, model):
    # Both wait at once: the webhook step spawns first and holds no worker, then the LLM
    # request holds the stack's only worker slot.
    llm.script(model, fakes.slow(60))
    gateway.on(model)
    thinking = rt_api.template("think", agent="llm", model=model, timeout_seconds=10)
    waiting = rt_api.template("wait", agent="gw", model=model, timeout_seconds=10)
    after = rt_api.template("after", agent="echo")
    started = time.monotonic()
    gw_run = rt_api.start(rt_api.pipeline(waiting["id"], after["id"])["id"])
    [spawn] = gateway.spawns(model)
    llm_run = rt_api.start(rt_api.pipeline(thinking["id"], after["id"])["id"])
    [request] = llm.requests_for(model)

    llm_done = rt_api.wait(llm_run["id"], timeout=30)
    step = llm_done["steps_snapshot"][0]
    assert (llm_done["status"], step["status"], step["error"]) == (
        "failed", "failed", "timed out after 10 s")
    assert llm_done["steps_snapshot"][1]["status"] == "skipped"
    assert request.aborted_at is not None, "the timed-out request was left open"

    gw_done = rt_api.wait(gw_run["id"], timeout=30)
    step = gw_done["steps_snapshot"][0]
    assert (gw_done["status"], step["status"], step["error"], step["spawn_id"]) == (
        "failed", "failed", "timed out after 10 s", spawn.spawn_id)
    [cancel] = gateway.cancels(spawn.spawn_id, timeout=10)
    assert cancel.body == {"spawn_id": spawn.spawn_id}
    assert time.monotonic() - started < 20
    late = requests.post(spawn.body["callback_url"], json={"success": True}, timeout=10)
    assert late.status_code == 409
    assert rt_api.run(gw_run["id"])["steps_snapshot"][0]["status"] == "failed"
