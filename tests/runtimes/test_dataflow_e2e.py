"""Steps that feed each other, recovery steps, and retries, through the live stack."""

from __future__ import annotations

import pytest

from tests.runtimes import fakes
from tests.runtimes.helpers import events


def test_three_step_pipeline_feeds_each_step_the_earlier_outputs(rt_api, llm, gateway, model):
    llm.script(model, fakes.reply("Adds a retry on 429 and drops a sleep."))
    gateway.on(model, callback={"success": True, "output": "posted as msg 81"}, delay=0.2)
    fetch = rt_api.template("printf '+ retry(on=429)\\n- sleep(1)\\n'", agent="sh",
                            name="Fetch diff")
    summarise = rt_api.template(
        "Summarise this diff for {{ inputs.repo }}:\n{{ steps[0].output }}",
        agent="llm", model=model, name="Summarise")
    post = rt_api.template(
        "Post to #{{ inputs.channel }}: {{ steps['Summarise'].output }}",
        agent="gw", model=model, name="Post")
    pipeline = rt_api.pipeline(fetch["id"], summarise["id"], post["id"])
    run = rt_api.start(pipeline["id"], inputs={"repo": "acme/api", "channel": "releases"})
    done = rt_api.wait(run["id"])
    assert done["status"] == "completed", done
    assert [s["output"] for s in done["steps_snapshot"]] == [
        "+ retry(on=429)\n- sleep(1)\n", "Adds a retry on 429 and drops a sleep.",
        "posted as msg 81"]
    [asked] = llm.requests_for(model)
    assert asked.body["messages"] == [{"role": "user", "content":
                                       "Summarise this diff for acme/api:\n"
                                       "+ retry(on=429)\n- sleep(1)\n"}]
    [spawned] = gateway.spawns(model)
    assert spawned.body["prompt"] == "Post to #releases: Adds a retry on 429 and drops a sleep."


def test_a_prompt_that_does_not_render_fails_its_step_before_any_session(rt_api, llm, model):
    first = rt_api.template("echo hi", name="Greet")
    typo = rt_api.template("Summarise {{ inputs.repo }}: {{ steps[0].outptu }}", agent="llm",
                           model=model)
    run = rt_api.start(rt_api.pipeline(first["id"], typo["id"])["id"],
                       inputs={"repo": "acme/api"})
    done = rt_api.wait(run["id"])
    assert done["status"] == "failed"
    step = done["steps_snapshot"][1]
    assert (step["status"], step["spawn_id"], step["output"]) == ("failed", None, None)
    assert step["error"] == ("prompt does not render: 'dict object' has no attribute 'outptu' "
                             "(inputs: repo; earlier steps: steps[0] ('Greet'))")
    # One that does not even parse never gets stored (tests/api/test_prompt_syntax.py).
    broken = rt_api.call("POST", "/api/workflows", {
        "name": "broken", "prompt": "{% if inputs.repo %}unclosed", "agent": "llm"})
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("prompt: does not parse as a template (line 1: ")
    assert not [s for s in llm.seen if s.body and s.body.get("model") == model]


def test_a_recovery_step_runs_only_after_a_failure(rt_api):
    deploy = rt_api.template(
        "echo deploying {{ inputs.version }}\n"
        "{% if inputs.break %}echo 'health check failed' >&2; exit 1{% endif %}",
        name="Deploy")
    smoke = rt_api.template("smoke-test {{ inputs.version }}", agent="echo", name="Smoke test")
    rollback = rt_api.template("Roll back {{ inputs.version }}: {{ steps['Deploy'].error }}",
                               agent="echo", name="Roll back")
    notify = rt_api.template("Deploy of {{ inputs.version }}: {{ steps[0].status }}",
                             agent="echo", name="Notify")
    pipeline = rt_api.pipeline(
        deploy["id"], smoke["id"],
        {"template_id": rollback["id"], "run_if": "on_failure"},
        {"template_id": notify["id"], "run_if": "always"})
    bad = rt_api.start(pipeline["id"], inputs={"version": "1.4.2", "break": True})
    good = rt_api.start(pipeline["id"], inputs={"version": "1.4.3", "break": False})
    bad_done, good_done = rt_api.wait(bad["id"]), rt_api.wait(good["id"])
    assert bad_done["status"] == "failed"
    assert [(s["status"], s["output"]) for s in bad_done["steps_snapshot"]] == [
        ("failed", "deploying 1.4.2\n"),
        ("skipped", None),
        ("completed", "Roll back 1.4.2: exit status 1: health check failed"),
        ("completed", "Deploy of 1.4.2: failed"),
    ]
    assert good_done["status"] == "completed"
    assert [(s["status"], s["output"]) for s in good_done["steps_snapshot"]] == [
        ("completed", "deploying 1.4.3\n"),
        ("completed", "smoke-test 1.4.3"),
        ("skipped", None),
        ("completed", "Deploy of 1.4.3: completed"),
    ]


