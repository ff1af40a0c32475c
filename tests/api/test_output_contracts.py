"""Output contracts on the live stack: a step whose first answer breaks its JSON Schema
fails that attempt with a precise reason; its retry sees the reason as `previous_error`,
answers within the contract, and the step ends `completed` at attempt 2; the next prompt
reads the answer as `steps[0].json`. A bad contract is refused on save."""

from __future__ import annotations

import json

SCHEMA = {"type": "object", "required": ["verdict"],
          "properties": {"verdict": {"enum": ["approve", "reject"]}}}
# First attempt: prose. The retry: JSON that carries the error it was shown.
REVIEW = """{% if step.attempt == 1 %}echo 'I think it looks fine'{% else %}cat <<'JSON'
{"verdict": "approve", "repaired": {{ previous_error | tojson }}}
JSON
{% endif %}"""


def test_a_retry_repairs_an_answer_the_contract_refused(api):
    review = api.template(REVIEW, retries=1, output_contract={"json_schema": SCHEMA})
    assert review["output_contract"] == {"json_schema": SCHEMA}
    report = api.template('echo "verdict={{ steps[0].json.verdict }}"')
    run = api.wait(api.start(api.pipeline(review["id"], report["id"])["id"])["id"])
    assert run["status"] == "completed", run
    first, second = run["steps_snapshot"]
    assert (first["status"], first["attempt"]) == ("completed", 2)
    (earlier,) = first["attempts"]
    assert earlier["error"].startswith("output contract: the output is not JSON")
    assert json.loads(first["output"]) == {"verdict": "approve", "repaired": earlier["error"]}
    assert second["output"].strip() == "verdict=approve"


def test_an_answer_that_stays_outside_the_contract_fails_the_step(api):
    tid = api.template("echo '{\"verdict\": \"maybe\"}'",
                       output_contract={"json_schema": SCHEMA})["id"]
    after = api.template("echo after")["id"]
    run = api.wait(api.start(api.pipeline(tid, after)["id"])["id"])
    assert run["status"] == "failed"
    step = run["steps_snapshot"][0]
    assert step["error"] == ("output contract: 'maybe' is not one of ['approve', 'reject'] "
                             "(at verdict)")
    assert json.loads(step["output"]) == {"verdict": "maybe"}, "the output is kept"


def test_a_regex_contract(api):
    ok = api.template("echo 'tests: 12 PASSED'", output_contract={"regex": r"\d+ PASSED"})
    bad = api.template("echo 'tests: 3 FAILED'", output_contract={"regex": r"\d+ PASSED"})
    done = api.wait(api.start(api.pipeline(ok["id"], bad["id"])["id"])["id"])
    assert [s["status"] for s in done["steps_snapshot"]] == ["completed", "failed"]
    assert done["steps_snapshot"][1]["error"] == (
        r"output contract: no match for /\d+ PASSED/ in the output")


def test_a_bad_contract_is_refused_on_save_and_stores_nothing(api):
    # (Not a digest of every table: the live stack's worker writes beside this test.)
    before = api.ok("GET", "/api/workflows?limit=1")["total"]
    for contract in ({"json_schema": {"type": 12}}, {"regex": "(("}, {"xpath": "/a"}):
        resp = api.call("POST", "/api/workflows", {"name": "c", "prompt": "echo",
                                                   "agent": "sh", "output_contract": contract})
        assert resp.status_code == 400 and "output_contract" in resp.json()["error"], resp.text
    assert api.ok("GET", "/api/workflows?limit=1")["total"] == before
