"""Agent profiles: named runtime configurations, loaded from the TOML file in AGENTS_FILE.

Profiles are server-side only, because some of them run programs. With no file, the
profiles `default` (manual) and `echo` exist, so a bare install can run dry pipelines.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import injection

BUILTIN = {
    "default": {"runtime": "manual"},
    "echo": {"runtime": "echo"},
}


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    runtime: str
    options: dict[str, Any] = field(default_factory=dict)


def scan_context(profile: Profile | None) -> str:
    """The injection guard's context for templates using `profile` (its `injection_scan`
    option; check_profiles refuses a bad value at start, and anything else scans fully)."""
    value = profile.options.get("injection_scan") if profile is not None else None
    return value if value in injection.CONTEXTS else injection.DEFAULT_CONTEXT


def load_profiles(path: str | None) -> dict[str, Profile]:
    raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN.items()}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProfileError(f"cannot read AGENTS_FILE {path}: {exc}") from exc
        agents = data.get("agents", {})
        if not isinstance(agents, dict):
            raise ProfileError(f"{path}: [agents] must be a table of profiles")
        for name, table in agents.items():
            if not isinstance(table, dict) or "runtime" not in table:
                raise ProfileError(f"{path}: agents.{name} needs a runtime")
            raw[name] = dict(table)
    return {
        name: Profile(name, str(t.pop("runtime")), t) for name, t in raw.items()
    }