# The table in docs/runtimes.md: what the steps after a first step become, for each run_if.
RUN_IF_TABLE = {
    # first step → (statuses of [first, on_success, on_failure, always], run status)
    "completed": (["completed", "completed", "skipped", "completed"], "completed"),
    "failed, on_failure continue": (["failed", "completed", "completed", "completed"],
                                    "completed"),
    "failed, on_failure stop": (["failed", "skipped", "completed", "completed"], "failed"),
}


def test_run_if_statuses_match_the_documented_table(rt_api):
    ok = rt_api.template("true")["id"]
    bad = rt_api.template("false")["id"]
    echo = rt_api.template("x", agent="echo")["id"]
    tail = [{"template_id": echo, "run_if": r} for r in ("on_success", "on_failure", "always")]
    firsts = {
        "completed": {"template_id": ok},
        "failed, on_failure continue": {"template_id": bad, "on_failure": "continue"},
        "failed, on_failure stop": {"template_id": bad, "on_failure": "stop"},
    }
    started = {case: rt_api.start(rt_api.pipeline(first, *tail)["id"])["id"]
               for case, first in firsts.items()}
    for case, rid in started.items():
        done = rt_api.wait(rid)
        statuses, run_status = RUN_IF_TABLE[case]
        assert ([s["status"] for s in done["steps_snapshot"]], done["status"]) == (
            statuses, run_status), case


@pytest.fixture
def counter(tmp_path):
    return str(tmp_path / "count")


def test_a_command_step_is_retried_as_new_attempts_with_backoff(rt_api, rt_database_url,
                                                                 counter):
    script = ("n=$(cat {{ inputs.counter }} 2>/dev/null || echo 0); n=$((n+1)); "
              "echo $n > {{ inputs.counter }}; echo attempt $n; "
              "[ $n -ge 3 ] || { echo not yet >&2; exit 1; }")
    flaky = rt_api.template(script, retries=2, retry_backoff_seconds=0.5)
    after = rt_api.template("echo after")
    run = rt_api.start(rt_api.pipeline(flaky["id"], after["id"])["id"],
                       inputs={"counter": counter})
    done = rt_api.wait(run["id"])
    assert done["status"] == "completed", done
    step = done["steps_snapshot"][0]
    assert (step["attempt"], step["output"], step["error"]) == (3, "attempt 3\n", None)
    spawned = [e for e in events(rt_database_url, run["id"], "step.spawned")
               if e["step_index"] == 0]
    assert [e["attempt"] for e in spawned] == [1, 2, 3]
    assert len({e["spawn_id"] for e in spawned}) == 3
    assert step["spawn_id"] == spawned[-1]["spawn_id"]
    # backoff doubles: 0.5 s before attempt 2, 1 s before attempt 3 (lower bounds only)
    assert spawned[1]["at"] - spawned[0]["at"] >= 0.5
    assert spawned[2]["at"] - spawned[1]["at"] >= 1.0
    failed = [e for e in events(rt_database_url, run["id"], "step.pending")
              if e["step_index"] == 0]
    assert [e["error"] for e in failed] == ["exit status 1: not yet"] * 2


def test_on_failure_applies_only_after_the_last_attempt(rt_api, rt_database_url):
    always_bad = rt_api.template("echo nope >&2; exit 2", retries=1)
    after = rt_api.template("echo after")
    run = rt_api.start(rt_api.pipeline(always_bad["id"], after["id"])["id"])
    done = rt_api.wait(run["id"])
    assert done["status"] == "failed"
    step = done["steps_snapshot"][0]
    assert (step["status"], step["attempt"], step["error"]) == (
        "failed", 2, "exit status 2: nope")
    assert done["steps_snapshot"][1]["status"] == "skipped"
    spawned = events(rt_database_url, run["id"], "step.spawned")
    assert [(e["step_index"], e["attempt"]) for e in spawned] == [(0, 1), (0, 2)]


def test_a_command_step_reports_usage_through_its_usage_file(rt_api):
    spend = rt_api.template(
        """echo '{"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.021, """
        """"model": "local"}' > "$ORCH_USAGE_FILE"; echo done""")
    silent = rt_api.template("echo nothing to report")
    cheap = rt_api.template("""echo '{"prompt_tokens": 10, "completion_tokens": 5}' """
                            """> "$ORCH_USAGE_FILE" """)
    run = rt_api.wait(rt_api.start(rt_api.pipeline(spend["id"], silent["id"],
                                                   cheap["id"])["id"])["id"])
    assert run["status"] == "completed", run
    first, second, third = run["steps_snapshot"]
    assert first["usage"] == {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.021,
                              "model": "local"}
    assert second["usage"] is None
    assert third["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "input_tokens": 10,
                              "output_tokens": 5, "cost_usd": None}, "no price: no cost"
    assert run["usage"] == {"input_tokens": 1210, "output_tokens": 305, "cost_usd": 0.021}
    listed = rt_api.ok("GET", f"/api/pipelines/run?pipeline_id={run['pipeline_id']}")["runs"]
    assert listed[0]["usage"] == run["usage"]
