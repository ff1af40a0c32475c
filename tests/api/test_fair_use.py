"""Fair use (SPEC §12): rate limits by address and by key, list paging, the 64 KiB caps on
`parameters` and `inputs`, run lists without outputs, and the hardening headers."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from api import create_app
from orchestrator import callbacks, db
from orchestrator.auth import create_key
from orchestrator.models import RunStep
from tests.conftest import ADMIN_KEY
from tests.support import state_digest

ADMIN = {"x-api-key": ADMIN_KEY}


def make_app(settings, **overrides):
    """An app on the test database; limited apps count in hour-long windows, so that no
    window ends inside a test."""
    app = create_app({"database_url": settings.database_url, "api_key": ADMIN_KEY,
                      "agents_file": settings.agents_file, "broker_url": "memory://",
                      "rate_limit": 0, "rate_limit_window_seconds": 3600, **overrides})
    app.testing = True
    return app


STARTED: list[int] = []


@pytest.fixture(scope="module")
def client(settings):
    """The runs these tests start wait for no worker: cancelled at the end, so that a live
    stack's sweeper sharing the database does not pick them up for other tests."""
    client = make_app(settings).test_client()
    yield client
    for run_id in STARTED:
        client.post("/api/pipelines/run", headers=ADMIN, json={"action": "cancel", "run_id": run_id})


@pytest.fixture(scope="module")
def viewer(settings) -> str:
    with db.session() as s:
        return create_key(s, "fair-use-viewer", "viewer")[1]


def unique() -> str:
    # Names of their own: other tests apply files that refer to templates by name.
    return f"fair-{uuid.uuid4().hex[:8]}"


def from_address(addr: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": addr}}


def template(client, **fields) -> dict:
    body = {"name": unique(), "prompt": "p", "agent": "manual", **fields}
    resp = client.post("/api/workflows", json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["template"]


def pipeline(client) -> dict:
    tid = template(client)["id"]
    resp = client.post("/api/pipelines", json={"name": unique(), "steps": [
        {"template_id": tid}, {"template_id": tid}]}, headers=ADMIN)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["pipeline"]


def start(client, pipeline_id: int, **extra):
    resp = client.post("/api/pipelines/run", headers=ADMIN,
                       json={"action": "start", "pipeline_id": pipeline_id, **extra})
    if resp.status_code == 201:
        STARTED.append(resp.get_json()["run"]["id"])
    return resp


# -- rate limits -------------------------------------------------------------------------


def test_a_flood_of_random_keys_is_limited_by_address(settings, viewer):
    client = make_app(settings, rate_limit=5).test_client()
    flood = [client.get("/api/workflows", headers={"x-api-key": f"po_{uuid.uuid4().hex}"},
                        **from_address("10.1.0.1")).status_code for _ in range(8)]
    assert flood[:5] == [401] * 5 and flood[5:] == [429] * 3, flood
    limited = client.get("/api/workflows", **from_address("10.1.0.1"))  # no key at all
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 3601
    assert "rate limit" in limited.get_json()["error"]
    # A valid key is not throttled by the flood: not from another address, nor (once it
    # authenticates, its own bucket applies) from the flooding one.
    for addr in ("10.1.0.2", "10.1.0.1"):
        for _ in range(7):
            assert client.get("/api/workflows", headers={"x-api-key": viewer},
                              **from_address(addr)).status_code == 200
    # Probes are never counted.
    assert client.get("/healthz", **from_address("10.1.0.1")).status_code == 200


def test_a_keys_mutations_have_their_own_bucket(settings):
    client = make_app(settings, rate_limit=3).test_client()
    with db.session() as s:
        op = {"x-api-key": create_key(s, "fair-use-op", "operator")[1]}
    got = [client.post("/api/workflows", json={"name": unique(), "prompt": "p"}, headers=op,
                       **from_address(f"10.2.0.{i}")).status_code for i in range(5)]
    assert got == [201, 201, 201, 429, 429], got
    assert client.get("/api/workflows", headers=op).status_code == 200  # reads are not


def test_callbacks_with_a_valid_secret_are_not_counted_by_address(settings, client):
    pid = pipeline(client)["id"]
    urls = []
    for _ in range(3):
        run_id = start(client, pid).get_json()["run"]["id"]
        for step in (0, 1):
            secret = uuid.uuid4().hex
            with db.session() as s:
                s.execute(update(RunStep)
                          .where(RunStep.run_id == run_id, RunStep.step_index == step)
                          .values(callback_secret_hash=callbacks.secret_hash(
                              run_id, step, 1, secret)))
            urls.append(f"/api/callbacks/{run_id}/{step}/1?secret={secret}")
    client = make_app(settings, rate_limit=3).test_client()
    gateway = from_address("10.3.0.1")
    # Six steps report from one gateway address, over its budget of 3: none is limited
    # (the steps are pending, so each callback is a 409 that changes nothing).
    assert [client.post(u, json={"success": True}, **gateway).status_code
            for u in urls] == [409] * 6
    # Wrong secrets from that address are refusals counted by address.
    wrong = [client.post(urls[0].split("?")[0] + "?secret=nope", json={"success": True},
                         **gateway).status_code for _ in range(4)]
    assert wrong == [404, 404, 404, 429], wrong
    # Its address is now over budget, yet a valid callback from it still gets through.
    assert client.post(urls[2], json={"success": True}, **gateway).status_code == 409
    # One step's own callbacks have their own bucket, wherever they come from (this
    # step reported once above).
    again = [client.post(urls[1], json={"success": True}, **from_address("10.3.0.2"))
             .status_code for _ in range(3)]
    assert again == [409, 409, 429], again


def test_an_unreachable_limiter_lets_requests_through(settings):
    client = make_app(settings, rate_limit=1, broker_url="redis://127.0.0.1:1/0").test_client()
    assert [client.get("/api/workflows").status_code for _ in range(3)] == [401] * 3
    assert client.get("/api/workflows", headers=ADMIN).status_code == 200


# -- paging ------------------------------------------------------------------------------


@pytest.mark.parametrize("path,key", [("/api/workflows", "templates"),
                                      ("/api/pipelines", "pipelines")])
def test_lists_page_with_limit_and_offset_and_say_the_total(client, path, key):
    for _ in range(3):
        pipeline(client)
    whole = client.get(path, headers=ADMIN).get_json()
    assert whole["total"] == len(whole[key]) >= 3
    ids = [item["id"] for item in whole[key]]
    assert ids == sorted(ids)
    first = client.get(f"{path}?limit=2", headers=ADMIN).get_json()
    assert [i["id"] for i in first[key]] == ids[:2] and first["total"] == whole["total"]
    rest = client.get(f"{path}?limit=1000&offset=2", headers=ADMIN).get_json()
    assert [i["id"] for i in rest[key]] == ids[2:]
    assert client.get(f"{path}?offset={len(ids)}", headers=ADMIN).get_json()[key] == []
    if key == "pipelines":  # a page's steps are its own pipelines' steps
        assert rest[key][0]["steps"] == whole[key][2]["steps"]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-1", "limit=x", "limit=",
                                   "offset=-1", "offset=1.5", "offset=" + "9" * 5000])
