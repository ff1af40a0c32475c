"""The embedded SQLite default: writers serialised, readers never holding the write lock."""

from __future__ import annotations

import sqlite3
import threading

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from orchestrator import db, migrate
from orchestrator.config import Settings


@pytest.fixture
def sqlite_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    migrate.upgrade(url)
    saved = (db._factory, db._url)
    db._factory, db._url = None, None
    db.init(Settings(database_url=url))
    yield tmp_path / "embedded.db"
    db.reset()
    db._factory, db._url = saved


def other_writer(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=0.3, isolation_level=None)
    return conn


def test_a_write_transaction_holds_the_write_lock_from_its_start(sqlite_db):
    with db.session() as s:
        s.execute(text("SELECT 1"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other_writer(sqlite_db).execute("BEGIN IMMEDIATE")


def test_a_read_session_leaves_the_write_lock_free(sqlite_db):
    with db.read_session() as s:
        s.execute(text("SELECT count(*) FROM run_events"))
        conn = other_writer(sqlite_db)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_pooled_connection_that_died_while_idle_is_replaced_unseen(database_url, monkeypatch):
    engine = db.make_engine(database_url, pool_size=1)
    try:
        dead = _backend_pid(engine)
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dead,))
        monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # it has been idle long enough
        assert _backend_pid(engine) != dead  # no error: pinged, found dead, replaced
    finally:
        engine.dispose()


def test_a_connection_back_from_a_transaction_a_moment_ago_is_used_without_a_ping(
    database_url, monkeypatch
):
    engine = db.make_engine(database_url, pool_size=1)
    try:
        dead = _backend_pid(engine)
        with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dead,))
        monkeypatch.setattr(db, "IDLE_PING_SECONDS", 3600.0)
        # Not pinged, so its first user finds it dead; the pool then starts afresh.
        with pytest.raises(OperationalError):
            _backend_pid(engine)
        assert _backend_pid(engine) != dead
    finally:
        engine.dispose()


def test_the_api_answers_reads_while_a_writer_holds_the_lock(sqlite_db):
    from api import create_app

    key = "k" * 40
    app = create_app({"database_url": f"sqlite:///{sqlite_db}", "broker_url": "memory://",
                      "api_key": key, "rate_limit": 0})
    client = app.test_client()
    paths = ["/api/workflows", "/api/pipelines", "/api/pipelines/run", "/api/keys",
             "/api/audit", "/readyz"]
    answers: dict[str, int] = {}

    def read() -> None:
        for path in paths:
            answers[path] = client.get(path, headers={"x-api-key": key}).status_code

    writer = other_writer(sqlite_db)
    writer.execute("BEGIN IMMEDIATE")
    try:
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(10)  # a read that waited for the write lock would wait 30 s
        assert answers == dict.fromkeys(paths, 200)
    finally:
        writer.execute("ROLLBACK")
