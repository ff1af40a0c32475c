"""The `openai` runtime against the fake server, without the stack: the request it sends
and every way a reply can go wrong."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from orchestrator.profiles import Profile
from orchestrator.runtimes import Outcome, SpawnError, SpawnRequest, get_runtime
from tests.runtimes import fakes
from tests.runtimes.conftest import free_port

KEY_ENV = "UNIT_LLM_KEY"
KEY = "sk-unit-0123456789abcdef"


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def runtime(llm, **options):
    opts = {"base_url": llm.base_url, "api_key_env": KEY_ENV, "retry_backoff_seconds": 0.01,
            **options}
    return get_runtime(Profile("llm", "openai", opts))


def request(model: str, prompt: str = "Say hi", parameters: dict | None = None,
            timeout: float = 20) -> SpawnRequest:
    return SpawnRequest(run_id=1, step_index=0, attempt=1, template_id=1, template_name="t",
                        model=model, prompt=prompt, parameters=parameters or {},
                        timeout_seconds=timeout)


def run(rt, req: SpawnRequest, limit: float = 20) -> tuple[Outcome, str | None]:
    session = rt.spawn(req)
    outcome = asyncio.run(asyncio.wait_for(rt.wait(session), limit))
    return outcome, session.spawn_id


def cancelled_after(rt, session, started: threading.Event | None = None,
                    after: float = 0.2) -> float:
    """Await the session, cancel it (as the waiter does for a step that ended elsewhere or
    ran out of time) once `started` is set (else after `after` s); how long the cancel took."""

    async def go() -> float:
        task = asyncio.create_task(rt.wait(session))
        if started is not None:
            while not started.is_set():
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(after)
        assert not task.done(), "the request ended before it was cancelled"
        at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - at

    return asyncio.run(go())


def url(llm) -> str:
    return f"{llm.base_url}/chat/completions"


def test_request_carries_model_messages_parameters_and_the_key(llm, model):
    llm.script(model, fakes.reply("Hello!", id="chatcmpl-abc",
                                  usage={"prompt_tokens": 5, "completion_tokens": 2,
                                         "total_tokens": 7}))
    params = {"temperature": 0.2, "max_tokens": 400, "top_p": 0.9, "stop": ["\n\n"],
              "model": "not-this-one", "stream": True}
    outcome, spawn_id = run(runtime(llm), request(model, "Say hi", params))
    assert outcome == Outcome(True, output="Hello!", usage={
        "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
    assert spawn_id == "chatcmpl-abc"
    [seen] = llm.requests_for(model)
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {"model": model, "messages": [{"role": "user", "content": "Say hi"}],
                         "temperature": 0.2, "max_tokens": 400, "top_p": 0.9,
                         "stop": ["\n\n"]}


def test_no_key_configured_sends_no_authorization(llm, model):
    rt = get_runtime(Profile("local", "openai", {"base_url": llm.base_url}))
    outcome, _ = run(rt, request(model))
    assert outcome.success
    assert "authorization" not in llm.requests_for(model)[0].headers


def test_key_env_named_but_unset_fails_at_spawn(llm, model, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(SpawnError, match=f"environment variable {KEY_ENV} .* is not set"):
        runtime(llm).spawn(request(model))


@pytest.mark.parametrize("options, expected", [
    ({"base_url": "ftp://x/v1"}, "base_url must be an http:// or https:// URL"),
    ({}, "base_url must be a URL"),
    ({"base_url": "http://h/v1", "api_key_env": 3}, "api_key_env must be a string"),
    ({"base_url": "http://h:0x50/v1"}, "base_url has a bad port"),
])
def test_bad_profiles_are_refused(options, expected):
    with pytest.raises(SpawnError, match=expected):
        get_runtime(Profile("bad", "openai", options))


@pytest.mark.parametrize("action, expected", [
    (fakes.error(401, "invalid key"), "401 from {url}: invalid key"),
    (fakes.error(400, "max_tokens is too large"), "400 from {url}: max_tokens is too large"),
    (fakes.error(404, "model not found"), "404 from {url}: model not found"),
    (fakes.raw(200, b"<html>oops</html>"), "malformed reply from {url}: not JSON ('<html>oops</html>')"),
    (fakes.raw(200, b"[1, 2]", "application/json"), "malformed reply from {url}: not a JSON object"),
    (fakes.raw(200, b'{"id": "x", "choices": []}', "application/json"),
     "malformed reply from {url}: no choices[0].message"),
    (fakes.reply(message={"role": "assistant", "content": None, "tool_calls": []}),
     "malformed reply from {url}: choices[0].message.content is not text"),
    (fakes.reply(message={"role": "assistant", "content": None, "refusal": "I can't help"}),
     "the model refused: I can't help"),
])
def test_errors_and_garbage_fail_at_once_with_a_readable_error(llm, model, action, expected):
    llm.script(model, action)
    outcome, _ = run(runtime(llm), request(model))
    assert not outcome.success
    assert outcome.error == expected.format(url=url(llm))
    # the outcome is final: the completion has ended, so one request means not retried
    assert len(llm.requests_for(model)) == 1


def test_transient_failures_are_retried_then_succeed(llm, model):
    llm.script(model, fakes.error(503, "overloaded"), fakes.error(429, "slow down", "0"),
               fakes.reset(), fakes.error(502, "bad gateway"), fakes.reply("finally", id="c-9"))
    outcome, spawn_id = run(runtime(llm), request(model))
    assert outcome.success and outcome.output == "finally" and spawn_id == "c-9"
    assert len(llm.requests_for(model, 5)) == 5


def test_transient_failures_give_up_after_max_retries(llm, model):
    llm.script(model, *[fakes.error(500, "boom")] * 3)
    outcome, _ = run(runtime(llm, max_retries=2), request(model))
    assert outcome.error == f"500 from {url(llm)}: boom (gave up after 3 tries)"


def test_retries_stop_when_the_step_has_no_time_left(llm, model):
    llm.script(model, fakes.error(503, "busy", retry_after="30"))
    started = time.monotonic()
    outcome, _ = run(runtime(llm), request(model, timeout=5))
    assert outcome.error == f"503 from {url(llm)}: busy (gave up after 1 tries)"
    assert time.monotonic() - started < 3


def test_connection_refused_fails_at_once():
    port = free_port()
    rt = get_runtime(Profile("down", "openai", {"base_url": f"http://127.0.0.1:{port}/v1"}))
    outcome, spawn_id = run(rt, request("m"))
    assert outcome.error == (
        f"cannot connect to http://127.0.0.1:{port}/v1/chat/completions: connection refused")
    assert spawn_id is None


def test_no_reply_within_the_step_time_fails(llm, model):
    llm.script(model, fakes.slow(10))
    outcome, _ = run(runtime(llm), request(model, timeout=1))
    assert outcome.error == f"no reply from {url(llm)} within 1 s"


def test_cancel_aborts_the_request_at_once(llm, model):
    llm.script(model, fakes.slow(30))
    rt = runtime(llm)
    session = rt.spawn(request(model))
    started = time.time()
    assert cancelled_after(rt, session, after=0.3) < 2
    [seen] = llm.requests_for(model)
    deadline = time.monotonic() + 3
    while seen.aborted_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen.aborted_at is not None and seen.aborted_at - started < 2


class _LogSeen(logging.Handler):
    """Sets `event` once a record starting with `prefix` is logged (from any thread)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.event.set()


def test_cancel_during_a_retry_wait_ends_it(llm, model):
    llm.script(model, fakes.error(503, "busy", retry_after="20"))
    rt = runtime(llm)
    logger = logging.getLogger("orchestrator.runtimes.openai")
    waiting = _LogSeen("retrying in")
    logger.addHandler(waiting)
    try:
        session = rt.spawn(request(model, timeout=60))
        assert cancelled_after(rt, session, started=waiting.event) < 2
    finally:
        logger.removeHandler(waiting)
    assert len(llm.requests_for(model)) == 1


def test_the_key_is_scrubbed_from_errors_a_server_quotes_it_in(llm, model):
    llm.script(model, fakes.error(401, f"Incorrect API key provided: {KEY}."))
    outcome, _ = run(runtime(llm), request(model))
    assert KEY not in outcome.error
    assert outcome.error == f"401 from {url(llm)}: Incorrect API key provided: ***."


def test_content_parts_are_joined(llm, model):
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    llm.script(model, fakes.reply(message={"role": "assistant", "content": parts}))
    outcome, _ = run(runtime(llm), request(model))
    assert outcome.output == "ab"
