"""Agent runtimes behind one small protocol, registered by name.

A runtime spawns an agent session for a step and reports how it ended. Runtimes do I/O
and never touch run state: the executor records what they return. `spawn` is called on a
task's thread; a session that did not end within it is then awaited, with `wait` and
`stop`, on the worker process's asyncio loop (orchestrator.waiter), which holds no task
slot. A runtime whose `holds_worker` is False (manual, webhook) is not awaited at all: its
step is resolved later by an advance, a callback or the sweeper's timeout. A runtime whose
`takes_callback` is True (webhook) gets a `callback_url` carrying a fresh secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator import injection
from orchestrator.profiles import Profile


class SpawnError(Exception):
    """The session could not be started; the message is shown as the step's error."""


@dataclass(frozen=True)
class SpawnRequest:
    run_id: int
    step_index: int
    attempt: int
    template_id: int
    template_name: str
    model: str
    prompt: str
    parameters: dict[str, Any]
    timeout_seconds: float
    callback_url: str | None = None


@dataclass
class Outcome:
    success: bool
    output: str | None = None
    error: str | None = None
    usage: dict[str, Any] | None = None
    output_truncated: bool = False  # the runtime kept only part of what the session wrote


@dataclass
class AgentSession:
    spawn_id: str | None
    # Set when the session ended within spawn (echo, or a synchronous HTTP call).
    outcome: Outcome | None = None
    handle: Any = field(default=None, repr=False)


class Runtime(Protocol):
    holds_worker: bool

    def spawn(self, req: SpawnRequest) -> AgentSession: ...

    async def wait(self, session: AgentSession) -> Outcome:
        """How the session ended, awaited on the waiter's loop (cancellable)."""

    async def stop(self, session: AgentSession) -> Outcome | None:
        """End a session being awaited, on the waiter's loop; what it had produced so far
        (output a timed-out step keeps), if anything."""

    def terminate(self, session: AgentSession) -> None:
        """End a session this process spawned and never handed to the waiter."""

    def cancel(self, spawn_id: str) -> None:
        """End a session known only by its spawn_id (from any process); best effort."""


RuntimeFactory = Callable[[Profile], Runtime]
_REGISTRY: dict[str, RuntimeFactory] = {}


def register(name: str) -> Callable[[RuntimeFactory], RuntimeFactory]:
    def wrap(factory: RuntimeFactory) -> RuntimeFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def runtime_names() -> list[str]:
    return sorted(_REGISTRY)


def get_runtime(profile: Profile) -> Runtime:
    try:
        factory = _REGISTRY[profile.runtime]
    except KeyError:
        raise SpawnError(
            f"agent profile {profile.name!r} names unknown runtime {profile.runtime!r} "
            f"(known: {', '.join(runtime_names())})"
        ) from None
    try:
        return factory(profile)
    except (TypeError, ValueError, AttributeError) as exc:  # an option of the wrong shape
        raise SpawnError(f"agent profile {profile.name!r} is misconfigured: {exc}") from exc


def check_profiles(profiles: dict[str, Profile]) -> list[str]:
    """What is wrong with each profile that could not run a step, one line each: a
    service checks at start what would otherwise fail every step that uses it."""
    problems = []
    for profile in profiles.values():
        try:
            get_runtime(profile)
        except SpawnError as exc:
            problems.append(str(exc))
        scan = profile.options.get("injection_scan", injection.DEFAULT_CONTEXT)
        if scan not in injection.CONTEXTS:
            problems.append(f"agent profile {profile.name!r}: injection_scan must be one of "
                            f"{', '.join(injection.CONTEXTS)}, got {scan!r}")
    return problems


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_placeholders(text: str, values: dict[str, Any]) -> str:
    """Replace `{name}` with values[name]; `{{`/`}}` are literal braces. No attribute access."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise SpawnError(f"unknown placeholder {{{name}}} (known: {', '.join(sorted(values))})")
        return str(values[name])

    parts = text.split("{{")
    out = []
    for part in parts:
        pieces = part.split("}}")
        out.append("}".join(_PLACEHOLDER.sub(sub, p) for p in pieces))
    return "{".join(out)


def request_values(req: SpawnRequest) -> dict[str, Any]:
    values: dict[str, Any] = {k: v for k, v in req.parameters.items() if isinstance(k, str)}
    values.update(
        prompt=req.prompt,
        model=req.model,
        run_id=req.run_id,
        step_index=req.step_index,
        attempt=req.attempt,
        template_id=req.template_id,
        template_name=req.template_name,
    )
    return values


# Import the built-in runtimes so they register themselves.
from orchestrator.runtimes import command, echo, manual, openai, webhook  # noqa: E402,F401
