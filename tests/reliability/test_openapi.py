"""The OpenAPI document is served, and it and the app's routes describe the same API."""

from __future__ import annotations

import json
import re

from api.openapi import build, openapi_path, registered_operations
from tests.reliability.conftest import make_app


def test_document_is_served_without_a_key_and_matches_the_routes(app, client):
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    doc = resp.get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == registered_operations(app)


def test_every_error_status_the_api_uses_is_documented_where_it_can_happen(client):
    doc = client.get("/api/openapi.json").get_json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if op.get("security"):
                assert {"401", "403", "503"} <= codes, (path, method)
            if "requestBody" in op:
                assert {"400", "413", "429"} <= codes, (path, method)
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert response == {"$ref": f"#/components/responses/E{code}"}


def test_a_route_without_a_document_entry_breaks_the_match(settings):
    """The check above is a real one: a route added with no entry in OPERATIONS shows."""
    app = make_app(settings)
    app.add_url_rule("/api/undocumented", "undocumented", lambda: {}, methods=["GET"])
    documented = {(path, method) for path, ops in build(app)["paths"].items() for method in ops}
    assert registered_operations(app) - documented == {("/api/undocumented", "get")}


def test_every_reference_in_the_document_resolves(client):
    doc = client.get("/api/openapi.json").get_json()
    refs = set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', json.dumps(doc)))
    assert refs and all(name in doc["components"][kind] for kind, name in refs), refs
    # Component names of the hand-written document stay, for clients generated from it.
    schemas = doc["components"]["schemas"]
    assert schemas["PipelineStepIn"] == {"$ref": "#/components/schemas/StepIn"}
    assert schemas["Callback"] == {"$ref": "#/components/schemas/CallbackBody"}


def test_request_bodies_are_the_validating_models_schemas(client):
    """A body's schema is its pydantic model's, and each enum lists the vocab's values."""
    schemas = client.get("/api/openapi.json").get_json()["components"]["schemas"]
    assert schemas["PipelineCreate"]["properties"]["steps"]["items"] == {
        "$ref": "#/components/schemas/StepIn"}
    assert schemas["StepIn"]["properties"]["on_failure"]["$ref"].endswith("/OnFailure")
    assert schemas["OnFailure"]["enum"] == ["stop", "continue"]
    assert schemas["RunIf"]["enum"] == ["on_success", "on_failure", "always"]
    assert schemas["Role"]["enum"] == ["viewer", "operator", "admin"]
    assert schemas["RunStatus"]["enum"] == ["pending", "running", "completed", "failed",
                                            "cancelled"]
    assert schemas["StepStatus"]["enum"] == ["pending", "running", "completed", "failed",
                                             "skipped"]
    assert schemas["AdvanceRun"]["required"] == ["action", "run_id", "success"]
    assert schemas["TemplateCreate"]["anyOf"] == [{"required": ["prompt"]},
                                                  {"required": ["task_prompt"]}]


def test_each_operation_documents_the_role_its_view_requires(app, client):
    doc = client.get("/api/openapi.json").get_json()
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            op = doc["paths"].get(openapi_path(rule.rule), {}).get(method.lower())
            if op is None:
                continue  # not part of the JSON API (the UI): the test above holds the rest
            if hasattr(view, "required_role"):
                assert op.get("x-required-role") == view.required_role, (rule.rule, method)
