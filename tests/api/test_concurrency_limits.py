"""Concurrency limits on the live stack (PostgreSQL, Redis, a worker): 30 concurrent starts
against `max_concurrent_runs: 2` under each `on_limit`. However the starts interleave, no
more than 2 runs are ever started at once; `skip` creates exactly the runs it answered 201
for; `queue` runs all 30, oldest first; `cancel_oldest` leaves the newest run standing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.support import TERMINAL, Api

STARTS = 30
LIMIT = 2


@pytest.fixture(scope="module")
def operator(api: Api) -> Api:
    """A key of its own, so that 30 starts at once stay inside one key's rate limit."""
    key = api.ok("POST", "/api/keys", {"name": "concurrency", "role": "operator"}, 201)["key"]
    return Api(api.base, key)


def limited_pipeline(api: Api, on_limit: str, step: str = "sleep 0.2") -> dict:
    tid = api.template(step)["id"]
    return api.ok("POST", "/api/pipelines", {
        "name": f"limited-{on_limit}-{time.monotonic_ns()}",
        "steps": [{"template_id": tid}] * 2,
        "max_concurrent_runs": LIMIT, "on_limit": on_limit}, 201)["pipeline"]


def start_all(api: Api, pipeline_id: int) -> list[tuple[int, dict]]:
    def start(_):
        resp = Api(api.base, api.key).call(
            "POST", "/api/pipelines/run", {"action": "start", "pipeline_id": pipeline_id})
        return resp.status_code, resp.json()

    with ThreadPoolExecutor(STARTS) as pool:
        return list(pool.map(start, range(STARTS)))


def runs_of(api: Api, pipeline_id: int) -> list[dict]:
    listed = api.ok("GET", f"/api/pipelines/run?pipeline_id={pipeline_id}&limit=200")["runs"]
    return sorted(listed, key=lambda r: r["id"])


def wait_finished(api: Api, pipeline_id: int, timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = runs_of(api, pipeline_id)
        if all(r["status"] in TERMINAL for r in listed):
            return listed
        time.sleep(0.3)
    raise AssertionError(f"runs still active after {timeout}s: "
                         f"{[(r['id'], r['status'], r['queued']) for r in listed]}")


def deepest_overlap(listed: list[dict]) -> int:
    """The most runs between their start and their end at any one moment."""
    edges = []
    for r in listed:
        if r["started_at"] is not None:
            edges += [(r["started_at"], 1), (r["completed_at"], -1)]
    depth = deepest = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # ends before starts at a tie
        depth += step
        deepest = max(deepest, depth)
    return deepest


def test_queue_runs_every_start_in_order_two_at_a_time(operator, database_url):
    pipeline = limited_pipeline(operator, "queue")
    answers = start_all(operator, pipeline["id"])
    assert [code for code, _ in answers] == [201] * STARTS
    queued = sorted(body["run"]["id"] for _, body in answers if body["run"]["queued"])
    assert len(queued) >= STARTS - LIMIT
    listed = wait_finished(operator, pipeline["id"])
    assert [r["status"] for r in listed] == ["completed"] * STARTS
    assert not any(r["queued"] for r in listed)
    assert deepest_overlap(listed) <= LIMIT
    # Oldest first: the queued runs left the queue in the order they were created (the
    # two that found a slot free started at once, whatever their ids).
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        dequeued = [row[0] for row in conn.execute(
            "SELECT run_id FROM run_events WHERE type = 'run.dequeued' AND run_id = ANY(%s)"
            " ORDER BY id", (queued,))]
    assert dequeued == queued
    print(f"\nqueue: {STARTS} runs, {len(queued)} queued and started oldest first, "
          f"deepest overlap {deepest_overlap(listed)}")


def test_skip_creates_exactly_the_runs_it_answered_201_for(operator):
    pipeline = limited_pipeline(operator, "skip", "sleep 2")
    answers = start_all(operator, pipeline["id"])
    created = sorted(body["run"]["id"] for code, body in answers if code == 201)
    refused = [body for code, body in answers if code == 409]
    assert len(created) + len(refused) == STARTS
    assert 1 <= len(created) <= LIMIT
    assert {(b["error"], b["code"]) for b in refused} == {
        ("pipeline is at its concurrency limit", "at_limit")}
    assert [r["id"] for r in runs_of(operator, pipeline["id"])] == created
    listed = wait_finished(operator, pipeline["id"])
    assert deepest_overlap(listed) <= LIMIT
    print(f"\nskip: {len(created)} created, {len(refused)} refused")


def test_cancel_oldest_leaves_the_newest(operator):
    pipeline = limited_pipeline(operator, "cancel_oldest", "sleep 1")
    answers = start_all(operator, pipeline["id"])
    assert [code for code, _ in answers] == [201] * STARTS
    listed = wait_finished(operator, pipeline["id"])
    assert len(listed) == STARTS
    survivors = [r for r in listed if r["status"] != "cancelled"]
    assert 1 <= len(survivors) <= LIMIT
    assert listed[-1]["status"] == "completed", "the newest run is never the one cancelled"
    assert deepest_overlap(listed) <= LIMIT
    print(f"\ncancel_oldest: {len(survivors)} completed, "
          f"{STARTS - len(survivors)} cancelled, deepest overlap {deepest_overlap(listed)}")
