"""`command`: runs a program from an argv template, with no shell unless the argv names one.

The program gets its own process group, so a timeout or a cancel ends it and everything
it started. spawn_id is `host:pid`. Exit status 0 is success; the tail of stdout is the
output and the tail of stderr the error.

Profile options: `argv` (list, required), `env` (table), `cwd`, `kill_grace_seconds`
(SIGTERM to SIGKILL, default 1).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import IO

from orchestrator.profiles import Profile
from orchestrator.runtimes import (
    AgentSession,
    Outcome,
    SpawnError,
    SpawnRequest,
    register,
    render_placeholders,
    request_values,
)

TAIL_CHARS = 64 * 1024
HOST = socket.gethostname()


def _tail(f: IO[bytes]) -> tuple[str, bool]:
    """The last TAIL_CHARS characters written to `f`, and whether anything was cut."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - TAIL_CHARS * 4))
    text = f.read().decode("utf-8", "replace")
    return text[-TAIL_CHARS:], size > TAIL_CHARS * 4 or len(text) > TAIL_CHARS


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


@register("command")
class CommandRuntime:
    holds_worker = True

    def __init__(self, profile: Profile):
        argv = profile.options.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise SpawnError(f"agent profile {profile.name!r}: argv must be a list of strings")
        self.argv: list[str] = argv
        self.env = {str(k): str(v) for k, v in profile.options.get("env", {}).items()}
        self.cwd = profile.options.get("cwd")
        self.grace = float(profile.options.get("kill_grace_seconds", 1.0))

    def spawn(self, req: SpawnRequest) -> AgentSession:
        values = request_values(req)
        argv = [render_placeholders(a, values) for a in self.argv]
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        except OSError as exc:
            out.close()
            err.close()
            raise SpawnError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        return AgentSession(f"{HOST}:{proc.pid}", handle=(proc, out, err))

    def poll(self, session: AgentSession, wait: float) -> Outcome | None:
        proc, out, err = session.handle
        try:
            code = proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None
        # The leader is gone; children it left in its group must not outlive the step.
        _signal_group(proc.pid, signal.SIGKILL)
        (stdout, cut), (stderr, _) = _tail(out), _tail(err)
        out.close()
        err.close()
        if code == 0:
            return Outcome(True, output=stdout, output_truncated=cut)
        if code < 0:
            reason = f"killed by {signal.Signals(-code).name}"
        else:
            reason = f"exit status {code}"
        detail = stderr.strip()
        return Outcome(False, output=stdout, error=f"{reason}: {detail}" if detail else reason,
                       output_truncated=cut)

    def terminate(self, session: AgentSession) -> None:
        proc, out, err = session.handle
        self._kill_group(proc.pid, lambda: proc.poll() is not None)
        proc.wait()
        out.close()
        err.close()

    def cancel(self, spawn_id: str) -> None:
        host, _, pid = spawn_id.rpartition(":")
        if host != HOST or not pid.isdigit():
            return  # another machine's session: the worker holding it ends it
        pgid = int(pid)
        self._kill_group(pgid, lambda: not _group_alive(pgid))

    def _kill_group(self, pgid: int, gone) -> None:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if gone():
                break
            time.sleep(0.02)
        _signal_group(pgid, signal.SIGKILL)
