"""API keys: creation, hashing and lookup, and the role ladder viewer < operator < admin.

Keys are random 256-bit tokens, so a single SHA-256 is a sound way to store them: lookup
is by hash, and the bootstrap key from `API_KEY` is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.models import ApiKey
from orchestrator.vocab import Role

ROLES = tuple(Role)


@dataclass(frozen=True)
class Identity:
    name: str
    role: str

    def can(self, role: str) -> bool:
        return Role(self.role).at_least(role)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(s: Session, name: str, role: str) -> tuple[ApiKey, str]:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    key = "po_" + secrets.token_urlsafe(32)
    row = ApiKey(name=name, role=role, key_hash=hash_key(key), prefix=key[:10])
    s.add(row)
    s.flush()
    return row, key


def identify(s: Session, key: str, bootstrap_key: str | None) -> Identity | None:
    if not key:
        return None
    if bootstrap_key and hmac.compare_digest(key.encode(), bootstrap_key.encode()):
        return Identity("admin", Role.ADMIN)
    row = s.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key), ~ApiKey.revoked))
    return Identity(row.name, row.role) if row else None


def has_keys(s: Session) -> bool:
    return s.scalar(select(ApiKey.id).where(~ApiKey.revoked).limit(1)) is not None
