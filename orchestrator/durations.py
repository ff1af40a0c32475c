"""The step-duration histogram behind `orchestrator_step_duration_seconds`.

A finished step's last attempt (completed or failed, having started) is counted once, in
the transaction that finishes it, so a scrape reads a few rows per template instead of
every step ever run. `BUCKETS` are the histogram's upper bounds in seconds: the rows hold
each step in the first bucket it fits (index `len(BUCKETS)` past the last), and changing
the bounds means recounting from `run_steps` (see migration 0004), leaving out the steps
a rerun carried over (`reused`): they were counted in the run that ran them.
"""

from __future__ import annotations

import bisect
from functools import cache

from sqlalchemy import Connection, Insert, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from orchestrator.models import StepDuration

BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Rows per histogram key: steps of one template ending at once spread over these by run id.
SHARDS = 8
TABLE = StepDuration.__table__


def bucket_of(seconds: float) -> int:
    """The first bucket whose upper bound holds `seconds` (Prometheus's `le`)."""
    return bisect.bisect_left(BUCKETS, seconds)


def observe(conn: Connection, run_id: int, template_name: str, agent: str, status: str,
            seconds: float) -> None:
    conn.execute(_add(conn.dialect.name), {
        "template_name": template_name, "agent": agent, "status": status,
        "bucket": bucket_of(seconds), "shard": run_id % SHARDS, "seconds": seconds,
    })


@cache
def _add(dialect: str) -> Insert:
    """INSERT … ON CONFLICT DO UPDATE: one statement, whether the row exists yet or not."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(TABLE).values(
        template_name=bindparam("template_name"), agent=bindparam("agent"),
        status=bindparam("status"), bucket=bindparam("bucket"), shard=bindparam("shard"),
        steps=1, seconds=bindparam("seconds"),
    )
    return stmt.on_conflict_do_update(
        index_elements=[TABLE.c.template_name, TABLE.c.agent, TABLE.c.status, TABLE.c.bucket,
                        TABLE.c.shard],
        set_={"steps": TABLE.c.steps + 1, "seconds": TABLE.c.seconds + stmt.excluded.seconds},
    )
