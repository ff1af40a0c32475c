"""What the render process adds to a prompt render: `python -m bench.render [N]`.

Renders a typical prompt (inputs, two earlier outputs, a loop and a filter) N times
(default 1,000) in this process and through a render process, and prints both medians.
"""

from __future__ import annotations

import statistics
import sys
import time
from types import SimpleNamespace

from orchestrator.config import Settings
from orchestrator.prompts import render_prompt
from orchestrator.render_process import pool_for, render_bounded

PROMPT = """Review the change to {{ inputs.repo }} at {{ inputs.sha }} for {{ run.pipeline_name }}.
{% for s in steps %}## {{ s.name }} ({{ s.status }})
{{ s.output | trim }}
{% endfor %}Focus on: {{ inputs.focus | join(", ") }}. This is step {{ step.index }}.
"""
INPUTS = {"repo": "acme/api", "sha": "9f2c1e0", "focus": ["security", "tests", "naming"]}
EARLIER = [
    SimpleNamespace(step_index=0, template_name="Fetch diff", status="completed",
                    output="+ added line\n" * 150, error=None, attempt=1),
    SimpleNamespace(step_index=1, template_name="Lint", status="completed",
                    output="src/app.py:12: unused import\n" * 40, error=None, attempt=1),
]
RUN = {"id": 7, "pipeline_id": 3, "pipeline_name": "review"}
STEP = {"index": 2, "attempt": 1, "name": "Review"}


def _median_ms(render, n: int) -> float:
    render()  # compile and warm up
    times = []
    for _ in range(n):
        started = time.perf_counter()
        render()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(n: int) -> None:
    settings = Settings()
    pool_for(settings).warm()
    here = _median_ms(lambda: render_prompt(PROMPT, INPUTS, EARLIER, RUN, STEP), n)
    there = _median_ms(lambda: render_bounded(settings, PROMPT, INPUTS, EARLIER, RUN, STEP), n)
    print(f"{n} renders of a {len(render_prompt(PROMPT, INPUTS, EARLIER, RUN, STEP))}-character "
          f"prompt: in-process median {here:.3f} ms, render process median {there:.3f} ms, "
          f"added {there - here:.3f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
