"""The floor: what Celery, Redis and PostgreSQL cost on their own, measured in the same run.

Two self-chaining tasks on a Celery app with exactly our worker settings (make_celery):
`floor.noop` enqueues its successor and does nothing else; `floor.tx` first runs the one
transaction a step transition cannot avoid (lock a row, update a row, insert a row,
commit) with plain psycopg. The last task of a chain stamps the time in Redis.
"""

from __future__ import annotations

import os
import time

import psycopg
import redis

from orchestrator.config import Settings
from worker.app import make_celery

settings = Settings.from_env()
app = make_celery(settings)
app.conf.include = []
app.conf.task_routes = {}
app.conf.task_default_queue = "bench.floor"

_conn: psycopg.Connection | None = None
_redis: redis.Redis | None = None


def _db() -> psycopg.Connection:
    global _conn
    if _conn is None or _conn.closed:
        url = os.environ["FLOOR_PG_URL"]
        _conn = psycopg.connect(url)
    return _conn


def _stamp(key: str) -> None:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["FLOOR_REDIS_URL"])
    _redis.set(key, repr(time.time()), ex=600)


@app.task(name="floor.noop")
def noop(remaining: int, key: str) -> None:
    if remaining > 0:
        noop.delay(remaining - 1, key)
    else:
        _stamp(key)


@app.task(name="floor.tx")
def tx(remaining: int, key: str, row: int) -> None:
    conn = _db()
    with conn.transaction():
        conn.execute("SELECT id FROM floor_runs WHERE id = %s FOR UPDATE", (row,))
        conn.execute("UPDATE floor_runs SET hops = hops + 1 WHERE id = %s", (row,))
        conn.execute("INSERT INTO floor_events (run_id, at) VALUES (%s, %s)", (row, time.time()))
    if remaining > 0:
        tx.delay(remaining - 1, key, row)
    else:
        _stamp(key)


def prepare(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS floor_runs (id int PRIMARY KEY, hops int NOT NULL)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS floor_events (id bigserial PRIMARY KEY, run_id int, at float8)"
    )
    conn.execute("INSERT INTO floor_runs VALUES (1, 0) ON CONFLICT DO NOTHING")
