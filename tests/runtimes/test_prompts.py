"""Prompt rendering: what a prompt can see, and what it cannot do."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from orchestrator.prompts import MAX_RENDERED_CHARS, PromptError, render_prompt


def step(index: int, name: str, status: str = "completed", output: str | None = None,
         error: str | None = None, attempt: int = 1) -> SimpleNamespace:
    return SimpleNamespace(step_index=index, template_name=name, status=status,
                           output=output, error=error, attempt=attempt)


EARLIER = [
    step(0, "Fetch diff", output="+ added line\n"),
    step(1, "Lint", status="failed", error="exit status 1: 3 warnings"),
]


def test_inputs_and_earlier_outputs_by_index_name_and_from_the_end():
    text = (
        "Summarise this diff for {{ inputs.repo }}: {{ steps[0].output }}"
        "{{ steps['Fetch diff'].output | trim }}|{{ steps[-1].status }}: {{ steps[-1].error }}"
        "|{{ steps | length }}|{{ run.id }}/{{ step.index }}"
    )
    out = render_prompt(text, {"repo": "acme/api"}, EARLIER, run={"id": 7}, step={"index": 2})
    assert out == ("Summarise this diff for acme/api: + added line\n+ added line"
                   "|failed: exit status 1: 3 warnings|2|7/2")


def test_missing_output_renders_empty_and_loops_and_conditions_work():
    text = ("{% for s in steps %}{{ s.name }}={{ s.output or 'none' }};{% endfor %}"
            "{% if steps[1].status == 'failed' %}recover{% endif %}")
    assert render_prompt(text, {}, EARLIER) == "Fetch diff=+ added line\n;Lint=none;recover"


def test_a_plain_prompt_is_unchanged_and_single_braces_stay():
    script = "for f in *.py; do echo {$f}; done\nawk '{print $1}'\n"
    assert render_prompt(script, None, []) == script


@pytest.mark.parametrize("text, expected", [
    ("{{ inputs.repo }}", "'dict object' has no attribute 'repo'"),
    ("{{ steps[5].output }}", "steps has no element 5"),
    ("{{ steps['Nope'].output }}", "has no attribute 'Nope'"),
    ("{{ nothing }}", "'nothing' is undefined"),
    ("Hello {{ inputs.x ", "line 1: unexpected end of template"),
    ("{% for %}", "line 1:"),
    ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
])
def test_what_does_not_render_says_why(text, expected):
    with pytest.raises(PromptError) as exc:
        render_prompt(text, {"other": 1}, EARLIER[:1])
    message = str(exc.value)
    assert message.startswith("prompt does not render: ")
    assert expected in message
    assert "inputs: other" in message and "steps[0] ('Fetch diff')" in message


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "{{ inputs.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ steps.append(1) }}",
    "{{ inputs.update({'a': 1}) }}",
    "{{ steps._by_name }}",
])
def test_the_sandbox_refuses_python_internals_and_mutation(text):
    with pytest.raises(PromptError) as exc:
        render_prompt(text, {"a": 0}, EARLIER)
    assert "unsafe" in str(exc.value)


def test_no_files_no_includes():
    for text in ("{% include '/etc/passwd' %}", "{% import 'x.j2' as x %}",
                 "{% extends '/etc/hostname' %}"):
        with pytest.raises(PromptError, match="no loader"):
            render_prompt(text, {}, [])


@pytest.mark.parametrize("text, expected", [
    ("{{ 'x' * 10**9 }}", "repetition too large"),
    ("{{ 10 ** 100000 }}", "exponent too large"),
    ("{{ ((10 ** 1000) ** 1000) ** 100 }}", "power too large"),
    ("{% set a = 9 ** 1000 %}" + "{% set a = a * a %}" * 30 + "{{ a }}", "product too large"),
    ("{% for a in range(60000) %}{% for b in range(60000) %}{% endfor %}{% endfor %}",
     "range() asked for more than"),
    ("{% for a in range(90000) %}" + "y" * 20 + "{% endfor %}",
     f"grows past {MAX_RENDERED_CHARS} characters"),
])
def test_runaway_templates_are_stopped(text, expected):
    with pytest.raises(PromptError) as exc:
        render_prompt(text, {}, [])
    assert expected in str(exc.value)


def test_shell_quote_keeps_pasted_text_data():
    earlier = [step(0, "Lint", status="failed", error="it's $(rm -rf ~) `x`")]
    out = render_prompt("echo {{ steps[0].error | shell_quote }}", {}, earlier)
    assert out == "echo 'it'\"'\"'s $(rm -rf ~) `x`'"
    assert subprocess.run(["bash", "-c", out], capture_output=True, text=True,
                          check=True).stdout == "it's $(rm -rf ~) `x`\n"
