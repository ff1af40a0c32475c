"""Issue 11's escalation, tried against the live stack: an operator's shell template that
prints the worker's environment finds no key to become admin with."""

from __future__ import annotations

from tests.conftest import ADMIN_KEY
from tests.support import Api


def test_an_operator_cannot_read_the_service_secrets_through_a_step(api):
    operator = Api(api.base, api.ok("POST", "/api/keys",
                                          {"name": "e2e-operator", "role": "operator"},
                                          201)["key"])
    refused = operator.call("POST", "/api/workflows",
                            {"name": "dump", "prompt": "env", "agent": "admin-sh"})
    assert refused.status_code == 403 and "admin" in refused.json()["error"]
    # On a profile an operator may use, the session's environment holds none of them.
    dump = operator.template("env; echo " + ADMIN_KEY.upper(), agent="sh")
    pipeline = operator.pipeline(dump["id"], dump["id"])
    done = operator.wait(operator.start(pipeline["id"])["id"])
    output = done["steps_snapshot"][0]["output"]
    assert done["status"] == "completed"
    env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert not {"API_KEY", "DATABASE_URL", "BROKER_URL", "AGENTS_FILE"} & set(env)
    assert output.splitlines()[-1] == "***"  # what it printed of the key is masked
    assert ADMIN_KEY.lower() not in output.lower()
