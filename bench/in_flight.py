"""Sessions in flight (SPEC §13): how many agent sessions one worker with `--concurrency 2`
carries at once, and what it costs.

`python -m bench.in_flight` starts, on a database of its own, the API, a stub LLM that
answers after the sessions' length, and one prefork worker with two pool processes. It
then starts SESSIONS runs whose first step is a `command` session `sleep SECONDS`, and as
many whose first step is an `openai` request to the stub, and reads from the database:

- last start to last spawn: from the newest run's creation to the last `step.spawned`;
- the spread: how long past SECONDS each session ended (p50, p99, max), and the longest
  time from a run's start to its session's end;
- the worker's memory while every session is in flight: PSS summed over the worker's own
  processes (main, pool, render processes; not the sessions), sampled every half second.

With `--baseline REF` the same is measured, in the same run, for the worker of that git
revision (a worktree), with `--baseline-sessions` sessions (two slots, one session each,
take hours for a thousand), and extrapolated to SESSIONS: sessions start two at a time, so
the last spawn is (SESSIONS / 2 - 1) sessions' lengths after the start, and carrying them
all at once would take one pool process each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import redis
import requests

from bench.harness import KEY, PG_ADMIN, REDIS_URL, RESULTS, ROOT, Processes, pct
from orchestrator import migrate

AGENTS = """
[agents.sh]
runtime = "command"
argv = ["sh", "-c", "{{prompt}}"]

[agents.llm]
runtime = "openai"
base_url = "http://127.0.0.1:{port}/v1"
max_retries = 0
"""


def pss_mb(pgid: int) -> float:
    """PSS summed over the processes of a process group (the worker and what it forked
    into its group; sessions have groups of their own)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            rollup = (entry / "smaps_rollup").read_text()
        except (OSError, ProcessLookupError):
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


