"""Outgoing webhooks on live stacks, to a receiver on loopback that verifies every
signature: each transition's event arrives once (duplicates would share a webhook-id); a
receiver that fails three times gets the event on the fourth attempt with the same id and
body; and a worker SIGKILLed in the middle of a delivery still has it delivered."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections import Counter

import pytest
import requests

from tests.conftest import ADMIN_KEY
from tests.reliability import faults
from tests.support import Api, HookReceiver, verify_signature

ALL = ["run.started", "run.completed", "run.failed", "run.cancelled", "step.failed",
       "step.waiting"]


@pytest.fixture
def receiver():
    made: list[HookReceiver] = []

    def make(**kw) -> HookReceiver:
        made.append(HookReceiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def subscribe():
    """subscribe(api, url, events) -> the hook; deleted after the test, so that the
    session's stack does not go on delivering to a receiver that is gone."""
    made: list[tuple[Api, int]] = []

    def make(api: Api, url: str, events: list[str]) -> dict:
        hook = api.ok("POST", "/api/hooks", {"url": url, "events": events}, 201)["hook"]
        made.append((api, hook["id"]))
        return hook

    yield make
    for api, hook_id in made:
        with contextlib.suppress(requests.RequestException):  # a stack of its own is gone
            api.call("DELETE", "/api/hooks", {"id": hook_id})


def deliveries(api: Api, hook_id: int) -> list[dict]:
    return api.ok("GET", f"/api/hooks/deliveries?hook_id={hook_id}")["deliveries"]


def events_of(secret: str, got: list[dict], run_ids: set[int]) -> list[tuple]:
    """(type, run id, step index, webhook-id) of each verified delivery for these runs."""
    out = []
    for delivery in got:
        body = verify_signature(secret, delivery)
        run = body["data"]["run"]
        if run["id"] in run_ids:
            step = body["data"].get("step")
            out.append((body["type"], run["id"], step and step["step_index"],
                        delivery["headers"]["webhook-id"]))
    return out


def test_each_transition_is_delivered_once_and_signed(api, receiver, subscribe):
    rx = receiver()
    hook = subscribe(api, rx.url, ALL)
    ok, boom = api.template("echo ok")["id"], api.template("exit 3")["id"]
    person = api.template("approve", agent="manual")["id"]
    completed = api.start(api.pipeline(ok, ok)["id"])["id"]
    failed = api.start(api.pipeline(ok, boom)["id"])["id"]
    waiting = api.start(api.pipeline(person, ok)["id"])["id"]
    api.wait(completed)
    api.wait(failed)
    api.wait_step(waiting, 0, "running")
    expected = {("run.started", completed, None), ("run.completed", completed, None),
                ("run.started", failed, None), ("step.failed", failed, 1),
                ("run.failed", failed, None), ("run.started", waiting, None),
                ("step.waiting", waiting, 0)}
    ids = {completed, failed, waiting}
    got = rx.wait_for(lambda got: {e[:3] for e in events_of(hook["secret"], got, ids)}
                      >= expected)
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": waiting}, 202)
    expected.add(("run.cancelled", waiting, None))
    got = rx.wait_for(lambda got: {e[:3] for e in events_of(hook["secret"], got, ids)}
                      >= expected)
    time.sleep(1.5)  # long enough for any duplicate a retry or a second sender would send
    seen = events_of(hook["secret"], rx.received, ids)
    assert {e[:3] for e in seen} == expected
    ids_per_event = {e[:3]: {x[3] for x in seen if x[:3] == e[:3]} for e in seen}
    assert all(len(v) == 1 for v in ids_per_event.values()), ids_per_event
    print(f"\n{len(seen)} deliveries for {len(expected)} transitions, "
          f"{len({e[3] for e in seen})} webhook ids")
    (waiting_id,) = ids_per_event[("step.waiting", waiting, 0)]
    body = verify_signature(hook["secret"], next(
        d for d in got if d["headers"]["webhook-id"] == waiting_id))
    assert body["data"]["step"]["waiting_for_person"] is True
    assert body["data"]["run"]["steps_snapshot"][0]["status"] == "running"
    assert isinstance(body["timestamp"], int)


