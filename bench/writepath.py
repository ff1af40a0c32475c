"""The write path's own cost: starts, and claim + chained resolve-and-claim pairs.

`python -m bench.writepath [N]` makes a fresh PostgreSQL database, times N starts of a
three-step pipeline and N pairs (claim step 0; resolve it, claiming step 1 for the same
worker), one transaction each, and prints wall and process time per operation as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import psycopg

from orchestrator import catalog, db, migrate, runs
from orchestrator import transitions as t
from orchestrator.config import Settings

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
        print(json.dumps(measure(n)))
    finally:
        db.reset()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
