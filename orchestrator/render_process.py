"""Rendering a prompt in a process of its own, bounded in wall-clock time, CPU time and memory.

A worker keeps long-lived render processes (fresh interpreters, so the worker's threads do
not matter) and sends each render to an idle one as a line of JSON. A render past its
bound costs the step and that process, which is killed and replaced, never the worker.
"""

from __future__ import annotations

import json
import math
import os
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.config import Settings
from orchestrator.prompts import PromptError, has_markup, render_steps, step_context

# Where `python -m orchestrator.render_process` finds the package, installed or not.
_ROOT = str(Path(__file__).resolve().parent.parent)
# The render process gets nothing else of the worker's environment: no secret is in reach
# of a template, whatever it finds a way to read.
_ENV_KEPT = ("PATH", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH", "LANG", "LC_ALL", "TZ")
# A fresh interpreter on a loaded host: its start does not count against a render.
START_TIMEOUT_SECONDS = 30.0


class RenderProcess:
    """One render process and the pipes to it; one render at a time."""

    def __init__(self, timeout: float, memory_mb: int):
        self.timeout = timeout
        self.memory_mb = memory_mb
        env = {name: os.environ[name] for name in _ENV_KEPT if name in os.environ}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.render_process", str(memory_mb), repr(timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT, env=env,
        )
        self._out = self.proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out, selectors.EVENT_READ)
        self._buffer = bytearray()
        self._ready = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def render(self, request: dict[str, Any]) -> str:
        """The rendered prompt; PromptError if it does not render or passes a bound (the
        process is then gone: `alive` is False)."""
        if not self._ready:
            self._ready = self._reply(time.monotonic() + START_TIMEOUT_SECONDS) == {"ready": True}
            if not self._ready:
                self.close()
                raise PromptError("prompt rendering failed: its render process did not start")
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._reply(time.monotonic() + self.timeout)
        if reply is None:
            self.close()
            raise PromptError(f"prompt rendering exceeded {self.timeout:g} s")
        if reply.get("replace"):
            self.close()
        if "error" in reply:
            raise PromptError(reply["error"])
        return reply["prompt"]

    def _reply(self, deadline: float) -> dict[str, Any] | None:
        """The next line the process writes, or None at the deadline."""
        while (end := self._buffer.find(b"\n")) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise PromptError(self._ended())
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return json.loads(line)

    def _ended(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.close()
        if code == -signal.SIGXCPU:
            return f"prompt rendering exceeded {self.timeout:g} s of CPU time"
        if code is None:
            return "prompt rendering failed: its render process stopped answering"
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        return f"prompt rendering failed: its render process ended ({how})"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._selector.close()
        self.proc.stdin.close()
        self.proc.stdout.close()


class RenderPool:
    """The render processes of one worker process: one per render at once, kept idle
    between renders, and a fresh one started as soon as one is lost."""

    def __init__(self, timeout: float, memory_mb: int):
        self.timeout = timeout
        self.memory_mb = memory_mb
        self._idle: list[RenderProcess] = []
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Have one process started, so the first render does not wait for it."""
        with self._lock:
            if not self._idle:
                self._idle.append(self._new())

    def render(self, request: dict[str, Any]) -> str:
        proc = self._take()
        try:
            try:
                return proc.render(request)
            except BrokenPipeError:  # it died while idle: not this template's doing
                proc.close()
                proc = self._new()
                return proc.render(request)
        finally:
            with self._lock:
                self._idle.append(proc if proc.alive else self._new())

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for proc in idle:
            proc.close()

    def _take(self) -> RenderProcess:
        with self._lock:
            while self._idle:
                proc = self._idle.pop()
                if proc.alive:
                    return proc
                proc.close()
        return self._new()

    def _new(self) -> RenderProcess:
        return RenderProcess(self.timeout, self.memory_mb)


_pools: dict[tuple[float, int], RenderPool] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    # A forked child must not talk to its parent's render processes; it starts its own.
    global _pools, _pools_lock
    _pools, _pools_lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def pool_for(settings: Settings) -> RenderPool:
    key = (settings.render_timeout_seconds, settings.render_memory_mb)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = RenderPool(*key)
        return _pools[key]


def render_bounded(
    settings: Settings,
    template: str,
    inputs: dict[str, Any] | None,
    earlier: Sequence[Any],
    run: dict[str, Any] | None = None,
    step: dict[str, Any] | None = None,
) -> str:
    """prompts.render_prompt, in a render process within the settings' bounds."""
    if not has_markup(template):
        return template  # nothing to render: never leaves this process
    return pool_for(settings).render({
        "template": template,
        "inputs": inputs or {},
        "steps": [step_context(st) for st in earlier],
        "run": run or {},
        "step": step or {},
    })


# -- inside the render process ------------------------------------------------------------


def _limit_memory(memory_mb: int) -> None:
    """Let a render allocate `memory_mb` beyond what the interpreter holds already."""
    with open("/proc/self/statm") as f:
        baseline = int(f.read().split()[0]) * resource.getpagesize()
    limit = baseline + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _limit_cpu(timeout: float) -> None:
    """A CPU deadline for the next render, in case the worker is gone and cannot kill us."""
    used = sum(os.times()[:2])
    resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(used + timeout) + 1, resource.RLIM_INFINITY))


def _serve(request: dict[str, Any], memory_mb: int) -> dict[str, Any]:
    try:
        return {"prompt": render_steps(request["template"], request["inputs"], request["steps"],
                                       request["run"], request["step"])}
    except PromptError as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": f"prompt rendering exceeded {memory_mb} MB of memory", "replace": True}


def main(memory_mb: int, timeout: float) -> None:
    # Ctrl-C reaches the worker's whole process group: the worker decides, and our end of
    # the pipe closing ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.path.exists("/proc/self/statm"):
        _limit_memory(memory_mb)
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        _limit_cpu(timeout)
        reply = _serve(json.loads(line), memory_mb)
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
        if reply.get("replace"):
            return


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
