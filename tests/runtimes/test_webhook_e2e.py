"""`webhook` steps through the live stack and the gateway stand-in: the spawn, the
callback and its secret, cancel, and steps that wait without holding a worker."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.runtimes.helpers import all_rows_text, callback_hash
from tests.support import state_digest


def running_with_spawn_id(rt_api, run_id: int, index: int = 0) -> dict:
    return rt_api.wait(run_id, lambda r: r["steps_snapshot"][index]["status"] == "running"
                       and r["steps_snapshot"][index]["spawn_id"] is not None)


def test_a_webhook_step_waits_for_its_gateway_and_takes_the_callback(
        rt_api, rt_stack, rt_database_url, gateway, model):
    usage = {"input_tokens": 900, "output_tokens": 120}
    gateway.on(model, callback={"success": True, "output": "Reviewed: 2 issues", "usage": usage},
               delay=0.5)
    review = rt_api.template("Review PR {{ inputs.pr }}", agent="gw", model=model,
                             parameters={"depth": "full"}, name="Review")
    post = rt_api.template("Posting: {{ steps['Review'].output }}", agent="echo")
    run = rt_api.start(rt_api.pipeline(review["id"], post["id"])["id"], inputs={"pr": 12})
    [seen] = gateway.spawns(model)
    body = dict(seen.body)
    callback_url = body.pop("callback_url")
    assert body == {
        "run_id": run["id"], "step_index": 0, "attempt": 1, "template_id": review["id"],
        "template_name": "Review", "model": model, "prompt": "Review PR 12",
        "parameters": {"depth": "full"},
    }
    prefix = f"{rt_stack.base_url}/api/callbacks/{run['id']}/0/1?secret="
    assert callback_url.startswith(prefix)
    secret = callback_url[len(prefix):]
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", secret)
    done = rt_api.wait(run["id"])
    assert done["status"] == "completed", done
    step = done["steps_snapshot"][0]
    assert (step["spawn_id"], step["output"], step["usage"]) == (
        seen.spawn_id, "Reviewed: 2 issues", {**usage, "cost_usd": None})  # no price known
    assert done["steps_snapshot"][1]["output"] == "Posting: Reviewed: 2 issues"
    [reply] = [r for r in gateway.callback_replies if r.url == callback_url]
    assert reply.status_code == 200
    assert reply.json()["run_status"] in ("running", "completed")
    assert reply.json()["step"]["status"] == "completed"
    # Only a hash of the secret is stored.
    assert re.fullmatch(r"[0-9a-f]{64}", callback_hash(rt_database_url, run["id"], 0))
    assert secret not in all_rows_text(rt_database_url)
    assert secret not in rt_stack.log("api") and secret not in rt_stack.log("worker")
    assert f"/api/callbacks/{run['id']}/0/1" in rt_stack.log("api")  # the call is logged
    assert all(c.body["spawn_id"] != seen.spawn_id for c in gateway.cancels_now())


def test_a_failure_callback_fails_the_step_and_on_failure_applies(rt_api, gateway, model):
    gateway.on(model, callback={"success": False, "error": "agent crashed: OOM"}, delay=0.2)
    quiet = f"{model}-quiet"
    gateway.on(quiet, callback={"success": False}, delay=0.2)
    tpl = rt_api.template("work", agent="gw", model=model)
    tpl_quiet = rt_api.template("work", agent="gw", model=quiet)
    after = rt_api.template("after", agent="echo")
    stop = rt_api.start(rt_api.pipeline(tpl["id"], after["id"])["id"])
    go_on = rt_api.start(rt_api.pipeline(
        {"template_id": tpl_quiet["id"], "on_failure": "continue"}, after["id"])["id"])
    stopped = rt_api.wait(stop["id"])
    assert stopped["status"] == "failed"
    assert [(s["status"], s["error"]) for s in stopped["steps_snapshot"]] == [
        ("failed", "agent crashed: OOM"), ("skipped", None)]
    went_on = rt_api.wait(go_on["id"])
    assert went_on["status"] == "completed"
    assert [(s["status"], s["error"]) for s in went_on["steps_snapshot"]] == [
        ("failed", "the agent gateway reported failure"), ("completed", None)]


def test_callbacks_need_only_their_secret_and_a_refused_one_changes_nothing(
        rt_api, rt_database_url, gateway, model):
    gateway.on(model)  # answers the spawn, never calls back by itself
    tpl = rt_api.template("work", agent="gw", model=model)
    after = rt_api.template("after", agent="echo")
    run = rt_api.start(rt_api.pipeline(tpl["id"], after["id"])["id"])
    url = gateway.spawns(model)[0].body["callback_url"]
    running_with_spawn_id(rt_api, run["id"])
    base, secret = url.split("?secret=")
    rid = run["id"]
    api_root = base.split("/api/callbacks/")[0] + "/api/callbacks"
    before = state_digest(rt_database_url)
    refused = {
        "wrong secret": (f"{base}?secret={secret[:-2]}xx", {"success": True}),
        "other attempt": (f"{api_root}/{rid}/0/2?secret={secret}", {"success": True}),
        "other step": (f"{api_root}/{rid}/1/1?secret={secret}", {"success": True}),
        "other run": (f"{api_root}/{rid + 1000}/0/1?secret={secret}", {"success": True}),
        "no secret": (base, {"success": True}),
        "empty secret": (f"{base}?secret=", {"success": True}),
        "secret in the path": (f"{base}/{secret}", {"success": True}),
    }
    for what, (target, body) in refused.items():
        resp = requests.post(target, json=body, timeout=10)
        assert resp.status_code == 404, (what, resp.status_code, resp.text)
        assert "error" in resp.json()
    for body in ({"success": "yes"}, {"output": "x"}, {"success": True, "output": 3}):
        resp = requests.post(url, json=body, timeout=10)
        assert resp.status_code == 400, (body, resp.text)
    assert requests.post(url, data="not json", timeout=10).status_code == 400
    assert state_digest(rt_database_url) == before, "a refused callback changed stored state"
    # The right secret, with no API key at all, sent eight times at once with two
    # different stories: exactly one is taken.
    bodies = [{"success": True, "output": f"fine {i}"} if i % 2 else
              {"success": False, "error": f"bad {i}"} for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda b: requests.post(url, json=b, timeout=10), bodies))
    winners = [(b, r) for b, r in zip(bodies, replies, strict=True) if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in replies]
    assert sorted(r.status_code for r in replies) == [200] + [409] * 7
    body, _ = winners[0]
    done = rt_api.wait(rid)
    step = done["steps_snapshot"][0]
    if body["success"]:
        assert (done["status"], step["status"], step["output"]) == (
            "completed", "completed", body["output"])
    else:
        assert (done["status"], step["status"], step["error"]) == (
            "failed", "failed", body["error"])
    # A replay after the fact: 409 with the step as it is, and nothing changes.
    settled = state_digest(rt_database_url)
    for body in bodies[:2]:
        again = requests.post(url, json=body, timeout=10)
        assert again.status_code == 409, again.text
        assert again.json()["step"]["status"] == step["status"]
        assert "error" in again.json() and again.json()["code"] == "already_finished"
    assert state_digest(rt_database_url) == settled


def test_cancel_tells_the_gateway_and_a_late_callback_is_refused(rt_api, gateway, model):
    gateway.on(model)
    tpl = rt_api.template("long job", agent="gw", model=model)
    run = rt_api.start(rt_api.pipeline(tpl["id"], tpl["id"])["id"])
    seen = gateway.spawns(model)[0]
    running_with_spawn_id(rt_api, run["id"])
    resp = rt_api.call("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]})
    assert resp.status_code == 202, resp.text
    [cancel] = gateway.cancels(seen.spawn_id, timeout=10)
    assert cancel.body == {"spawn_id": seen.spawn_id}
    late = requests.post(seen.body["callback_url"], json={"success": True}, timeout=10)
    assert late.status_code == 409
    assert late.json()["step"]["status"] == "skipped"
    final = rt_api.run(run["id"])
    assert final["status"] == "cancelled"
    assert final["steps_snapshot"][0]["error"] == "cancelled"


def test_a_gateway_that_refuses_the_spawn_fails_the_step(rt_api, gateway, model):
    gateway.on(model, status=503, body={"error": "no capacity"})
    tpl = rt_api.template("work", agent="gw", model=model)
    run = rt_api.start(rt_api.pipeline(tpl["id"], tpl["id"])["id"])
    done = rt_api.wait(run["id"])
    assert done["status"] == "failed"
    assert done["steps_snapshot"][0]["error"] == f"503 from {gateway.url}/spawn: no capacity"
    assert done["steps_snapshot"][0]["spawn_id"] is None


def test_waiting_webhook_steps_hold_no_worker(rt_api, rt_stack, gateway, model):
    """The stack's only worker has one slot: twenty gateway sessions wait at once, and a
    command pipeline still runs to its end meanwhile."""
    assert rt_stack.concurrency == 1
    gateway.on(model)
    tpl = rt_api.template("long job", agent="gw", model=model)
    after = rt_api.template("after", agent="echo")
    pipeline = rt_api.pipeline(tpl["id"], after["id"])
    run_ids = [rt_api.start(pipeline["id"])["id"] for _ in range(20)]
    spawns = gateway.spawns(model, 20, timeout=60)
    for rid in run_ids:
        running_with_spawn_id(rt_api, rid)
    one = rt_api.template("echo one")
    two = rt_api.template("echo two")
    cmd = rt_api.start(rt_api.pipeline(one["id"], two["id"])["id"])
    done = rt_api.wait(cmd["id"])
    assert done["status"] == "completed"
    assert [s["output"] for s in done["steps_snapshot"]] == ["one\n", "two\n"]
    assert all(rt_api.run(rid)["steps_snapshot"][0]["status"] == "running" for rid in run_ids)
    for seen in spawns:
        resp = requests.post(seen.body["callback_url"],
                             json={"success": True, "output": seen.spawn_id}, timeout=10)
        assert resp.status_code == 200, resp.text
    by_spawn = {}
    for rid in run_ids:
        final = rt_api.wait(rid)
        assert final["status"] == "completed"
        by_spawn[final["steps_snapshot"][0]["spawn_id"]] = final["steps_snapshot"][0]["output"]
    assert by_spawn == {s.spawn_id: s.spawn_id for s in spawns}
