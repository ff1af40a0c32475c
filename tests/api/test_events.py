"""GET /api/events: authentication, filters, live delivery, resume, and late commits."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from sqlalchemy import func, select

from api import create_app
from orchestrator import db
from orchestrator.models import RunEvent
from tests.conftest import ADMIN_KEY


def parse(body: str) -> list[dict]:
    """SSE frames as dicts: {"id", "event", "data"} (data parsed as JSON)."""
    frames = []
    for block in body.split("\n\n"):
        frame: dict = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            if name == "data":
                frame["data"] = json.loads(value)
            elif name in ("id", "event", "retry"):
                frame[name] = value
        if frame:
            frames.append(frame)
    return frames


def events_of(frames: list[dict]) -> list[dict]:
    return [f for f in frames if "data" in f and f.get("event") is None]


@pytest.fixture(scope="module")
def client(settings):
    app = create_app({
        "database_url": settings.database_url,
        "api_key": ADMIN_KEY,
        "agents_file": settings.agents_file,
        # The test client closes a response (freeing its stream slot) only when told to;
        # these tests are not about the caps (tests/api/test_stream_caps.py is), and a
        # prefix of their own keeps their slots out of other tests' counts.
        "events_max_streams_per_key": 1000,
        "events_max_streams_per_process": 1000,
        "broker_prefix": f"events-{uuid.uuid4().hex[:8]}:",
    })
    return app.test_client()


def newest_id() -> int:
    with db.session() as s:
        return s.scalar(select(func.max(RunEvent.id))) or 0


def add_event(run_id: int, pipeline_id: int, kind: str = "step.running") -> int:
    with db.session() as s:
        ev = RunEvent(run_id=run_id, pipeline_id=pipeline_id, step_index=0, type=kind, data={})
        s.add(ev)
        s.flush()
        return ev.id


def test_needs_a_key(client):
    assert client.get("/api/events?max_duration=0.1").status_code == 401
    resp = client.get("/api/events?max_duration=0.1&key=wrong")
    assert resp.status_code == 401
    assert "error" in resp.get_json()


@pytest.mark.parametrize("how", ["header", "bearer", "query"])
def test_accepts_the_key_three_ways(client, how):
    headers, qs = {}, ""
    if how == "header":
        headers["x-api-key"] = ADMIN_KEY
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    else:
        qs = f"&key={ADMIN_KEY}"
    resp = client.get(f"/api/events?max_duration=0.1{qs}", headers=headers)
    assert resp.status_code == 200
    assert resp.mimetype == "text/event-stream"
    frames = parse(resp.get_data(as_text=True))
    assert frames[0] == {"retry": "1000"}
    ready = frames[1]
    assert ready["event"] == "ready" and ready["id"].split("~")[0] == str(ready["data"]["cursor"])


@pytest.mark.parametrize(
    "query, status",
    [
        ("run_id=abc", 400),
        ("pipeline_id=-3", 400),
        ("max_duration=0", 400),
        ("max_duration=99999", 400),
        ("after=x", 400),
        ("run_id=987654", 404),
        ("pipeline_id=987654", 404),
    ],
)
def test_bad_parameters_are_refused(client, query, status):
    resp = client.get(f"/api/events?{query}&key={ADMIN_KEY}")
    assert resp.status_code == status
    assert resp.get_json()["error"]


def test_bad_last_event_id_is_refused(client):
    resp = client.get(f"/api/events?key={ADMIN_KEY}", headers={"Last-Event-ID": "12~oops"})
    assert resp.status_code == 400


def test_resume_replays_in_order_and_filters(client):
    start = newest_id()
    mine = [add_event(910001, 91), add_event(910002, 92), add_event(910001, 91, "run.completed")]
    resp = client.get(f"/api/events?max_duration=0.3&key={ADMIN_KEY}",
                      headers={"Last-Event-ID": str(start)})
    got = events_of(parse(resp.get_data(as_text=True)))
    assert [e["data"]["id"] for e in got] == mine
    assert [e["id"] for e in got] == [str(i) for i in mine]  # SSE id = run_events.id
    assert got[2]["data"]["type"] == "run.completed"
    assert set(got[0]["data"]) >= {"id", "type", "run_id", "pipeline_id", "step_index", "data",
                                   "created_at"}
    # API times are whole epoch seconds, here as everywhere
    assert all(type(e["data"]["created_at"]) is int for e in got)


def test_filter_by_run_and_pipeline(client, api):
    tid = api.template("echo hi", agent="echo")["id"]
    p1 = api.pipeline(tid, tid)
    p2 = api.pipeline(tid, tid)
    start = newest_id()
    r1 = api.start(p1["id"])
    r2 = api.start(p2["id"])
    api.wait(r1["id"])
    api.wait(r2["id"])
    for query, keep in ((f"run_id={r1['id']}", r1["id"]), (f"pipeline_id={p2['id']}", r2["id"])):
        resp = client.get(f"/api/events?{query}&after={start}&max_duration=0.3&key={ADMIN_KEY}")
        got = events_of(parse(resp.get_data(as_text=True)))
        assert got and {e["data"]["run_id"] for e in got} == {keep}
        types = [e["data"]["type"] for e in got]
        assert types[0] == "run.created" and types[-1] == "run.completed"
        assert "step.running" in types and "step.completed" in types
        ids = [e["data"]["id"] for e in got]
        assert ids == sorted(ids)


def test_live_events_arrive_while_the_stream_is_open(api):
    """A real stream over HTTP from the gunicorn API sees a worker's commits as they happen."""
    tid = api.template("echo live", agent="echo")["id"]
    pid = api.pipeline(tid, tid)["id"]
    resp = api.call("GET", f"/api/events?pipeline_id={pid}&max_duration=10", stream=True)
    assert resp.status_code == 200
    seen: list[dict] = []
    done = threading.Event()

    def read():
        buf = ""
        for chunk in resp.iter_content(chunk_size=None, decode_unicode=True):
            buf += chunk
            while "\n\n" in buf:
                block, buf = buf.split("\n\n", 1)
                seen.extend(events_of(parse(block + "\n\n")))
                if any(e["data"]["type"] == "run.completed" for e in seen):
                    done.set()
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    run = api.start(pid)
    assert done.wait(10), f"no run.completed within 10 s; saw {[e['data']['type'] for e in seen]}"
    resp.close()
    assert {e["data"]["run_id"] for e in seen} == {run["id"]}