@pytest.mark.parametrize("path", ["/api/workflows", "/api/pipelines"])
def test_bad_paging_values_are_400(client, path, query):
    resp = client.get(f"{path}?{query}", headers=ADMIN)
    assert resp.status_code == 400, resp.get_json()
    name = query.split("=")[0]
    assert resp.get_json()["error"].startswith(f"{name} must be an integer"), resp.get_json()


# -- 64 KiB caps, run lists --------------------------------------------------------------


def sized(n: int) -> dict:
    """A JSON object of exactly n bytes, serialized compactly."""
    return {"x": "a" * (n - len('{"x":""}'))}


def test_parameters_and_inputs_are_capped_at_64_kib(client, database_url):
    pid = pipeline(client)["id"]
    assert template(client, parameters=sized(65536))["parameters"] == sized(65536)
    full = start(client, pid, inputs=sized(65536))
    assert full.status_code == 201
    finished = full.get_json()["run"]["id"]
    assert client.post("/api/pipelines/run", headers=ADMIN, json={
        "action": "cancel", "run_id": finished}).status_code == 202
    before = state_digest(database_url)
    tid = template(client)["id"]
    after_template = state_digest(database_url)
    refused = [
        client.post("/api/workflows", headers=ADMIN,
                    json={"name": "big", "prompt": "p", "parameters": sized(65537)}),
        client.put("/api/workflows", headers=ADMIN, json={"id": tid, "parameters": sized(65537)}),
        start(client, pid, inputs=sized(65537)),
        client.post("/api/pipelines/run", headers=ADMIN, json={
            "action": "rerun", "run_id": finished, "inputs": sized(65537)}),
    ]
    for resp in refused:
        assert resp.status_code == 400
        assert "64 KiB" in resp.get_json()["error"]
    assert state_digest(database_url) == after_template != before
    # The whole body's own limit still answers 413.
    huge = start(client, pid, inputs=sized(2 * 1024 * 1024))
    assert huge.status_code == 413


def test_run_lists_omit_outputs_and_inputs_and_single_runs_have_them(client):
    pid = pipeline(client)["id"]
    run = start(client, pid, inputs={"topic": "fair use"}).get_json()["run"]
    advanced = client.post("/api/pipelines/run", headers=ADMIN, json={
        "action": "advance", "run_id": run["id"], "success": True, "output": "step one said"})
    assert advanced.status_code == 202
    whole = client.get(f"/api/pipelines/run?id={run['id']}", headers=ADMIN).get_json()["run"]
    assert whole["inputs"] == {"topic": "fair use"} and whole["output_omitted"] is False
    assert whole["steps_snapshot"][0]["output"] == "step one said"
    listed = client.get(f"/api/pipelines/run?pipeline_id={pid}", headers=ADMIN).get_json()["runs"]
    short = next(r for r in listed if r["id"] == run["id"])
    assert set(short) == set(whole)
    assert short["output_omitted"] is True and short["inputs"] == {}
    assert [s["output"] for s in short["steps_snapshot"]] == [None, None]
    assert short["steps_snapshot"][0]["status"] == whole["steps_snapshot"][0]["status"]


# -- hardening headers -------------------------------------------------------------------


@pytest.mark.parametrize("path,headers,status", [
    ("/api/nothing-here", ADMIN, 404),
    ("/api/workflows", {}, 401),
    ("/api/workflows", ADMIN, 200),
    ("/healthz", {}, 200),
])
def test_hardening_headers_on_every_response(client, path, headers, status):
    resp = client.get(path, headers=headers)
    assert resp.status_code == status
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"


def test_html_has_a_content_security_policy(client):
    page = client.get("/")
    assert page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
