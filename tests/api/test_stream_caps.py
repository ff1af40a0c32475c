"""Caps on open /api/events streams (SPEC §12): per key, per host, per process; the slot
of a stream whose process died frees itself; open streams never starve /healthz."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from api import create_app, streams
from api.streams import LEASE_SECONDS, FileLeases, RedisLeases
from orchestrator import db
from orchestrator.auth import create_key
from tests.conftest import ADMIN_KEY, free_port


def new_key(role: str = "viewer") -> str:
    with db.session() as s:
        return create_key(s, f"streams-{uuid.uuid4().hex[:6]}", role)[1]


def make_client(settings, **caps):
    app = create_app({"database_url": settings.database_url, "api_key": ADMIN_KEY,
                      "agents_file": settings.agents_file, "rate_limit": 0,
                      "broker_prefix": f"caps-{uuid.uuid4().hex[:8]}:", **caps})
    return app.test_client()


def open_stream(client, key: str):
    return client.get(f"/api/events?max_duration=60&key={key}", buffered=False)


def test_streams_past_the_per_key_cap_get_429_until_one_closes(settings):
    client = make_client(settings, events_max_streams_per_key=2)
    first, other = new_key(), new_key()
    held = [open_stream(client, first) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    refused = open_stream(client, first)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "10"
    assert "EVENTS_MAX_STREAMS_PER_KEY" in refused.get_json()["error"]
    second = open_stream(client, other)  # another key has its own count
    assert second.status_code == 200
    held[0].close()
    again = open_stream(client, first)
    assert again.status_code == 200
    for resp in (held[1], second, again):
        resp.close()


@pytest.mark.parametrize("cap,says", [({"events_max_streams": 2}, "EVENTS_MAX_STREAMS"),
                                      ({"events_max_streams_per_process": 2}, "process")])
def test_host_and_process_caps(settings, cap, says):
    client = make_client(settings, **cap)
    held = [open_stream(client, new_key()) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    refused = open_stream(client, new_key())
    assert refused.status_code == 429 and says in refused.get_json()["error"]
    for resp in held:
        resp.close()


@pytest.fixture(params=["redis", "file"])
def leases(request, redis_url, tmp_path):
    if request.param == "redis":
        return RedisLeases(redis_url, f"caps-{uuid.uuid4().hex[:8]}:", "host-a", 10, 1)
    return FileLeases(tmp_path / "leases.db", 10, 1)


def test_a_dead_streams_slot_frees_itself(leases):
    now = time.time()
    assert leases.take("s1", "key-a", now) is None
    assert leases.take("s2", "key-a", now + 1) == "key"
    # The process holding s1 died: no renewal, no drop. Renewed leases live on.
    assert leases.take("s3", "key-a", now + LEASE_SECONDS - 1) == "key"
    assert leases.take("s4", "key-a", now + LEASE_SECONDS + 1) is None
    leases.renew("s4", "key-a", now + 2 * LEASE_SECONDS)
    assert leases.take("s5", "key-a", now + 2 * LEASE_SECONDS + 5) == "key"
    leases.drop("s4", "key-a")
    assert leases.take("s6", "key-a", now + 2 * LEASE_SECONDS + 5) is None


def test_streams_open_when_redis_is_down(settings):
    client = make_client(settings, broker_url="redis://127.0.0.1:1/0")
    resp = open_stream(client, ADMIN_KEY)
    assert resp.status_code == 200
    resp.close()


@pytest.fixture(scope="module")
def one_worker_api(stack):
    """`orchestrator api` with one gunicorn worker, so that one process serves every stream."""
    port = free_port()
    with stack.serving("caps-api", port, "/healthz", "api", "--host", "127.0.0.1",
                       "--port", str(port), "--workers", "1",
                       env={"BROKER_PREFIX": f"caps-{uuid.uuid4().hex[:8]}:"}) as base:
        yield base


def test_open_streams_do_not_starve_the_api(one_worker_api):
    """Before the caps, ~40 viewer streams took every thread and /healthz stopped answering."""
    keys = [new_key() for _ in range(5)]
    sessions = [requests.Session() for _ in range(40)]

    def attempt(i: int):
        resp = sessions[i].get(f"{one_worker_api}/api/events",
                               params={"key": keys[i % 5], "max_duration": 60},
                               stream=True, timeout=10)
        return resp

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(attempt, range(40)))
    try:
        statuses = [r.status_code for r in answers]
        assert statuses.count(200) == 12, statuses  # EVENTS_MAX_STREAMS_PER_PROCESS
        assert statuses.count(429) == 28
        assert all(r.headers.get("Retry-After") for r in answers if r.status_code == 429)
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(one_worker_api + "/healthz", timeout=10).status_code == 200
            assert time.monotonic() - started < 2
        listed = requests.get(one_worker_api + "/api/workflows?limit=1",
                              headers={"x-api-key": keys[0]}, timeout=10)
        assert listed.status_code == 200
    finally:
        for resp in answers:
            resp.close()


def test_the_caps_file_lives_in_a_folder_of_the_services_user_alone(settings, tmp_path,
                                                                     monkeypatch):
    """Not at a predictable path in a shared /tmp, where another user could make it first."""
    monkeypatch.setattr(streams.tempfile, "gettempdir", lambda: str(tmp_path))
    no_redis = dataclasses.replace(settings, broker_url="memory://")
    gate = streams.make_gate(no_redis)
    folder = tmp_path / f"orchestrator-{os.getuid()}"
    assert isinstance(gate.leases, FileLeases) and gate.leases.path.parent == folder
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)  # as if someone else had made it, open to all
    assert isinstance(streams.make_gate(no_redis).leases, streams.NoLeases)