def test_an_event_that_commits_late_is_still_delivered(client, settings):
    """Transaction A takes an id, B takes the next and commits first: A's event must
    still reach a reader that has already moved past it, live and on resume."""
    start = newest_id()
    a = db.factory()()
    late = RunEvent(run_id=920001, pipeline_id=92, step_index=0, type="step.running", data={})
    a.add(late)
    a.flush()  # id allocated, not committed
    early = add_event(920002, 92)
    assert early > late.id

    resp = client.get(f"/api/events?after={start}&max_duration=3&key={ADMIN_KEY}",
                      buffered=False)
    chunks = resp.response
    received: list[dict] = []
    committed = False
    for chunk in chunks:
        for frame in events_of(parse(chunk.decode() if isinstance(chunk, bytes) else chunk)):
            received.append(frame)
        if not committed and any(f["data"]["id"] == early for f in received):
            # The reader is past `late`'s id and holds it as a hole.
            assert received[-1]["id"] == f"{early}~{late.id}"
            a.commit()
            committed = True
        if any(f["data"]["id"] == late.id for f in received):
            break
    resp.close()
    a.close()
    ids = [f["data"]["id"] for f in received]
    assert ids == [early, late.id]
    assert received[-1]["id"] == str(early)  # the hole is closed

    # A reader that disconnected while the hole was open resumes with it and gets it.
    resp = client.get(f"/api/events?max_duration=0.3&key={ADMIN_KEY}",
                      headers={"Last-Event-ID": f"{early}~{late.id}"})
    assert [f["data"]["id"] for f in events_of(parse(resp.get_data(as_text=True)))] == [late.id]
    # One that had seen it resumes past it.
    resp = client.get(f"/api/events?max_duration=0.3&key={ADMIN_KEY}",
                      headers={"Last-Event-ID": str(early)})
    assert events_of(parse(resp.get_data(as_text=True))) == []


def test_stream_holds_no_connection_between_polls(client):
    pool = db.engine().pool
    before = pool.checkedout()
    first = add_event(930001, 93)
    resp = client.get(f"/api/events?after={first - 1}&max_duration=1&key={ADMIN_KEY}",
                      buffered=False)
    it = iter(resp.response)
    next(it)  # retry
    frame = parse(next(it).decode())[0]  # the event: the generator is paused after a poll
    assert frame["data"]["id"] == first
    assert pool.checkedout() == before
    resp.close()
