"""The embedded SQLite default: writers serialised, readers never holding the write lock."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

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
