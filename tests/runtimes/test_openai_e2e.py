"""`openai` steps through the live stack: gunicorn API, a Celery worker, PostgreSQL, Redis
and the fake OpenAI-compatible server."""

from __future__ import annotations

import time

import pytest

from tests.runtimes import fakes
from tests.runtimes.conftest import LLM_KEY
from tests.runtimes.helpers import all_rows_text


def test_an_openai_step_sends_the_request_and_keeps_spawn_id_output_and_usage(
        rt_api, llm, model):
    usage = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    llm.script(model, fakes.reply("LGTM, two nits.", id="chatcmpl-e2e-1", usage=usage))
    params = {"temperature": 0.2, "max_tokens": 4000, "top_p": 0.5, "stop": ["END"]}
    review = rt_api.template("Review {{ inputs.repo }} at {{ inputs.sha }}", agent="llm",
                             model=model, parameters=params)
    after = rt_api.template("{{ steps[0].output }}", agent="echo")
    run = rt_api.start(rt_api.pipeline(review["id"], after["id"])["id"],
                       inputs={"repo": "acme/api", "sha": "abc123"})
    done = rt_api.wait(run["id"])
    assert done["status"] == "completed", done
    step = done["steps_snapshot"][0]
    assert step["spawn_id"] == "chatcmpl-e2e-1"
    assert step["output"] == "LGTM, two nits."
    # What the server reported, in its words and ours, priced by the profile ($3 and $15
    # per million input and output tokens).
    cost = (12 * 3.0 + 4 * 15.0) / 1e6
    assert step["usage"] == {**usage, "input_tokens": 12, "output_tokens": 4,
                             "cost_usd": pytest.approx(cost)}
    assert done["usage"] == {"input_tokens": 12, "output_tokens": 4,
                             "cost_usd": pytest.approx(cost)}
    assert step["attempt"] == 1 and step["error"] is None
    assert done["steps_snapshot"][1]["output"] == "LGTM, two nits."
    [seen] = llm.requests_for(model)
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {LLM_KEY}"
    assert seen.body == {"model": model,
                         "messages": [{"role": "user", "content": "Review acme/api at abc123"}],
                         **params}


def test_openai_failures_fail_the_step_with_an_error_a_person_can_act_on(rt_api, llm, model):
    bad_key, garbage = f"{model}-key", f"{model}-garbage"
    llm.script(bad_key, fakes.error(401, "invalid key"))
    llm.script(garbage, fakes.raw(200, b"Service Unavailable"))
    runs = {}
    for name, agent, mdl in (("key", "llm", bad_key), ("garbage", "llm", garbage),
                             ("down", "llm-down", model)):
        tpl = rt_api.template("hello", agent=agent, model=mdl)
        after = rt_api.template("never", agent="echo")
        runs[name] = rt_api.start(rt_api.pipeline(tpl["id"], after["id"])["id"])["id"]
    url = f"{llm.base_url}/chat/completions"
    errors = {}
    for name, rid in runs.items():
        done = rt_api.wait(rid)
        assert done["status"] == "failed"
        assert [s["status"] for s in done["steps_snapshot"]] == ["failed", "skipped"]
        errors[name] = done["steps_snapshot"][0]["error"]
    assert errors["key"] == f"401 from {url}: invalid key"
    assert errors["garbage"] == f"malformed reply from {url}: not JSON ('Service Unavailable')"
    assert errors["down"].startswith("cannot connect to http://127.0.0.1:")
    assert errors["down"].endswith("/v1/chat/completions: connection refused")


def test_transient_failures_are_retried_within_the_step(rt_api, llm, model):
    llm.script(model, fakes.error(503, "overloaded"), fakes.error(429, "rate limited", "0"),
               fakes.reset(), fakes.reply("third time lucky", id="chatcmpl-t4"))
    tpl = rt_api.template("hi", agent="llm", model=model)
    run = rt_api.start(rt_api.pipeline(tpl["id"], tpl["id"])["id"])
    done = rt_api.wait(run["id"])
    assert done["status"] == "completed"
    first = done["steps_snapshot"][0]
    assert (first["attempt"], first["spawn_id"], first["output"]) == (
        1, "chatcmpl-t4", "third time lucky")
    assert len(llm.requests_for(model, 5)) == 5  # four for step 0, one for step 1


