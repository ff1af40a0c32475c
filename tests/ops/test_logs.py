"""Structured logs: JSON lines with the run's ids, and no secrets, unit and live."""

from __future__ import annotations

import io
import json
import logging

import pytest

from orchestrator import logs, masking
from tests.conftest import ADMIN_KEY


@pytest.fixture
def capture():
    stream = io.StringIO()
    root = logging.getLogger()
    old_level = root.level
    handler = logs.configure("DEBUG", "json", stream=stream)
    logs.clear()
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    logs.clear()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_about_a_run_carries_its_ids(capture):
    logging.getLogger("orchestrator.executor").info(
        "step result ignored: %s", "stale", extra={"run_id": 7, "step_index": 2})
    (line,) = lines(capture)
    assert line["message"] == "step result ignored: stale"
    assert line["level"] == "INFO" and line["logger"] == "orchestrator.executor"
    assert (line["run_id"], line["step_index"]) == (7, 2)
    # fields not known yet are present and null, so a log query can rely on the keys
    assert "spawn_id" in line and line["spawn_id"] is None and line["pipeline"] is None


def test_bound_context_fills_what_extra_does_not_say(capture):
    logs.bind(run_id=3, step_index=0, pipeline="CI/CD Pipeline")
    logs.bind(spawn_id="host:42")
    logging.getLogger("celery.app.trace").info("Task succeeded")
    logging.getLogger("x").warning("other step", extra={"step_index": 1})
    first, second = lines(capture)
    assert (first["run_id"], first["step_index"], first["spawn_id"], first["pipeline"]) == (
        3, 0, "host:42", "CI/CD Pipeline")
    assert second["step_index"] == 1 and second["run_id"] == 3
    logs.clear()
    logging.getLogger("x").info("unrelated")
    assert "run_id" not in lines(capture)[2]


def test_secrets_are_masked(capture):
    masking.learn(["bootstrap-secret-value"])
    log = logging.getLogger("x")
    log.info("key %s used", "po_" + "A" * 43)
    log.info("header Authorization: Bearer abcdefghijklmnop")
    log.info("db at postgresql+psycopg://orch:hunter2@db:5432/x")
    log.info("config api_key=abc123 password: 'pw-1' token=t0k3n")
    log.info("saw bootstrap-secret-value", extra={"detail": {"key": "bootstrap-secret-value"}})
    try:
        raise RuntimeError("failed with x-api-key: po_" + "B" * 43)
    except RuntimeError:
        log.exception("boom")
    text = capture.getvalue()
    for secret in ("AAAAAAAA", "abcdefghijklmnop", "hunter2", "abc123", "pw-1", "t0k3n",
                   "bootstrap-secret-value", "BBBBBBBB"):
        assert secret not in text, secret
    parsed = lines(capture)
    assert parsed[2]["message"] == "db at postgresql+psycopg://orch:***@db:5432/x"
    assert parsed[4]["detail"] == {"key": "***"}
    assert "RuntimeError" in parsed[5]["exception"]


def test_text_on_a_terminal_json_elsewhere():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.use_json("", io.StringIO()) is True
    assert logs.use_json("", Tty()) is False
    assert logs.use_json("json", Tty()) is True
    assert logs.use_json("text", io.StringIO()) is False
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hi", None, None)
    record.run_id, record.step_index = 5, 1
    assert logs.TextFormatter().format(record).endswith("hi [run_id=5 step_index=1]")


def test_worker_and_api_logs_are_json_with_the_run_ids(api, stack):
    first = api.template("echo one")["id"]
    second = api.template("echo two", agent="echo")["id"]
    pipeline = api.pipeline(first, second)
    run = api.wait(api.start(pipeline["id"])["id"])
    assert run["status"] == "completed"
    spawn_ids = {s["step_index"]: s["spawn_id"] for s in run["steps_snapshot"]}
    about_run = []
    for raw in stack.log("worker").splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line.get("run_id") == run["id"]:
                about_run.append(line)
    # one line per step the worker finished (a worker may run several steps per task)
    finished = [line for line in about_run
                if line["message"] == f"step {line.get('step_index')} completed"]
    assert {line["step_index"] for line in finished} == {0, 1}
    for line in finished:
        assert line["pipeline"] == pipeline["name"]
        assert line["spawn_id"] == spawn_ids[line["step_index"]]
    api_lines = [raw for raw in stack.log("api").splitlines() if raw.strip()]
    access = [json.loads(raw) for raw in api_lines if raw.startswith("{")
              and "/api/pipelines/run" in raw]
    assert access and all(line["logger"] == "gunicorn.access" for line in access)
    for name in ("api", "worker", "beat"):
        assert ADMIN_KEY not in stack.log(name)
