"""Sending the outbox: claim due deliveries, POST them signed, record what came back.

A claim moves a delivery's `next_attempt_at` one lease ahead in a short transaction
(FOR UPDATE SKIP LOCKED, so two senders never take the same row), and the POST happens
after that commit. A sender killed mid-POST leaves the row to come due again when the
lease ends: another sender then sends it with the same `webhook-id` and body. Whatever
answers 2xx is delivered; anything else (an error status, a timeout, no connection) is
retried after `HOOK_RETRY_BASE_SECONDS * 2**(attempt-1)`, at most an hour apart, until
HOOK_RETRY_HOURS have passed since the event.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orchestrator import db
from orchestrator.config import Settings
from orchestrator.hooks import DELIVERIES, HOOKS, refuse_delivery, signature
from orchestrator.runtimes.httpio import Request, display_url
from orchestrator.vocab import DeliveryStatus

log = logging.getLogger(__name__)

BATCH = 16
MAX_BACKOFF_SECONDS = 3600.0
# Render the `data` of a delivery's body: (session, run id, step index) → {"run", "step"?}.
Render = Callable[[Session, int, int | None], dict[str, Any]]


@dataclass(frozen=True)
class Claimed:
    id: int
    url: str
    secret: str
    webhook_id: str
    body: bytes
    attempt: int
    created_at: float


def deliver_due(settings: Settings, render: Render, at: float | None = None) -> int:
    """Send the deliveries that are due, a batch at a time and each batch's POSTs side by
    side, until none is due or about two timeouts have passed (the rest go on the next
    tick): a receiver that hangs holds this task for one timeout, not one per delivery.
    Returns how many were sent (answered or not)."""
    sent = 0
    stop_claiming = time.monotonic() + settings.hook_timeout_seconds * 2
    while True:
        batch = claim(settings, render, time.time() if at is None else at)
        if batch:
            with ThreadPoolExecutor(len(batch), thread_name_prefix="hook") as pool:
                list(pool.map(lambda item: send(settings, item), batch))
        sent += len(batch)
        if len(batch) < BATCH or time.monotonic() >= stop_claiming:
            return sent


def claim(settings: Settings, render: Render, ts: float) -> list[Claimed]:
    """Take up to BATCH due deliveries of enabled hooks for one lease, giving each its
    id and body on its first attempt."""
    lease = settings.hook_timeout_seconds * 2 + 5  # a connect and a read, and some
    due = (select(DELIVERIES.c.id)
           .join_from(DELIVERIES, HOOKS, HOOKS.c.id == DELIVERIES.c.hook_id)
           .where(DELIVERIES.c.status == DeliveryStatus.PENDING,
                  DELIVERIES.c.next_attempt_at <= ts, HOOKS.c.enabled.is_(True))
           .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id)
           .limit(BATCH)
           .with_for_update(of=DELIVERIES, skip_locked=True))
    with db.session() as s:
        rows = s.execute(
            update(DELIVERIES).where(DELIVERIES.c.id.in_(due.scalar_subquery()))
            .values(attempts=DELIVERIES.c.attempts + 1, next_attempt_at=ts + lease)
            .returning(DELIVERIES.c.id, DELIVERIES.c.hook_id, DELIVERIES.c.event_type,
                       DELIVERIES.c.run_id, DELIVERIES.c.step_index, DELIVERIES.c.event_at,
                       DELIVERIES.c.webhook_id, DELIVERIES.c.body, DELIVERIES.c.attempts,
                       DELIVERIES.c.created_at)
        ).all()
        hooks = {h.id: h for h in s.execute(select(HOOKS.c.id, HOOKS.c.url, HOOKS.c.secret)
                                             .where(HOOKS.c.id.in_({r.hook_id for r in rows})))}
        claimed = []
        for r in sorted(rows, key=lambda r: r.id):
            webhook_id, body = r.webhook_id, r.body
            if body is None:  # the first attempt: the id and the body every retry sends
                webhook_id = f"msg_{uuid.uuid4().hex}"
                try:
                    with s.begin_nested():
                        body = json.dumps({"type": r.event_type, "timestamp": int(r.event_at),
                                           "data": render(s, r.run_id, r.step_index)},
                                          separators=(",", ":"))
                        s.execute(update(DELIVERIES).where(DELIVERIES.c.id == r.id)
                                  .values(webhook_id=webhook_id, body=body))
                except Exception as exc:  # one that cannot be rendered must not stop the rest
                    log.exception("delivery %s cannot be rendered", r.id)
                    s.execute(update(DELIVERIES).where(DELIVERIES.c.id == r.id).values(
                        status=DeliveryStatus.FAILED, last_error=f"cannot render: {exc}"[:500]))
                    continue
            hook = hooks[r.hook_id]
            claimed.append(Claimed(r.id, hook.url, hook.secret, webhook_id, body.encode(),
                                   r.attempts, r.created_at))
    return claimed


def send(settings: Settings, item: Claimed) -> None:
    """POST one claimed delivery and record the outcome."""
    refused = refuse_delivery(item.url, settings)
    if refused is not None:
        log.warning("delivery %s not sent: %s", item.id, refused)
        _record(item.id, status=DeliveryStatus.FAILED, last_error=refused)
        return
    timestamp = int(time.time())
    headers = {"webhook-id": item.webhook_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": signature(item.secret, item.webhook_id, timestamp,
                                              item.body),
               "User-Agent": "pipeline-orchestrator-webhooks"}
    request = Request(item.url, item.body, headers, connect_timeout=settings.hook_timeout_seconds,
                      read_timeout=settings.hook_timeout_seconds)
    code, error = None, None
    try:
        reply = request.send()
        code = reply.status
        if reply.ok:
            _record(item.id, status=DeliveryStatus.DELIVERED, last_status_code=code,
                    last_error=None, delivered_at=time.time())
            return
        error = f"answered {code}"
    except Exception as exc:  # no connection, a timeout, a broken reply: all retried
        error = f"{type(exc).__name__}: {exc}"[:500]
    ts = time.time()
    if ts - item.created_at >= settings.hook_retry_hours * 3600:
        log.warning("delivery %s to %s given up after %s attempts: %s", item.id,
                    display_url(item.url), item.attempt, error)
        _record(item.id, status=DeliveryStatus.FAILED, last_status_code=code, last_error=error)
        return
    backoff = min(settings.hook_retry_base_seconds * 2 ** (item.attempt - 1),
                  MAX_BACKOFF_SECONDS)
    _record(item.id, last_status_code=code, last_error=error, next_attempt_at=ts + backoff)


def _record(delivery_id: int, **values: Any) -> None:
    with db.session() as s:
        s.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery_id,
                                           DELIVERIES.c.status == DeliveryStatus.PENDING)
                  .values(**values))
