"""The `webhook` runtime against the gateway stand-in, without the stack."""

from __future__ import annotations

import pytest

from orchestrator.profiles import Profile
from orchestrator.runtimes import SpawnError, SpawnRequest, get_runtime
from tests.runtimes.conftest import free_port

CALLBACK = "http://127.0.0.1:3000/api/callbacks/4/1/2/s3cret"


def runtime(gateway, **options):
    opts = {"url": f"{gateway.url}/spawn",
            "cancel_url": f"{gateway.url}/sessions/{{spawn_id}}/cancel", **options}
    return get_runtime(Profile("gw", "webhook", opts))


def request(model: str, callback_url: str | None = CALLBACK) -> SpawnRequest:
    return SpawnRequest(run_id=4, step_index=1, attempt=2, template_id=9,
                        template_name="Review", model=model, prompt="Review PR 12",
                        parameters={"depth": 2}, timeout_seconds=300, callback_url=callback_url)


def test_spawn_posts_the_fixed_body_and_returns_the_gateway_session(gateway, model):
    rt = runtime(gateway, headers={"X-Gateway-Token": "t0k"})
    assert rt.holds_worker is False
    session = rt.spawn(request(model))
    [seen] = gateway.spawns(model)
    assert session.spawn_id == seen.spawn_id and session.outcome is None
    assert seen.headers["x-gateway-token"] == "t0k"
    assert seen.body == {
        "run_id": 4, "step_index": 1, "attempt": 2, "template_id": 9,
        "template_name": "Review", "model": model, "prompt": "Review PR 12",
        "parameters": {"depth": 2}, "callback_url": CALLBACK,
    }


def test_an_integer_spawn_id_is_taken_as_text(gateway, model):
    gateway.on(model, body={"spawn_id": 1234})
    assert runtime(gateway).spawn(request(model)).spawn_id == "1234"


@pytest.mark.parametrize("behaviour, expected", [
    ({"status": 500, "body": {"error": "queue full"}}, "500 from {url}/spawn: queue full"),
    ({"status": 401, "body": b"denied"}, "401 from {url}/spawn: denied"),
    ({"body": b"<html>"}, "malformed reply from {url}/spawn: not JSON ('<html>')"),
    ({"body": {"id": "x"}}, "malformed reply from {url}/spawn: expected {{\"spawn_id\""),
    ({"body": {"spawn_id": ""}}, "malformed reply from {url}/spawn: expected"),
    ({"body": {"spawn_id": "x" * 201}}, "malformed reply from {url}/spawn: expected"),
])
def test_a_spawn_the_gateway_refuses_or_garbles_is_a_spawn_error(gateway, model, behaviour,
                                                                  expected):
    gateway.on(model, **behaviour)
    with pytest.raises(SpawnError) as exc:
        runtime(gateway).spawn(request(model))
    assert str(exc.value).startswith(expected.format(url=gateway.url))


def test_an_unreachable_gateway_is_a_spawn_error():
    port = free_port()
    rt = get_runtime(Profile("gw", "webhook", {"url": f"http://127.0.0.1:{port}/spawn"}))
    with pytest.raises(SpawnError, match=f"cannot connect to http://127.0.0.1:{port}/spawn: "
                                         "connection refused"):
        rt.spawn(request("m"))


def test_no_callback_url_no_spawn(gateway):
    with pytest.raises(SpawnError, match="need a callback URL"):
        runtime(gateway).spawn(request("m", callback_url=None))


def test_cancel_posts_the_cancel_url_with_the_spawn_id_filled_in(gateway):
    runtime(gateway).cancel("sess/1 2")
    [seen] = gateway.cancels("sess%2F1%202")
    assert seen.body == {"spawn_id": "sess/1 2"}


def test_terminate_cancels_the_session(gateway, model):
    rt = runtime(gateway)
    session = rt.spawn(request(model))
    rt.terminate(session)
    assert gateway.cancels(session.spawn_id)


def test_cancel_without_cancel_url_or_with_the_gateway_down_is_quiet(gateway):
    get_runtime(Profile("gw", "webhook", {"url": f"{gateway.url}/spawn"})).cancel("a")
    port = free_port()
    down = get_runtime(Profile("gw", "webhook", {
        "url": f"http://127.0.0.1:{port}/spawn",
        "cancel_url": f"http://127.0.0.1:{port}/cancel/{{spawn_id}}"}))
    down.cancel("b")  # logged, not raised
    assert not [s for s in gateway.cancels_now() if s.body["spawn_id"] in ("a", "b")]


@pytest.mark.parametrize("options, expected", [
    ({}, "url must be a URL"),
    ({"url": "gopher://x"}, "url must be an http"),
    ({"url": "http://x/s", "cancel_url": "x/{spawn_id}"}, "cancel_url must be an http"),
    ({"url": "http://127.0.0.1:99999/spawn"}, "url has a bad port .*out of range"),
    ({"url": "http://x/s", "cancel_url": "http://x:port/{spawn_id}"}, "cancel_url has a bad port"),
])
def test_bad_profiles_are_refused(options, expected):
    with pytest.raises(SpawnError, match=expected):
        get_runtime(Profile("gw", "webhook", options))
