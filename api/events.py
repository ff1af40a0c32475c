"""GET /api/events: run events as a server-sent event stream, for the UI and other services.

Every state change commits a `run_events` row in the same transaction, so reading that
table in id order is reading what every API and worker process did. The stream polls it
every POLL_SECONDS in a short read-only session (no connection is held between polls)
and ends by itself after `max_duration` seconds; EventSource then reconnects.

Ids can commit out of order: transaction A takes id 10, B takes 11, B commits first. A
reader that moved its cursor to 11 would never look at 10 again. So besides its cursor
(the highest id it has seen) the stream keeps the ids below the cursor it has not seen
yet ("holes") and asks for them again on every poll: a hole that fills is sent then, late
and out of id order; a hole still empty after HOLE_TTL_SECONDS is a rolled-back insert
and is forgotten. The SSE `id:` of each event is the stream position, the cursor plus
any open holes (`1234`, or `1234~1229,1231`), so a client that reconnects with
Last-Event-ID resumes with the same holes and misses nothing; with no hole open it is
simply the `run_events.id`. One run's events never overtake each other, because each
transition holds its run's row lock until it commits.

Query parameters (all optional): `run_id`, `pipeline_id` (only that run's / pipeline's
events), `after` (start after this event id instead of now), `max_duration` (seconds,
default 300, at most 3600), and `key`: EventSource cannot set headers, so this endpoint,
and only this one, also takes the API key as `?key=`. Any role may read it. Open streams
are capped per key, per host and per process (api/streams.py): 429 beyond.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from flask import Blueprint, Response, current_app, request
from sqlalchemy import func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from api.auth import authenticate, key_label, presented_key
from api.errors import ApiError
from api.schemas import MAX_ID, epoch, parse_id
from api.streams import RETRY_AFTER_SECONDS, Full, make_gate
from orchestrator import db, run_queries
from orchestrator.models import PipelineRun, RunEvent

log = logging.getLogger("orchestrator.api.events")

bp = Blueprint("events", __name__)

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 10.0
HOLE_TTL_SECONDS = 30.0
# A fresh stream also watches this many ids below the newest one, which may still be
# in flight when it starts.
START_WINDOW = 200
MAX_HOLES = 1000
BATCH = 500
DEFAULT_DURATION = 300.0
MAX_DURATION = 3600.0
RECONNECT_MS = 1000


@dataclass
class Position:
    """Where a stream stands: every id <= cursor has been seen, except the holes."""

    cursor: int
    holes: dict[int, float] = field(default_factory=dict)  # id -> when first missed

    def token(self) -> str:
        if not self.holes:
            return str(self.cursor)
        return f"{self.cursor}~{','.join(str(i) for i in sorted(self.holes))}"

    @classmethod
    def parse(cls, raw: str, now: float) -> Position:
        head, _, tail = raw.strip().partition("~")
        try:
            cursor = int(head)
            holes = [int(i) for i in tail.split(",")] if tail else []
        except ValueError:
            raise ApiError(400, f"Last-Event-ID {raw!r} is not an event position") from None
        if not 0 <= cursor <= MAX_ID or any(not 0 < i < cursor for i in holes):
            raise ApiError(400, f"Last-Event-ID {raw!r} is not an event position")
        return cls(cursor, {i: now for i in holes[-MAX_HOLES:]})

    def take(self, event_id: int, now: float) -> bool:
        """Account for a row read from the table; False if it was already seen."""
        if event_id in self.holes:
            del self.holes[event_id]
            return True
        if event_id <= self.cursor:
            return False
        for missing in range(max(self.cursor + 1, event_id - MAX_HOLES), event_id):
            self.holes[missing] = now
        self.cursor = event_id
        return True

    def expire(self, now: float) -> None:
        for hole, since in list(self.holes.items()):
            if now - since > HOLE_TTL_SECONDS:
                del self.holes[hole]
        while len(self.holes) > MAX_HOLES:
            del self.holes[min(self.holes)]


@dataclass(frozen=True)
class Filter:
    run_id: int | None = None
    pipeline_id: int | None = None

    def matches(self, ev: RunEvent) -> bool:
        return (self.run_id is None or ev.run_id == self.run_id) and (
            self.pipeline_id is None or ev.pipeline_id == self.pipeline_id
        )


def _duration(raw: str | None) -> float:
    if raw is None or raw == "":
        return DEFAULT_DURATION
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_DURATION:
        raise ApiError(400, f"max_duration must be a number of seconds from 0 to {MAX_DURATION:g}")
    return value


def _filter() -> Filter:
    args = request.args
    run_id = parse_id(args["run_id"], "run_id") if "run_id" in args else None
    pipeline_id = parse_id(args["pipeline_id"], "pipeline_id") if "pipeline_id" in args else None
    with db.read_session() as s:
        if run_id is not None and s.get(PipelineRun, run_id) is None:
            raise ApiError(404, f"run {run_id} not found")
        if pipeline_id is not None and not run_queries.pipeline_known(s, pipeline_id):
            raise ApiError(404, f"pipeline {pipeline_id} not found")
    return Filter(run_id, pipeline_id)


def _start_position(now: float) -> tuple[Position, bool]:
    """Resume from Last-Event-ID or ?after=, or start at the newest event (fresh)."""
    resume = request.headers.get("Last-Event-ID", "").strip()
    if resume:
        return Position.parse(resume, now), False
    if "after" in request.args:
        raw = request.args["after"].strip()
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ID:
            raise ApiError(400, "after must be an event id (a whole number)")
        return Position(int(raw)), False
    with db.read_session() as s:
        newest = s.scalar(select(func.max(RunEvent.id))) or 0
        seen = set(s.scalars(select(RunEvent.id).where(RunEvent.id > newest - START_WINDOW)))
    missing = set(range(max(1, newest - START_WINDOW + 1), newest + 1)) - seen
    return Position(newest, dict.fromkeys(missing, now)), True


def _read(position: Position) -> list[RunEvent]:
    """One poll: rows after the cursor plus any hole that has filled, in id order."""
    query = select(RunEvent).order_by(RunEvent.id).limit(BATCH)
    after = RunEvent.id > position.cursor
    query = query.where(or_(after, RunEvent.id.in_(position.holes)) if position.holes else after)
    # Unfiltered on purpose: the holes are holes in the whole sequence.
    with db.read_session() as s:
        return list(s.scalars(query))


def _frame(position: Position, payload: dict | None = None, event: str | None = None) -> str:
    lines = [f"id: {position.token()}"]
    if event:
        lines.append(f"event: {event}")
    if payload is not None:
        lines.append("data: " + json.dumps(payload, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def event_json(ev: RunEvent) -> dict:
    return {
        "id": ev.id,
        "type": ev.type,
        "run_id": ev.run_id,
        "pipeline_id": ev.pipeline_id,
        "step_index": ev.step_index,
        "data": ev.data or {},
        "created_at": epoch(ev.created_at),
    }


def stream(position: Position, wanted: Filter, fresh: bool, duration: float,
           keep_slot: Callable[[], None] = lambda: None) -> Iterator[str]:
    """The frames of one stream; `keep_slot` is called on every poll, to renew its lease."""
    deadline = time.monotonic() + duration
    last_write = time.monotonic()
    yield f"retry: {RECONNECT_MS}\n\n"
    if fresh:
        yield _frame(position, {"cursor": position.cursor}, event="ready")
    while True:
        keep_slot()
        before = position.token()
        try:
            rows = _read(position)
        except SQLAlchemyError:
            # End the stream; the client reconnects with its Last-Event-ID and resumes.
            log.warning("event stream stopped: database unavailable", exc_info=True)
            return
        now = time.time()
        sent = False
        for ev in rows:
            if position.take(ev.id, now) and wanted.matches(ev):
                yield _frame(position, event_json(ev))
                sent = True
        position.expire(now)
        if not sent and position.token() != before:
            # Nothing for this filter, but the position moved: tell the client, so that a
            # reconnect does not re-read what was skipped. (No data: no event fires.)
            yield _frame(position)
            sent = True
        if sent:
            last_write = time.monotonic()
        elif time.monotonic() - last_write >= HEARTBEAT_SECONDS:
            yield ": keepalive\n\n"
            last_write = time.monotonic()
        if time.monotonic() >= deadline:
            return
        # A full batch means more is waiting: read on without sleeping.
        if len(rows) < BATCH:
            time.sleep(POLL_SECONDS)


@bp.record_once
def _init_gate(state) -> None:
    state.app.extensions["streams"] = make_gate(state.app.config["SETTINGS"])


_FULL = {
    "key": "this key has EVENTS_MAX_STREAMS_PER_KEY streams open",
    "host": "this API host has EVENTS_MAX_STREAMS streams open",
    "process": "this API process has all the streams it serves open",
}


@bp.get("/api/events")
def events() -> Response:
    key = presented_key() or request.args.get("key", "")
    authenticate(key)
    duration = _duration(request.args.get("max_duration"))
    wanted = _filter()
    position, fresh = _start_position(time.time())
    try:
        lease = current_app.extensions["streams"].open(key_label(key))
    except Full as exc:
        raise ApiError(429, f"too many open event streams: {_FULL[exc.what]}; close one, "
                            f"or retry in {RETRY_AFTER_SECONDS} s",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    frames = stream(position, wanted, fresh, duration, lease.renew)
    resp = Response(frames, mimetype="text/event-stream")
    resp.call_on_close(lease.release)  # also when the client goes away mid-stream
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"  # let a proxy in front pass events at once
    return resp
