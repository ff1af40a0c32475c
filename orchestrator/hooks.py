"""Outgoing webhooks (SPEC §10): the hooks, where they may point, the outbox the write path
fills, and the Standard Webhooks signature.

A transition that causes a subscribed event writes one `hook_deliveries` row per hook in
its own transaction (`outbox`), so a crash can neither lose an event nor invent one.
Workers send the rows afterwards (`orchestrator.hook_delivery`), retrying with backoff
under the same `webhook-id`: delivery is at least once, and duplicates share an id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Integer, String, bindparam, delete, insert, literal, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from orchestrator.config import Settings
from orchestrator.models import Hook, HookDelivery, now
from orchestrator.records import NotFound
from orchestrator.runtimes.httpio import check_url
from orchestrator.vocab import DeliveryStatus, HookEvent

HOOKS = Hook.__table__
DELIVERIES = HookDelivery.__table__
SECRET_PREFIX = "whsec_"


class InvalidHook(ValueError):
    pass


# -- where a hook may point ----------------------------------------------------------------


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def check_target(url: Any, settings: Settings) -> str:
    """`url` as a hook may store it, or InvalidHook: http(s) only, and no literal
    loopback, private or link-local address (nor `localhost`) unless HOOKS_ALLOW_PRIVATE."""
    try:
        problem = check_url(url)
        host = (urlsplit(url).hostname or "").lower()
        host.encode("idna")  # a name a resolver could be asked for
    except ValueError as exc:  # a bracketed host that is no address, an empty label, …
        raise InvalidHook(f"url is not a usable URL ({exc}): {url!r}") from None
    if problem is not None:
        raise InvalidHook(f"url {problem}")
    if len(url) > 2000:
        raise InvalidHook("url must be at most 2000 characters")
    if not host or any(c.isspace() or not c.isprintable() for c in host):
        raise InvalidHook(f"url has no usable host name: {url!r}")
    address = _literal_address(host)
    local = host == "localhost" or host.endswith(".localhost")
    if not settings.hooks_allow_private and (local or (address and _private(address))):
        raise InvalidHook(f"url points at a loopback or private address ({host}): refused "
                          "unless HOOKS_ALLOW_PRIVATE=true")
    return url


def refuse_delivery(url: str, settings: Settings) -> str | None:
    """Why a delivery to `url` may not be sent now, or None. The host must be one that
    HOOKS_ALLOW_HOSTS names (when set), and every address it resolves to must be public
    unless HOOKS_ALLOW_PRIVATE: an address is checked again here, where it is resolved,
    since a name can point anywhere by the time it is used."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if settings.hooks_allow_hosts and host not in settings.hooks_allow_hosts:
        return f"host {host} is not in HOOKS_ALLOW_HOSTS"
    try:
        found = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # unknown, or not a name at all (UnicodeError)
        return f"cannot resolve {host}: {exc}"
    addresses = {info[4][0] for info in found}
    if not settings.hooks_allow_private and any(_private(a) for a in addresses):
        return f"{host} resolves to a loopback or private address: refused"
    return None


# -- hooks -----------------------------------------------------------------------------------


def events_column(events: list[str]) -> str:
    return "," + ",".join(events) + ","


def events_of(hook: Hook) -> list[str]:
    return [e for e in hook.events.split(",") if e]


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def list_hooks(s: Session) -> list[Hook]:
    return list(s.scalars(select(Hook).order_by(Hook.id)))


def get_hook(s: Session, hook_id: int) -> Hook:
    hook = s.get(Hook, hook_id)
    if hook is None:
        raise NotFound(f"hook {hook_id} not found")
    return hook


def create_hook(s: Session, fields: dict[str, Any], created_by: str) -> Hook:
    ts = now()
    hook = Hook(url=fields["url"], events=events_column(fields["events"]),
                description=fields.get("description"), enabled=fields.get("enabled", True),
                secret=new_secret(), created_by=created_by, created_at=ts, updated_at=ts)
    s.add(hook)
    s.flush()
    return hook


def update_hook(s: Session, hook_id: int, fields: dict[str, Any]) -> Hook:
    hook = get_hook(s, hook_id)
    for key, value in fields.items():
        setattr(hook, key, events_column(value) if key == "events" else value)
    hook.updated_at = now()
    s.flush()
    return hook


def delete_hook(s: Session, hook_id: int) -> None:
    get_hook(s, hook_id)
    s.execute(delete(DELIVERIES).where(DELIVERIES.c.hook_id == hook_id))
    s.execute(delete(HOOKS).where(HOOKS.c.id == hook_id))


def list_deliveries(s: Session, hook_id: int | None, limit: int) -> list[HookDelivery]:
    query = select(HookDelivery).order_by(HookDelivery.id.desc()).limit(limit)
    if hook_id is not None:
        get_hook(s, hook_id)
        query = query.where(HookDelivery.hook_id == hook_id)
    return list(s.scalars(query))


# -- the outbox ------------------------------------------------------------------------------

# One row per enabled hook subscribed to the event, in the caller's transaction.
_ENQUEUE = insert(DELIVERIES).from_select(
    ["hook_id", "event_type", "run_id", "step_index", "event_at", "status", "attempts",
     "next_attempt_at", "created_at"],
    select(
        HOOKS.c.id,
        bindparam("event_type", type_=String),
        bindparam("run_id", type_=Integer),
        bindparam("step_index", type_=Integer),
        bindparam("ts"),
        literal(DeliveryStatus.PENDING.value),
        literal(0),
        bindparam("ts"),
        bindparam("ts"),
    ).where(HOOKS.c.enabled.is_(True), HOOKS.c.events.like(bindparam("pattern"))),
).returning(DELIVERIES.c.id)  # counted by its rows: a driver's rowcount may say -1
# The run events of the write path that are hook events under the same name.
TRANSITION_EVENTS = frozenset({HookEvent.RUN_COMPLETED, HookEvent.RUN_FAILED,
                               HookEvent.RUN_CANCELLED, HookEvent.STEP_FAILED})


def outbox(conn: Connection, event_type: str, run_id: int, step_index: int | None,
           ts: float) -> int:
    """Write the deliveries of one event; how many hooks it is for."""
    return len(conn.execute(_ENQUEUE, {"event_type": event_type, "run_id": run_id,
                                       "step_index": step_index, "ts": ts,
                                       "pattern": f"%,{event_type},%"}).all())


# -- signing ---------------------------------------------------------------------------------


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of the Standard Webhooks scheme: `v1,` and the
    base64 HMAC-SHA256, keyed by the secret's bytes after `whsec_`, of
    `<id>.<timestamp>.<body>`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
