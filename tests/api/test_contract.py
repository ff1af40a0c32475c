"""Every error path of the API table (SPEC §3), each checked to change nothing."""

from __future__ import annotations

import time

import pytest

from tests.support import TERMINAL, state_digest

RUN = "/api/pipelines/run"


@pytest.fixture(scope="module")
def fixtures(api):
    manual = api.template("wait for a person", agent="manual")
    echo = api.template("hi", agent="echo")
    pipeline = api.pipeline(manual["id"], manual["id"])
    run = api.start(pipeline["id"])
    api.wait_step(run["id"], 0, "running")
    done = api.start(api.pipeline(echo["id"], echo["id"])["id"])
    api.wait(done["id"])
    viewer = api.ok("POST", "/api/keys", {"name": "viewer-1", "role": "viewer"}, 201)["key"]
    operator = api.ok("POST", "/api/keys", {"name": "op-1", "role": "operator"}, 201)["key"]
    return {
        "manual": manual, "echo": echo, "pipeline": pipeline, "run": run,
        "finished_run": done, "viewer": viewer, "operator": operator,
    }


@pytest.fixture
def unchanged(stack, api, database_url, fixtures):
    """Asserts that the test's requests left every table exactly as it found it."""
    # Runs other tests left unfinished would change state under us: end them first.
    for r in api.ok("GET", "/api/pipelines/run?limit=200")["runs"]:
        if r["status"] not in TERMINAL and r["id"] != fixtures["run"]["id"]:
            api.call("POST", RUN, {"action": "cancel", "run_id": r["id"]})
            api.wait(r["id"])
    before = state_digest(database_url)
    yield
    assert state_digest(database_url) == before, "a refused request changed stored state"


def expect(resp, status: int, contains: str = "") -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert contains.lower() in body["error"].lower(), body


BAD_TEMPLATES = [
    ({}, "name"),
    ({"name": "x"}, "prompt"),
    ({"name": "", "prompt": "p"}, "name"),
    ({"name": "x" * 201, "prompt": "p"}, "name"),
    ({"name": "x", "prompt": ""}, "prompt"),
    ({"name": "x", "prompt": "p" * 10001}, "prompt"),
    ({"name": 5, "prompt": "p"}, "name"),
    ({"name": "x", "prompt": "p", "timeout_seconds": 9}, "timeout_seconds"),
    ({"name": "x", "prompt": "p", "timeout_seconds": 3601}, "timeout_seconds"),
    ({"name": "x", "prompt": "p", "timeout_seconds": "300"}, "timeout_seconds"),
    ({"name": "x", "prompt": "p", "timeout_seconds": 30.5}, "timeout_seconds"),
    ({"name": "x", "prompt": "p", "parameters": [1]}, "parameters"),
    ({"name": "x", "prompt": "p", "tags": ["ok", ""]}, "tags"),
    ({"name": "x", "prompt": "p", "tags": ["t"] * 51}, "tags"),
    ({"name": "x", "prompt": "p", "model": "m" * 101}, "model"),
    ({"name": "x", "prompt": "p", "description": "d" * 5001}, "description"),
    ({"name": "x", "prompt": "p", "agent": "no-such-agent"}, "agent"),
    ({"name": "x", "prompt": "p", "retries": 11}, "retries"),
    ({"name": "x", "prompt": "a", "task_prompt": "b"}, "prompt"),
]


@pytest.mark.parametrize(("body", "field"), BAD_TEMPLATES)
def test_invalid_template_is_400_and_changes_nothing(api, unchanged, body, field):
    expect(api.call("POST", "/api/workflows", body), 400, field)


