"""/api/hooks (admin only): create shows the secret once, bad input and private targets
are 400 and change nothing; the outbox gets one delivery per subscribed hook per
transition, in the transition's transaction; the signature is the Standard Webhooks one;
HOOKS_ALLOW_HOSTS and the private-address rule hold where a delivery is resolved."""

from __future__ import annotations

import base64
import uuid

import pytest
from sqlalchemy import select

from orchestrator import hooks, runs
from orchestrator import transitions as t
from orchestrator.config import Settings
from orchestrator.effects import DeliverHooks
from orchestrator.models import Hook, HookDelivery
from tests.conftest import ADMIN_KEY
from tests.factories import make_pipeline
from tests.reliability.conftest import make_app
from tests.support import state_digest

URL = "/api/hooks"


@pytest.fixture(scope="module")
def client(settings):
    return make_app(settings).test_client()


def call(client, method: str, path: str, body=None, status: int | None = None):
    resp = client.open(path, method=method, json=body, headers={"x-api-key": ADMIN_KEY})
    assert status is None or resp.status_code == status, (resp.status_code, resp.get_json())
    return resp.get_json()


def test_create_shows_the_secret_once_and_list_update_delete(client):
    made = call(client, "POST", URL, {"url": "http://127.0.0.1:9/h",
                                      "events": ["run.failed", "step.waiting", "run.failed"],
                                      "description": "pager"}, 201)["hook"]
    assert made["events"] == ["run.failed", "step.waiting"]
    assert made["secret"].startswith("whsec_")
    assert len(base64.b64decode(made["secret"].removeprefix("whsec_"))) == 24
    listed = [h for h in call(client, "GET", URL, status=200)["hooks"] if h["id"] == made["id"]]
    assert listed == [{k: v for k, v in made.items() if k != "secret"}]
    off = call(client, "PUT", URL, {"id": made["id"], "enabled": False, "description": None},
               200)["hook"]
    assert (off["enabled"], off["description"], "secret" in off) == (False, None, False)
    assert call(client, "DELETE", URL, {"id": made["id"]}, 200) == {"success": True}
    assert call(client, "PUT", URL, {"id": made["id"], "enabled": True}, 404)


@pytest.mark.parametrize("body, error", [
    ({"url": "ftp://example.com/x", "events": ["run.failed"]}, "http:// or https://"),
    ({"url": "http://example.com/x", "events": []}, "events"),
    ({"url": "http://example.com/x", "events": ["run.exploded"]}, "events"),
    ({"url": "http://example.com/x"}, "events"),
    ({"url": "http://10.1.2.3/x", "events": ["run.failed"]}, "private"),
    ({"url": "http://localhost:8080/x", "events": ["run.failed"]}, "private"),
    ({"url": "http://[::1]/x", "events": ["run.failed"]}, "private"),
    ({"url": "http://169.254.169.254/latest", "events": ["run.failed"]}, "private"),
    ({"url": "http://[::1/x", "events": ["run.failed"]}, "not a usable URL"),
    ({"url": "http://[zz]/x", "events": ["run.failed"]}, "not a usable URL"),
    ({"url": "http://exa mple.com/x", "events": ["run.failed"]}, "no usable host name"),
    ({"url": f"http://{'a' * 300}.com/x", "events": ["run.failed"]}, "not a usable URL"),
])
def test_bad_hooks_are_refused_and_change_nothing(settings, body, error):
    strict = make_app(settings, hooks_allow_private=False).test_client()
    before = state_digest(settings.database_url)
    answer = call(strict, "POST", URL, body, 400)
    assert error in answer["error"]
    assert state_digest(settings.database_url) == before


def test_the_delivery_log_answers_a_list_and_404s_an_unknown_hook(client):
    assert call(client, "GET", f"{URL}/deliveries?hook_id=999999", status=404)
    assert "deliveries" in call(client, "GET", f"{URL}/deliveries?limit=5", status=200)


