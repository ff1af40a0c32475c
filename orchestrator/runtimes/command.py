"""`command`: runs a program from an argv template, with no shell unless the argv names one.

The program gets its own process group, so a timeout or a cancel ends it and everything
it started. spawn_id is `host:pid`. Exit status 0 is success; the tail of stdout is the
output and the tail of stderr the error.

The program's environment is not the worker's: only BASE_ENV of it, the profile's `env`,
the worker's variables named in `pass_env`, and ORCH_USAGE_FILE, a fresh file per session
where the program may write its usage. The service's secrets are never passed.

Profile options: `argv` (list, required), `env` (table), `pass_env` (list of names),
`cwd`, `kill_grace_seconds` (SIGTERM to SIGKILL, default 1).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
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


def _close(files: tuple[IO[bytes], IO[bytes], str]) -> None:
    """Close the session's output files and remove its usage file."""
    out, err, usage_file = files
    out.close()
    err.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(usage_file)


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
        return AgentSession(f"{HOST}:{proc.pid}", handle=(proc, files))

    def _environment(self, usage_file: str) -> dict[str, str]:
        passed = (*BASE_ENV, *self.pass_env)
        env = {name: os.environ[name] for name in passed if name in os.environ}
        return {**env, **self.env, "ORCH_USAGE_FILE": usage_file}

    def poll(self, session: AgentSession, wait: float) -> Outcome | None:
        proc, files = session.handle
        out, err, _ = files
        try:
            code = proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None
        # The leader is gone; children it left in its group must not outlive the step.
        _signal_group(proc.pid, signal.SIGKILL)
        (stdout, cut), (stderr, _) = _tail(out), _tail(err)
        spent = usage.read_report(files[2])
        _close(files)
        if code == 0:
            return Outcome(True, output=stdout, output_truncated=cut, usage=spent)
        if code < 0:
            reason = f"killed by {signal.Signals(-code).name}"
        else:
            reason = f"exit status {code}"
        detail = stderr.strip()
        return Outcome(False, output=stdout, error=f"{reason}: {detail}" if detail else reason,
                       output_truncated=cut, usage=spent)

    def terminate(self, session: AgentSession) -> None:
        proc, files = session.handle
        self._kill_group(proc.pid, lambda: proc.poll() is not None)
        proc.wait()
        _close(files)

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
