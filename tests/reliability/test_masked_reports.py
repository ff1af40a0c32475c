"""Text that people and gateways report is stored with known secrets masked too: an
advance's error and output, and a gateway callback's report."""

from __future__ import annotations

from orchestrator import callbacks, db, run_queries, runs
from tests.conftest import ADMIN_KEY
from tests.factories import make_pipeline, make_run, make_template
from tests.reliability.test_access import admin, manual_run


def test_an_advance_stores_the_bootstrap_key_masked(client):
    rid = manual_run(client)
    admin(client, "post", "/api/pipelines/run",
          {"action": "advance", "run_id": rid, "step_index": 0, "success": True,
           "output": f"got {ADMIN_KEY.upper()}"}, 202)
    run = admin(client, "post", "/api/pipelines/run",
                {"action": "advance", "run_id": rid, "step_index": 1, "success": False,
                 "error": f"failed with key={ADMIN_KEY.swapcase()}"}, 202)["run"]
    steps = run["steps_snapshot"]
    assert steps[0]["output"] == "got ***" and steps[1]["error"] == "failed with key=***"
    assert ADMIN_KEY.lower() not in str(admin(client, "get", f"/api/pipelines/run?id={rid}"))


def test_a_callback_report_is_stored_masked(settings, client):
    # The in-process app has learnt the bootstrap key, as an API process does at start.
    with db.session() as s:
        tpl = make_template(s, agent="manual")
        rid = make_run(s, make_pipeline(s, templates=[tpl, make_template(s)])).run.id
        assert runs.claim_step(s, rid, 0, 1, "test:1", 30).accepted
    with db.session() as s:
        report = callbacks.Report(success=False, error=f"gateway saw {ADMIN_KEY.upper()}",
                                  output=f"{ADMIN_KEY[-8:]} and more", output_truncated=True)
        assert callbacks.resolve(s, rid, 0, 1, report).accepted
    with db.session() as s:
        _, steps = run_queries.load_run(s, rid)
    assert steps[0].error == "gateway saw ***"
    # Kept from where the gateway cut its output, which fell inside the key.
    assert steps[0].output == "*** and more"
