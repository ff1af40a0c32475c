"""The OpenAPI document is served, and it and the app's routes describe the same API."""

from __future__ import annotations

from api.openapi import registered_operations


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
