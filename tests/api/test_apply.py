"""POST /api/apply: a document of templates and pipelines, applied whole or not at all."""

from __future__ import annotations

import uuid

import pytest

from orchestrator import pipelines_file as pf
from tests.support import state_digest

APPLY = "/api/apply"


def tag() -> str:
    return uuid.uuid4().hex[:8]


def document(t: str) -> dict:
    return {
        "templates": [
            {"name": f"{t}-lint", "prompt": "lint it", "agent": "echo"},
            {"name": f"{t}-test", "prompt": "test it", "agent": "echo", "timeout_seconds": 600},
        ],
        "pipelines": [{"name": f"{t}-ci", "steps": [f"{t}-lint", {"template": f"{t}-test",
                                                                   "on_failure": "continue"}]}],
    }


def test_a_document_is_created_then_unchanged(api):
    t = tag()
    first = api.ok("POST", APPLY, document(t))
    assert first["dry_run"] is False
    assert [(c["kind"], c["action"], c["name"]) for c in first["changes"]] == [
        ("template", "create", f"{t}-lint"), ("template", "create", f"{t}-test"),
        ("pipeline", "create", f"{t}-ci")]
    pipeline = next(p for p in api.ok("GET", "/api/pipelines")["pipelines"]
                    if p["name"] == f"{t}-ci")
    assert pipeline["id"] == first["changes"][2]["id"]
    assert [(s["template_name"], s["on_failure"]) for s in pipeline["steps"]] == [
        (f"{t}-lint", "stop"), (f"{t}-test", "continue")]
    again = api.ok("POST", APPLY, document(t))
    assert {c["action"] for c in again["changes"]} == {"unchanged"}


@pytest.mark.parametrize(("bad", "says"), [
    ({"name": "x", "prompt": "p", "agent": "echo", "timeout_seconds": 5}, "timeout_seconds"),
    ({"name": "x", "prompt": "p", "agent": "no-such-profile"},
     "unknown agent profile 'no-such-profile'"),
    ({"name": "x", "prompt": "p", "colour": "red"}, "unknown field(s) colour"),
])
def test_a_document_whose_third_item_is_refused_changes_nothing(api, database_url, bad, says):
    t = tag()
    doc = document(t)
    bad = {**bad, "name": f"{t}-{bad['name']}"}
    doc["templates"].append(bad)
    doc["pipelines"][0]["steps"].append(bad["name"])
    before = state_digest(database_url)
    resp = api.call("POST", APPLY, doc)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert [(i["kind"], i["name"]) for i in body["items"]] == [("template", bad["name"])]
    assert says in body["items"][0]["error"] and says in body["error"]
    assert state_digest(database_url) == before, "a refused document was half applied"


def test_every_refused_item_is_listed(api, database_url):
    t = tag()
    doc = {"templates": [{"name": f"{t}-a", "prompt": "p", "agent": "nope"},
                         {"name": f"{t}-b", "prompt": "p", "agent": "echo", "retries": 99}],
           "pipelines": [{"name": f"{t}-p", "steps": [f"{t}-ghost", f"{t}-b"]}]}
    before = state_digest(database_url)
    resp = api.call("POST", APPLY, doc)
    assert resp.status_code == 400
    assert [(i["kind"], i["name"]) for i in resp.json()["items"]] == [
        ("pipeline", f"{t}-p"), ("template", f"{t}-a"), ("template", f"{t}-b")]
    assert state_digest(database_url) == before


