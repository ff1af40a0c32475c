"""Callbacks from agent gateways: a per-attempt secret URL instead of an API key.

Before a `webhook` step spawns, the worker arms the running attempt with a fresh random
secret and stores only its hash; the secret travels once, inside `callback_url`. A
callback that presents it resolves that attempt through the single write path, exactly
as the worker would have; the secret names one attempt and grants nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator import contracts, masking, runs, usage
from orchestrator import transitions as t
from orchestrator.effects import CancelSession
from orchestrator.models import RunStep


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_hash(run_id: int, step_index: int, attempt: int, secret: str) -> str:
    # Bound to the attempt, so a secret cannot be replayed with another step in its URL.
    material = f"{run_id}:{step_index}:{attempt}:{secret}".encode()
    return hashlib.sha256(material).hexdigest()


def callback_url(public_url: str, run_id: int, step_index: int, attempt: int, secret: str) -> str:
    # In the query as `secret=`, which the service's log redaction masks in access logs.
    return f"{public_url.rstrip('/')}/api/callbacks/{run_id}/{step_index}/{attempt}?secret={secret}"


def arm(s: Session, run_id: int, step_index: int, attempt: int, secret: str) -> bool:
    """Store the hash of the running attempt's secret. False if the attempt is no longer
    running (cancelled between claim and spawn)."""
    res = s.execute(
        update(RunStep)
        .where(runs.running_attempt(run_id, step_index, attempt))
        .values(callback_secret_hash=secret_hash(run_id, step_index, attempt, secret))
        .returning(RunStep.id)
    )
    return res.first() is not None


def verify(s: Session, run_id: int, step_index: int, attempt: int, secret: str) -> bool:
    """True if `secret` is the one armed for this attempt (whatever the step's status now)."""
    stored = s.scalar(
        select(RunStep.callback_secret_hash).where(
            RunStep.run_id == run_id, RunStep.step_index == step_index
        )
    )
    if not stored:
        return False
    return hmac.compare_digest(stored, secret_hash(run_id, step_index, attempt, secret))


@dataclass(frozen=True)
class Report:
    """What a gateway says about a session it ran."""

    success: bool
    error: str | None = None
    output: str | None = None
    output_truncated: bool = False
    usage: dict | None = None


def resolve(s: Session, run_id: int, step_index: int, attempt: int,
            report: Report) -> runs.Transition:
    """Resolve the attempt the callback is for. A refusal (the attempt is no longer
    running: resolved already, cancelled, timed out, retried) changes nothing."""
    success = report.success
    error = None if success else (report.error or "the agent gateway reported failure")
    if success:  # the gateway's answer is held to the step's output contract too
        contract = s.scalar(select(RunStep.output_contract).where(
            RunStep.run_id == run_id, RunStep.step_index == step_index))
        error = contracts.violation(contract, masking.mask(report.output))
        success = error is None
    result = runs.StepResult(
        error=error,
        output=report.output,
        output_truncated=report.output_truncated,
        usage=usage.normalize(report.usage),
    )
    proposal = t.Resolve(success, step_index, attempt, allow_pending=False)
    tr = runs.resolve_step(s, run_id, proposal, result)
    # The gateway's own session has ended: it need not be told to cancel it.
    tr.effects = [
        e for e in tr.effects if not (isinstance(e, CancelSession) and e.step_index == step_index)
    ]
    return tr
