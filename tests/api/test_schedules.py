"""/api/schedules: create, list, change, delete; bad cron or time zone → 400, an unknown
pipeline → 404, each changing nothing; deleting a pipeline deletes its schedules; apply
and export carry schedules; and on the live stack, beat fires a due schedule."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import update

from orchestrator import db
from orchestrator import pipelines_file as pf
from orchestrator.models import Schedule
from tests.conftest import ADMIN_KEY
from tests.reliability.conftest import make_app
from tests.support import state_digest

URL = "/api/schedules"


@pytest.fixture(scope="module")
def client(settings):
    return make_app(settings).test_client()


def call(client, method: str, path: str, body=None, status: int | None = None, **kw):
    resp = client.open(path, method=method, json=body, headers={"x-api-key": ADMIN_KEY}, **kw)
    assert status is None or resp.status_code == status, (resp.status_code, resp.get_json())
    return resp.get_json()


def pipeline(client, name: str | None = None) -> dict:
    tid = call(client, "POST", "/api/workflows",
               {"name": f"t-{uuid.uuid4().hex[:6]}", "prompt": "p", "agent": "manual"},
               201)["template"]["id"]
    body = {"name": name or f"p-{uuid.uuid4().hex[:6]}", "steps": [{"template_id": tid}] * 2}
    return call(client, "POST", "/api/pipelines", body, 201)["pipeline"]


def test_create_list_update_delete(client):
    pid = pipeline(client)["id"]
    before = time.time()
    made = call(client, "POST", URL, {"pipeline_id": str(pid), "cron": "*/5 * * * *",
                                      "timezone": "Europe/Berlin", "inputs": {"env": "prod"}},
                201)["schedule"]
    assert {k: made[k] for k in ("pipeline_id", "cron", "timezone", "inputs", "enabled",
                                 "last_fired_at", "last_fire_status", "name", "created_by")} == {
        "pipeline_id": pid, "cron": "*/5 * * * *", "timezone": "Europe/Berlin",
        "inputs": {"env": "prod"}, "enabled": True, "last_fired_at": None,
        "last_fire_status": None, "name": None, "created_by": "admin"}
    assert before < made["next_fire_at"] <= before + 300 and made["next_fire_at"] % 300 == 0
    listed = call(client, "GET", f"{URL}?pipeline_id={pid}", status=200)["schedules"]
    assert listed == [made]
    off = call(client, "PUT", URL, {"id": made["id"], "enabled": False}, 200)["schedule"]
    assert (off["enabled"], off["next_fire_at"], off["inputs"]) == (False, None, {"env": "prod"})
    on = call(client, "PUT", URL, {"id": made["id"], "enabled": True, "cron": "0 3 * * *",
                                   "name": "nightly"}, 200)["schedule"]
    assert (on["cron"], on["name"]) == ("0 3 * * *", "nightly") and on["next_fire_at"] > before
    assert call(client, "DELETE", URL, {"id": made["id"]}, 200) == {"success": True}
    assert call(client, "GET", f"{URL}?pipeline_id={pid}", status=200)["schedules"] == []
    call(client, "DELETE", URL, {"id": made["id"]}, 404)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"cron": "* * * * * *"}, 400, "5 fields"),
    ({"cron": "61 * * * *"}, 400, "not a valid cron expression"),
    ({"cron": "0 0 30 2 *"}, 400, "never fires"),
    ({"cron": "@daily"}, 400, "5 fields"),
    ({"cron": 5}, 400, "cron"),
    ({"timezone": "Mars/Olympus"}, 400, "unknown time zone 'Mars/Olympus'"),
    ({"timezone": None}, 400, "timezone"),
    ({"inputs": {"x": "y" * 70_000}}, 400, "64 KiB"),
    ({"inputs": []}, 400, "inputs"),
    ({"enabled": "yes"}, 400, "enabled"),
    ({"pipeline_id": 2_000_000_000}, 404, "pipeline 2000000000 not found"),
    ({"pipeline_id": "x"}, 400, "pipeline_id"),
])
def test_a_bad_schedule_is_refused_and_changes_nothing(client, database_url, body, status, says):
    pid = pipeline(client)["id"]
    before = state_digest(database_url)
    resp = client.post(URL, json={"pipeline_id": pid, "cron": "* * * * *", **body},
                       headers={"x-api-key": ADMIN_KEY})
    assert resp.status_code == status, resp.get_json()
    assert says in resp.get_json()["error"]
    assert state_digest(database_url) == before


def test_a_bad_update_is_refused_and_changes_nothing(client, database_url):
    pid = pipeline(client)["id"]
    sid = call(client, "POST", URL, {"pipeline_id": pid, "cron": "0 * * * *"}, 201)["schedule"]["id"]
    before = state_digest(database_url)
    for body, status in [({"id": sid, "cron": "bad"}, 400), ({"id": sid, "cron": None}, 400),
                         ({"id": sid, "timezone": "Nowhere"}, 400),
                         ({"id": sid, "pipeline_id": 2_000_000_000}, 404),
                         ({"id": 2_000_000_000, "cron": "* * * * *"}, 404), ({}, 400)]:
        call(client, "PUT", URL, body, status)
    call(client, "GET", f"{URL}?pipeline_id=2000000000", status=404)
    assert state_digest(database_url) == before


def test_deleting_a_pipeline_deletes_its_schedules(client):
    pid = pipeline(client)["id"]
    other = pipeline(client)["id"]
    call(client, "POST", URL, {"pipeline_id": pid, "cron": "0 * * * *"}, 201)
    kept = call(client, "POST", URL, {"pipeline_id": other, "cron": "0 * * * *"}, 201)
    call(client, "DELETE", "/api/pipelines", {"id": pid}, 200)
    listed = call(client, "GET", URL, status=200)["schedules"]
    assert pid not in {s["pipeline_id"] for s in listed}
    assert kept["schedule"] in listed


def test_a_viewer_reads_and_cannot_write(client, role_keys_local):
    viewer = {"x-api-key": role_keys_local}
    assert client.get(URL, headers=viewer).status_code == 200
    resp = client.post(URL, json={"pipeline_id": 1, "cron": "* * * * *"}, headers=viewer)
    assert resp.status_code == 403 and "operator" in resp.get_json()["error"]


@pytest.fixture(scope="module")
def role_keys_local(settings) -> str:
    from orchestrator.auth import create_key

    with db.session() as s:
        return create_key(s, "sched-viewer", "viewer")[1]


# -- apply and export --------------------------------------------------------------------------


def document(t: str, schedules: list[dict]) -> dict:
    return {"templates": [{"name": f"{t}-a", "prompt": "a", "agent": "manual"}],
            "pipelines": [{"name": f"{t}-p", "steps": [f"{t}-a", f"{t}-a"]}],
            "schedules": schedules}


def changes(answer: dict) -> list[tuple[str, str, str]]:
    return [(c["kind"], c["action"], c["name"]) for c in answer["changes"]]


def test_apply_carries_schedules_and_an_export_applies_unchanged(client):
    t = uuid.uuid4().hex[:8]
    nightly = {"pipeline": f"{t}-p", "name": "nightly", "cron": "0 2 * * *",
               "timezone": "Europe/Berlin", "inputs": {"full": True}}
    hourly = {"pipeline": f"{t}-p", "cron": "0 * * * *"}
    dry = call(client, "POST", "/api/apply", {**document(t, [nightly, hourly]), "dry_run": True},
               200)
    assert changes(dry)[2:] == [("schedule", "create", f"{t}-p: nightly"),
                                ("schedule", "create", f"{t}-p: 0 * * * * UTC")]
    first = call(client, "POST", "/api/apply", document(t, [nightly, hourly]), 200)
    pid = first["changes"][1]["id"]
    stored = call(client, "GET", f"{URL}?pipeline_id={pid}", status=200)["schedules"]
    assert [(s["name"], s["cron"], s["timezone"], s["inputs"], s["enabled"]) for s in stored] == [
        ("nightly", "0 2 * * *", "Europe/Berlin", {"full": True}, True),
        (None, "0 * * * *", "UTC", {}, True)]
    assert [c["id"] for c in first["changes"][2:]] == [s["id"] for s in stored]
    # the named one is edited in place; the same document again changes nothing else
    moved = {**nightly, "cron": "30 2 * * *", "enabled": False}
    again = call(client, "POST", "/api/apply", document(t, [moved, hourly]), 200)
    assert [(c["action"], c["fields"]) for c in again["changes"][2:]] == [
        ("update", ["cron", "enabled"]), ("unchanged", [])]
    stored = call(client, "GET", f"{URL}?pipeline_id={pid}", status=200)["schedules"]
    assert (stored[0]["cron"], stored[0]["enabled"], stored[0]["next_fire_at"]) == (
        "30 2 * * *", False, None)
    # export writes them back, and applying the export changes nothing
    templates = call(client, "GET", "/api/workflows", status=200)["templates"]
    pipelines = call(client, "GET", "/api/pipelines", status=200)["pipelines"]
    text = pf.export(templates, pipelines, [f"{t}-p"],
                     schedules=call(client, "GET", URL, status=200)["schedules"])
    assert "schedules:" in text and "30 2 * * *" in text
    doc = pf.load(text)
    body = {"templates": doc.templates, "pipelines": doc.pipelines, "schedules": doc.schedules}
    assert {c["action"] for c in call(client, "POST", "/api/apply", body, 200)["changes"]} == {
        "unchanged"}


@pytest.mark.parametrize(("item", "says"), [
    ({"cron": "61 * * * *"}, "not a valid cron expression"),
    ({"timezone": "Nowhere/Land"}, "unknown time zone"),
    ({"pipeline": "no-such-pipeline"}, "no-such-pipeline"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"inputs": "x"}, "inputs"),
])
def test_apply_refuses_a_bad_schedule_and_writes_nothing(client, database_url, item, says):
    t = uuid.uuid4().hex[:8]
    good = {"pipeline": f"{t}-p", "cron": "0 * * * *"}
    before = state_digest(database_url)
    resp = client.post("/api/apply", json=document(t, [{**good, **item}]),
                       headers={"x-api-key": ADMIN_KEY})
    assert resp.status_code == 400, resp.get_json()
    assert [i["kind"] for i in resp.get_json()["items"]] == ["schedule"]
    assert says in resp.get_json()["error"]
    assert state_digest(database_url) == before


# -- on the live stack ---------------------------------------------------------------------------


def test_beat_fires_a_due_schedule_once(api, settings):
    """The production wiring: beat's tick, the control queue, a worker's task. The fire
    time is made due by moving it into the past, rather than waiting a real minute."""
    tid = api.template("wait for a person", agent="manual")["id"]
    pid = api.pipeline(tid, tid)["id"]
    sid = api.ok("POST", URL, {"pipeline_id": pid, "cron": "0 0 1 1 *"}, 201)["schedule"]["id"]
    due = time.time() - 3600
    with db.session() as s:
        s.execute(update(Schedule).where(Schedule.id == sid).values(next_fire_at=due))
    deadline = time.monotonic() + 30
    while not (runs := api.ok("GET", f"/api/pipelines/run?pipeline_id={pid}")["runs"]):
        assert time.monotonic() < deadline, "beat did not fire the due schedule"
        time.sleep(0.2)
    assert [r["triggered_by"] for r in runs] == [f"schedule:{sid}"]
    [sched] = api.ok("GET", f"{URL}?pipeline_id={pid}")["schedules"]
    assert sched["last_fire_status"] == "started" and sched["next_fire_at"] > time.time()
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": runs[0]["id"]}, 202)
