"""Soak: many runs of random pipelines with random failures, workers killed mid-flight.

    .venv/bin/python bench/soak.py            # 1,000 runs; needs PostgreSQL and Redis

Starts its own stack (gunicorn API, a prefork Celery worker, beat) on a fresh database
of the PostgreSQL at TEST_PG_ADMIN_URL and a key prefix of its own on TEST_REDIS_URL,
with short leases. Pipelines mix echo steps, bash steps that `exit 1` at random, short
sleeps, retries and on_failure/run_if choices. While the runs go, one pool child and
then the whole worker are killed with SIGKILL at random moments (a new worker takes
over). When every run has ended it prints the invariant check (tests/reliability/
invariants.py) and exits non-zero if any run breaks one.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from tests.reliability import faults  # noqa: E402
from tests.reliability.invariants import check  # noqa: E402
from tests.support import Api, pid_alive  # noqa: E402

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "soak-" + os.urandom(8).hex()

STEPS = [  # (prompt, agent, extra template fields)
    ("ok", "echo", {}),
    ("echo fine", "sh", {}),
    ("sleep 0.$((RANDOM % 4)); echo slept", "sh", {}),
    ("[ $((RANDOM % 3)) -ne 0 ] || exit 1; echo lucky", "sh", {}),
    ("[ $((RANDOM % 2)) -ne 0 ] || exit 1", "sh", {"retries": 1}),
    ("echo doomed >&2; exit 1", "sh", {}),
]


def not_finished(database_url: str, pipeline_ids: list[int]) -> int:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return conn.execute(
            "SELECT count(*) FROM pipeline_runs WHERE pipeline_id = ANY(%s) "
            "AND status IN ('pending', 'running')", (pipeline_ids,)).fetchone()[0]


def leftover_processes(database_url: str) -> list[str]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT DISTINCT data->>'spawn_id' FROM run_events WHERE type = 'step.spawned'")]
    host = faults.socket.gethostname()
    return [s for s in ids if s and s.rpartition(":")[0] == host
            and pid_alive(int(s.rpartition(":")[2]))]


def lost_steps(database_url: str) -> tuple[int, int]:
    """Steps failed as lost, and steps re-run after a failure (attempt > 1)."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return conn.execute(
            "SELECT count(*) FILTER (WHERE error LIKE 'worker lost%%'), "
            "count(*) FILTER (WHERE attempt > 1) FROM run_steps").fetchone()


def kill_at_random(live, rng: random.Random, deadline: float, log: list[str]) -> None:
    """One pool child, then the whole worker (a fresh one replaces it)."""
    time.sleep(rng.uniform(0.5, 2.0))
    children = faults.worker_children(live.procs["worker"].pid)
    if children:
        victim = rng.choice(children)
        os.kill(victim, signal.SIGKILL)
        log.append(f"SIGKILL pool child {victim} at +{time.monotonic() - deadline:.1f}s")
    time.sleep(rng.uniform(1.0, 3.0))
    pid = live.procs["worker"].pid
    live.stop("worker", signal.SIGKILL)
    log.append(f"SIGKILL whole worker {pid} at +{time.monotonic() - deadline:.1f}s")
    live.start_worker("worker-2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--pipelines", type=int, default=25)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng = random.Random(seed)
    database_url, db_name = faults.fresh_database(PG_ADMIN_URL)
    workdir = Path(tempfile.mkdtemp(prefix="orch-soak-"))
    env = faults.fault_env(database_url, REDIS_URL, workdir, ADMIN_KEY,
                           STEP_LEASE_SECONDS="3", REQUEUE_AFTER_SECONDS="3",
                           LOG_LEVEL="WARNING")
    print(f"soak: seed {seed}, {args.runs} runs, logs in {workdir}")
    try:
        with faults.stack(env, workdir, concurrency=args.concurrency) as live:
            api = Api(live.base_url, ADMIN_KEY)
            templates = [api.template(p, agent=a, name=f"s{i}", **kw)["id"]
                         for i, (p, a, kw) in enumerate(STEPS)]
            pipelines = []
            for _ in range(args.pipelines):
                steps = [{"template_id": rng.choice(templates),
                          "on_failure": rng.choice(["stop", "continue"]),
                          "run_if": rng.choices(["on_success", "always", "on_failure"],
                                                [8, 1, 1])[0]}
                         for _ in range(rng.randint(2, 5))]
                pipelines.append(api.pipeline(*steps)["id"])
            kills: list[str] = []
            began = time.monotonic()
            killer = threading.Thread(target=kill_at_random, args=(live, rng, began, kills))
            killer.start()
            choices = [rng.choice(pipelines) for _ in range(args.runs)]
            with ThreadPoolExecutor(8) as pool:
                started = list(pool.map(lambda pid: Api(live.base_url, ADMIN_KEY).start(pid),
                                        choices))
            killer.join()
            print(f"soak: {len(started)} runs started in {time.monotonic() - began:.1f}s; "
                  + "; ".join(kills))
            deadline = time.monotonic() + args.timeout
            while (left := not_finished(database_url, pipelines)) and time.monotonic() < deadline:
                time.sleep(0.5)
            took = time.monotonic() - began
            print(f"soak: all runs ended {took:.1f}s after the first start" if not left
                  else f"soak: {left} runs still unfinished after {args.timeout}s")
            time.sleep(2)  # let the sweeper's cancels of orphaned sessions land
            orphans = leftover_processes(database_url)
        report = check(database_url, pipelines)
        lost, rerun = lost_steps(database_url)
        print(f"soak: steps failed as 'worker lost': {lost}; steps re-run (attempt > 1): {rerun}")
        print(report.summary())
        print(f"soak: orphaned agent processes still alive: {len(orphans)}")
        return 0 if report.ok and not orphans and report.runs == args.runs else 1
    finally:
        faults.drop_database(PG_ADMIN_URL, db_name)


if __name__ == "__main__":
    sys.exit(main())
