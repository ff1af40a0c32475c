"""Hostile prompts on the live stack's only worker slot: each fails its step within the
render bound with an error that says so, and an echo run started right after completes at
once. (Before the render process, the first of these pinned the worker for good.)"""

from __future__ import annotations

import time

import pytest

EXCEEDED_TIME = "prompt rendering exceeded 2 s"
TOO_BIG = "would build more than 1000000 characters"

HOSTILE = [
    ('{% for a in "x"*1000000 %}{% for b in "x"*1000000 %}{% endfor %}{% endfor %}',
     EXCEEDED_TIME),
    ('{{ "%0500000000d" % 1 }}', "% formatting " + TOO_BIG),
    ('{{ "x" | center(1000000000) }}', "center " + TOO_BIG),
    ('{{ "{:>500000000}".format(1) }}', "str.format " + TOO_BIG),
    ('{{ "%0500000000d" | format(1) }}', "% formatting " + TOO_BIG),
    ("{{ lipsum(1000000) }}", "'lipsum' is undefined"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
     EXCEEDED_TIME),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ('{% for i in range(99999) %}{% for c in "x"*999999 %}{% endfor %}{% endfor %}',
     EXCEEDED_TIME),
    ("{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
     "range() asked for more than"),
    ('{{ range(1000) | map("center", 1000000) | list | length }}',
     "prompt rendering exceeded 256 MB of memory"),
]


@pytest.fixture(scope="module")
def echo(rt_api) -> int:
    return rt_api.template("after {{ inputs.n }}", agent="echo")["id"]


@pytest.mark.parametrize("prompt, error", HOSTILE)
def test_a_hostile_prompt_fails_its_step_and_the_worker_serves_the_next_at_once(
        rt_api, echo, prompt, error):
    hostile = rt_api.template(prompt, agent="echo")
    echo_pipeline = rt_api.pipeline(echo, echo)["id"]
    started = time.monotonic()
    run = rt_api.start(rt_api.pipeline(hostile["id"], echo)["id"])
    done = rt_api.wait(run["id"], timeout=30)
    failed_in = time.monotonic() - started
    step = done["steps_snapshot"][0]
    assert (done["status"], step["status"], step["spawn_id"], step["output"]) == (
        "failed", "failed", None, None)
    assert error in step["error"], step["error"]
    assert failed_in < 10, f"the step took {failed_in:.1f} s to fail"

    started = time.monotonic()
    after = rt_api.start(echo_pipeline, inputs={"n": prompt[:20]})
    done = rt_api.wait(after["id"], timeout=30)
    took = time.monotonic() - started
    assert done["status"] == "completed"
    assert [s["output"] for s in done["steps_snapshot"]] == [f"after {prompt[:20]}"] * 2
    assert took < 2, f"the echo run after it took {took:.2f} s"
