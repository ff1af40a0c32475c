"""Prompt rendering: what a prompt can see, and what it cannot do."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from orchestrator.prompts import MAX_RENDERED_CHARS, PromptError, check_syntax, render_prompt


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
    "{{ joiner.__init__.__globals__ }}",
    "{{ dict.__init__.__globals__ }}",
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


@pytest.mark.parametrize("name", ["lipsum", "cycler", "namespace"])
def test_text_generators_and_the_mutable_namespace_are_gone(name):
    with pytest.raises(PromptError, match=f"'{name}' is undefined"):
        render_prompt(f"{{{{ {name}() }}}}", {}, [])


BIG = '{% set big = "x" * 999999 %}'


@pytest.mark.parametrize("text, what", [
    ('{{ "%0500000000d" % 1 }}', "% formatting"),
    ('{{ "%*d" % (10**9, 1) }}', "% formatting"),
    ('{{ "%0500000000d" | format(1) }}', "% formatting"),
    ('{{ "{:>1000000000}".format(1) }}', "str.format"),
    ('{{ "{:{w}}".format(1, w=10**9) }}', "str.format"),
    ('{{ "{x:1000001}".format_map({"x": 1}) }}', "str.format"),
    ('{{ "x" | center(10**9) }}', "center"),
    ('{{ "x".center(10**9) }}', "center()"),
    ('{{ "x".ljust(10**9) }}', "ljust()"),
    ('{{ "x".rjust(10**9, "-") }}', "rjust()"),
    ('{{ "1".zfill(10**9) }}', "zfill()"),
    ('{{ ("\t" * 1000).expandtabs(10**6) }}', "expandtabs()"),
    ('{{ ("a" * 1000).translate({97: "x" * 100000}) }}', "translate()"),
    (BIG + '{{ big | indent(2, first=true) }}', "indent"),
    ('{{ ("ab " * 100000) | wordwrap(1, wrapstring="-" * 20) }}', "wordwrap"),
    (BIG + '{{ big | replace("x", "yy") }}', "replace"),
    (BIG + '{{ big.replace("x", "yy") }}', "replace()"),
    (BIG + '{{ [big, "tail"] | join }}', "join"),
    (BIG + '{{ "-".join([big, "tail"]) }}', "join()"),
    (BIG + '{{ big ~ big }}', "~"),
    (BIG + '{{ big + "tail" }}', "+"),
    ('{{ [1] * 1000001 }}', "repetition too large"),
])
def test_no_single_operation_builds_more_than_the_cap(text, what):
    with pytest.raises(PromptError) as exc:
        render_prompt(text, {}, [])
    message = str(exc.value)
    assert what in message, message
    if what != "repetition too large":
        assert f"would build more than {MAX_RENDERED_CHARS} characters" in message


@pytest.mark.parametrize("text, expected", [
    ('{{ "%s-%03d|%-4s|" % ("a", 7, "b") }}', "a-007|b   |"),
    ('{{ "%(n)s!" % {"n": 1} }}{{ "%d%%" | format(50) }}', "1!50%"),
    ('{{ "{} {:>4}".format("a", 3) }}{{ "{x}".format_map({"x": 2}) }}', "a    32"),
    ('{{ "ab" | center(6) }}|{{ "ab".ljust(3) }}|{{ "7".zfill(3) }}', "  ab  |ab |007"),
    ('{{ "a\nb" | indent(2) }}|{{ "a b c" | wordwrap(3) }}', "a\n  b|a b\nc"),
    ('{{ "a-b" | replace("-", "+") }}{{ "a-b".replace("-", "") }}', "a+bab"),
    ('{{ [1, "x"] | join(",") }}|{{ ",".join(["p", "q"]) }}|{{ "x" ~ 1 }}|{{ [1] + [2] }}',
     "1,x|p,q|x1|[1, 2]"),
    ('{{ 7 % 3 }}{{ 2 + 3 }}{% set c = joiner("/") %}{% for i in [1, 2] %}{{ c() }}{{ i }}'
     '{% endfor %}', "151/2"),
])
def test_capped_operations_still_do_their_job(text, expected):
    assert render_prompt(text, {}, []) == expected


@pytest.mark.parametrize("text, where", [
    ("{% if inputs.repo %}unclosed", "line 1: Unexpected end of template"),
    ("line one\n{{ inputs.x }}}\n{{ }", "line 3:"),
    ("{% for %}", "line 1: Expected an expression"),
    ("{{ x | no_such_filter }}", "No filter named 'no_such_filter'"),
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nests too deeply"),
    ("{% for a in [1] %}" * 25 + "{% endfor %}" * 25, "nests too deeply"),
])
def test_check_syntax_says_where_and_points_to_raw(text, where):
    problem = check_syntax(text)
    assert problem.startswith("does not parse as a template (") and where in problem
    assert problem.endswith("to send the braces literally wrap them in {% raw %}...{% endraw %}")


@pytest.mark.parametrize("text", [
    "awk '{print $1}' | sort", "{{ inputs.x }}}", "{% raw %}{{ literal {% endraw %}",
    "{{ nothing_defined }}", "{% include 'x' %}",
])
def test_check_syntax_accepts_what_parses_even_if_it_would_not_render(text):
    assert check_syntax(text) is None
