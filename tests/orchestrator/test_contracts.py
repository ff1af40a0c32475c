"""Output contracts: what is refused on save, what fails a step and how it says why,
and what later prompts see (`steps[i].json`, `previous_error`)."""

from __future__ import annotations

import time

import pytest

from orchestrator import contracts, prompts

SCHEMA = {"json_schema": {"type": "object", "required": ["verdict"],
                          "properties": {"verdict": {"enum": ["approve", "reject"]},
                                         "score": {"type": "integer"}}}}


@pytest.mark.parametrize("bad, error", [
    ({"json_schema": {"type": "nonsense"}}, "not a valid schema"),
    ({"json_schema": []}, "must be a JSON Schema"),
    ({"regex": "(unclosed"}, "does not compile"),
    ({"regex": ""}, "1 to 2000"),
    ({"regex": "a", "json_schema": {}}, "must be null"),
    ({"grep": "a"}, "must be null"),
    ("a string", "must be null"),
])
def test_a_bad_contract_is_refused(bad, error):
    with pytest.raises(contracts.InvalidContract, match=error):
        contracts.check_contract(bad)


def test_a_json_schema_contract_says_what_is_wrong_and_where():
    assert contracts.violation(SCHEMA, '{"verdict": "approve", "score": 3}') is None
    assert contracts.violation(SCHEMA, "looks good to me") == (
        "output contract: the output is not JSON (Expecting value: line 1 column 1 (char 0))")
    assert contracts.violation(SCHEMA, '{"verdict": "maybe"}') == (
        "output contract: 'maybe' is not one of ['approve', 'reject'] (at verdict)")
    assert contracts.violation(SCHEMA, '{"score": 1}') == (
        "output contract: 'verdict' is a required property")
    assert contracts.parsed(SCHEMA, '{"verdict": "reject"}') == {"verdict": "reject"}
    assert contracts.parsed(SCHEMA, "not json") is None
    assert contracts.parsed(None, '{"a": 1}') is None


def test_a_regex_contract_is_a_search_with_a_time_bound():
    assert contracts.violation({"regex": r"PASS(ED)?"}, "tests: 12 PASSED in 3 s") is None
    assert contracts.violation({"regex": r"^PASS$"}, "FAIL") == (
        "output contract: no match for /^PASS$/ in the output")
    started = time.monotonic()  # a pattern that backtracks without end, on 5,000 characters
    why = contracts.violation({"regex": r"(x+x+)+y"}, "x" * 5000)
    assert why == "output contract: the pattern took longer than 1 s to search"
    assert time.monotonic() - started < contracts.REGEX_SECONDS + 2


def test_later_prompts_see_the_parsed_json_and_a_retry_its_previous_error():
    class Step:
        step_index, template_name, status, attempt, error = 0, "Review", "completed", 1, None
        output = '{"verdict": "approve", "score": 9}'
        output_contract = SCHEMA

    rendered = prompts.render_prompt(
        "{{ steps[0].json.verdict }} {{ steps[0].json.score + 1 }}|{{ previous_error }}|",
        {}, [Step()], step={"attempt": 1, "previous_error": None})
    assert rendered == "approve 10||"
    retry = prompts.render_prompt("fix: {{ previous_error }}", {}, [],
                                  step={"attempt": 2, "previous_error": "output contract: x"})
    assert retry == "fix: output contract: x"


def test_a_schema_is_held_to_the_same_time_bound_and_never_crashes_the_checker():
    started = time.monotonic()
    slow = {"json_schema": {"type": "string", "pattern": "(x+x+)+y"}}
    assert contracts.violation(slow, '"' + "x" * 5000 + '"') == (
        "output contract: the pattern '(x+x+)+y' took longer than 1 s to search")
    keyed = {"json_schema": {"type": "object", "patternProperties": {
        "(x+x+)+y": {"type": "integer"}, "^n": {"type": "integer"}}}}
    assert contracts.violation(keyed, '{"' + "x" * 5000 + '": 1}').endswith(
        "took longer than 1 s to search")
    assert contracts.violation(keyed, '{"n1": "one"}') == (
        "output contract: 'one' is not of type 'integer' (at n1)")
    assert time.monotonic() - started < 2 * contracts.REGEX_SECONDS + 2
    remote = {"json_schema": {"$ref": "http://169.254.169.254/schema"}}
    assert contracts.violation(remote, "{}").startswith(
        "output contract: the schema cannot be applied: Unresolvable")
    assert contracts.violation({"json_schema": {"pattern": "^a"}}, '"abc"') is None
