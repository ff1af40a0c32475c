"""The render bound on both topologies: a prefork worker process and the in-process
worker threads of `orchestrator up` each render in a process of their own."""

from __future__ import annotations

import time

RUNAWAY = '{% for a in "x"*1000000 %}{% for b in "x"*1000000 %}{% endfor %}{% endfor %}'


def test_a_runaway_render_fails_its_step_and_templated_steps_go_on(api):
    hostile = api.template(RUNAWAY, agent="echo")["id"]
    echo = api.template("after {{ inputs.n }}", agent="echo")["id"]
    started = time.monotonic()
    run = api.start(api.pipeline(hostile, echo)["id"])
    done = api.wait(run["id"], timeout=30)
    assert time.monotonic() - started < 10
    step = done["steps_snapshot"][0]
    assert (done["status"], step["status"], step["error"]) == (
        "failed", "failed", "prompt rendering exceeded 2 s")
    for n in range(3):  # the replaced render process, and others of the worker's
        started = time.monotonic()
        after = api.wait(api.start(api.pipeline(echo, echo)["id"], inputs={"n": n})["id"])
        assert [s["output"] for s in after["steps_snapshot"]] == [f"after {n}"] * 2
        assert time.monotonic() - started < 2
