"""Prompt rendering: a template's prompt is a Jinja template, rendered when its step starts.

It sees the run's `inputs`, the earlier steps (`steps[0].output`, `steps["Name"].output`,
`steps[-1]` for the one before) and a little about the run and the step itself. Rendering
happens in an immutable sandbox with no loader (no includes, no files, no network), no
attribute access beyond plain data, and undefined names are errors, so a typo fails the
step instead of sending an agent a prompt with a hole in it.
"""

from __future__ import annotations

import functools
import operator
import shlex
from collections.abc import Iterable, Sequence
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SecurityError

# A rendered prompt larger than this is refused: it is a runaway loop, not a prompt.
MAX_RENDERED_CHARS = 1_000_000
# Every `range()` of one rendering together may yield this many numbers.
RANGE_BUDGET = MAX_RANGE


class PromptError(Exception):
    """The prompt does not render; the message says why and is shown as the step's error."""


class Steps(list):
    """The earlier steps, by position (`steps[0]`, `steps[-1]`) and by template name
    (`steps["Fetch diff"]`: the last earlier step of that name)."""

    def __init__(self, items: Iterable[dict[str, Any]]):
        super().__init__(items)
        self._by_name = {item["name"]: item for item in self}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._by_name[key]
        return super().__getitem__(key)


# An integer power or product may have at most this many bits (about 300,000 decimal digits).
MAX_POWER_BITS = 1_000_000


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, plus a cap on the two operators that can allocate without bound."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int | float) and abs(right) > 1000:
            raise SecurityError("exponent too large")
        if op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left).bit_length() * right > MAX_POWER_BITS:  # a big base, raised again
                raise SecurityError("power too large")
        if op == "*":
            if isinstance(left, int) and isinstance(right, int):  # squaring, again and again
                if left.bit_length() + right.bit_length() > MAX_POWER_BITS:
                    raise SecurityError("product too large")
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int):
                    if len(seq) * count > MAX_RENDERED_CHARS:
                        raise SecurityError("repetition too large")
        return {"*": operator.mul, "**": operator.pow}[op](left, right)


_STEPS_REPR = f"{Steps.__module__}.{Steps.__name__} object"
_env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
# For prompts that are shell scripts: an earlier output pasted into one must stay data.
_env.filters["shell_quote"] = lambda value: shlex.quote(str(value))


_DELIMITERS = ("{{", "{%", "{#")


@functools.lru_cache(maxsize=256)
def _compile(template: str) -> Template:
    # Templates are snapshots that many runs share; compiling is most of rendering's cost.
    return _env.from_string(template)


def step_context(step: Any) -> dict[str, Any]:
    """What a later prompt may read of a step (a RunStep or anything shaped like one)."""
    return {
        "index": step.step_index,
        "name": step.template_name,
        "status": step.status,
        "attempt": step.attempt,
        "output": step.output or "",
        "error": step.error or "",
    }


def render_prompt(
    template: str,
    inputs: dict[str, Any] | None,
    earlier: Sequence[Any],
    run: dict[str, Any] | None = None,
    step: dict[str, Any] | None = None,
) -> str:
    """Render `template` with the run's inputs and the steps before this one."""
    if not any(mark in template for mark in _DELIMITERS):
        return template  # what Jinja would return, without its cost on every step
    budget = [RANGE_BUDGET]

    def budgeted_range(*args: int) -> range:
        rng = range(*args)
        budget[0] -= len(rng)
        if budget[0] < 0:
            raise SecurityError(f"range() asked for more than {RANGE_BUDGET} items in all")
        return rng

    context = {
        "inputs": dict(inputs or {}),
        "steps": Steps(step_context(st) for st in earlier),
        "run": dict(run or {}),
        "step": dict(step or {}),
        "range": budgeted_range,
    }
    try:
        compiled = _compile(template)
        pieces: list[str] = []
        size = 0
        for piece in compiled.generate(context):
            size += len(piece)
            if size > MAX_RENDERED_CHARS:
                raise PromptError(
                    f"prompt does not render: it grows past {MAX_RENDERED_CHARS} characters"
                )
            pieces.append(piece)
    except PromptError:
        raise
    except TemplateError as exc:
        raise PromptError(f"prompt does not render: {_describe(exc)}{_hint(context)}") from None
    except Exception as exc:  # an error raised by the template's own expressions
        raise PromptError(
            f"prompt does not render: {type(exc).__name__}: {exc}{_hint(context)}"
        ) from None
    return "".join(pieces)


def _describe(exc: TemplateError) -> str:
    lineno = getattr(exc, "lineno", None)
    where = f"line {lineno}: " if lineno else ""
    message = (exc.message or type(exc).__name__).replace(_STEPS_REPR, "steps")
    return f"{where}{message}"


def _hint(context: dict[str, Any]) -> str:
    inputs = ", ".join(sorted(map(str, context["inputs"]))) or "none"
    steps = context["steps"]
    names = ", ".join(repr(s["name"]) for s in steps)
    if len(steps) == 1:
        earlier = f"steps[0] ({names})"
    elif steps:
        earlier = f"steps[0]..steps[{len(steps) - 1}] ({names})"
    else:
        earlier = "none (this is the first step)"
    return f" (inputs: {inputs}; earlier steps: {earlier})"
