"""`manual`: spawns nothing; a person resolves the step with Step Done / Step Failed."""

from __future__ import annotations

from orchestrator.profiles import Profile
from orchestrator.runtimes import AgentSession, SpawnRequest, register


@register("manual")
class ManualRuntime:
    holds_worker = False

    def __init__(self, profile: Profile):
        self.profile = profile

    def spawn(self, req: SpawnRequest) -> AgentSession:
        return AgentSession(None)

    def terminate(self, session: AgentSession) -> None:
        pass

    def cancel(self, spawn_id: str) -> None:
        pass