class InFlight:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.dbname = f"orch_inflight_{uuid.uuid4().hex[:8]}"
        self.pg_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.dbname}"
        self.sa_url = self.pg_url.replace("postgresql://", "postgresql+psycopg://")
        self.prefix = f"inflight-{uuid.uuid4().hex[:8]}:"
        self.port = 4400 + os.getpid() % 500
        self.stub_port = self.port + 1
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="orch-inflight-"))
        self.http = requests.Session()
        self.http.headers["x-api-key"] = KEY
        self.worktrees: list[Path] = []

    def __enter__(self) -> InFlight:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.dbname}"')
        migrate.upgrade(self.sa_url)
        self.conn = psycopg.connect(self.pg_url, autocommit=True)
        agents = self.workdir / "agents.toml"
        agents.write_text(AGENTS.format(port=self.stub_port))
        env = {**os.environ, "DATABASE_URL": self.sa_url, "BROKER_URL": REDIS_URL,
               "BROKER_PREFIX": self.prefix, "API_KEY": KEY, "AGENTS_FILE": str(agents),
               "LOG_LEVEL": "WARNING", "RATE_LIMIT": "off", "PYTHONPATH": str(ROOT)}
        self.procs = Processes(env, self.workdir)
        py = sys.executable
        self.procs.start("stub", [py, "-m", "bench.llm_stub", str(self.stub_port),
                                  str(self.seconds)])
        self.procs.start("api", [py, "-m", "cli", "api", "--host", "127.0.0.1",
                                 "--port", str(self.port), "--workers", "2"])
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get(self.base + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start; see {self.workdir / 'api.log'}")
            time.sleep(0.2)
        echo = self.post("/api/workflows", {"name": "after", "prompt": "x", "agent": "echo"})
        self.pipelines = {}
        for kind, agent, prompt in (("command", "sh", f"sleep {self.seconds}"),
                                    ("openai", "llm", "hello")):
            tpl = self.post("/api/workflows", {"name": kind, "prompt": prompt, "agent": agent,
                                               "timeout_seconds": 3600})["template"]["id"]
            self.pipelines[kind] = self.post("/api/pipelines", {
                "name": kind, "steps": [{"template_id": tpl},
                                        {"template_id": echo["template"]["id"]}]})["pipeline"]["id"]
        return self

    def __exit__(self, *exc) -> None:
        self.procs.stop_all()
        self.conn.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"{self.prefix}*"):
            r.delete(key)
        for tree in self.worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def post(self, path: str, body: dict) -> dict:
        resp = self.http.post(self.base + path, json=body, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def worker(self, ref: str | None) -> None:
        """(Re)start the worker: this tree's, or that of git revision `ref`."""
        if "worker" in self.procs.procs:
            self.procs.stop("worker")
        source = ROOT
        if ref:
            source = self.workdir / f"tree-{ref}"
            if not source.exists():
                subprocess.run(["git", "worktree", "add", "--detach", str(source), ref],
                               cwd=ROOT, check=True, capture_output=True)
                self.worktrees.append(source)
        env = {**self.procs.env, "PYTHONPATH": str(source)}
        self.procs.start("worker", [sys.executable, "-m", "cli", "worker", "--concurrency",
                                    "2", "-P", "prefork", "--loglevel", "WARNING"],
                         env=env, cwd=source)
        time.sleep(3)  # connected and ready

    def measure(self, kind: str, sessions: int) -> dict:
        pipeline = self.pipelines[kind]
        worker = self.procs.procs["worker"].pid
        peak = [pss_mb(worker)]
        idle_pss = peak[0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak.append(pss_mb(worker))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda _: self.post(
                "/api/pipelines/run", {"action": "start", "pipeline_id": pipeline}
            )["run"]["id"], range(sessions)))
        deadline = time.monotonic() + sessions * self.seconds / 2 + 300
        while self.conn.execute(
                "SELECT count(*) FROM pipeline_runs WHERE id = ANY(%s) AND status NOT IN "
                "('completed', 'failed', 'cancelled')", (ids,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: runs did not finish; see {self.workdir}")
            time.sleep(0.5)
        stop.set()
        sampler.join()
        rows = self.conn.execute(
            "SELECT r.created_at, r.status, s.completed_at, "
            "  (SELECT max(e.created_at) FROM run_events e WHERE e.run_id = r.id "
            "   AND e.step_index = 0 AND e.type = 'step.spawned'), s.started_at "
            "FROM pipeline_runs r JOIN run_steps s ON s.run_id = r.id AND s.step_index = 0 "
            "WHERE r.id = ANY(%s)", (ids,)).fetchall()
        created = [r[0] for r in rows]
        spawned = [r[3] for r in rows]
        late = [r[2] - r[3] - self.seconds for r in rows]
        queued = [r[4] - r[0] for r in rows]  # a run's start to its step's claim
        spawning = [(r[3] - r[4]) * 1000 for r in rows]  # the claim to the spawn recorded
        return {
            "sessions": sessions,
            "completed": sum(r[1] == "completed" for r in rows),
            "starts_span_s": max(created) - min(created),
            "start_to_claim_s": {"p50": pct(queued, 50), "max": max(queued)},
            "claim_to_spawn_ms": {"p50": pct(spawning, 50), "p99": pct(spawning, 99)},
            "last_start_to_last_spawn_s": max(spawned) - max(created),
            "past_length_s": {"p50": pct(late, 50), "p99": pct(late, 99), "max": max(late)},
            "start_to_end_max_s": max(r[2] - r[0] for r in rows),
            "worker_pss_mb": {"idle": idle_pss, "peak": max(peak)},
            "pool_processes": len(self.procs.tree("worker")) - 1,
        }


def extrapolate(base: dict, sessions: int, seconds: float, processes: int) -> dict:
    """Today's figures for `sessions`: two at a time, or a pool process per session."""
    per_process = (base["worker_pss_mb"]["peak"]) / max(1, processes + 1)
    return {
        "last_start_to_last_spawn_s": (sessions / 2 - 1) * seconds,
        "start_to_end_max_s": sessions / 2 * seconds,
        "worker_pss_mb_all_at_once": per_process * (sessions + 1),
    }


def measure(sessions: int, seconds: float, baseline: str | None = None,
            baseline_sessions: int = 50) -> dict:
    out: dict = {"seconds": seconds, "sessions": sessions}
    with InFlight(seconds) as bench:
        bench.worker(None)
        for kind in ("command", "openai"):
            out[kind] = bench.measure(kind, sessions)
        if baseline:
            bench.worker(baseline)
            out["baseline"] = {"ref": baseline}
            for kind in ("command", "openai"):
                measured = bench.measure(kind, baseline_sessions)
                out["baseline"][kind] = {
                    "measured": measured,
                    "extrapolated": extrapolate(measured, sessions, seconds,
                                                measured["pool_processes"]),
                }
    return out


TARGETS = [
    ("last start to last spawn (s)", lambda k: k["last_start_to_last_spawn_s"], "<=", 10),
    ("start to end, slowest run (s)", lambda k: k["start_to_end_max_s"], "<=", 25),
    ("worker PSS, all in flight (MB)", lambda k: k["worker_pss_mb"]["peak"], "<=", 300),
]


def table(r: dict) -> str:
    n, secs = r["sessions"], r["seconds"]
    lines = [f"-- {n} sessions in flight, each {secs:g} s, one worker with --concurrency 2"]
    head = f"{'measure':44} {'command':>10} {'openai':>10}"
    if "baseline" in r:
        b = r["baseline"]
        head += f" {'base cmd':>10} {'base llm':>10}"
    lines.append(head)

    def row(name: str, get, base_get=None) -> str:
        line = f"{name:44} {get(r['command']):>10.2f} {get(r['openai']):>10.2f}"
        if "baseline" in r and base_get is not None:
            line += "".join(f" {base_get(b[k]):>10.1f}" for k in ("command", "openai"))
        return line

    lines += [
        row("runs completed", lambda k: k["completed"], lambda k: n),
        row("first start to last start (s)", lambda k: k["starts_span_s"]),
        row("a run's start to its claim, max (s)", lambda k: k["start_to_claim_s"]["max"]),
        row("claim to spawn recorded, p50 (ms)", lambda k: k["claim_to_spawn_ms"]["p50"]),
        row("claim to spawn recorded, p99 (ms)", lambda k: k["claim_to_spawn_ms"]["p99"]),
        row("last start to last spawn (s)", lambda k: k["last_start_to_last_spawn_s"],
            lambda k: k["extrapolated"]["last_start_to_last_spawn_s"]),
        row("past the session's length, p50 (s)", lambda k: k["past_length_s"]["p50"]),
        row("past the session's length, p99 (s)", lambda k: k["past_length_s"]["p99"]),
        row("past the session's length, max (s)", lambda k: k["past_length_s"]["max"]),
        row("start to end, slowest run (s)", lambda k: k["start_to_end_max_s"],
            lambda k: k["extrapolated"]["start_to_end_max_s"]),
        row("worker PSS idle (MB)", lambda k: k["worker_pss_mb"]["idle"]),
        row("worker PSS, all in flight (MB)", lambda k: k["worker_pss_mb"]["peak"],
            lambda k: k["extrapolated"]["worker_pss_mb_all_at_once"]),
    ]
    if "baseline" in r:
        m = b["command"]["measured"]
        lines.append(f"  (baseline {b['ref']}: measured with {m['sessions']} sessions, "
                     f"last spawn {m['last_start_to_last_spawn_s']:.1f} s, "
                     f"PSS {m['worker_pss_mb']['peak']:.0f} MB; extrapolated to {n})")
    lines.append("-- targets (command / openai)")
    for name, get, op, limit in TARGETS:
        for kind in ("command", "openai"):
            value = get(r[kind])
            ok = "ok" if (value <= limit if op == "<=" else value >= limit) else "MISSED"
            lines.append(f"{'  ' + name + ' ' + kind:52} {value:>10.2f} {op} {limit:<6} {ok}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.in_flight")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--baseline", help="a git revision to measure beside this tree")
    parser.add_argument("--baseline-sessions", type=int, default=50)
    parser.add_argument("--out", default=str(RESULTS / "in_flight.json"))
    args = parser.parse_args()
    r = measure(args.sessions, args.seconds, args.baseline, args.baseline_sessions)
    Path(args.out).write_text(json.dumps(r, indent=2))
    print(table(r))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
