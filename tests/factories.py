"""Small factories: template → pipeline → run, through the catalog and the write path."""

from __future__ import annotations

import itertools

from sqlalchemy.orm import Session

from orchestrator import catalog, runs
from orchestrator.models import Pipeline, WorkflowTemplate

_seq = itertools.count()


def make_template(s: Session, prompt: str = "echo hi", agent: str = "echo",
                  **fields) -> WorkflowTemplate:
    return catalog.create_template(
        s, {"name": f"tpl-{next(_seq)}", "prompt": prompt, "agent": agent, **fields}, "tests"
    )


def make_pipeline(s: Session, n: int = 3, on_failure: str = "stop",
                  templates: list[WorkflowTemplate] | None = None) -> Pipeline:
    templates = templates or [make_template(s) for _ in range(n)]
    steps = [{"template_id": t.id, "on_failure": on_failure} for t in templates]
    return catalog.create_pipeline(s, {"name": f"pipe-{next(_seq)}", "steps": steps}, "tests")


def make_run(s: Session, pipeline: Pipeline | None = None, **kw) -> runs.Transition:
    pipeline = pipeline or make_pipeline(s, **kw)
    return runs.start_run(s, pipeline.id, "tests")
