"""Caps on the template operations that can build a large string in one step.

No single `%` or `format`, padding (`center`, `ljust`, `rjust`, `zfill`, `expandtabs`),
`indent`, `wordwrap`, `replace`, `translate`, `join`, `~`, `+` or `*` may build more than
MAX_RENDERED_CHARS characters: each is refused before it allocates, with an error naming
it. The render process's memory bound stops whatever these do not foresee.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import filters, pass_environment, pass_eval_context
from jinja2.sandbox import SandboxedFormatter, SecurityError

# A rendered prompt larger than this is refused: it is a runaway loop, not a prompt.
MAX_RENDERED_CHARS = 1_000_000

# printf-style conversions: `%(key)-08.3f`; width and precision may be `*` (taken from args).
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


def check_size(size: int, what: str) -> None:
    if size > MAX_RENDERED_CHARS:
        raise SecurityError(f"{what} would build more than {MAX_RENDERED_CHARS} characters")


def size_of(value: Any) -> int:
    """What `str(value)` costs, for plain values; 0 for the rest (left to the memory bound,
    since measuring them would build them)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 31 // 100 + 2  # log10(2) < 0.31
    if isinstance(value, float):
        return 24
    return 0


def _number(digits: str | None) -> int:
    if not digits:
        return 0
    return int(digits) if len(digits) <= 7 else MAX_RENDERED_CHARS + 1


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def percent_format(text: str, args: Any) -> str:
    """`text % args`, refused when its widths, precisions and values could pass the cap."""
    if isinstance(args, Mapping):
        values = list(args.values())
    else:
        values = list(args) if isinstance(args, tuple) else [args]
    star = max((abs(v) for v in values if isinstance(v, int)), default=0)
    size = len(text) + sum(size_of(v) for v in values)
    for match in _PRINTF.finditer(text):
        for part in match.groups():
            size += star if part == "*" else _number(part)
    check_size(size, "% formatting")
    return text % args


class CappedFormatter(SandboxedFormatter):
    """`str.format` in the sandbox, counting what each field builds before it builds it."""

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        # The spec here is final (nested `{}` already filled in): its numbers are a width
        # and a precision.
        widths = sum(_number(d) for d in _DIGITS.findall(format_spec))
        check_size(self._size + max(widths, size_of(value)), "str.format")
        text = super().format_field(value, format_spec)
        self._size += len(text)
        check_size(self._size, "str.format")
        return text


def format_method(env: Any, text: str, name: str) -> Callable[..., str]:
    """The sandbox's `str.format` / `str.format_map` of `text`, capped."""
    formatter = CappedFormatter(env)

    def method(*args: Any, **kwargs: Any) -> str:
        if name == "format_map":
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one mapping")
            args, kwargs = (), args[0]
        return formatter.vformat(text, args, kwargs)

    return method


def replaced_size(text: str, old: str, new: str, count: Any = -1) -> int:
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def joined_size(items: list[Any], sep: str) -> int:
    return sum(size_of(item) for item in items) + len(sep) * max(len(items) - 1, 0)


def _padding(name: str) -> Callable[..., str]:
    def method(text: str, width: Any, *rest: Any) -> str:
        check_size(_int(width), f"{name}()")
        return getattr(text, name)(width, *rest)

    return method


def _expandtabs(text: str, tabsize: Any = 8) -> str:
    check_size(len(text) + text.count("\t") * _int(tabsize), "expandtabs()")
    return text.expandtabs(tabsize)


def _replace(text: str, old: Any, new: Any, *rest: Any) -> str:
    if isinstance(old, str) and isinstance(new, str):
        check_size(replaced_size(text, old, new, *rest), "replace()")
    return text.replace(old, new, *rest)


def _join(text: str, iterable: Any) -> str:
    items = list(iterable)
    check_size(joined_size(items, text), "join()")
    return text.join(items)


def _translate(text: str, table: Any) -> str:
    longest = 1
    if isinstance(table, Mapping):
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
    check_size(len(text) * max(longest, 1), "translate()")
    return text.translate(table)


# The `str` methods a template may call whose result can outgrow their string.
STR_METHODS: dict[str, Callable[..., str]] = {
    **{name: _padding(name) for name in ("center", "ljust", "rjust", "zfill")},
    "expandtabs": _expandtabs,
    "replace": _replace,
    "join": _join,
    "translate": _translate,
}


def _center_filter(value: Any, width: Any = 80) -> str:
    check_size(_int(width), "center")
    return filters.do_center(value, width)


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise filters.FilterArgumentError("can't handle positional and keyword arguments at the same time")
    return percent_format(str(value), kwargs or args)


def _indent_filter(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    step = len(width) if isinstance(width, str) else _int(width)
    check_size(len(text) + (text.count("\n") + 1) * step, "indent")
    return filters.do_indent(text, width, first, blank)


@pass_environment
def _wordwrap_filter(env: Any, s: Any, width: Any = 79, break_long_words: bool = True,
                     wrapstring: Any = None, break_on_hyphens: bool = True) -> str:
    text = str(s)
    sep = env.newline_sequence if wrapstring is None else str(wrapstring)
    # A line holds at least a word (or `width` characters of one): so many lines at most.
    lines = 2 * len(text.split()) + text.count("\n") + 1 + len(text) // max(_int(width), 1)
    check_size(len(text) + lines * len(sep), "wordwrap")
    return filters.do_wordwrap(env, text, width, break_long_words, wrapstring, break_on_hyphens)


@pass_eval_context
def _replace_filter(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> str:
    check_size(replaced_size(str(s), str(old), str(new), -1 if count is None else count),
               "replace")
    return filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join_filter(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    if attribute is not None:
        value = map(filters.make_attrgetter(eval_ctx.environment, attribute), value)
    items = list(value)
    check_size(joined_size(items, str(d)), "join")
    return filters.sync_do_join(eval_ctx, items, d)


FILTERS: dict[str, Callable[..., str]] = {
    "center": _center_filter,
    "format": _format_filter,
    "indent": _indent_filter,
    "wordwrap": _wordwrap_filter,
    "replace": _replace_filter,
    "join": _join_filter,
}


def concat(values: tuple[Any, ...]) -> str:
    """`a ~ b ~ c`, refused once the pieces pass the cap."""
    parts: list[str] = []
    size = 0
    for value in values:
        part = value if isinstance(value, str) else str(value)
        size += len(part)
        check_size(size, "~")
        parts.append(part)
    return "".join(parts)
