"""What flows into a prompt at run time, checked against the injection guard's findings.

Run inputs and step outputs are scanned once, with every rule, when they are stored
(`scan_inputs`, `scan_output`). When a step starts, `collect` gathers the findings of the
inputs and earlier outputs its prompt uses, keeps those that count in the step's profile
context, and names each one's source (`inputs.x`, `steps[i].output`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes

from orchestrator import injection
from orchestrator.vocab import InjectionScan

# The same syntax as the prompt sandbox; only parsed here, never rendered.
_parser = Environment()


def scan_output(text: str | None) -> list[dict[str, str]] | None:
    if not text:
        return None
    return [f.as_json() for f in injection.scan(text)] or None


def scan_inputs(inputs: dict[str, Any] | None) -> dict[str, list[dict[str, str]]] | None:
    """Findings per input name; strings as they are, other values as their JSON."""
    found = {}
    for name, value in (inputs or {}).items():
        if value is None or isinstance(value, bool | int | float):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        findings = scan_output(text)
        if findings:
            found[str(name)] = findings
    return found or None


def used_sources(template: str, earlier: Sequence[Any]) -> tuple[set[str] | None, set[int] | None]:
    """The input names and earlier step indexes `template` reads: `inputs.x`,
    `inputs["x"]`, `steps[0]`, `steps[-1]`, `steps["Name"]`. None (everything) when it
    reads them some other way (a loop over `steps`, `inputs[var]`) or does not parse."""
    try:
        tree = _parser.parse(template)
    except TemplateSyntaxError:
        return None, None
    inputs: set[str] | None = set()
    steps: set[int] | None = set()
    by_name = {st.template_name: st.step_index for st in earlier}
    direct: set[int] = set()  # ids of Name nodes read through a constant key
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not isinstance(target, nodes.Name) or target.name not in ("inputs", "steps"):
            continue
        key = node.attr if isinstance(node, nodes.Getattr) else _const(node.arg)
        if key is None:
            continue
        direct.add(id(target))
        if target.name == "inputs":
            if inputs is not None:
                inputs.add(str(key))
        elif steps is not None:
            index = _step_index(key, earlier, by_name)
            if index is not None:
                steps.add(index)
    for name in tree.find_all(nodes.Name):
        if id(name) in direct:
            continue
        if name.name == "inputs":
            inputs = None
        elif name.name == "steps":
            steps = None
    return inputs, steps


def _const(arg: nodes.Node) -> Any:
    if isinstance(arg, nodes.Const):
        return arg.value
    if isinstance(arg, nodes.Neg) and isinstance(arg.node, nodes.Const):
        return -arg.node.value
    return None


def _step_index(key: Any, earlier: Sequence[Any], by_name: dict[str, int]) -> int | None:
    if isinstance(key, str):
        return by_name.get(key)
    if isinstance(key, int) and not isinstance(key, bool) and -len(earlier) <= key < len(earlier):
        return earlier[key].step_index
    return None


def collect(
    template: str,
    inputs_injection: dict[str, list[dict[str, str]]] | None,
    earlier: Sequence[Any],
    context: str,
) -> list[dict[str, str]]:
    """The mark for a step whose prompt is `template`: each finding that counts in
    `context`, of each value the prompt uses, with its source."""
    if context == InjectionScan.OFF or not (inputs_injection or any(st.output_injection for st in earlier)):
        return []
    inputs, steps = used_sources(template, earlier)
    mark = []
    for name, findings in sorted((inputs_injection or {}).items()):
        if inputs is None or name in inputs:
            mark += _with_source(findings, f"inputs.{name}", context)
    for st in earlier:
        if st.output_injection and (steps is None or st.step_index in steps):
            mark += _with_source(st.output_injection, f"steps[{st.step_index}].output", context)
    return mark


def _with_source(findings: list[dict[str, str]], source: str, context: str) -> list[dict[str, str]]:
    return [{**f, "source": source} for f in findings if injection.applies_in(f["rule"], context)]


def blocking(mark: list[dict[str, str]]) -> list[dict[str, str]]:
    """What makes an `on_injection: fail` step fail: critical findings (a warning, such as
    hidden characters alone, is only marked)."""
    return [f for f in mark if f.get("severity") == injection.CRITICAL]


def describe(mark: list[dict[str, str]]) -> str:
    """The failed step's error: `injection: <source> tripped <rule> (<description>); ...`."""
    parts = [f"{f['source']} tripped {f['rule']} ({f['description']})" for f in mark]
    return "injection: " + "; ".join(parts)
