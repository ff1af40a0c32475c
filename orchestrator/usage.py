"""Usage (SPEC §11, §15): what a step's session spent, as its runtime reported it plus
`input_tokens`, `output_tokens` and `cost_usd`, and a run's sum.

Runtimes report in their own words (OpenAI's `prompt_tokens`/`completion_tokens`, a
program's file, a gateway's callback); `normalize` keeps those keys and adds the three
this service reads. `cost_usd` is the reporter's own when it gave one, else computed from
the profile's `price_input_per_mtok` / `price_output_per_mtok` (USD per million tokens),
else null: a cost is never guessed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

# A usage file or object larger than this is not read: usage is a few numbers.
MAX_REPORT_BYTES = 65536
_IN = ("input_tokens", "prompt_tokens")
_OUT = ("output_tokens", "completion_tokens")


def _count(raw: dict[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _money(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value) and value >= 0:
        return float(value)
    return None


def prices(options: dict[str, Any]) -> tuple[float, float] | None:
    """A profile's prices per million input and output tokens, if it has both."""
    found = (_money(options.get("price_input_per_mtok")),
             _money(options.get("price_output_per_mtok")))
    return None if None in found else (found[0], found[1])  # type: ignore[return-value]


def normalize(raw: Any, priced: tuple[float, float] | None = None) -> dict[str, Any] | None:
    """`raw` as a step stores it, or None when nothing usable was reported."""
    if not isinstance(raw, dict) or not raw:
        return None
    tokens_in, tokens_out = _count(raw, _IN), _count(raw, _OUT)
    cost = _money(raw.get("cost_usd"))
    if cost is None and priced is not None and tokens_in is not None and tokens_out is not None:
        cost = round((tokens_in * priced[0] + tokens_out * priced[1]) / 1e6, 8)
    return {**raw, "input_tokens": tokens_in, "output_tokens": tokens_out, "cost_usd": cost}


def read_report(path: str) -> dict[str, Any] | None:
    """The JSON object a program wrote to its ORCH_USAGE_FILE, if it wrote one."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_REPORT_BYTES + 1)
    except OSError:
        return None
    if not data.strip() or len(data) > MAX_REPORT_BYTES:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def total(usages: Iterable[dict[str, Any] | None]) -> dict[str, Any] | None:
    """A run's usage: the sum over its steps of what they reported (a cost only over the
    steps that had one, and null when none had)."""
    found = [u for u in usages if u]
    if not found:
        return None
    costs = [u["cost_usd"] for u in found if _money(u.get("cost_usd")) is not None]
    return {  # read as normalize does: a step stored before it still counts
        "input_tokens": sum(_count(u, _IN) or 0 for u in found),
        "output_tokens": sum(_count(u, _OUT) or 0 for u in found),
        "cost_usd": round(sum(costs), 8) if costs else None,
    }
