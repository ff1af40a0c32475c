"""Sessions in flight: what a worker process waits on without holding a task slot.

A step's task claims the attempt, spawns the session and records its spawn_id, then hands
the session here and returns, so its slot takes the next message. Each worker process has
one asyncio loop, on a thread of its own, that awaits every session the process holds (a
program's exit through a pidfd, an HTTP reply through httpx) with no thread per session.

From the same loop, one query per tick (STEP_POLL_SECONDS) reads which of the held
attempts are still running: the sessions of the others (cancelled, advanced, swept) are
stopped. Every third of a lease the same statement renews every held lease. A session that
ends, or outlives its step's deadline, is resolved through the write path
(`Executor._finish`) on a few threads, since database calls block.

Held sessions are bounded per process (WORKER_MAX_SESSIONS): past it, a task waits for
room, which is back-pressure on the queue rather than an unbounded pile of processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from sqlalchemy.exc import DBAPIError

from orchestrator import db, masking, records, runs
from orchestrator.config import Settings
from orchestrator.models import now
from orchestrator.runtimes import AgentSession, Outcome, Runtime

log = logging.getLogger("orchestrator.waiter")

# Threads that run the loop's database work: one tick's query, and resolves.
DB_THREADS = 4
# How often the output that running sessions printed is stored, in one transaction for
# all of them: a line printed shows in GET ?id= and /api/events within a second.
LIVE_OUTPUT_SECONDS = 0.5
# A session needs a few descriptors (a command's output files and pidfd, an HTTP socket).
FDS_PER_SESSION = 4

Key = tuple[int, int, int]  # run_id, step_index, attempt


@dataclass(eq=False)
class Held:
    runtime: Runtime
    session: AgentSession
    step: records.StepRecord  # the running attempt, as claimed
    run_id: int
    # Live output, on the loop thread: what has been shown of it (masked as a stream, so
    # that a secret split between two reads is never shown), and where the next begins.
    masker: masking.StreamMasker = field(default_factory=masking.StreamMasker)
    shown: str = ""
    offset: int = 0
    sent: int = 0  # characters its step.output events carried

    @property
    def key(self) -> Key:
        return (self.run_id, self.step.step_index, self.step.attempt)


# What the waiter does with a session that ended: record its outcome. (One whose step
# ended elsewhere first is stopped, and there is nothing to record.)
Resolve = Callable[[Held, Outcome], None]


class Waiter:
    def __init__(self, settings: Settings, resolve: Resolve):
        self.settings = settings
        self._resolve = resolve
        self._room = threading.BoundedSemaphore(settings.worker_max_sessions)
        self._held: dict[Key, Held] = {}  # the loop thread's alone
        self._tasks: dict[Key, asyncio.Task] = {}
        self._idle = threading.Condition()
        self._count = 0  # handed and not yet resolved, under _idle
        _raise_fd_limit(settings.worker_max_sessions * FDS_PER_SESSION)
        self._db = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="waiter-db")
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(self._db)
        threading.Thread(target=self._loop.run_forever, name="waiter", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._watch(), self._loop)

    # -- from task threads -------------------------------------------------------------

    def hold(self, held: Held) -> None:
        """Take the session over; blocks while the process holds its maximum. The
        caller's log context (run, step, spawn_id) goes with it."""
        self._room.acquire()
        with self._idle:
            self._count += 1
        self._loop.call_soon_threadsafe(self._start, held, contextvars.copy_context())

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every handed session is resolved (a warm shutdown, tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)

    # -- on the loop ----------------------------------------------------------------

    def _start(self, held: Held, context: contextvars.Context) -> None:
        self._held[held.key] = held
        self._tasks[held.key] = self._loop.create_task(self._await(held), context=context)

    async def _await(self, held: Held) -> None:
        outcome: Outcome | None = None
        try:
            outcome = await self._outcome(held)
            if outcome is not None:
                await asyncio.to_thread(self._resolve, held, outcome)  # in its log context
        except Exception:
            log.exception("resolving a session failed; the sweeper will find the step",
                          extra={"run_id": held.run_id, "step_index": held.step.step_index})
        finally:
            self._held.pop(held.key, None)
            self._tasks.pop(held.key, None)
            self._room.release()
            with self._idle:
                self._count -= 1
                self._idle.notify_all()

    async def _outcome(self, held: Held) -> Outcome | None:
        """How the session ended; None when the step ended elsewhere and it was stopped."""
        left = (held.step.deadline_at or float("inf")) - now()
        try:
            async with asyncio.timeout(left if left != float("inf") else None):
                return await held.runtime.wait(held.session)
        except TimeoutError:
            partial = await held.runtime.stop(held.session)
            return replace(partial or Outcome(False), success=False,
                           error=f"timed out after {held.step.timeout_seconds} s")
        except asyncio.CancelledError:  # the watcher saw the step end elsewhere
            asyncio.current_task().uncancel()
            await held.runtime.stop(held.session)
            return None
        except Exception as exc:  # a runtime's bug must still end the step, with a reason
            log.exception("waiting on a session failed",
                          extra={"run_id": held.run_id, "step_index": held.step.step_index})
            with contextlib.suppress(Exception):
                await held.runtime.stop(held.session)
            return Outcome(False, error=f"runtime error: {exc}")

    async def _watch(self) -> None:
        poll, lease = self.settings.poll_seconds, self.settings.lease_seconds
        next_renewal = time.monotonic() + lease / 3
        next_output = time.monotonic() + LIVE_OUTPUT_SECONDS
        while True:
            await asyncio.sleep(min(poll, LIVE_OUTPUT_SECONDS))
            keys = list(self._held)
            if not keys:
                continue
            if time.monotonic() >= next_output:
                next_output = time.monotonic() + LIVE_OUTPUT_SECONDS
                await self._store_output()
            renew = time.monotonic() >= next_renewal
            try:
                alive = await self._loop.run_in_executor(
                    None, self._running, keys, lease if renew else None)
            except DBAPIError as exc:
                # The database is away: sessions go on, and we ask again next tick.
                log.warning("cannot read held steps: %s", exc.orig)
                continue
            except Exception:
                log.exception("cannot read held steps")
                continue
            if renew:
                next_renewal = time.monotonic() + lease / 3
            for key in keys:
                task = self._tasks.get(key)
                if key not in alive and task is not None:
                    task.cancel()  # the step ended elsewhere: stop its session

    async def _store_output(self) -> None:
        # Best effort, and never the end of the watch: a step's end records it whole.
        try:
            items = self._fresh_output()
            if items:
                await self._loop.run_in_executor(None, self._record_output, items)
        except Exception:
            log.warning("cannot store live output", exc_info=True)

    def _fresh_output(self) -> list[runs.LiveOutput]:
        """What each held session printed since the last look, masked, as one batch."""
        items = []
        limit = self.settings.output_max_chars
        for held in list(self._held.values()):
            read = getattr(held.runtime, "fresh_output", None)
            if read is None:
                continue
            try:
                text, skipped = read(held.session)
            except (OSError, ValueError):  # its files are closed: it has just ended
                continue
            held.offset += skipped
            new = held.masker.feed(text) if text else ""
            if not new:
                continue
            held.shown = (held.shown + new)[-limit:]
            # Events carry at most OUTPUT_MAX_CHARS per step in all: a session printing
            # without end keeps its stored output current, not a table of events growing.
            text = new[:max(0, limit - held.sent)]
            held.sent += len(text)
            items.append(runs.LiveOutput(held.run_id, held.step.step_index, held.step.attempt,
                                         held.shown, text, held.offset))
            held.offset += len(new)
        return items

    @staticmethod
    def _record_output(items: list[runs.LiveOutput]) -> int:
        with db.session() as s:
            return runs.record_output(s, items)

    @staticmethod
    def _running(keys: list[Key], renew_for: float | None) -> set[Key]:
        with db.session() as s:
            return runs.running_among(s, keys, renew_for)


def _raise_fd_limit(wanted: int) -> None:
    """Lift this process's descriptor limit toward `wanted`, as far as the hard limit lets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 256 if hard == resource.RLIM_INFINITY else min(hard, wanted + 256)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
