"""Test helpers: an HTTP client for the API, the live stack, and state snapshots."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import requests

TERMINAL = {"completed", "failed", "cancelled"}

TEST_AGENTS = """
[agents.sh]
runtime = "command"
argv = ["bash", "-c", "{prompt}"]
injection_scan = "shell"

[agents.admin-sh]
runtime = "command"
argv = ["bash", "-c", "--", "{prompt}"]
edit_role = "admin"

[agents.manual]
runtime = "manual"

[agents.echo]
runtime = "echo"
"""


class Api:
    def __init__(self, base_url: str, key: str):
        self.base = base_url
        self.key = key
        self.http = requests.Session()

    def call(self, method: str, path: str, json: Any = None, key: str | None = None,
             **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if key is None:
            key = self.key
        if key:
            headers.setdefault("x-api-key", key)
        return self.http.request(method, self.base + path, json=json, headers=headers,
                                 timeout=30, **kw)

    def ok(self, method: str, path: str, json: Any = None, status: int = 200) -> dict:
        resp = self.call(method, path, json)
        assert resp.status_code == status, (resp.status_code, resp.text)
        return resp.json()

    def template(self, prompt: str, agent: str = "sh", **fields: Any) -> dict:
        body = {"name": fields.pop("name", f"t-{time.monotonic_ns()}"), "prompt": prompt,
                "agent": agent, **fields}
        return self.ok("POST", "/api/workflows", body, 201)["template"]

    def pipeline(self, *steps: dict | int, name: str | None = None) -> dict:
        body = {
            "name": name or f"p-{time.monotonic_ns()}",
            "steps": [s if isinstance(s, dict) else {"template_id": s} for s in steps],
        }
        return self.ok("POST", "/api/pipelines", body, 201)["pipeline"]

    def start(self, pipeline_id: int, **extra: Any) -> dict:
        body = {"action": "start", "pipeline_id": pipeline_id, **extra}
        return self.ok("POST", "/api/pipelines/run", body, 201)["run"]

    def run(self, run_id: int) -> dict:
        return self.ok("GET", f"/api/pipelines/run?id={run_id}")["run"]

    def wait(self, run_id: int, until=lambda r: r["status"] in TERMINAL,
             timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if until(run):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} did not get there in {timeout}s: {run}")
            time.sleep(0.05)

    def wait_step(self, run_id: int, index: int, status: str, timeout: float = 30) -> dict:
        return self.wait(
            run_id, lambda r: r["steps_snapshot"][index]["status"] == status, timeout
        )


def state_digest(database_url: str) -> str:
    """A hash of every row of every table: equal digests mean nothing was written."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    digest = hashlib.sha256()
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        for table in tables:
            row = conn.execute(
                f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) "
                f"FROM {table} x"
            ).fetchone()
            digest.update(f"{table}:{row[0]};".encode())
    return digest.hexdigest()


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # it ended between the two looks
        return False


class Stack:
    """gunicorn API + Celery worker + Celery beat, as subprocesses, with logs in workdir."""

    def __init__(self, env: dict[str, str], port: int, workdir: Path, worker_concurrency: int = 4):
        self.env = env
        self.port = port
        self.workdir = workdir
        self.base_url = f"http://127.0.0.1:{port}"
        self.concurrency = worker_concurrency
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Run `orchestrator ARGS` with this stack's environment (plus `env`)."""
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", *args], env={**self.env, **(env or {})},
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()  # the child has its own copy
        self.procs[name] = proc
        return proc

    @contextlib.contextmanager
    def serving(self, name: str, port: int, health: str, *args: str,
                env: dict[str, str] | None = None) -> Iterator[str]:
        """`spawn`, until the block ends; yields the base URL once `health` answers."""
        proc = self.spawn(name, *args, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(base + health, 30, proc)
            yield base
        finally:
            self.stop(name)

    def start_worker(self, name: str = "worker", concurrency: int | None = None) -> subprocess.Popen:
        return self.spawn(name, "worker", "--concurrency", str(concurrency or self.concurrency),
                          "--hostname", f"{name}@%h", "-P", "prefork")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def __enter__(self) -> Stack:
        api = self.spawn("api", "api", "--host", "127.0.0.1", "--port", str(self.port),
                         "--workers", "2")
        self.start_worker()
        self.spawn("beat", "beat", "--schedule", str(self.workdir / "beat-schedule"))
        try:
            wait_http(self.base_url + "/healthz", 30, api)
        except RuntimeError:
            self.__exit__(None, None, None)
            raise RuntimeError("API did not start:\n" + self.log("api")[-3000:]) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        for name in list(self.procs):
            self.stop(name)


class HookReceiver:
    """An HTTP server on loopback that records every webhook POST (headers and body) and
    answers with the next status of `answers` (then 200). `hold` seconds of delay on the
    first request make a delivery that is still in flight when its sender dies; `hang`
    seconds on every request make a receiver that is down but accepts connections."""

    def __init__(self, answers: list[int] | None = None, hold: float = 0.0,
                 hang: float = 0.0):
        import http.server
        import threading

        self.answers = list(answers or [])
        self.hold = hold
        self.hang = hang
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.received.append({"headers": {k.lower(): v for k, v in
                                                          self.headers.items()},
                                              "body": body, "at": time.time()})
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    hold, receiver.hold = receiver.hold, 0.0
                time.sleep(hold or receiver.hang)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = list(self.received)
            if predicate(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not get what was awaited in {timeout}s: "
                             f"{[r['headers'].get('webhook-id') for r in got]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_signature(secret: str, delivery: dict[str, Any]) -> dict[str, Any]:
    """Check a delivery as a Standard Webhooks receiver would, and return its JSON."""
    import base64
    import hmac
    import json as json_module

    headers = delivery["headers"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + delivery["body"]
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.partition(",")[2] for s in headers["webhook-signature"].split()
             if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, s) for s in given), "bad webhook-signature"
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return json_module.loads(delivery["body"])
