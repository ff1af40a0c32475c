"""The write path's own cost: starts, and claim + chained resolve-and-claim pairs.

`python -m bench.writepath [N]` makes a fresh PostgreSQL database, times N starts of a
three-step pipeline and N pairs (claim step 0; resolve it, claiming step 1 for the same
worker), one transaction each, and prints wall and process time per operation as JSON.

It also counts what PostgreSQL does for one echo step, run by the executor as a worker
runs it (chained, and with CHAIN_STEPS=0): transactions, statements and WAL bytes per
step, and per start. WAL is the cluster's: run it on a quiet server.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import psycopg
from sqlalchemy import event

from orchestrator import catalog, db, migrate, runs
from orchestrator import transitions as t
from orchestrator.config import Settings
from orchestrator.effects import Recorder, RunStepMessage
from orchestrator.executor import Executor
from orchestrator.profiles import load_profiles

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _timed(n: int, work) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        work(i)
    return {"wall_us": (time.perf_counter() - wall) / n * 1e6,
            "cpu_us": (time.process_time() - cpu) / n * 1e6}


def measure(n: int) -> dict[str, dict[str, float]]:
    tag = uuid.uuid4().hex[:8]
    with db.session() as s:
        steps = [{"template_id": catalog.create_template(
            s, {"name": f"bench-{tag}-{i}", "prompt": "echo hi", "agent": "echo"}, "bench").id}
            for i in range(3)]
        pipeline_id = catalog.create_pipeline(
            s, {"name": f"bench-{tag}", "steps": steps}, "bench").id

    def start(_i: int) -> int:
        with db.session() as s:
            return runs.start_run(s, pipeline_id, "bench").run.id

    run_ids: list[int] = []
    starts = _timed(n, lambda i: run_ids.append(start(i)))
    result = runs.StepResult(output="done")

    def pair(i: int) -> None:
        with db.session() as s:
            claimed = runs.claim_step(s, run_ids[i], 0, 1, "bench", 60.0)
        assert claimed.accepted, claimed.decision.reason
        with db.session() as s:
            tr = runs.resolve_step(s, run_ids[i], t.Resolve(True, 0, 1), result,
                                   continue_as="bench", lease_seconds=60.0)
        assert tr.claimed_next is not None

    return {"start": starts, "claim_resolve_claim": _timed(n, pair)}


class Counter:
    """Statements and commits sent through the service's engine, and WAL written."""

    def __init__(self, pg_url: str):
        self.statements = self.commits = 0
        self.pg = psycopg.connect(pg_url, autocommit=True)
        event.listen(db.engine(), "before_cursor_execute", self._statement)
        event.listen(db.engine(), "commit", self._commit)

    def _statement(self, *_args) -> None:
        self.statements += 1

    def _commit(self, *_args) -> None:
        self.commits += 1

    def lsn(self) -> str:
        return self.pg.execute("SELECT pg_current_wal_lsn()").fetchone()[0]

    def cost(self, work, units: int) -> dict[str, float]:
        statements, commits, lsn = self.statements, self.commits, self.lsn()
        work()
        wal = self.pg.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)",
                              (lsn,)).fetchone()[0]
        return {"transactions": (self.commits - commits) / units,
                "statements": (self.statements - statements) / units,
                "wal_bytes": float(wal) / units}


def step_cost(pg_url: str, runs_n: int = 50, steps: int = 10) -> dict[str, dict[str, float]]:
    """What one echo step costs PostgreSQL, as a worker runs it."""
    tag = uuid.uuid4().hex[:8]
    with db.session() as s:
        tpl = catalog.create_template(
            s, {"name": f"cost-{tag}", "prompt": "echo hi", "agent": "echo"}, "bench").id
        pipeline_id = catalog.create_pipeline(
            s, {"name": f"cost-{tag}", "steps": [{"template_id": tpl}] * steps}, "bench").id
    counter = Counter(pg_url)
    out: dict[str, dict[str, float]] = {}
    ids: list[int] = []

    def start_all() -> None:
        for _ in range(runs_n):
            with db.session() as s:
                ids.append(runs.start_run(s, pipeline_id, "bench").run.id)

    out["start"] = counter.cost(start_all, runs_n)
    for label, chain in (("step_chained", 20), ("step_unchained", 0)):
        sent = Recorder()
        executor = Executor(Settings(chain_steps=chain), load_profiles(None), sent, "bench:1")
        batch = ids[:runs_n // 2] if chain else ids[runs_n // 2:]

        def run_all(batch=batch, executor=executor, sent=sent) -> None:
            for rid in batch:
                executor.run_step(rid, 0, 1)
                while sent.effects:  # the messages a broker would carry, in order
                    effect = sent.effects.pop(0)
                    if isinstance(effect, RunStepMessage):
                        executor.run_step(effect.run_id, effect.step_index, effect.attempt)

        out[label] = counter.cost(run_all, len(batch) * steps)
    counter.pg.close()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    name = f"bench_writepath_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        url = f"{url}/{name}"
        migrate.upgrade(url)
        db.init(Settings(database_url=url))
        measure(20)  # warm the statement caches and the pool
        print(json.dumps({**measure(n), "postgres_per": step_cost(ADMIN_URL.rsplit("/", 1)[0]
                                                                  + f"/{name}")}))
    finally:
        db.reset()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
