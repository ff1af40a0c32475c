"""`edit_role = "admin"` on a profile, over every role: only an admin writes a template on
it (create, change, move onto or off it); anyone who may run pipelines still runs them.
Every refusal is a JSON 403 that names the role needed and changes nothing stored. The
test agents file's `admin-sh` profile is the admin-only one."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.profiles import ProfileError, load_profiles
from tests.reliability.test_access import admin, call
from tests.support import state_digest

WHO = ["viewer", "operator", "admin", "admin-db"]


def on(agent: str) -> dict:
    return {"name": f"t-{uuid.uuid4().hex[:6]}", "prompt": "echo hi", "agent": agent}


def created(client, agent: str) -> int:
    return admin(client, "post", "/api/workflows", on(agent), 201)["template"]["id"]


def expect(resp, who: str, what: str, ok: int, settings, before: str) -> None:
    body = resp.get_json()
    if who in ("admin", "admin-db"):
        assert resp.status_code == ok, (what, body)
        return
    assert resp.status_code == 403, (what, body)
    assert set(body) == {"error"}
    if who == "operator":
        assert "needs the admin role" in body["error"] and "'admin-sh'" in body["error"]
        assert "your key has operator" in body["error"]
    assert state_digest(settings.database_url) == before, what


def changes(client) -> dict[str, tuple[dict, int]]:
    """Each write the rule covers, as (body, method)."""
    return {
        "create": (on("admin-sh"), "post"),
        "move onto": ({"id": created(client, "echo"), "agent": "admin-sh"}, "put"),
        "edit on": ({"id": created(client, "admin-sh"), "prompt": "echo changed"}, "put"),
        "move off": ({"id": created(client, "admin-sh"), "agent": "echo"}, "put"),
    }


@pytest.mark.parametrize("who", WHO)
def test_only_an_admin_writes_a_template_on_an_admin_only_profile(client, role_keys,
                                                                   settings, who):
    for what, (body, method) in changes(client).items():
        before = state_digest(settings.database_url)
        resp = call(client, method, "/api/workflows", role_keys[who], json=body)
        expect(resp, who, what, 201 if method == "post" else 200, settings, before)
        resp.close()


@pytest.mark.parametrize("who", ["operator", "admin"])
def test_other_profiles_are_unchanged(client, role_keys, who):
    resp = call(client, "post", "/api/workflows", role_keys[who], json=on("sh"))
    assert resp.status_code == 201
    tid = resp.get_json()["template"]["id"]
    resp = call(client, "put", "/api/workflows", role_keys[who],
                json={"id": tid, "prompt": "echo again"})
    assert resp.status_code == 200


def test_body_validation_comes_before_the_edit_role(client, role_keys):
    resp = call(client, "post", "/api/workflows", role_keys["operator"],
                json={**on("admin-sh"), "retries": "many"})
    assert resp.status_code == 400


def test_an_operator_runs_a_pipeline_of_admin_only_templates(client, role_keys):
    tid = created(client, "admin-sh")
    pid = admin(client, "post", "/api/pipelines",
                {"name": f"p-{uuid.uuid4().hex[:6]}", "steps": [{"template_id": tid}] * 2},
                201)["pipeline"]["id"]
    resp = call(client, "post", "/api/pipelines/run", role_keys["operator"],
                json={"action": "start", "pipeline_id": pid})
    assert resp.status_code == 201, resp.get_json()


def test_an_unknown_edit_role_is_refused_when_profiles_load(tmp_path):
    path = tmp_path / "agents.toml"
    path.write_text('[agents.x]\nruntime = "echo"\nedit_role = "root"\n')
    with pytest.raises(ProfileError, match="agents.x: edit_role"):
        load_profiles(str(path))
