"""Checks a command makes before it starts: the database is there and has its tables, the
broker answers, the port is free. Each failure is one line that says what to run, and
checking creates nothing (connecting to a missing SQLite file would create an empty one).
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import NullPool

from orchestrator.db import normalize_url

UPGRADE = "`orchestrator db upgrade`"


class NotReady(Exception):
    """What is missing, and the command that fixes it, in one line."""


def safe_url(url: str) -> str:
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable url>"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None for another database or an in-memory one)."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError as exc:
        raise NotReady(f"DATABASE_URL is not a database URL: {exc}") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def reach_database(url: str) -> str | None:
    """Connect once; return the schema revision the database is at (None: no tables)."""
    target = normalize_url(url)
    args = {} if target.startswith("sqlite") else {"connect_timeout": 5}
    engine = create_engine(target, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            # read directly: alembic's own reader logs at INFO, ahead of the one line
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError as exc:
        raise NotReady(_unreachable(url, exc)) from None
    finally:
        engine.dispose()


def _unreachable(url: str, exc: OperationalError) -> str:
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    detail = detail.removeprefix("connection failed: ")
    if "does not exist" in detail:
        name = make_url(normalize_url(url)).database
        hint = f"create it (e.g. `createdb {name}`), then run {UPGRADE}"
    else:
        hint = "is the database server running, and is DATABASE_URL right?"
    return f"cannot use the database at {safe_url(url)}: {detail}; {hint}"


def check_schema(url: str) -> None:
    """For every command but `up` and `db upgrade`: the database exists and is migrated."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise NotReady(
            f"no database at {path}: run `orchestrator up` or {UPGRADE} in {path.parent} "
            "first, or set DATABASE_URL")
    revision = reach_database(url)
    head = _head()
    if revision is None:
        raise NotReady(f"the database at {safe_url(url)} has no tables: run {UPGRADE}")
    if revision != head:
        raise NotReady(f"the database at {safe_url(url)} is at schema {revision}, this version "
                       f"needs {head}: run {UPGRADE}")


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    from orchestrator.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def check_broker(celery) -> None:
    """The broker answers (an in-process one always does)."""
    settings = celery.conf.orchestrator_settings
    if settings.embedded_broker:
        return
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # kombu raises the transport's own errors
        raise NotReady(f"cannot reach the broker at {safe_url(settings.broker_url)} "
                       f"({type(exc).__name__}: {exc}): is Redis running, and is BROKER_URL "
                       "right?") from None


def check_port(host: str, port: int) -> None:
    """The port is free to listen on (bound and let go at once, as the server will bind it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise NotReady(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            other = 3001 if port == 3000 else port + 1
            raise NotReady(f"port {port} on {host} is in use: pick another with --port {other} "
                           f"or PORT={other}") from None
