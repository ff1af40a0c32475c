"""The one engine and `sessionmaker` of a process.

Edges open transactions (`with db.session() as s:`, which commits on success); services
take a session and never commit. On SQLite every transaction starts with BEGIN IMMEDIATE,
so writers are serialised the way `SELECT … FOR UPDATE` serialises them on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from orchestrator.config import Settings

_factory: sessionmaker[Session] | None = None
_url: str | None = None


def normalize_url(url: str) -> str:
    """Let users write postgres:// or postgresql:// and still get psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 5) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # Readers need no write lock; everything else takes it up front.
            read_only = conn.get_execution_options().get("read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=pool_size * 2, pool_recycle=1800
    )
    _ping_when_idle(engine)
    return engine


# A connection unused for this long is pinged before it is handed out.
IDLE_PING_SECONDS = 2.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle: one that went back to the
    pool a moment ago is fine, and pinging it would add a round trip to every transaction.
    A connection that died while idle (the database restarted) is replaced unseen."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _in_use_until_now(_dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):
        if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)  # the check pool_pre_ping makes
        except Exception as exc:  # whatever the driver raises: the pool retries anew
            raise DisconnectionError(f"idle connection lost: {exc}") from exc


def init(settings: Settings) -> sessionmaker[Session]:
    """Create this process's engine and session factory (idempotent per URL)."""
    global _factory, _url
    if _factory is not None and _url == settings.database_url:
        return _factory
    reset()
    _factory = sessionmaker(
        bind=make_engine(settings.database_url, settings.db_pool_size), expire_on_commit=False
    )
    _url = settings.database_url
    return _factory


def factory() -> sessionmaker[Session]:
    if _factory is None:
        init(Settings.from_env())
    assert _factory is not None
    return _factory


def engine() -> Engine:
    return factory().kw["bind"]


@contextlib.contextmanager
def session() -> Iterator[Session]:
    """A transaction: commits when the block ends, rolls back if it raises."""
    with factory().begin() as s:
        yield s


@contextlib.contextmanager
def read_session() -> Iterator[Session]:
    """A transaction that only reads: on SQLite it does not take the write lock."""
    bind = engine().execution_options(read_only=True)
    with Session(bind=bind, expire_on_commit=False) as s, s.begin():
        yield s


def reset() -> None:
    """Forget the engine (tests, and forked workers that must not share sockets)."""
    global _factory
    if _factory is not None:
        _factory.kw["bind"].dispose()
    _factory = None
