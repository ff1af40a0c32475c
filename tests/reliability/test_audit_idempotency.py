"""The audit log (who did what, in the change's own transaction) and Idempotency-Key."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select

from orchestrator import db
from orchestrator.models import IdempotencyKey, PipelineRun, now
from tests.conftest import ADMIN_KEY
from tests.support import state_digest


def post(client, key, path, body, method="POST", headers=None):
    return client.open(path, method=method, json=body,
                       headers={"x-api-key": key, **(headers or {})})


def manual_pipeline(client) -> int:
    tid = post(client, ADMIN_KEY, "/api/workflows",
               {"name": "m", "prompt": "p", "agent": "manual"}).get_json()["template"]["id"]
    return post(client, ADMIN_KEY, "/api/pipelines", {
        "name": "pm", "steps": [{"template_id": tid}] * 2}).get_json()["pipeline"]["id"]


def entries(client, **query) -> list[dict]:
    resp = client.get("/api/audit", query_string=query, headers={"x-api-key": ADMIN_KEY})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["entries"]


def test_every_kind_of_change_is_audited_with_its_actor(client, role_keys):
    op = role_keys["operator"]
    tpl = post(client, op, "/api/workflows", {"name": "a", "prompt": "p", "agent": "manual"})
    tid = tpl.get_json()["template"]["id"]
    post(client, op, "/api/workflows", {"id": tid, "name": "b"}, "PUT")
    pid = post(client, op, "/api/pipelines", {"name": "p", "steps": [{"template_id": tid}] * 2}
               ).get_json()["pipeline"]["id"]
    post(client, op, "/api/pipelines", {"id": pid, "description": "d"}, "PUT")
    rid = post(client, op, "/api/pipelines/run", {"action": "start", "pipeline_id": pid}
               ).get_json()["run"]["id"]
    assert post(client, op, "/api/pipelines/run", {
        "action": "advance", "run_id": rid, "success": True, "step_index": 0}).status_code == 202
    assert post(client, op, "/api/pipelines/run",
                {"action": "cancel", "run_id": rid}).status_code == 202
    post(client, op, "/api/pipelines", {"id": pid}, "DELETE")
    post(client, op, "/api/workflows", {"id": tid}, "DELETE")
    got = [(e["actor"], e["role"], e["action"], e["target_type"], e["target_id"])
           for e in reversed(entries(client, limit=9))]
    who = ("rel-operator", "operator")
    assert got == [
        (*who, "created", "template", tid), (*who, "updated", "template", tid),
        (*who, "created", "pipeline", pid), (*who, "updated", "pipeline", pid),
        (*who, "started", "run", rid), (*who, "advanced", "run", rid),
        (*who, "cancelled", "run", rid), (*who, "deleted", "pipeline", pid),
        (*who, "deleted", "template", tid),
    ]
    advanced = entries(client, target_type="run", target_id=rid)[1]
    assert advanced["detail"]["step_index"] == 0 and advanced["detail"]["success"] is True
    assert advanced["detail"]["request"] == "POST /api/pipelines/run"


def test_refused_and_invalid_changes_leave_no_entry(client, settings):
    pid = manual_pipeline(client)
    rid = post(client, ADMIN_KEY, "/api/pipelines/run", {"action": "start", "pipeline_id": pid}
               ).get_json()["run"]["id"]
    post(client, ADMIN_KEY, "/api/pipelines/run", {"action": "cancel", "run_id": rid})
    last = entries(client, limit=1)[0]["id"]
    before = state_digest(settings.database_url)
    assert post(client, ADMIN_KEY, "/api/pipelines/run",
                {"action": "cancel", "run_id": rid}).status_code == 409
    assert post(client, ADMIN_KEY, "/api/workflows", {"id": 10**9}, "DELETE").status_code == 404
    assert post(client, ADMIN_KEY, "/api/workflows", {"name": ""}).status_code == 400
    assert entries(client, limit=1)[0]["id"] == last
    assert state_digest(settings.database_url) == before


def test_audit_needs_admin_and_pages_back(client, role_keys):
    assert client.get("/api/audit", headers={"x-api-key": role_keys["operator"]}
                      ).status_code == 403
    newest = entries(client, limit=3)
    assert [e["id"] for e in newest] == sorted((e["id"] for e in newest), reverse=True)
    older = entries(client, limit=2, before_id=newest[-1]["id"])
    assert older and all(e["id"] < newest[-1]["id"] for e in older)
    assert client.get("/api/audit?limit=0", headers={"x-api-key": ADMIN_KEY}).status_code == 400


def start(client, key, pid, idem, **extra):
    return post(client, key, "/api/pipelines/run",
                {"action": "start", "pipeline_id": pid, **extra},
                headers={"Idempotency-Key": idem})


def test_same_key_and_body_return_the_same_run(client):
    pid = manual_pipeline(client)
    idem = uuid.uuid4().hex
    first = start(client, ADMIN_KEY, pid, idem, inputs={"a": 1})
    again = start(client, ADMIN_KEY, str(pid), idem, inputs={"a": 1})  # "42" is 42
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["run"]["id"] == first.get_json()["run"]["id"]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(PipelineRun)
                        .where(PipelineRun.pipeline_id == pid)) == 1
    started = [e for e in entries(client, target_type="run") if e["action"] == "started"
               and e["target_id"] == first.get_json()["run"]["id"]]
    assert len(started) == 1  # the replay changed nothing, so it recorded nothing


def test_same_key_other_body_is_409_and_changes_nothing(client, settings):
    pid = manual_pipeline(client)
    idem = uuid.uuid4().hex
    assert start(client, ADMIN_KEY, pid, idem).status_code == 201
    before = state_digest(settings.database_url)
    clash = start(client, ADMIN_KEY, pid, idem, inputs={"other": True})
    assert clash.status_code == 409 and "Idempotency-Key" in clash.get_json()["error"]
    assert state_digest(settings.database_url) == before


def test_keys_are_per_caller_and_expire(client, role_keys):
    pid = manual_pipeline(client)
    idem = uuid.uuid4().hex
    mine = start(client, ADMIN_KEY, pid, idem).get_json()["run"]["id"]
    theirs = start(client, role_keys["operator"], pid, idem).get_json()["run"]["id"]
    assert mine != theirs
    with db.session() as s:
        row = s.scalar(select(IdempotencyKey).where(IdempotencyKey.key == idem,
                                                    IdempotencyKey.actor == "admin"))
        row.created_at = now() - 25 * 3600
    fresh = start(client, ADMIN_KEY, pid, idem).get_json()["run"]["id"]
    assert fresh not in (mine, theirs)


@pytest.mark.parametrize("idem", ["x" * 256, "two words", "café-1", "tab\tin"])
def test_bad_idempotency_key_is_400_and_starts_nothing(client, settings, idem):
    pid = manual_pipeline(client)
    before = state_digest(settings.database_url)
    refused = start(client, ADMIN_KEY, pid, idem)
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "Idempotency-Key must be 1 to 255 visible ASCII "
                                           "characters (no spaces)"}
    assert state_digest(settings.database_url) == before


def test_racing_twins_create_one_run(app):
    pid = manual_pipeline(app.test_client())
    idem = uuid.uuid4().hex
    barrier = threading.Barrier(6)
    answers: list[tuple[int, dict]] = []

    def twin():
        c = app.test_client()
        barrier.wait()
        resp = start(c, ADMIN_KEY, pid, idem)
        answers.append((resp.status_code, resp.get_json()))

    threads = [threading.Thread(target=twin) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 6  # every twin answered
    assert {status for status, _ in answers} == {201}, answers
    assert len({body["run"]["id"] for _, body in answers}) == 1
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(PipelineRun)
                        .where(PipelineRun.pipeline_id == pid)) == 1
