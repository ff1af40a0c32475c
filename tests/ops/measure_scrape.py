"""What a /metrics scrape costs as history grows: `python -m tests.ops.measure_scrape [N ...]`.

Not a test. For each N it fills a database of its own with N finished runs of 5 steps
(20 pipelines, 40 templates) at the schema before the duration histogram, upgrades it (the
upgrade counts them into the histogram), times scrapes through the Flask app (median of
7), then drops the database.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

import psycopg

from orchestrator import db, migrate

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

FILL = """
INSERT INTO workflow_templates (id, name, model, prompt, parameters, timeout_seconds, agent,
  tags, retries, retry_backoff_seconds, created_by, created_at, updated_at, use_count)
SELECT g, 'tpl-' || g, 'sonnet', 'p', '{}', 300, 'echo', '[]', 0, 0, 'bench', 0, 0, 0
FROM generate_series(1, 40) g;
INSERT INTO pipelines (id, name, created_by, created_at, updated_at, use_count, runs_total,
  runs_completed, runs_failed, runs_running)
SELECT g, 'pipe-' || g, 'bench', 0, 0, 0, %(n)s / 20, %(n)s / 20, 0, 0
FROM generate_series(1, 20) g;
INSERT INTO pipeline_runs (id, pipeline_id, pipeline_name, status, current_step, inputs,
  triggered_by, started_at, completed_at, created_at)
SELECT g, 1 + g %% 20, 'pipe-' || (1 + g %% 20), 'completed', 4, '{}', 'bench', g, g + 10, g
FROM generate_series(1, %(n)s) g;
INSERT INTO run_steps (run_id, step_index, template_id, template_name, on_failure, run_if,
  agent, model, prompt, parameters, timeout_seconds, max_attempts, retry_backoff_seconds,
  status, attempt, started_at, completed_at, output_truncated)
SELECT r, s, 1 + (r + s) %% 40, 'tpl-' || (1 + (r + s) %% 40), 'stop', 'on_success',
  CASE WHEN (r + s) %% 2 = 1 THEN 'echo' ELSE 'default' END, 'sonnet', 'p', '{}', 300, 1, 0,
  CASE WHEN (r * 7 + s) %% 10 = 0 THEN 'failed' ELSE 'completed' END, 1,
  r + s, r + s + random() * 100, false
FROM generate_series(1, %(n)s) r, generate_series(0, 4) s;
"""


def measure(n: int) -> float:
    from api import create_app

    name = f"orch_bench_metrics_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        # History written before the duration histogram existed: the upgrade counts it.
        migrate.upgrade(url, "0003_reliability")
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            for statement in FILL.split(";"):
                if statement.strip():
                    conn.execute(statement, {"n": n})
            conn.commit()
        migrate.upgrade(url)
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        db.reset()
        app = create_app({"database_url": url, "metrics_auth": "none"})
        http = app.test_client()
        assert http.get("/metrics").status_code == 200
        times = []
        for _ in range(7):
            started = time.perf_counter()
            http.get("/metrics")
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        db.reset()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000]:
        print(f"{n:>8} runs, {n * 5:>8} steps: scrape {measure(n) * 1000:8.1f} ms (median of 7)")
