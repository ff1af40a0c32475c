"""Every route that changes something says so in the audit log.

Each mutating route of the app (POST, PUT, DELETE in its url_map) is sent a valid request
and must add exactly the entries listed for it here. A route with no case here fails the
test until it gets one, or is listed in NOT_AUDITED with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.reliability.test_audit_idempotency import entries

MUTATING = {"POST", "PUT", "DELETE", "PATCH"}
# Mutating routes that write no audit entry, by endpoint (docs/reliability.md says why).
NOT_AUDITED = {
    # An agent gateway reporting its own step, with the step's secret and no API key: the
    # run's step (status, error, attempts) is its record, as for a worker's step.
    "callbacks.step_callback": "a step's own report",
}

Ids = dict[str, int]
Target = Callable[[Ids, dict[str, Any]], int | None]


def made(name: str, key: str) -> Target:
    """The entry targets the object the answer made; kept as `ids[name]` for later cases."""

    def target(ids: Ids, answer: dict[str, Any]) -> int:
        ids[name] = answer[key]["id"]
        return ids[name]

    return target


def kept(name: str) -> Target:
    return lambda ids, _answer: ids[name]


def applied(ids: Ids, answer: dict[str, Any]) -> int:
    """An apply's one entry targets the first pipeline it wrote."""
    for change in answer["changes"]:
        ids[f"applied-{change['kind']}"] = change["id"]
    return ids["applied-pipeline"]


def document(tag: str, dry_run: bool = False) -> dict[str, Any]:
    return {"templates": [{"name": f"{tag}-t", "prompt": "p", "agent": "manual"}],
            "pipelines": [{"name": f"{tag}-p", "steps": [f"{tag}-t"] * 2}], "dry_run": dry_run}


RUNS = "/api/pipelines/run"
TAG = uuid.uuid4().hex[:8]
# In order, each on what the ones before made: method, path, body, and the entry it adds
# (action, target type, target id), or None for a request that must add none.
CASES: list[tuple[str, str, Callable[[Ids], dict], tuple[str, str, Target] | None]] = [
    ("POST", "/api/workflows", lambda ids: {"name": TAG, "prompt": "p", "agent": "manual"},
     ("created", "template", made("template", "template"))),
    ("PUT", "/api/workflows", lambda ids: {"id": ids["template"], "name": f"{TAG}-2"},
     ("updated", "template", kept("template"))),
    ("POST", "/api/pipelines",
     lambda ids: {"name": TAG, "steps": [{"template_id": ids["template"]}] * 2},
     ("created", "pipeline", made("pipeline", "pipeline"))),
    ("PUT", "/api/pipelines", lambda ids: {"id": ids["pipeline"], "description": "d"},
     ("updated", "pipeline", kept("pipeline"))),
    ("POST", "/api/schedules", lambda ids: {"pipeline_id": ids["pipeline"], "cron": "0 3 * * *"},
     ("created", "schedule", made("schedule", "schedule"))),
    ("PUT", "/api/schedules", lambda ids: {"id": ids["schedule"], "enabled": False},
     ("updated", "schedule", kept("schedule"))),
    ("DELETE", "/api/schedules", lambda ids: {"id": ids["schedule"]},
     ("deleted", "schedule", kept("schedule"))),
    ("POST", "/api/hooks", lambda ids: {"url": "http://127.0.0.1:9/h", "events": ["run.failed"]},
     ("created", "hook", made("hook", "hook"))),
    ("PUT", "/api/hooks", lambda ids: {"id": ids["hook"], "enabled": False},
     ("updated", "hook", kept("hook"))),
    ("DELETE", "/api/hooks", lambda ids: {"id": ids["hook"]}, ("deleted", "hook", kept("hook"))),
    ("POST", RUNS, lambda ids: {"action": "start", "pipeline_id": ids["pipeline"]},
     ("started", "run", made("run", "run"))),
    ("POST", RUNS,
     lambda ids: {"action": "advance", "run_id": ids["run"], "success": True, "step_index": 0},
     ("advanced", "run", kept("run"))),
    ("POST", RUNS, lambda ids: {"action": "cancel", "run_id": ids["run"]},
     ("cancelled", "run", kept("run"))),
    ("POST", RUNS, lambda ids: {"action": "rerun", "run_id": ids["run"], "from_step": 0},
     ("rerun", "run", made("rerun", "run"))),
    ("POST", RUNS, lambda ids: {"action": "cancel", "run_id": ids["rerun"]},
     ("cancelled", "run", kept("rerun"))),
    ("POST", "/api/apply", lambda ids: document(TAG, dry_run=True), None),
    ("POST", "/api/apply", lambda ids: document(TAG), ("applied", "pipeline", applied)),
    ("POST", "/api/apply", lambda ids: document(TAG), None),  # all unchanged: writes nothing
    ("DELETE", "/api/pipelines", lambda ids: {"id": ids["applied-pipeline"]},
     ("deleted", "pipeline", kept("applied-pipeline"))),
    ("DELETE", "/api/workflows", lambda ids: {"id": ids["applied-template"]},
     ("deleted", "template", kept("applied-template"))),
    ("POST", "/api/keys", lambda ids: {"name": TAG, "role": "viewer"},
     ("created", "key", made("key", "key_row"))),
    ("DELETE", "/api/keys", lambda ids: {"id": ids["key"]}, ("revoked", "key", kept("key"))),
]


def test_every_mutating_route_has_a_case(app):
    adapter = app.url_map.bind("localhost")
    routes = {(method, rule.endpoint) for rule in app.url_map.iter_rules()
              for method in rule.methods & MUTATING}
    covered = {(method, adapter.match(path, method)[0]) for method, path, _, _ in CASES}
    missing = {(m, e) for m, e in routes - covered if e not in NOT_AUDITED}
    assert not missing, f"mutating routes with no audit case (add one, or NOT_AUDITED): {missing}"
    assert covered <= routes  # every case names a route that exists


def test_each_change_adds_exactly_its_entry(client, role_keys):
    headers = {"x-api-key": role_keys["admin-db"]}  # admin: the key routes need it
    ids: Ids = {}
    for method, path, body, expected in CASES:
        newest = entries(client, limit=1)
        last = newest[0]["id"] if newest else 0
        resp = client.open(path, method=method, json=body(ids), headers=headers)
        assert resp.status_code in (200, 201, 202), (method, path, resp.get_json())
        answer = resp.get_json()
        if "key" in answer:  # POST /api/keys answers the new key's row at the top level
            answer = {"key_row": answer}
        new = [(e["actor"], e["role"], e["action"], e["target_type"], e["target_id"],
                e["detail"]["request"])
               for e in reversed(entries(client, limit=10)) if e["id"] > last]
        want = []
        if expected is not None:
            action, target_type, target = expected
            want = [("rel-admin", "admin", action, target_type, target(ids, answer),
                     f"{method} {path}")]
        assert new == want, f"{method} {path} {body(ids)}"
