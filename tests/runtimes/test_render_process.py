"""The render process: a render past its bound fails with an error that says so, the
process is replaced, and the next render is served at once."""

from __future__ import annotations

import json
import os
import signal
import time
from types import SimpleNamespace

import pytest

from orchestrator import render_process
from orchestrator.config import Settings
from orchestrator.prompts import PromptError
from orchestrator.render_process import RenderPool, RenderProcess, render_bounded

NESTED_LOOPS = '{% for a in "x"*1000000 %}{% for b in "x"*1000000 %}{% endfor %}{% endfor %}'
# Every operation under the caps, 200 MB together: only the memory bound stops it.
HOARD = '{{ range(200) | map("center", 1000000) | list | length }}'
EARLIER = [SimpleNamespace(step_index=0, template_name="Fetch", status="completed",
                           output="+ line\n", error=None, attempt=1)]


def request(template: str) -> dict:
    return {"template": template, "inputs": {"repo": "acme/api"},
            "steps": [render_process.step_context(s) for s in EARLIER],
            "run": {"id": 1}, "step": {"index": 1}}


@pytest.fixture
def pool():
    pool = RenderPool(timeout=1.0, memory_mb=64)
    pool.warm()
    yield pool
    pool.close()


def idle_pid(pool: RenderPool) -> int:
    [proc] = pool._idle
    return proc.proc.pid


def test_renders_what_render_prompt_renders(pool):
    text = "{{ inputs.repo }}: {{ steps['Fetch'].output }}{{ run.id }}/{{ step.index }}"
    assert pool.render(request(text)) == "acme/api: + line\n1/1"
    with pytest.raises(PromptError, match="'nothing' is undefined"):
        pool.render(request("{{ nothing }}"))
    assert pool.render(request("{{ 1 + 1 }}")) == "2"  # an error keeps the process


def test_a_render_past_the_time_bound_is_killed_and_the_next_is_served_at_once(pool):
    first = idle_pid(pool)
    started = time.monotonic()
    with pytest.raises(PromptError, match=r"^prompt rendering exceeded 1 s$"):
        pool.render(request(NESTED_LOOPS))
    assert time.monotonic() - started < 5
    assert not _running(first), "the runaway render process was left running"
    started = time.monotonic()
    assert pool.render(request("{{ inputs.repo }}")) == "acme/api"
    assert time.monotonic() - started < 5
    assert idle_pid(pool) != first


def test_a_render_past_the_memory_bound_fails_and_its_process_is_replaced(pool):
    first = idle_pid(pool)
    with pytest.raises(PromptError, match=r"^prompt rendering exceeded 64 MB of memory$"):
        pool.render(request(HOARD))
    assert pool.render(request("{{ inputs.repo }}")) == "acme/api"
    assert idle_pid(pool) != first


def test_a_render_process_that_crashed_while_idle_is_replaced_unseen(pool):
    [idle] = pool._idle
    idle.proc.kill()
    idle.proc.wait(timeout=10)
    assert pool.render(request("{{ inputs.repo }}")) == "acme/api"


def test_a_render_process_killed_mid_render_fails_that_render_and_is_replaced(pool):
    assert pool.render(request("{{ 1 }}")) == "1"
    proc = pool._take()
    proc.proc.stdin.write(b"not json at all\n")  # the process dies of it, as of any crash
    proc.proc.stdin.flush()
    with pytest.raises(PromptError, match=r"render process ended \(status 1\)"):
        proc._reply(time.monotonic() + 10)
    assert pool.render(request("{{ inputs.repo }}")) == "acme/api"


def test_an_orphaned_runaway_render_ends_at_its_cpu_bound():
    """If the worker dies mid-render nobody kills the render process: its CPU limit does."""
    proc = RenderProcess(timeout=1.0, memory_mb=64)
    assert proc._reply(time.monotonic() + 30) == {"ready": True}
    proc.proc.stdin.write(json.dumps(request(NESTED_LOOPS)).encode() + b"\n")
    proc.proc.stdin.flush()
    assert proc.proc.wait(timeout=15) == -signal.SIGXCPU
    proc.close()


def test_the_render_process_sees_none_of_the_workers_secrets(monkeypatch, pool):
    monkeypatch.setenv("API_KEY", "secret-bootstrap-key")
    proc = RenderProcess(timeout=1.0, memory_mb=64)
    try:
        with open(f"/proc/{proc.proc.pid}/environ", "rb") as f:
            names = {item.split(b"=", 1)[0] for item in f.read().split(b"\0") if item}
        assert names <= {n.encode() for n in render_process._ENV_KEPT}
    finally:
        proc.close()


def test_a_prompt_without_markup_never_leaves_the_process(monkeypatch):
    def no_process(*args, **kwargs):
        raise AssertionError("a render process was asked for")

    monkeypatch.setattr(render_process, "pool_for", no_process)
    script = "for f in *.py; do echo {$f}; done\n"
    assert render_bounded(Settings(), script, {}, EARLIER) == script


def test_bounds_come_from_settings():
    settings = Settings.from_env({"RENDER_TIMEOUT_SECONDS": "0.5", "RENDER_MEMORY_MB": "100"})
    pool = render_process.pool_for(settings)
    assert (pool.timeout, pool.memory_mb) == (0.5, 100)
    assert render_process.pool_for(settings) is pool
    assert (Settings().render_timeout_seconds, Settings().render_memory_mb) == (2.0, 256)
    with pytest.raises(ValueError, match="RENDER_MEMORY_MB must be a whole number"):
        Settings.from_env({"RENDER_MEMORY_MB": "lots"})


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
