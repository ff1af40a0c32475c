"""The command runtime in this process: what it keeps of a session's output."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.profiles import Profile
from orchestrator.runtimes import SpawnRequest, get_runtime
from orchestrator.runtimes.command import TAIL_CHARS


def finished(script: str):
    runtime = get_runtime(Profile("sh", "command", {"argv": ["sh", "-c", script]}))
    session = runtime.spawn(SpawnRequest(run_id=1, step_index=0, attempt=1, template_id=1,
                                         template_name="t", model="m", prompt="",
                                         parameters={}, timeout_seconds=30))
    return asyncio.run(asyncio.wait_for(runtime.wait(session), 20))


@pytest.mark.parametrize("fails", [False, True])
def test_output_past_what_the_runtime_keeps_is_marked_truncated(fails):
    outcome = finished(f"head -c {TAIL_CHARS * 3} /dev/zero | tr '\\0' x; printf end"
                       + ("; exit 3" if fails else ""))
    assert outcome.success is not fails
    assert len(outcome.output) == TAIL_CHARS and outcome.output.endswith("xend")
    assert outcome.output_truncated is True


def test_output_kept_whole_is_not_marked():
    outcome = finished("printf 'all of it'")
    assert (outcome.output, outcome.output_truncated) == ("all of it", False)
