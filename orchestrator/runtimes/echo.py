"""`echo`: succeeds at once with the rendered prompt as output. For dry runs and benchmarks."""

from __future__ import annotations

import uuid

from orchestrator.profiles import Profile
from orchestrator.runtimes import AgentSession, Outcome, SpawnRequest, register


@register("echo")
class EchoRuntime:
    holds_worker = True

    def __init__(self, profile: Profile):
        self.profile = profile

    def spawn(self, req: SpawnRequest) -> AgentSession:
        return AgentSession(f"echo-{uuid.uuid4().hex[:12]}", Outcome(True, output=req.prompt))

    async def wait(self, session: AgentSession) -> Outcome:
        return session.outcome  # ended within spawn: never handed to the waiter

    async def stop(self, session: AgentSession) -> None:
        return None

    def terminate(self, session: AgentSession) -> None:
        pass

    def cancel(self, spawn_id: str) -> None:
        pass
