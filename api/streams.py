"""Caps on open /api/events streams: per API key, per API host, and per process.

A stream holds a lease, renewed while it runs and dropped when it closes; a lease whose
process died expires by itself after LEASE_SECONDS. Key and host counts are shared by
every process: in the broker's Redis (two sorted sets scored by expiry), or, without
Redis, in a SQLite file in the host's temporary folder. The per-process count keeps some
of a process's threads for the rest of the API while each stream still holds one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sqlite3
import stat
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import redis

from orchestrator.config import Settings

log = logging.getLogger("orchestrator.api.streams")

LEASE_SECONDS = 30.0
RENEW_SECONDS = LEASE_SECONDS / 3
RETRY_AFTER_SECONDS = 10


class Full(Exception):
    """No slot: `what` names the cap that was reached."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class Leases(Protocol):
    def take(self, slot: str, owner: str, now: float) -> str | None:
        """Lease a slot for `owner`; None, or the name of the cap that is full."""

    def renew(self, slot: str, owner: str, now: float) -> None: ...

    def drop(self, slot: str, owner: str) -> None: ...


# Both counts in one step: expired leases go first, so a dead process's slots free.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 'key' end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 'host' end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
return false
"""


class RedisLeases:
    def __init__(self, url: str, prefix: str, host: str, per_host: int, per_key: int):
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.script = self.client.register_script(_TAKE)
        self.prefix = f"{prefix}streams:"
        self.host_set = f"{self.prefix}host:{host}"
        self.per_host, self.per_key = per_host, per_key

    def _sets(self, owner: str) -> list[str]:
        return [self.host_set, f"{self.prefix}key:{owner}"]

    def take(self, slot: str, owner: str, now: float) -> str | None:
        full = self.script(keys=self._sets(owner), args=[
            now, now + LEASE_SECONDS, slot, self.per_host, self.per_key, int(LEASE_SECONDS) * 2])
        return full.decode() if full else None

    def renew(self, slot: str, owner: str, now: float) -> None:
        pipe = self.client.pipeline()
        for name in self._sets(owner):
            pipe.zadd(name, {slot: now + LEASE_SECONDS}, xx=True)
            pipe.expire(name, int(LEASE_SECONDS) * 2)
        pipe.execute()

    def drop(self, slot: str, owner: str) -> None:
        pipe = self.client.pipeline()
        for name in self._sets(owner):
            pipe.zrem(name, slot)
        pipe.execute()


class FileLeases:
    """The same counts for one host without Redis: a SQLite file every process opens."""

    def __init__(self, path: Path, per_host: int, per_key: int):
        self.path = path
        self.per_host, self.per_key = per_host, per_key
        try:
            with self._connect() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS leases "
                             "(slot TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)")
        except sqlite3.Error as exc:  # an unwritable temporary folder: only per-process caps
            log.warning("stream caps file %s unavailable: %s", path, exc)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5, isolation_level=None)

    def take(self, slot: str, owner: str, now: float) -> str | None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")  # one process counts and inserts at a time
            conn.execute("DELETE FROM leases WHERE expires <= ?", (now,))
            (mine,) = conn.execute("SELECT count(*) FROM leases WHERE owner = ?", (owner,)).fetchone()
            (every,) = conn.execute("SELECT count(*) FROM leases").fetchone()
            full = "key" if mine >= self.per_key else "host" if every >= self.per_host else None
            if full is None:
                conn.execute("INSERT INTO leases VALUES (?, ?, ?)", (slot, owner, now + LEASE_SECONDS))
            conn.execute("COMMIT")
            return full
        finally:
            conn.close()

    def renew(self, slot: str, owner: str, now: float) -> None:
        with self._connect() as conn:
            conn.execute("UPDATE leases SET expires = ? WHERE slot = ?", (now + LEASE_SECONDS, slot))

    def drop(self, slot: str, owner: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM leases WHERE slot = ?", (slot,))


@dataclass
class Lease:
    """One open stream's slot: renew it while streaming, release it once (idempotent)."""

    gate: StreamGate
    slot: str
    owner: str
    renewed: float = field(default_factory=time.monotonic)
    released: bool = False

    def renew(self) -> None:
        if time.monotonic() - self.renewed < RENEW_SECONDS:
            return
        self.renewed = time.monotonic()
        self.gate.shared(lambda: self.gate.leases.renew(self.slot, self.owner, time.time()))

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.gate.shared(lambda: self.gate.leases.drop(self.slot, self.owner))
        with self.gate.lock:
            self.gate.open_here -= 1


class StreamGate:
    def __init__(self, leases: Leases, per_process: int):
        self.leases = leases
        self.per_process = per_process
        self.lock = threading.Lock()
        self.open_here = 0

    def open(self, key_hash: str) -> Lease:
        """A lease for one more stream of this key, or Full."""
        with self.lock:
            if self.open_here >= self.per_process:
                raise Full("process")
            self.open_here += 1
        lease = Lease(self, uuid.uuid4().hex, key_hash)
        full = self.shared(lambda: self.leases.take(lease.slot, key_hash, time.time()))
        if full:
            lease.released = True
            with self.lock:
                self.open_here -= 1
            raise Full(full)
        return lease

    @staticmethod
    def shared(call):
        """The shared counts are a guard, not a dependency: if Redis is down, streams
        still open (the per-process cap still holds) and the API keeps serving."""
        try:
            return call()
        except (redis.RedisError, sqlite3.Error) as exc:
            log.warning("stream caps unavailable, stream let through: %s", exc)
            return None


def make_gate(settings: Settings) -> StreamGate:
    per_host, per_key = settings.events_max_streams, settings.events_max_streams_per_key
    if settings.broker_url.startswith(("redis://", "rediss://")):
        leases: Leases = RedisLeases(settings.broker_url, settings.broker_prefix,
                                     socket.gethostname(), per_host, per_key)
    else:
        # Processes of one install (same database) share a file; other installs do not.
        name = hashlib.sha256(f"{settings.database_url}|{settings.broker_prefix}".encode())
        try:
            path = private_dir() / f"streams-{name.hexdigest()[:16]}.db"
            leases = FileLeases(path, per_host, per_key)
        except OSError as exc:
            log.warning("stream caps shared by no other process: %s", exc)
            leases = NoLeases()
    return StreamGate(leases, settings.events_max_streams_per_process)


def private_dir() -> Path:
    """This user's own folder under the temporary one. A file at a predictable path in a
    shared /tmp could be made first by another local user and filled with leases that
    never end; a folder that is not this user's alone is refused instead."""
    folder = Path(tempfile.gettempdir()) / f"orchestrator-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{folder} is not a folder of this user's alone (mode 0700)")
    return folder


class NoLeases:
    """No shared counts: only the per-process cap holds."""

    def take(self, slot: str, owner: str, now: float) -> str | None:
        return None

    def renew(self, slot: str, owner: str, now: float) -> None:
        pass

    def drop(self, slot: str, owner: str) -> None:
        pass
