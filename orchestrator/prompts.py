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
import types
from collections.abc import Iterable, Sequence
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SecurityError

from orchestrator import contracts, prompt_caps
from orchestrator.prompt_caps import MAX_RENDERED_CHARS, check_size

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


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        # `~` goes through the environment, as the sandbox's intercepted operators do.
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            return super().visit_Concat(node, frame)
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, plus caps on the operators, filters and `str` methods that could
    build a huge value in one step (see prompt_caps)."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        # Text generators and the one mutable object: no prompt needs them to be a prompt.
        for name in ("lipsum", "cycler", "namespace"):
            del self.globals[name]
        self.filters.update(prompt_caps.FILTERS)

    concat = staticmethod(prompt_caps.concat)

    def wrap_str_format(self, value: Any) -> Any:
        # Called on every attribute a template reads: the place to swap in capped methods.
        if isinstance(value, types.BuiltinMethodType) and isinstance(value.__self__, str):
            if value.__name__ in ("format", "format_map"):
                return prompt_caps.format_method(self, value.__self__, value.__name__)
            if value.__name__ in prompt_caps.STR_METHODS:
                return functools.partial(prompt_caps.STR_METHODS[value.__name__], value.__self__)
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "%" and isinstance(left, str):
            return prompt_caps.percent_format(left, right)
        if op == "+" and isinstance(left, str | list | tuple) and isinstance(right, type(left)):
            check_size(len(left) + len(right), "+")
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
        return _BINOPS[op](left, right)


_BINOPS = {"*": operator.mul, "**": operator.pow, "+": operator.add, "%": operator.mod}


_STEPS_REPR = f"{Steps.__module__}.{Steps.__name__} object"
_env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
# For prompts that are shell scripts: an earlier output pasted into one must stay data.
_env.filters["shell_quote"] = lambda value: shlex.quote(str(value))


_DELIMITERS = ("{{", "{%", "{#")
RAW_HINT = "to send the braces literally wrap them in {% raw %}...{% endraw %}"


def has_markup(template: str) -> bool:
    """False for a prompt Jinja would return unchanged: it needs no rendering at all."""
    return any(mark in template for mark in _DELIMITERS)


@functools.lru_cache(maxsize=256)
def _compile(template: str) -> Template:
    # Templates are snapshots that many runs share; compiling is most of rendering's cost.
    return _env.from_string(template)


def check_syntax(template: str) -> str | None:
    """Why `template` does not parse as a prompt (None if it does); it is compiled, never
    rendered. Unknown filters and tests count as not parsing."""
    if not has_markup(template):
        return None
    try:
        _env.compile(template)
    except TemplateSyntaxError as exc:
        return f"does not parse as a template ({_describe(exc)}); {RAW_HINT}"
    except (RecursionError, SyntaxError):  # Python's own limits on the compiled template
        return f"does not parse as a template (it nests too deeply); {RAW_HINT}"
    return None


def step_context(step: Any) -> dict[str, Any]:
    """What a later prompt may read of a step (a RunStep or anything shaped like one)."""
    return {
        "index": step.step_index,
        "name": step.template_name,
        "status": step.status,
        "attempt": step.attempt,
        "output": step.output or "",
        "error": step.error or "",
        # The output's JSON value when the step's contract is a JSON Schema, else None.
        "json": contracts.parsed(getattr(step, "output_contract", None), step.output),
    }


def render_prompt(
    template: str,
    inputs: dict[str, Any] | None,
    earlier: Sequence[Any],
    run: dict[str, Any] | None = None,
    step: dict[str, Any] | None = None,
) -> str:
    """Render `template` with the run's inputs and the steps before this one, here in
    this process (render_process.render_bounded is the bounded way)."""
    if not has_markup(template):
        return template  # what Jinja would return, without its cost on every step
    return render_steps(template, inputs, [step_context(st) for st in earlier], run, step)


def render_steps(
    template: str,
    inputs: dict[str, Any] | None,
    steps: Iterable[dict[str, Any]],
    run: dict[str, Any] | None = None,
    step: dict[str, Any] | None = None,
) -> str:
    """render_prompt, with the earlier steps already as step_context() made them."""
    budget = [RANGE_BUDGET]

    def budgeted_range(*args: int) -> range:
        rng = range(*args)
        budget[0] -= len(rng)
        if budget[0] < 0:
            raise SecurityError(f"range() asked for more than {RANGE_BUDGET} items in all")
        return rng

    context = {
        "inputs": dict(inputs or {}),
        "steps": Steps(steps),
        "run": dict(run or {}),
        "step": dict(step or {}),
        # The last attempt's error on a retry, so that an agent can repair its answer.
        "previous_error": (step or {}).get("previous_error") or "",
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
    except (PromptError, MemoryError):
        raise  # a MemoryError is the render process's bound, reported by that process
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