def test_step_retries_start_new_attempts_and_keep_the_last_ones_spawn_id(rt_api, llm, model):
    llm.script(model, fakes.error(400, "context length exceeded"),
               fakes.raw(200, b'{"id": "chatcmpl-r2", "choices": []}', "application/json"),
               fakes.reply("done", id="chatcmpl-r3"))
    tpl = rt_api.template("hi", agent="llm", model=model, retries=2, retry_backoff_seconds=0)
    after = rt_api.template("after", agent="echo")
    run = rt_api.start(rt_api.pipeline(tpl["id"], after["id"])["id"])
    done = rt_api.wait(run["id"])
    assert done["status"] == "completed"
    step = done["steps_snapshot"][0]
    assert (step["status"], step["attempt"], step["spawn_id"], step["output"], step["error"]) == (
        "completed", 3, "chatcmpl-r3", "done", None)
    assert len(llm.requests_for(model, 3)) == 3


def test_the_last_failed_attempt_fails_the_step_and_on_failure_applies(rt_api, llm, model):
    llm.script(model, *[fakes.error(400, "bad request")] * 2)
    tpl = rt_api.template("hi", agent="llm", model=model, retries=1)
    after = rt_api.template("after", agent="echo")
    run = rt_api.start(rt_api.pipeline({"template_id": tpl["id"], "on_failure": "continue"},
                                       after["id"])["id"])
    done = rt_api.wait(run["id"])
    assert done["status"] == "completed"
    step = done["steps_snapshot"][0]
    assert (step["status"], step["attempt"]) == ("failed", 2)
    assert step["error"] == f"400 from {llm.base_url}/chat/completions: bad request"
    assert done["steps_snapshot"][1]["status"] == "completed"


def test_cancel_aborts_the_request_in_flight(rt_api, llm, model):
    llm.script(model, fakes.slow(60))
    tpl = rt_api.template("think hard", agent="llm", model=model)
    run = rt_api.start(rt_api.pipeline(tpl["id"], tpl["id"])["id"])
    [seen] = llm.requests_for(model)
    started = time.time()
    resp = rt_api.call("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]})
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 5
    while seen.aborted_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen.aborted_at is not None, "the request outlived the cancel"
    assert seen.aborted_at - started < 3
    final = rt_api.run(run["id"])
    assert final["status"] == "cancelled"
    assert [(s["status"], s["error"]) for s in final["steps_snapshot"]] == [
        ("skipped", "cancelled"), ("skipped", "cancelled")]
    assert len(llm.requests_for(model)) == 1


def test_the_api_key_is_never_stored_nor_logged(rt_api, rt_stack, rt_database_url, llm, model):
    # A server that quotes the key back, as some hosted APIs do on a 401.
    llm.script(model, *[fakes.error(401, f"Incorrect API key provided: {LLM_KEY}")] * 2)
    tpl = rt_api.template("hi", agent="llm", model=model, retries=1)
    run = rt_api.start(rt_api.pipeline(tpl["id"], tpl["id"])["id"])
    done = rt_api.wait(run["id"])
    step = done["steps_snapshot"][0]
    assert step["error"] == (f"401 from {llm.base_url}/chat/completions: "
                             "Incorrect API key provided: ***")
    # Every openai request of this session carried the key...
    assert all(s.headers.get("authorization") == f"Bearer {LLM_KEY}"
               for s in llm.seen if s.body and s.body.get("model", "").startswith("model-"))
    # ...and it is in no table and no log of the stack.
    stored = all_rows_text(rt_database_url)
    assert "Incorrect API key provided: ***" in stored  # the dump does see errors
    assert LLM_KEY not in stored
    for name in ("api", "worker", "beat"):
        assert LLM_KEY not in rt_stack.log(name), f"the key is in the {name} log"