def test_task_prompt_is_accepted_and_echoed_as_both_keys(api):
    tpl = api.ok("POST", "/api/workflows", {"name": "tp", "task_prompt": "do it"}, 201)
    assert tpl["template"]["prompt"] == tpl["template"]["task_prompt"] == "do it"
    assert tpl["template"]["model"] == "sonnet" and tpl["template"]["timeout_seconds"] == 300


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"text"', b"null"])
@pytest.mark.parametrize("path", ["/api/workflows", "/api/pipelines", RUN])
def test_malformed_or_missing_body_is_400(api, unchanged, raw, path):
    resp = api.call("POST", path, data=raw, headers={"content-type": "application/json"})
    expect(resp, 400, "body required" if not raw else "")


# Bodies PostgreSQL cannot store (NUL), JSON no reader takes back (NaN), and nesting that
# overflows Python's parser or, shallower, the encoders and walks after it: each a 400 that
# says so, never a 500.
def nested(depth: int, inner: str = '"x"') -> bytes:
    return ('{"name": "n", "prompt": "p", "parameters": ' + '{"a": ' * depth + inner
            + "}" * depth + "}").encode()


UNSTORABLE = [
    (b'{"name": "a\\u0000b", "prompt": "p"}', "NUL"),
    (b'{"name": "n", "prompt": "p", "parameters": {"k": ["\\u0000"]}}', "NUL"),
    (b'{"name": "n", "prompt": "p", "parameters": {"t": NaN}}', "not valid JSON"),
    (b'{"name": "n", "prompt": "p", "parameters": {"t": -Infinity}}', "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (nested(64), "nested more than 64 levels"),
    (nested(400), "nested more than 64 levels"),  # a 500 before (a recursive NUL check)
    (nested(970), "nested more than 64 levels"),  # a 500 before (the JSON encoder)
    (nested(400, '"\\u0000"'), ""),  # refused either way, whichever it finds first
]


def test_a_body_nested_64_levels_deep_is_stored(api):
    made = api.call("POST", "/api/workflows", data=nested(63).replace(b'"n"', b'"deep-63"'),
                    headers={"Content-Type": "application/json"})
    assert made.status_code == 201, made.text
    api.ok("DELETE", "/api/workflows", {"id": made.json()["template"]["id"]}, 200)


@pytest.mark.parametrize(("raw", "says"), UNSTORABLE)
@pytest.mark.parametrize("path", ["/api/workflows", RUN])
def test_bodies_that_cannot_be_stored_are_400(api, unchanged, raw, says, path):
    expect(api.call("POST", path, data=raw, headers={"Content-Type": "application/json"}),
           400, says)


def test_ids_and_cursors_past_any_stored_one_are_refused_cleanly(api, unchanged):
    huge = "99999999999999999999"
    refused = api.call("POST", f"/api/callbacks/{huge}/0/1?secret=x", {"success": True},
                       key="")
    expect(refused, 404)
    expect(api.call("GET", "/api/audit?limit=\u00b2"), 400, "limit")
    expect(api.call("GET", "/api/events?after=\u00b2"), 400, "after")
    expect(api.call("GET", f"/api/events?after={huge}"), 400, "after")
    expect(api.call("GET", "/api/events", headers={"Last-Event-ID": huge}), 400, "Last-Event-ID")


@pytest.mark.parametrize("path", ["/api/workflows", "/api/pipelines"])
def test_delete_without_body_says_body_required(api, unchanged, fixtures, path):
    expect(api.call("DELETE", path), 400, "body required")
    pid = fixtures["pipeline"]["id"]
    expect(api.call("DELETE", f"{path}?id={pid}"), 400, "body required")


@pytest.mark.parametrize("bad_id", ["abc", -1, 0, 1.5, True, None, [1], "1e3"])
def test_ids_must_be_integers_or_numeric_strings(api, unchanged, bad_id):
    expect(api.call("DELETE", "/api/workflows", {"id": bad_id}), 400, "id")
    expect(api.call("POST", RUN, {"action": "start", "pipeline_id": bad_id}), 400)
    expect(api.call("POST", RUN, {"action": "cancel", "run_id": bad_id}), 400)


def test_numeric_string_ids_are_accepted(api, fixtures):
    run = api.ok("GET", f"/api/pipelines/run?id={fixtures['run']['id']}")["run"]
    assert run["id"] == fixtures["run"]["id"]
    tpl = api.template("x", agent="echo")
    assert api.ok("DELETE", "/api/workflows", {"id": str(tpl["id"])}) == {"success": True}


def test_unknown_ids_are_404(api, unchanged):
    expect(api.call("PUT", "/api/workflows", {"id": 999999, "name": "x"}), 404)
    expect(api.call("DELETE", "/api/workflows", {"id": 999999}), 404)
    expect(api.call("PUT", "/api/pipelines", {"id": 999999, "name": "x"}), 404)
    expect(api.call("DELETE", "/api/pipelines", {"id": 999999}), 404)
    expect(api.call("GET", "/api/pipelines/run?id=999999"), 404)
    expect(api.call("GET", "/api/pipelines/run?pipeline_id=999999"), 404, "pipeline")
    expect(api.call("POST", RUN, {"action": "start", "pipeline_id": 999999}), 404)
    expect(api.call("POST", RUN, {"action": "advance", "run_id": 999999, "success": True}), 404)
    expect(api.call("POST", RUN, {"action": "cancel", "run_id": 999999}), 404)


def test_pipeline_validation(api, unchanged, fixtures):
    tid = fixtures["echo"]["id"]
    expect(api.call("POST", "/api/pipelines", {"name": "p", "steps": [{"template_id": tid}]}),
           400, "steps")
    expect(api.call("POST", "/api/pipelines", {"name": "p", "steps": []}), 400, "steps")
    expect(api.call("POST", "/api/pipelines", {
        "name": "p", "steps": [{"template_id": tid}, {"template_id": 999999}]}),
        400, "One or more template IDs not found")
    expect(api.call("POST", "/api/pipelines", {
        "name": "p", "steps": [{"template_id": tid, "on_failure": "retry"},
                               {"template_id": tid}]}), 400, "on_failure")
    expect(api.call("POST", "/api/pipelines", {"name": "p", "steps": [{"template_id": tid}] * 51}),
           400, "steps")
    expect(api.call("PUT", "/api/pipelines", {"id": fixtures["pipeline"]["id"],
                                              "steps": [{"template_id": tid}]}), 400, "steps")


def test_template_used_by_a_pipeline_cannot_be_deleted(api, unchanged, fixtures):
    expect(api.call("DELETE", "/api/workflows", {"id": fixtures["manual"]["id"]}), 409)


def test_invalid_action_and_command_bodies(api, unchanged, fixtures):
    for action in ("restart", None, 5, ""):
        expect(api.call("POST", RUN, {"action": action, "run_id": 1}), 400,
               "Invalid action. Use: start, advance, cancel")
    expect(api.call("POST", RUN, {"pipeline_id": 1}), 400, "Invalid action")
    rid = fixtures["run"]["id"]
    expect(api.call("POST", RUN, {"action": "advance", "run_id": rid}), 400, "success")
    expect(api.call("POST", RUN, {"action": "advance", "run_id": rid, "success": "yes"}), 400)
    expect(api.call("POST", RUN, {"action": "advance", "run_id": rid, "success": True,
                                  "step_index": -1}), 400, "step_index")
    expect(api.call("POST", RUN, {"action": "start", "pipeline_id": fixtures["pipeline"]["id"],
                                  "inputs": [1]}), 400, "inputs")


def test_state_conflicts_are_409(api, unchanged, fixtures):
    done = fixtures["finished_run"]["id"]
    advance = api.call("POST", RUN, {"action": "advance", "run_id": done, "success": True})
    expect(advance, 409)
    cancel = api.call("POST", RUN, {"action": "cancel", "run_id": done})
    expect(cancel, 409)
    rid = fixtures["run"]["id"]
    other = api.call("POST", RUN, {"action": "advance", "run_id": rid, "success": True,
                                   "step_index": 1})
    expect(other, 409, "not the current step")
    # Beside the text, a code for machines (its values are the wire format).
    assert [r.json()["code"] for r in (advance, cancel, other)] == [
        "already_finished", "already_finished", "step_mismatch"]


def test_list_query_validation(api, unchanged):
    expect(api.call("GET", "/api/pipelines/run?limit=0"), 400, "limit")
    expect(api.call("GET", "/api/pipelines/run?limit=201"), 400, "limit")
    expect(api.call("GET", "/api/pipelines/run?limit=x"), 400, "limit")
    expect(api.call("GET", "/api/pipelines/run?status=done"), 400, "status")
    expect(api.call("GET", "/api/pipelines/run?pipeline_id=x"), 400, "pipeline_id")


def test_authentication_comes_first(api, unchanged, fixtures):
    for key in ("", "wrong-key"):
        expect(api.call("GET", "/api/pipelines", key=key), 401)
        expect(api.call("POST", "/api/workflows", {"bad": "body"}, key=key), 401)
        expect(api.call("POST", RUN, data=b"{garbage", key=key), 401)
    viewer = fixtures["viewer"]
    assert api.call("GET", "/api/pipelines", key=viewer).status_code == 200
    bearer = api.call("GET", "/api/workflows", key="",
                      headers={"Authorization": f"Bearer {viewer}"})
    assert bearer.status_code == 200
    expect(api.call("POST", "/api/workflows", {"bad": "body"}, key=viewer), 403, "operator")
    expect(api.call("POST", RUN, {"action": "cancel", "run_id": fixtures["run"]["id"]},
                    key=viewer), 403)
    expect(api.call("DELETE", "/api/pipelines", key=viewer), 403)
    expect(api.call("GET", "/api/keys", key=fixtures["operator"]), 403, "admin")


def test_operator_can_run_things_and_is_named_in_triggered_by(api, fixtures):
    op = fixtures["operator"]
    resp = api.call("POST", RUN, {"action": "start", "pipeline_id": fixtures["pipeline"]["id"]},
                    key=op)
    assert resp.status_code == 201
    run = resp.json()["run"]
    assert run["triggered_by"] == "op-1"
    cancel = api.call("POST", RUN, {"action": "cancel", "run_id": run["id"]}, key=op)
    assert cancel.status_code == 202


def test_unknown_path_and_method_are_json(api):
    expect(api.call("GET", "/api/nothing-here"), 404)
    expect(api.call("PATCH", "/api/workflows", {}), 405)


def test_body_too_large_is_413(api, unchanged):
    resp = api.call("POST", "/api/workflows", data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
                    headers={"content-type": "application/json"})
    expect(resp, 413)


def test_deleting_a_pipeline_keeps_its_runs(api):
    echo = api.template("x", agent="echo")["id"]
    pipeline = api.pipeline(echo, echo, name="short-lived")
    run = api.start(pipeline["id"])
    api.wait(run["id"])
    assert api.ok("DELETE", "/api/pipelines", {"id": pipeline["id"]}) == {"success": True}
    kept = api.run(run["id"])
    assert kept["pipeline_name"] == "short-lived" and kept["pipeline_id"] == pipeline["id"]
    listed = api.ok("GET", f"/api/pipelines/run?pipeline_id={pipeline['id']}")["runs"]
    assert [r["id"] for r in listed] == [run["id"]]  # still a valid filter
    assert api.call("DELETE", "/api/pipelines", {"id": pipeline["id"]}).status_code == 404
    # its templates are free again
    assert api.ok("DELETE", "/api/workflows", {"id": echo}) == {"success": True}


def test_update_template_and_pipeline(api):
    tpl = api.template("first", agent="echo")
    updated = api.ok("PUT", "/api/workflows", {"id": tpl["id"], "prompt": "second",
                                               "tags": ["a"]})["template"]
    assert updated["prompt"] == "second" and updated["tags"] == ["a"]
    assert updated["name"] == tpl["name"]
    both = api.ok("PUT", "/api/workflows", {"id": tpl["id"], "prompt": "third",
                                            "task_prompt": None})["template"]
    assert both["prompt"] == both["task_prompt"] == "third"
    other = api.template("x", agent="echo")
    pipeline = api.pipeline(tpl["id"], tpl["id"])
    changed = api.ok("PUT", "/api/pipelines", {
        "id": str(pipeline["id"]), "name": "renamed",
        "steps": [{"template_id": other["id"], "on_failure": "continue"},
                  {"template_id": tpl["id"]}, {"template_id": other["id"]}]})["pipeline"]
    assert changed["name"] == "renamed"
    assert [(s["template_name"], s["on_failure"]) for s in changed["steps"]] == [
        (other["name"], "continue"), (tpl["name"], "stop"), (other["name"], "stop")]


def test_an_advance_keeps_the_last_output_max_chars_of_its_output(api, fixtures):
    rid = api.start(fixtures["pipeline"]["id"])["id"]
    api.wait_step(rid, 0, "running")
    output = "x" * 65536 + "the conclusion"  # OUTPUT_MAX_CHARS is 65536 here
    done = api.ok("POST", RUN, {"action": "advance", "run_id": rid, "success": True,
                                "output": output}, 202)["run"]["steps_snapshot"][0]
    assert done["output_truncated"] is True
    assert len(done["output"]) == 65536 and done["output"].endswith("the conclusion")
    api.ok("POST", RUN, {"action": "cancel", "run_id": rid}, 202)


def test_revoked_key_stops_working_within_the_cache_time(api):
    made = api.ok("POST", "/api/keys", {"name": "short-lived", "role": "viewer"}, 201)
    assert api.call("GET", "/api/pipelines", key=made["key"]).status_code == 200
    listed = api.ok("GET", "/api/keys")["keys"]
    assert any(k["id"] == made["id"] and k["prefix"] == made["key"][:10] for k in listed)
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert api.ok("DELETE", "/api/keys", {"id": made["id"]}) == {"success": True}
    deadline = time.monotonic() + 8  # KEY_CACHE_SECONDS (5) with margin
    while api.call("GET", "/api/pipelines", key=made["key"]).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.25)