def _hook(s, events: list[str], enabled: bool = True) -> Hook:
    hook = hooks.create_hook(s, {"url": "http://127.0.0.1:9/h", "events": events,
                                 "enabled": enabled}, "tests")
    return hook


def _deliveries(s, hook: Hook) -> list[tuple[str, int, int | None]]:
    return [(d.event_type, d.run_id, d.step_index) for d in s.scalars(
        select(HookDelivery).where(HookDelivery.hook_id == hook.id).order_by(HookDelivery.id))]


def test_the_outbox_gets_one_delivery_per_transition_in_its_transaction(session):
    every = _hook(session, [e.value for e in hooks.HookEvent])
    failures = _hook(session, ["run.failed", "step.failed"])
    _hook(session, [e.value for e in hooks.HookEvent], enabled=False)
    pipeline = make_pipeline(session, n=2)
    started = runs.start_run(session, pipeline.id, "tests")
    rid = started.run.id
    assert DeliverHooks() in started.effects
    runs.claim_step(session, rid, 0, 1, "w", 30)
    done = runs.resolve_step(session, rid, t.Resolve(True, 0, 1, allow_pending=False))
    assert DeliverHooks() not in done.effects, "a step that completed is no hook event"
    runs.claim_step(session, rid, 1, 1, "w", 30)
    failed = runs.resolve_step(session, rid, t.Resolve(False, 1, 1, allow_pending=False),
                               runs.StepResult(error="boom"))
    assert failed.run.status == t.FAILED and DeliverHooks() in failed.effects
    assert _deliveries(session, every) == [
        ("run.started", rid, None), ("step.failed", rid, 1), ("run.failed", rid, None)]
    assert _deliveries(session, failures) == [("step.failed", rid, 1), ("run.failed", rid, None)]
    # A refused transition writes nothing.
    again = runs.resolve_step(session, rid, t.Resolve(False, 1, 1, allow_pending=False))
    assert not again.accepted and len(_deliveries(session, every)) == 3


def test_a_waiting_manual_step_and_a_queued_run_are_announced_when_they_happen(session):
    every = _hook(session, [e.value for e in hooks.HookEvent])
    pipeline = make_pipeline(session, n=2)
    pipeline.max_concurrent_runs = 1
    session.flush()
    first = runs.start_run(session, pipeline.id, "tests").run.id
    queued = runs.start_run(session, pipeline.id, "tests").run.id
    assert _deliveries(session, every) == [("run.started", first, None)]
    runs.claim_step(session, first, 0, 1, "w", 30)
    assert runs.record_spawn(session, first, 0, 1, "manual:1", holds_worker=False,
                             waits_for_person=True)
    runs.cancel_run(session, first)
    assert _deliveries(session, every) == [
        ("run.started", first, None), ("step.waiting", first, 0),
        ("run.cancelled", first, None), ("run.started", queued, None)]


def test_the_signature_is_the_standard_webhooks_one():
    # The published example of the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert hooks.signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_deliveries_go_only_where_allowed():
    url = "http://127.0.0.1:9/h"
    assert hooks.refuse_delivery(url, Settings(hooks_allow_private=True)) is None
    assert "private" in hooks.refuse_delivery(url, Settings())
    listed = Settings(hooks_allow_private=True, hooks_allow_hosts=("localhost",))
    assert "HOOKS_ALLOW_HOSTS" in hooks.refuse_delivery(url, listed)
    assert hooks.refuse_delivery("http://localhost:9/h", listed) is None
    assert "HOOKS_ALLOW_HOSTS" in hooks.refuse_delivery(
        f"https://{uuid.uuid4().hex}.example.com/h",
        Settings(hooks_allow_hosts=("127.0.0.1",)))
    assert "cannot resolve" in hooks.refuse_delivery(f"http://{'a' * 300}.com/h", Settings())
