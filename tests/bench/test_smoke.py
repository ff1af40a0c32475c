"""The benchmark suite in its smoke mode, so that it never rots (its figures are not
judged here: speed targets live in the full run, on a quiet machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(database_url, redis_url, tmp_path_factory) -> tuple[dict, str]:
    """One smoke run for the module: its report and its printed summary."""
    out = tmp_path_factory.mktemp("bench") / "latest.json"
    env = {**os.environ, "BENCH_REDIS_URL": redis_url}
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_bench_smoke_runs_and_reports_every_measure(smoke):
    r, stdout = smoke
    for section in ("floor", "handoff", "throughput", "handoff_unchained",
                    "throughput_unchained", "scale", "memory_mb", "ratios", "targets"):
        assert section in r, section
    assert r["floor"]["tx_hop_ms"]["median"] > 0
    assert r["handoff"]["steps"] == 10 and r["throughput"]["steps_per_s"]["median"] > 0
    assert r["scale"]["stored_runs"] == 5000
    assert r["scale"]["list_pipelines"]["p50_ms"] > 0
    assert "targets" in stdout


def test_bench_smoke_loads_the_api_with_wrk(smoke):
    api = smoke[0]["api"]
    if "skipped" in api:  # said in the test report, rather than passing with nothing checked
        pytest.skip(f"API load not measured: {api['skipped']}")
    assert api["paced"]["start"]["non_2xx"] == 0
    assert api["saturated"]["get_run"]["requests_per_s"] > 0
