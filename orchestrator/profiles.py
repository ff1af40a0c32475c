"""Agent profiles: named runtime configurations, loaded from the TOML file in AGENTS_FILE.

Profiles are server-side only, because some of them run programs. With no file, the
profiles `default` (manual) and `echo` exist, so a bare install can run dry pipelines.
Options every runtime has: `edit_role` (the role a caller needs to write a template that
uses the profile).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator import injection
from orchestrator.vocab import Role

BUILTIN = {
    "default": {"runtime": "manual"},
    "echo": {"runtime": "echo"},
}


# Who may write a template on a profile: any operator (the default), or only an admin,
# for a profile whose sessions can do more than an operator may (run a shell, say).
EDIT_ROLES = (Role.OPERATOR, Role.ADMIN)
# The service's own secrets in the worker's environment, which no session may be given.
SERVICE_SECRET_ENV = ("API_KEY", "DATABASE_URL", "BROKER_URL")
SERVICE_SECRET_PREFIX = "FLOWER_"


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    runtime: str
    options: dict[str, Any] = field(default_factory=dict)
    # The variables other profiles name in `api_key_env`, each with that profile's name:
    # their keys are not this profile's to hand on.
    others_key_env: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def edit_role(self) -> str:
        return self.options.get("edit_role") or Role.OPERATOR

    def secret_env_owner(self, name: str) -> str | None:
        """Whose secret the worker's variable `name` is, if it is not this profile's to
        pass on: "the service", another profile, or None."""
        if name in SERVICE_SECRET_ENV or name.startswith(SERVICE_SECRET_PREFIX):
            return "the service"
        owner = self.others_key_env.get(name)
        return f"agent profile {owner!r}" if owner else None


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
            if table.get("edit_role", Role.OPERATOR) not in EDIT_ROLES:
                raise ProfileError(f"{path}: agents.{name}: edit_role must be one of "
                                   f"{', '.join(EDIT_ROLES)}, got {table['edit_role']!r}")
            raw[name] = dict(table)
    profiles = {name: Profile(name, str(t.pop("runtime")), t) for name, t in raw.items()}
    key_env = {name: p.options.get("api_key_env") for name, p in profiles.items()}
    return {
        name: replace(p, others_key_env={
            env: owner for owner, env in key_env.items() if owner != name and isinstance(env, str)
        })
        for name, p in profiles.items()
    }
