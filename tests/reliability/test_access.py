"""Access control: every documented operation called with no key, a wrong key, and each
role; request size limits; keys never stored or logged in clear; rate limits."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid

import pytest
from sqlalchemy import select

from api.auth import KEY_CACHE_SECONDS
from api.openapi import OPERATIONS, registered_operations
from orchestrator import db
from orchestrator.auth import ROLES
from orchestrator.models import ApiKey
from tests.conftest import ADMIN_KEY
from tests.reliability.conftest import make_app
from tests.support import state_digest

SUCCESS = {"get": 200, "post": 201, "put": 200, "delete": 200}


def call(client, method: str, path: str, key: str | None, **kw):
    headers = kw.pop("headers", {})
    if key is not None:
        headers["x-api-key"] = key
    return client.open(path, method=method.upper(), headers=headers, **kw)


def admin(client, method: str, path: str, body=None, status: int | None = None) -> dict:
    resp = call(client, method, path, ADMIN_KEY, json=body)
    assert status is None or resp.status_code == status, (resp.status_code, resp.get_json())
    return resp.get_json()


def template(client) -> int:
    body = {"name": f"t-{uuid.uuid4().hex[:6]}", "prompt": "hi", "agent": "echo"}
    return admin(client, "post", "/api/workflows", body, 201)["template"]["id"]


def pipeline(client) -> int:
    tid = template(client)
    body = {"name": f"p-{uuid.uuid4().hex[:6]}", "steps": [{"template_id": tid}] * 2}
    return admin(client, "post", "/api/pipelines", body, 201)["pipeline"]["id"]


def manual_run(client) -> int:
    tid = admin(client, "post", "/api/workflows",
                {"name": "m", "prompt": "p", "agent": "manual"}, 201)["template"]["id"]
    pid = admin(client, "post", "/api/pipelines",
                {"name": "pm", "steps": [{"template_id": tid}] * 2}, 201)["pipeline"]["id"]
    return admin(client, "post", "/api/pipelines/run",
                 {"action": "start", "pipeline_id": pid}, 201)["run"]["id"]


def schedule(client) -> int:
    body = {"pipeline_id": pipeline(client), "cron": "0 3 * * *"}
    return admin(client, "post", "/api/schedules", body, 201)["schedule"]["id"]


def hook(client) -> int:
    body = {"url": "http://127.0.0.1:9/hook", "events": ["run.failed"], "enabled": False}
    return admin(client, "post", "/api/hooks", body, 201)["hook"]["id"]


def valid_request(client, path: str, method: str) -> tuple[dict, int]:
    """A request that succeeds for a caller with the right role, and its status."""
    if (path, method) == ("/api/workflows", "post"):
        return {"json": {"name": "new", "prompt": "p", "agent": "echo"}}, 201
    if (path, method) == ("/api/workflows", "put"):
        return {"json": {"id": template(client), "name": "renamed"}}, 200
    if (path, method) == ("/api/workflows", "delete"):
        return {"json": {"id": template(client)}}, 200
    if (path, method) == ("/api/pipelines", "post"):
        tid = template(client)
        return {"json": {"name": "p", "steps": [{"template_id": tid}] * 2}}, 201
    if (path, method) == ("/api/pipelines", "put"):
        return {"json": {"id": pipeline(client), "name": "renamed"}}, 200
    if (path, method) == ("/api/pipelines", "delete"):
        return {"json": {"id": pipeline(client)}}, 200
    if (path, method) == ("/api/schedules", "post"):
        return {"json": {"pipeline_id": pipeline(client), "cron": "*/5 * * * *",
                         "timezone": "Europe/Berlin"}}, 201
    if (path, method) == ("/api/schedules", "put"):
        return {"json": {"id": schedule(client), "enabled": False}}, 200
    if (path, method) == ("/api/schedules", "delete"):
        return {"json": {"id": schedule(client)}}, 200
    if (path, method) == ("/api/hooks", "post"):
        # disabled: the session's live stack would otherwise deliver every run's end to it
        return {"json": {"url": "http://127.0.0.1:9/h", "events": ["run.completed"],
                         "enabled": False}}, 201
    if (path, method) == ("/api/hooks", "put"):
        return {"json": {"id": hook(client), "enabled": False}}, 200
    if (path, method) == ("/api/hooks", "delete"):
        return {"json": {"id": hook(client)}}, 200
    if (path, method) == ("/api/pipelines/run", "post"):
        return {"json": {"action": "cancel", "run_id": manual_run(client)}}, 202
    if (path, method) == ("/api/apply", "post"):
        return {"json": {"templates": [], "pipelines": []}}, 200
    if (path, method) == ("/api/keys", "post"):
        return {"json": {"name": "k", "role": "viewer"}}, 201
    if (path, method) == ("/api/keys", "delete"):
        created = admin(client, "post", "/api/keys", {"name": "gone", "role": "viewer"}, 201)
        return {"json": {"id": created["id"]}}, 200
    if path.startswith("/api/callbacks/"):
        # no API key needed; without the step's secret the answer is a 404
        return {"json": {"success": True}}, 404
    if (path, method) == ("/api/events", "get"):
        return {"query_string": {"max_duration": "1"}}, 200
    if (path, method) in (("/api/workflows", "get"), ("/api/pipelines", "get")):
        return {"query_string": {"limit": "2", "offset": "1"}}, 200  # paging, for every role
    return {}, SUCCESS[method]


def documented(app) -> list[tuple[str, str, str | None]]:
    present = registered_operations(app)
    return sorted((p, m, op.get("x-required-role")) for (p, m), op in OPERATIONS.items()
                  if (p, m) in present)


def test_every_route_is_in_the_matrix(app):
    assert registered_operations(app) <= set(OPERATIONS), (
        "routes missing from api/openapi.py OPERATIONS: "
        f"{sorted(registered_operations(app) - set(OPERATIONS))}")


@pytest.mark.parametrize("who", ["none", "wrong", "bearer-wrong", *ROLES, "admin-db"])
def test_role_matrix(app, client, role_keys, settings, who):
    wrong = "po_" + uuid.uuid4().hex
    checked = 0
    for path, method, role in documented(app):
        kwargs, expected = valid_request(client, path, method)
        headers = {}
        key: str | None = None
        if who == "wrong":
            key = wrong
        elif who == "bearer-wrong":
            headers = {"Authorization": f"Bearer {wrong}"}
        elif who != "none":
            key = role_keys[who]
        caller_role = "admin" if who == "admin-db" else who
        before = state_digest(settings.database_url) if method != "get" else None
        url = path.replace("{run_id}", "1").replace("{step_index}", "0").replace(
            "{attempt}", "1")
        resp = call(client, method, url, key, headers=headers, **kwargs)
        if role is None:
            assert resp.status_code in (expected, 503), (path, method, who)
        elif who in ("none", "wrong", "bearer-wrong"):
            assert resp.status_code == 401, (path, method, who, resp.status_code)
        elif ROLES.index(caller_role) < ROLES.index(role):
            assert resp.status_code == 403, (path, method, who, resp.status_code)
            assert role in resp.get_json()["error"]
        else:
            assert resp.status_code == expected, (path, method, who, resp.get_json())
        if resp.status_code >= 400:
            assert set(resp.get_json()) == {"error"}
            if before is not None:
                assert state_digest(settings.database_url) == before, (path, method, who)
        resp.close()
        checked += 1
    assert checked >= 18


def test_bearer_header_works_like_x_api_key(client, role_keys):
    resp = client.get("/api/me", headers={"Authorization": f"Bearer {role_keys['operator']}"})
    assert resp.status_code == 200 and resp.get_json() == {"name": "rel-operator",
                                                            "role": "operator"}


def test_keys_are_stored_hashed_and_never_logged(client, role_keys, caplog):
    caplog.set_level(logging.DEBUG)
    created = admin(client, "post", "/api/keys", {"name": "secret-holder", "role": "viewer"}, 201)
    key = created["key"]
    assert client.get("/api/me", headers={"x-api-key": key}).status_code == 200
    client.get("/api/me", headers={"x-api-key": key + "x"})
    with db.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.id == created["id"]))
        stored = [str(v) for v in (row.key_hash, row.prefix, row.name)]
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in v for v in stored)
    listed = admin(client, "get", "/api/keys")["keys"]
    assert all(key not in str(k) for k in listed)
    audit = admin(client, "get", "/api/audit?limit=50")["entries"]
    assert key not in str(audit) and ADMIN_KEY not in str(audit)
    assert key not in caplog.text and ADMIN_KEY not in caplog.text


def test_revoked_key_is_refused(client):
    created = admin(client, "post", "/api/keys", {"name": "short-lived", "role": "admin"}, 201)
    assert client.get("/api/me", headers={"x-api-key": created["key"]}).status_code == 200
    admin(client, "delete", "/api/keys", {"id": created["id"]}, 200)
    # API processes remember a known key for KEY_CACHE_SECONDS; no longer than that
    deadline = time.monotonic() + KEY_CACHE_SECONDS + 2
    while client.get("/api/me", headers={"x-api-key": created["key"]}).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413_json_and_changes_nothing(api, database_url, chunked):
    """Through gunicorn: with a Content-Length, and chunked with none."""
    before = state_digest(database_url)
    body = ('{"name": "big", "prompt": "' + "x" * (1024 * 1024 + 10) + '"}').encode()
    headers = {"content-type": "application/json"}
    if chunked:
        resp = api.call("POST", "/api/workflows", data=iter([body[:4096], body[4096:]]),
                        headers=headers)
    else:
        resp = api.call("POST", "/api/workflows", data=body, headers=headers)
    assert resp.status_code == 413
    assert resp.json() == {"error": "request body too large"}
    assert state_digest(database_url) == before


def test_mutations_are_rate_limited_with_retry_after(settings, role_keys):
    app = make_app(settings, rate_limit=3, rate_limit_window_seconds=60)
    client = app.test_client()
    op = {"x-api-key": role_keys["operator"]}
    statuses = [client.post("/api/workflows", json={"name": "r", "prompt": "p"},
                            headers=op).status_code for _ in range(5)]
    # a window boundary may fall inside the loop: at most one reset
    assert statuses.count(429) >= 1 and statuses[:3] == [201, 201, 201], statuses
    limited = client.post("/api/workflows", json={"name": "r", "prompt": "p"}, headers=op)
    if limited.status_code == 429:
        assert 1 <= int(limited.headers["Retry-After"]) <= 61
        assert "rate limit" in limited.get_json()["error"]
    # reads are not limited, and another key has its own budget
    assert client.get("/api/workflows", headers=op).status_code == 200
    other = client.post("/api/workflows", json={"name": "r", "prompt": "p"},
                        headers={"x-api-key": role_keys["admin-db"]})
    assert other.status_code == 201


def test_rate_limit_is_shared_through_redis(settings, redis_url):
    prefix = f"rl-{uuid.uuid4().hex[:8]}:"
    first = make_app(settings, rate_limit=2, broker_url=redis_url, broker_prefix=prefix)
    second = make_app(settings, rate_limit=2, broker_url=redis_url, broker_prefix=prefix)
    key = {"x-api-key": "po_unknown_" + uuid.uuid4().hex}  # counted even when refused
    got = [app.test_client().post("/api/workflows", json={}, headers=key).status_code
           for app in (first, second, first, second)]
    assert got[:2] == [401, 401] and 429 in got[2:], got


def test_rate_limit_off_by_setting(settings):
    from orchestrator.config import Settings

    assert Settings.from_env({"RATE_LIMIT": "off"}).rate_limit == 0
    assert Settings.from_env({}).rate_limit > 0
    app = make_app(settings, rate_limit=0)
    client = app.test_client()
    key = {"x-api-key": "po_unknown_" + uuid.uuid4().hex}
    assert {client.post("/api/workflows", json={}, headers=key).status_code
            for _ in range(20)} == {401}


@pytest.mark.parametrize("action", ["start", "advance", "cancel", "rerun"])
def test_every_run_action_needs_the_operator_role(client, role_keys, settings, action):
    """The matrix above sends the run route one action; each action is checked here."""
    pid = pipeline(client)
    rid = admin(client, "post", "/api/pipelines/run",
                {"action": "start", "pipeline_id": pid}, 201)["run"]["id"]
    if action == "rerun":
        admin(client, "post", "/api/pipelines/run", {"action": "cancel", "run_id": rid}, 202)
    body = {"action": action, "pipeline_id": pid, "run_id": rid, "success": True}
    before = state_digest(settings.database_url)
    refused = call(client, "post", "/api/pipelines/run", role_keys["viewer"], json=body)
    assert refused.status_code == 403 and "operator" in refused.get_json()["error"]
    assert state_digest(settings.database_url) == before
    done = call(client, "post", "/api/pipelines/run", role_keys["operator"], json=body)
    expected = {"start": 201, "advance": 202, "cancel": 202, "rerun": 201}[action]
    assert done.status_code == expected, done.get_json()
