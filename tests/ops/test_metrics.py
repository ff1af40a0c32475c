"""/metrics: Prometheus text derived from the database, the broker and the tallies."""

from __future__ import annotations

import uuid

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from orchestrator import tallies
from orchestrator.config import Settings


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(data: dict[tuple, float], name: str, **labels: str) -> float:
    """The sample's value; a series that is not there fails the test (it is not a 0)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in data, f"no sample {name}{labels}"
    return data[key]


def scrape(api) -> dict[tuple, float]:
    resp = api.call("GET", "/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(resp.text)


def test_metrics_need_a_key_by_default(api):
    resp = api.call("GET", "/metrics", key="")
    assert resp.status_code == 401 and "API key required" in resp.json()["error"]
    viewer = api.ok("POST", "/api/keys", {"name": "prometheus", "role": "viewer"}, 201)["key"]
    resp = api.call("GET", "/metrics", key=None, headers={"Authorization": f"Bearer {viewer}"})
    assert resp.status_code == 200 and "orchestrator_runs_started_total" in resp.text


def test_a_scrape_follows_a_run(api):
    held = api.template("wait for a person", agent="manual", name=f"held-{uuid.uuid4().hex[:6]}")
    quick = api.template("echo done", name=f"quick-{uuid.uuid4().hex[:6]}")
    pipeline = api.pipeline(held["id"], quick["id"])
    pid = {"pipeline": pipeline["name"], "pipeline_id": str(pipeline["id"])}
    before = scrape(api)
    assert value(before, "orchestrator_runs_started_total", **pid) == 0
    run = api.start(pipeline["id"])
    api.wait_step(run["id"], 0, "running")
    during = scrape(api)
    assert value(during, "orchestrator_runs_started_total", **pid) == 1
    assert value(during, "orchestrator_runs_active", **pid) == 1
    running = {"agent": "manual", "runtime": "manual"}
    assert value(during, "orchestrator_steps_running", **running) >= 1  # others may run too
    api.ok("POST", "/api/pipelines/run", {"action": "advance", "run_id": run["id"],
                                          "success": True, "step_index": 0}, 202)
    assert api.wait(run["id"])["status"] == "completed"
    after = scrape(api)
    assert value(after, "orchestrator_runs_active", **pid) == 0
    assert value(after, "orchestrator_runs_finished_total", status="completed", **pid) == 1
    assert value(after, "orchestrator_runs_finished_total", status="failed", **pid) == 0
    for tpl, runtime in ((held, "manual"), (quick, "command")):
        labels = {"template": tpl["name"], "runtime": runtime, "status": "completed"}
        assert value(after, "orchestrator_step_duration_seconds_count", **labels) == 1
        assert value(after, "orchestrator_step_duration_seconds_bucket", le="+Inf",
                     **labels) == 1
        assert value(after, "orchestrator_step_duration_seconds_sum", **labels) > 0
    assert value(after, "orchestrator_broker_up") == 1
    assert (("orchestrator_queue_depth", (("queue", "orchestrator.steps"),)) in after)


@pytest.fixture
def isolated_app(settings, redis_url):
    """An app on this session's database and a broker prefix no worker listens on."""
    prefix = f"test-metrics-{uuid.uuid4().hex[:8]}:"
    app = create_app({"database_url": settings.database_url, "broker_url": redis_url,
                      "broker_prefix": prefix, "metrics_auth": "none",
                      "agents_file": settings.agents_file})
    yield app
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def test_queue_depth_and_sweeper_actions_come_from_redis(isolated_app):
    http = isolated_app.test_client()
    first = samples(http.get("/metrics").get_data(as_text=True))  # METRICS_AUTH=none: no key
    assert value(first, "orchestrator_queue_depth", queue="orchestrator.steps") == 0
    assert value(first, "orchestrator_sweeper_actions_total", action="lost") == 0
    celery = isolated_app.extensions["celery"]
    for i in range(3):
        celery.send_task("orchestrator.run_step", args=[10**9, i, 1])
    celery.send_task("orchestrator.sweep")
    settings: Settings = isolated_app.config["SETTINGS"]
    # what a worker's task_postrun hook does with the sweep task's report
    from worker.app import _tally_sweep

    class SweepTask:
        name = "orchestrator.sweep"
        app = type("App", (), {"conf": type("Conf", (), {"orchestrator_settings": settings})})

    _tally_sweep(task=SweepTask, retval={"lost": 2, "timed_out": 0, "requeued": 1})
    tallies.record_sweep(settings, {"lost": 1, "timed_out": 1, "requeued": 0})
    data = samples(http.get("/metrics").get_data(as_text=True))
    assert value(data, "orchestrator_queue_depth", queue="orchestrator.steps") == 3
    assert value(data, "orchestrator_queue_depth", queue="orchestrator.control") == 1
    assert value(data, "orchestrator_sweeper_actions_total", action="lost") == 3
    assert value(data, "orchestrator_sweeper_actions_total", action="timed_out") == 1
    assert value(data, "orchestrator_sweeper_actions_total", action="requeued") == 1


def test_a_broker_that_is_down_is_reported_not_fatal(settings):
    app = create_app({"database_url": settings.database_url, "metrics_auth": "none",
                      "broker_url": "redis://127.0.0.1:1/0"})
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    data = samples(resp.get_data(as_text=True))
    assert value(data, "orchestrator_broker_up") == 0


def test_metrics_auth_must_be_a_role_or_none(settings):
    with pytest.raises(ValueError, match="METRICS_AUTH"):
        create_app({"database_url": settings.database_url, "metrics_auth": "everyone"})


def test_queued_runs_are_counted_per_pipeline(api):
    held = api.template("wait", agent="manual", name=f"gate-{uuid.uuid4().hex[:6]}")["id"]
    pipeline = api.ok("POST", "/api/pipelines", {
        "name": f"one-at-a-time-{uuid.uuid4().hex[:6]}", "max_concurrent_runs": 1,
        "steps": [{"template_id": held}] * 2}, 201)["pipeline"]
    pid = {"pipeline": pipeline["name"], "pipeline_id": str(pipeline["id"])}
    first = api.start(pipeline["id"])
    queued = [api.start(pipeline["id"]) for _ in range(2)]
    assert [r["queued"] for r in queued] == [True, True]
    assert value(scrape(api), "orchestrator_runs_queued", **pid) == 2
    for run in (first, *queued):
        api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]}, 202)
    assert value(scrape(api), "orchestrator_runs_queued", **pid) == 0
