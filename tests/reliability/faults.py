"""Things the fault-injection tests break on purpose: throwaway Redis and PostgreSQL
servers on ports of their own (never the shared ones), and stacks that use them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import redis

from orchestrator import migrate
from tests.support import TEST_AGENTS, Stack

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout}s")


class ThrowawayRedis:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(client.ping, 10, "throwaway redis start")

    def kill(self) -> None:
        """SIGKILL: no snapshot, no goodbye; every message it held is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> ThrowawayRedis:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


class ThrowawayPostgres:
    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.dir = Path(tempfile.mkdtemp(prefix=f"orch-pg-{self.port}-"))
        self.data = self.dir / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_postgres([
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8"]), check=True, stdout=subprocess.DEVNULL, timeout=120)

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
                "-c fsync=off -c max_connections=100")
        self._pg_ctl("-l", str(self.dir / "server.log"), "-o", opts, "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` drops every connection at once, as a crash would."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        migrate.upgrade(url)
        return url

    def __enter__(self) -> ThrowawayPostgres:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_database(admin_url: str) -> tuple[str, str]:
    """A new migrated database on the shared server: (its URL, its name)."""
    name = f"orch_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{url}/{name}"
    migrate.upgrade(url)
    return url, name


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fault_env(database_url: str, broker_url: str, workdir: Path, admin_key: str,
              **extra: str) -> dict[str, str]:
    agents = workdir / "agents.toml"
    agents.write_text(TEST_AGENTS)
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "BROKER_PREFIX": f"fault-{uuid.uuid4().hex[:8]}:",
        "AGENTS_FILE": str(agents),
        "API_KEY": admin_key,
        "STEP_POLL_SECONDS": "0.05",
        "SWEEP_SECONDS": "1",
        "RATE_LIMIT": "off",
        "LOG_LEVEL": "INFO",
        **extra,
    }


@contextlib.contextmanager
def stack(env: dict[str, str], workdir: Path, concurrency: int = 2) -> Iterator[Stack]:
    workdir.mkdir(parents=True, exist_ok=True)
    with Stack(env, free_port(), workdir, worker_concurrency=concurrency) as live:
        yield live


def worker_children(worker_pid: int) -> list[int]:
    """The prefork pool children of a Celery worker's main process."""
    try:
        with open(f"/proc/{worker_pid}/task/{worker_pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def psycopg_conn(database_url: str):
    """A plain connection to the service's database, for reading what it stored."""
    import psycopg

    return psycopg.connect(database_url.replace("+psycopg", ""))


def holder_pid(database_url: str, run_id: int, index: int = 0) -> int:
    """The pid of the worker process holding a run's step."""
    with psycopg_conn(database_url) as conn:
        worker = conn.execute("SELECT worker FROM run_steps WHERE run_id = %s AND "
                              "step_index = %s", (run_id, index)).fetchone()[0]
    return int(worker.rpartition(":")[2])


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