def test_a_dry_run_plans_and_checks_and_writes_nothing(api, database_url):
    t = tag()
    api.ok("POST", APPLY, document(t))
    doc = document(t)
    doc["templates"][0]["prompt"] = "lint it harder"
    before = state_digest(database_url)
    plan = api.ok("POST", APPLY, {**doc, "dry_run": True})
    assert plan["dry_run"] is True
    [lint] = [c for c in plan["changes"] if c["action"] != "unchanged"]
    assert (lint["name"], lint["fields"]) == (f"{t}-lint", ["prompt"])
    assert lint["diff"] == {"prompt": {"from": "lint it", "to": "lint it harder"}}
    assert state_digest(database_url) == before


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"templates": [], "pipelines": [], "schedules": [{"cron": "* * * * *"}]}, 400,
     "schedules[0]: `pipeline` (a non-empty string) is required"),
    ({"templates": [], "dry_run": "yes"}, 400, "dry_run: must be true or false"),
    ({"templates": {"a": 1}}, 400, "`templates` must be a list"),
    ({"widgets": []}, 400, "unknown field(s) widgets"),
])
def test_bad_documents_are_refused(api, database_url, body, status, says):
    before = state_digest(database_url)
    resp = api.call("POST", APPLY, body)
    assert resp.status_code == status and says in resp.json()["error"], resp.text
    assert state_digest(database_url) == before


def test_empty_schedules_are_accepted(api):
    assert api.ok("POST", APPLY, {"templates": [], "pipelines": [], "schedules": []}) == {
        "dry_run": False, "changes": []}


def test_apply_needs_an_operator(api):
    viewer = api.ok("POST", "/api/keys", {"name": "v", "role": "viewer"}, 201)["key"]
    assert api.call("POST", APPLY, document(tag()), key=viewer).status_code == 403
    assert api.call("POST", APPLY, document(tag()), key="").status_code == 401


def test_export_and_apply_round_trip_with_two_templates_of_one_name(api):
    t = tag()
    first = api.template("first", agent="echo", name=f"{t}-dup")
    second = api.template("second", agent="echo", name=f"{t}-dup")
    pipeline = api.pipeline(first["id"], second["id"], name=f"{t}-both")
    templates = api.ok("GET", "/api/workflows")["templates"]
    pipelines = api.ok("GET", "/api/pipelines")["pipelines"]
    text = pf.export(templates, pipelines, [f"{t}-both"])
    doc = pf.load(text)
    assert [(d["id"], d["ref"]) for d in doc.templates] == [
        (first["id"], f"{t}-dup #{first['id']}"), (second["id"], f"{t}-dup #{second['id']}")]
    assert [s["template"] for s in doc.pipelines[0]["steps"]] == [
        f"{t}-dup #{first['id']}", f"{t}-dup #{second['id']}"]
    body = {"templates": doc.templates, "pipelines": doc.pipelines}
    assert {c["action"] for c in api.ok("POST", APPLY, body)["changes"]} == {"unchanged"}
    # an edit to one of the two reaches that one only
    doc.templates[1]["prompt"] = "second, edited"
    doc.pipelines[0]["steps"].reverse()
    changes = api.ok("POST", APPLY, body)["changes"]
    assert [(c["kind"], c["action"], c["id"]) for c in changes] == [
        ("template", "unchanged", first["id"]), ("template", "update", second["id"]),
        ("pipeline", "update", pipeline["id"])]
    by_id = {x["id"]: x for x in api.ok("GET", "/api/workflows")["templates"]}
    assert (by_id[first["id"]]["prompt"], by_id[second["id"]]["prompt"]) == (
        "first", "second, edited")
    steps = api.ok("GET", "/api/pipelines")["pipelines"]
    assert [s["template_id"] for p in steps if p["id"] == pipeline["id"]
            for s in p["steps"]] == [second["id"], first["id"]]


def test_a_name_two_templates_share_is_refused_without_an_id(api, database_url):
    t = tag()
    api.template("one", agent="echo", name=f"{t}-dup")
    api.template("two", agent="echo", name=f"{t}-dup")
    before = state_digest(database_url)
    resp = api.call("POST", APPLY, {"templates": [{"name": f"{t}-dup", "prompt": "p"}]})
    assert resp.status_code == 400
    assert "give the item the `id` it means" in resp.json()["items"][0]["error"]
    resp = api.call("POST", APPLY, {"pipelines": [{"name": f"{t}-p",
                                                  "steps": [f"{t}-dup", f"{t}-dup"]}]})
    assert resp.status_code == 400 and "more than one of" in resp.json()["error"]
    assert state_digest(database_url) == before
