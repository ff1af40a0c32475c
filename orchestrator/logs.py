"""Logging setup: one JSON object per line (or plain text on a terminal), with run context.

Every record about a run carries `run_id`, `step_index`, `spawn_id` and `pipeline`: from
the record's `extra`, or else from the context a worker binds while it runs a step
(`bind`). Known secrets (`orchestrator.masking`) and anything shaped like a key, token or
password are masked before a line is written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from orchestrator import masking
from orchestrator.masking import MASK

RUN_FIELDS = ("run_id", "step_index", "spawn_id", "pipeline")

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "orchestrator_log_context", default=None
)

_PATTERNS = [
    # Our own API keys.
    (re.compile(r"\bpo_[A-Za-z0-9_\-]{16,}"), MASK),
    # Authorization headers and bearer tokens.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + MASK),
    # A key passed in a query string (the event stream accepts ?key=).
    (re.compile(r"([?&]key=)[^&\s\"']+"), r"\1" + MASK),
    # Passwords inside URLs: scheme://user:password@host
    (re.compile(r"(\w+://[^:/@\s]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
    # key=value / "key": "value" where the key names a secret.
    (re.compile(
        r"(?i)((?:api[_-]?key|x-api-key|token|secret|password|passwd|authorization)"
        r"[\"']?\s*[:=]\s*[\"']?)(?!\*\*\*)[^\s\"'&,;}]+"
    ), r"\1" + MASK),
]


def redact(text: str) -> str:
    text = masking.mask(text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


# -- run context ----------------------------------------------------------------------


def bind(**fields: Any) -> None:
    """Add fields to the context of this thread/task; None values are ignored."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    _context.set(current)


def clear() -> None:
    _context.set({})


class ContextFilter(logging.Filter):
    """Copies the bound run context onto records that do not say otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


# -- formatters -----------------------------------------------------------------------


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the run fields, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        extras = _extras(record)
        if "run_id" in extras:
            for key in RUN_FIELDS:
                out[key] = extras.pop(key, None)
        out.update((k, _jsonable(v)) for k, v in extras.items())
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = redact(record.exc_text)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable, for a terminal: the run fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        fields = " ".join(f"{k}={extras[k]}" for k in RUN_FIELDS if extras.get(k) is not None)
        return redact(f"{line} [{fields}]" if fields else line)


def use_json(fmt: str | None, stream: TextIO) -> bool:
    """`LOG_FORMAT=json|text`; by default JSON unless the stream is a terminal."""
    if fmt in ("json", "text"):
        return fmt == "json"
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def make_formatter(fmt: str | None, stream: TextIO) -> logging.Formatter:
    return JsonFormatter() if use_json(fmt, stream) else TextFormatter()


def configure(
    level: str | int | None = None,
    fmt: str | None = None,
    secrets: Iterable[str | None] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Point the root logger at one handler of ours (replacing any earlier one)."""
    stream = stream or sys.stderr
    masking.learn(secrets)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_orchestrator", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream)
    handler._orchestrator = True  # type: ignore[attr-defined]
    handler.setFormatter(make_formatter(fmt, stream))
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level if isinstance(level, int) else str(level).upper())
    return handler