def _wait_for_a_lock_wait(url: str, timeout: float = 10) -> None:
    """Return once a session of this database waits on a row lock."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as watcher:
        while not watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").fetchone()[0]:
            assert time.monotonic() < deadline, "no session ever waited on the lock"
            time.sleep(0.02)


def test_template_deleted_while_a_pipeline_is_saved_with_it_is_409(api, database_url):
    """The pipeline's template check passes, then a concurrent delete commits before its
    steps are written: the foreign key refuses the write, which must be a 409 that leaves
    no pipeline behind, never a 500."""
    import threading

    import psycopg

    doomed = api.template("soon gone", agent="echo")
    other = api.template("stays", agent="echo")
    name = f"raced-{time.monotonic_ns()}"
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        conn.execute("SELECT id FROM workflow_templates WHERE id = %s FOR UPDATE",
                     (doomed["id"],))
        conn.execute("DELETE FROM workflow_templates WHERE id = %s", (doomed["id"],))
        answer = {}
        saver = threading.Thread(target=lambda: answer.update(resp=api.call(
            "POST", "/api/pipelines", {"name": name, "steps": [
                {"template_id": doomed["id"]}, {"template_id": other["id"]}]})))
        saver.start()
        _wait_for_a_lock_wait(url)  # the save is now waiting on the deleted row's lock
        conn.commit()
    saver.join(timeout=30)
    # it waited on the lock, so its template check had passed before the delete committed
    resp = answer["resp"]
    assert resp.status_code == 409, resp.text
    assert all(p["name"] != name for p in api.ok("GET", "/api/pipelines")["pipelines"])
