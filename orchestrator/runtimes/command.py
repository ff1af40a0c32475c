"""`command`: runs a program from an argv template, with no shell unless the argv names one.

The program gets its own process group, so a timeout or a cancel ends it and everything
it started. spawn_id is `host:pid`. Exit status 0 is success; the tail of stdout is the
output and the tail of stderr the error. Its output goes to files, not pipes, so a
chatty program never blocks on a full pipe, and the waiter learns of its exit through a
pidfd: a thousand sessions cost the worker descriptors, not threads.

The program's environment is not the worker's: only BASE_ENV of it, the profile's `env`,
the worker's variables named in `pass_env`, and ORCH_USAGE_FILE, a fresh file per session
where the program may write its usage. The service's secrets are never passed.

Profile options: `argv` (list, required), `env` (table), `pass_env` (list of names),
`cwd`, `kill_grace_seconds` (SIGTERM to SIGKILL, default 1).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import replace
from typing import IO

from orchestrator import usage
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
# Live output read from a session at one time, at most.
LIVE_BYTES = 16 * 1024
HOST = socket.gethostname()
# What a session gets of the worker's environment without asking: enough to find
# programs, a home, a locale and a temporary directory.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _env_option(profile: Profile) -> dict[str, str]:
    env = profile.options.get("env", {})
    if not isinstance(env, dict) or not all(
        _ENV_NAME.match(str(k)) and isinstance(v, str | int | float) and not isinstance(v, bool)
        for k, v in env.items()
    ):
        raise SpawnError(f"agent profile {profile.name!r}: env must be a table of variable "
                         "names to strings or numbers")
    return {str(k): str(v) for k, v in env.items()}


def _pass_env_option(profile: Profile) -> list[str]:
    names = profile.options.get("pass_env", [])
    if not isinstance(names, list) or not all(
        isinstance(n, str) and _ENV_NAME.match(n) for n in names
    ):
        raise SpawnError(f"agent profile {profile.name!r}: pass_env must be a list of "
                         "environment variable names")
    for name in names:
        owner = profile.secret_env_owner(name)
        if owner:
            raise SpawnError(f"agent profile {profile.name!r}: pass_env must not name {name}, "
                             f"a secret of {owner}")
    return names


def _tail(f: IO[bytes]) -> tuple[str, bool]:
    """The last TAIL_CHARS characters written to `f`, and whether anything was cut."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - TAIL_CHARS * 4))
    text = f.read().decode("utf-8", "replace")
    return text[-TAIL_CHARS:], size > TAIL_CHARS * 4 or len(text) > TAIL_CHARS


class _Fresh:
    """What a session has printed since it was last asked. The output file's offset is
    shared with the program writing it, so it is read with pread, never moved."""

    def __init__(self) -> None:
        self.at = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def read(self, f: IO[bytes]) -> tuple[str, int]:
        """The new text, and how many bytes were skipped before it: a session printing
        more than LIVE_BYTES between two reads shows only the latest of it."""
        size = os.fstat(f.fileno()).st_size
        skipped = max(0, size - self.at - LIVE_BYTES)
        if skipped:
            self.at += skipped
            self.decoder.reset()
        data = os.pread(f.fileno(), size - self.at, self.at) if size > self.at else b""
        self.at += len(data)
        return self.decoder.decode(data), skipped


def _close(files: tuple[IO[bytes], IO[bytes], str]) -> None:
    """Close the session's output files and remove its usage file."""
    out, err, usage_file = files
    out.close()
    err.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(usage_file)


def _ended(files: tuple[IO[bytes], IO[bytes], str]) -> Outcome:
    """What a session that has exited left: the tails of its output (stderr's as the
    error, for the caller to word) and its usage report. Closes its files."""
    out, err, usage_file = files
    (stdout, cut), (stderr, _) = _tail(out), _tail(err)
    spent = usage.read_report(usage_file)
    _close(files)
    return Outcome(False, output=stdout, error=stderr, output_truncated=cut, usage=spent)


async def _exited(proc: subprocess.Popen) -> None:
    """Until the process has exited, then reap it. A pidfd becomes readable at the exit,
    so the loop waits on a descriptor, not on a thread or a timer."""
    if proc.poll() is not None:
        return
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfds here (an old kernel, not Linux)
        while proc.poll() is None:
            await asyncio.sleep(0.1)
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def pid_gone(pid: int) -> bool:
    """True once the process has exited: no such process, or a zombie (dead, and not yet
    reaped by a parent that may never reap it, as for an orphan of a killed worker)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


@register("command")
class CommandRuntime:
    holds_worker = True

    def __init__(self, profile: Profile):
        argv = profile.options.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise SpawnError(f"agent profile {profile.name!r}: argv must be a list of strings")
        self.argv: list[str] = argv
        self.env = _env_option(profile)
        self.pass_env = _pass_env_option(profile)
        self.cwd = profile.options.get("cwd")
        self.grace = float(profile.options.get("kill_grace_seconds", 1.0))

    def spawn(self, req: SpawnRequest) -> AgentSession:
        values = request_values(req)
        argv = [render_placeholders(a, values) for a in self.argv]
        fd, usage_file = tempfile.mkstemp(prefix="orch-usage-", suffix=".json")
        os.close(fd)
        files = (tempfile.TemporaryFile(), tempfile.TemporaryFile(), usage_file)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=files[0],
                stderr=files[1],
                cwd=self.cwd,
                env=self._environment(usage_file),
                start_new_session=True,
            )
        except OSError as exc:
            _close(files)
            raise SpawnError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        return AgentSession(f"{HOST}:{proc.pid}", handle=(proc, files, _Fresh()))

    def _environment(self, usage_file: str) -> dict[str, str]:
        passed = (*BASE_ENV, *self.pass_env)
        env = {name: os.environ[name] for name in passed if name in os.environ}
        return {**env, **self.env, "ORCH_USAGE_FILE": usage_file}

    async def wait(self, session: AgentSession) -> Outcome:
        proc, files, _ = session.handle
        await _exited(proc)
        code = proc.returncode
        # The leader is gone; children it left in its group must not outlive the step.
        _signal_group(proc.pid, signal.SIGKILL)
        outcome = _ended(files)
        if code == 0:
            return replace(outcome, success=True)
        if code < 0:
            reason = f"killed by {signal.Signals(-code).name}"
        else:
            reason = f"exit status {code}"
        detail = (outcome.error or "").strip()
        return replace(outcome, error=f"{reason}: {detail}" if detail else reason)

    async def stop(self, session: AgentSession) -> Outcome:
        proc, files, _ = session.handle
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace):
                await _exited(proc)
        _signal_group(proc.pid, signal.SIGKILL)
        await _exited(proc)
        return _ended(files)

    def fresh_output(self, session: AgentSession) -> tuple[str, int]:
        """What the session printed since the last call (stdout), and the bytes skipped."""
        _, files, fresh = session.handle
        return fresh.read(files[0])

    def terminate(self, session: AgentSession) -> None:
        proc, files, _ = session.handle
        self._kill_group(proc.pid, lambda: proc.poll() is not None)
        proc.wait()
        _close(files)

    def cancel(self, spawn_id: str) -> None:
        host, _, pid = spawn_id.rpartition(":")
        if host != HOST or not pid.isdigit():
            return  # another machine's session: the worker holding it ends it
        pgid = int(pid)
        self._kill_group(pgid, lambda: pid_gone(pgid))

    def _kill_group(self, pgid: int, gone) -> None:
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if gone():
                break
            time.sleep(0.02)
        _signal_group(pgid, signal.SIGKILL)
