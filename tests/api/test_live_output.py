"""Live output (SPEC §11): a running `command` step's output so far shows in GET ?id=
within a second of being printed, streams as `step.output` events whose offsets rebuild it,
and a step that is cancelled or times out keeps what it had printed."""

from __future__ import annotations

import time

import psycopg

from tests.support import Api


def output_events(database_url: str, run_id: int) -> list[dict]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return [row[0] for row in conn.execute(
            "SELECT data FROM run_events WHERE run_id = %s AND type = 'step.output' "
            "ORDER BY id", (run_id,))]


def wait_output(api: Api, run_id: int, expected: str, within: float) -> dict:
    """The run once step 0 shows `expected`, while still running."""
    deadline = time.monotonic() + within
    while True:
        run = api.run(run_id)
        step = run["steps_snapshot"][0]
        if step["output"] == expected:
            assert step["status"] == "running", step
            return run
        assert time.monotonic() < deadline, f"step 0 shows {step['output']!r}, not {expected!r}"
        time.sleep(0.05)


def test_output_shows_while_running_and_a_cancelled_step_keeps_it(api, stack, database_url):
    mark = f"/tmp/live-{time.monotonic_ns()}"
    script = (f"echo first; while [ ! -e {mark} ]; do sleep 0.05; done; "
              "printf 'second, with no newline'; sleep 60")
    pipeline = api.pipeline(api.template(script)["id"], api.template("echo after")["id"])
    run = api.start(pipeline["id"])
    api.wait(run["id"], lambda r: r["steps_snapshot"][0]["spawn_id"], timeout=20)
    wait_output(api, run["id"], "first\n", within=5)
    open(mark, "w").close()
    printed_at = time.monotonic()
    wait_output(api, run["id"], "first\nsecond, with no newline", within=5)
    # Not a timing target, a bound on what "live" means: two ticks of the half-second
    # output batch plus the reads.
    assert time.monotonic() - printed_at < 3
    events = output_events(database_url, run["id"])
    assert [e["offset"] for e in events] == [0, len("first\n")]
    assert "".join(e["text"] for e in events) == "first\nsecond, with no newline"
    assert {e["attempt"] for e in events} == {1}
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]}, 202)
    done = api.wait(run["id"])
    assert done["status"] == "cancelled"
    assert done["steps_snapshot"][0]["output"] == "first\nsecond, with no newline"


def test_a_secret_a_session_prints_live_is_masked(api, stack, database_url):
    from tests.conftest import ADMIN_KEY

    pipeline = api.pipeline(api.template(f"echo key={ADMIN_KEY}; sleep 60")["id"],
                            api.template("echo after")["id"])
    run = api.start(pipeline["id"])
    wait_output(api, run["id"], "key=***\n", within=10)
    assert ADMIN_KEY not in str(output_events(database_url, run["id"]))
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]}, 202)


def test_a_session_printing_without_end_stops_adding_events(api, stack, database_url):
    # About 330 KB over some seconds: each half-second look takes up to 16 KiB of it.
    script = ("for i in $(seq 60); do head -c 5500 /dev/zero | tr '\\0' x; sleep 0.1; done; "
              "sleep 60")
    pipeline = api.pipeline(api.template(script)["id"], api.template("echo after")["id"])
    run = api.start(pipeline["id"])
    wait_output(api, run["id"], "x" * 65536, within=30)  # OUTPUT_MAX_CHARS: it goes on
    time.sleep(1.5)
    sent = sum(len(e["text"]) for e in output_events(database_url, run["id"]))
    assert 0 < sent <= 65536
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]}, 202)