def test_a_receiver_that_fails_three_times_gets_it_on_the_fourth_with_the_same_id(
        api, receiver, subscribe):
    rx = receiver(answers=[500, 503, 502])
    hook = subscribe(api, rx.url, ["run.completed"])
    ok = api.template("echo ok")["id"]
    run = api.start(api.pipeline(ok, ok)["id"])["id"]
    api.wait(run)
    # The hook hears every run on the shared stack: count this run's deliveries only.
    def ours(got):
        return [d for d in got if json.loads(d["body"])["data"]["run"]["id"] == run]

    got = ours(rx.wait_for(lambda got: len(ours(got)) >= 4, timeout=30))
    time.sleep(1)
    assert len(ours(rx.received)) == 4, "delivered once it answered 2xx, then never again"
    assert len({d["headers"]["webhook-id"] for d in got}) == 1
    assert len({d["body"] for d in got}) == 1
    for d in got:
        assert verify_signature(hook["secret"], d)["data"]["run"]["id"] == run
    gaps = [round(b["at"] - a["at"], 2) for a, b in zip(got, got[1:], strict=False)]
    log = [d for d in deliveries(api, hook["id"]) if d["run_id"] == run]
    assert [(d["status"], d["attempts"], d["last_status_code"], d["webhook_id"])
            for d in log] == [("delivered", 4, 200, got[0]["headers"]["webhook-id"])]
    print(f"\n4 attempts, gaps between them {gaps} s (backoff 0.3 s doubling, 0.5 s tick)")


@pytest.mark.faults
@pytest.mark.timeout(90)
def test_a_worker_killed_mid_delivery_still_delivers(fresh_db, redis_url, tmp_path, receiver,
                                                    subscribe):
    env = faults.fault_env(fresh_db, redis_url, tmp_path, ADMIN_KEY, HOOK_TIMEOUT_SECONDS="2",
                           HOOK_TICK_SECONDS="0.5", HOOK_RETRY_BASE_SECONDS="0.3")
    rx = receiver(hold=30)  # the first POST hangs: its sender is killed while it waits
    with faults.stack(env, tmp_path / "stack") as live:
        api = Api(live.base_url, ADMIN_KEY)
        hook = subscribe(api, rx.url, ["run.completed"])
        ok = api.template("echo ok")["id"]
        run = api.start(api.pipeline(ok, ok)["id"])["id"]
        api.wait(run)
        first = rx.wait_for(lambda got: len(got) >= 1)[0]
        live.stop("worker", signal.SIGKILL)
        killed = time.monotonic()
        assert deliveries(api, hook["id"])[0]["status"] == "pending"
        live.start_worker()
        got = rx.wait_for(lambda got: len(got) >= 2, timeout=40)
        resent_after = time.monotonic() - killed
        faults.wait_until(lambda: deliveries(api, hook["id"])[0]["status"] == "delivered",
                          10, "delivered")
    assert {d["headers"]["webhook-id"] for d in got} == {first["headers"]["webhook-id"]}
    assert Counter(d["body"] for d in got) == Counter({first["body"]: len(got)})
    assert verify_signature(hook["secret"], got[-1])["data"]["run"]["status"] == "completed"
    print(f"\nresent {resent_after:.1f} s after the kill (lease 2 x 2 s + 5 s)")


def test_a_delivery_that_cannot_be_rendered_fails_alone_and_hanging_receivers_cost_one_timeout(
        fresh_db, settings, receiver):
    from orchestrator import db, hook_delivery, hooks
    from orchestrator.config import Settings
    from orchestrator.models import HookDelivery

    fast, hung = receiver(), receiver(hang=30)  # every POST to `hung` outlasts the timeout
    own = Settings(database_url=fresh_db, hooks_allow_private=True, hook_timeout_seconds=1)
    db.init(own)
    try:
        with db.session() as s:
            good = hooks.create_hook(s, {"url": fast.url, "events": ["run.failed"]}, "t")
            slow = hooks.create_hook(s, {"url": hung.url, "events": ["run.failed"]}, "t")
            conn = s.connection()
            for run_id in range(1, 7):
                hooks.outbox(conn, "run.failed", run_id, None, time.time())

        def render(_s, run_id, _step):
            if run_id == 3:
                raise LookupError("run 3 is gone")
            return {"run": {"id": run_id}}

        started = time.monotonic()
        sent = hook_delivery.deliver_due(own, render)
        took = time.monotonic() - started
        with db.session() as s:
            rows = {(d.hook_id, d.run_id): (d.status, d.last_error) for d in s.query(HookDelivery)}
    finally:
        db.reset()
        db.init(settings)
    assert sent == 10  # 12 rows, the 2 of run 3 not sent
    assert rows[(good.id, 3)] == ("failed", "cannot render: run 3 is gone")
    assert {rows[(good.id, r)][0] for r in (1, 2, 4, 5, 6)} == {"delivered"}
    assert {rows[(slow.id, r)][0] for r in (1, 2, 4, 5, 6)} == {"pending"}
    assert took < 5, f"five hanging POSTs took {took:.1f} s: they ran one after another"
    print(f"\n10 sent (5 to a receiver that hangs, 1 s timeout) in {took:.1f} s")
