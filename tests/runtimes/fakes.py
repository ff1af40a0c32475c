"""Real HTTP servers on loopback that stand in for what the network runtimes talk to.

`FakeLLM` is an OpenAI-compatible chat-completions endpoint; `Gateway` is an agent
gateway for the `webhook` runtime. Both record every request they get and answer from a
script chosen by the request's `model`, so tests sharing one server never see each
other's behaviour.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    at: float = field(default_factory=time.time)
    # set when the client went away while the server was still answering
    aborted_at: float | None = None
    # the session id a gateway gave a spawn
    spawn_id: str | None = None


Action = Callable[["_Handler", Seen], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, raw, body)
        self.server.owner.handle(self, seen)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(obj).encode(), "application/json", headers)

    def send_raw(self, status: int, data: bytes, ctype: str = "text/plain",
                 headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def reset(self) -> None:
        """Drop the connection with a TCP reset, as a crashing proxy would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def hold(self, seconds: float, seen: Seen) -> bool:
        """Keep the request open; False (and `seen.aborted_at` set) if the client left."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.02)
            if readable:
                try:
                    gone = self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    seen.aborted_at = time.time()
                    self.close_connection = True
                    return False
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: _Recorder


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Condition()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)
            self.lock.notify_all()

    def wait_for(self, predicate: Callable[[list[Seen]], list[Seen]], n: int = 1,
                 timeout: float = 20) -> list[Seen]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(found := predicate(self.seen)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"wanted {n} requests, got {len(found)}: {found}")
                self.lock.wait(left)
            return found

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, handler: _Handler, seen: Seen) -> None:
        raise NotImplementedError


# -- the OpenAI-compatible server ---------------------------------------------------


def reply(content: str | None = "ok", *, id: str | None = None, usage: dict | None = None,
          message: dict | None = None) -> Action:
    def act(h: _Handler, seen: Seen) -> None:
        msg = message if message is not None else {"role": "assistant", "content": content}
        h.send_json(200, {
            "id": id or f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "model": seen.body["model"],
            "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
            "usage": usage or {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        })
    return act


def error(status: int, message: str, retry_after: str | None = None) -> Action:
    def act(h: _Handler, seen: Seen) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        h.send_json(status, {"error": {"message": message, "type": "test"}}, headers)
    return act


def raw(status: int, data: bytes, ctype: str = "text/html") -> Action:
    return lambda h, seen: h.send_raw(status, data, ctype)


def reset() -> Action:
    return lambda h, seen: h.reset()


def slow(seconds: float, then: Action | None = None) -> Action:
    def act(h: _Handler, seen: Seen) -> None:
        if h.hold(seconds, seen):
            (then or reply("slow answer"))(h, seen)
    return act


_ids = itertools.count(1)


class FakeLLM(_Recorder):
    """POST /v1/chat/completions. Unscripted models get `echo: <prompt>`."""

    def __init__(self) -> None:
        super().__init__()
        self.base_url = self.url + "/v1"
        self.scripts: dict[str, deque[Action]] = defaultdict(deque)

    def script(self, model: str, *actions: Action) -> None:
        with self.lock:
            self.scripts[model].extend(actions)

    def requests_for(self, model: str, n: int = 1, timeout: float = 20) -> list[Seen]:
        return self.wait_for(lambda seen: [s for s in seen if s.body and
                                           s.body.get("model") == model], n, timeout)

    def handle(self, h: _Handler, seen: Seen) -> None:
        if seen.path != "/v1/chat/completions":
            h.send_json(404, {"error": {"message": f"no route {seen.path}"}})
            return
        model = seen.body.get("model") if isinstance(seen.body, dict) else None
        with self.lock:
            queue = self.scripts.get(model)
            action = queue.popleft() if queue else None
        self.record(seen)
        if action is None:
            prompt = seen.body["messages"][-1]["content"]
            action = reply(f"echo: {prompt}")
        action(h, seen)


# -- the agent gateway --------------------------------------------------------------


@dataclass
class Behaviour:
    status: int = 200
    body: Any = None  # None: {"spawn_id": <fresh>}
    callback: dict | None = None  # posted to callback_url `delay` seconds after the spawn
    delay: float = 0.3


class Gateway(_Recorder):
    """POST /spawn starts a "session"; POST /sessions/<id>/cancel ends one."""

    def __init__(self) -> None:
        super().__init__()
        self.behaviours: dict[str, Behaviour] = {}
        self.callback_replies: list[requests.Response] = []
        self._ids = itertools.count(1)

    def on(self, model: str, **behaviour: Any) -> None:
        self.behaviours[model] = Behaviour(**behaviour)

    def spawns(self, model: str, n: int = 1, timeout: float = 20) -> list[Seen]:
        return self.wait_for(lambda seen: [s for s in seen if s.path == "/spawn" and
                                           s.body.get("model") == model], n, timeout)

    def cancels(self, spawn_id: str, n: int = 1, timeout: float = 20) -> list[Seen]:
        path = f"/sessions/{spawn_id}/cancel"
        return self.wait_for(lambda seen: [s for s in seen if s.path == path], n, timeout)

    def cancels_now(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.endswith("/cancel")]

    def handle(self, h: _Handler, seen: Seen) -> None:
        if seen.path.startswith("/sessions/") and seen.path.endswith("/cancel"):
            self.record(seen)
            h.send_json(200, {"cancelled": True})
            return
        if seen.path != "/spawn":
            h.send_json(404, {"error": "no such route"})
            return
        behaviour = self.behaviours.get(seen.body.get("model"), Behaviour())
        spawn_id = seen.spawn_id = f"gw-{next(self._ids)}"
        self.record(seen)
        body = {"spawn_id": spawn_id} if behaviour.body is None else behaviour.body
        if isinstance(body, bytes):
            h.send_raw(behaviour.status, body)
        else:
            h.send_json(behaviour.status, body)
        if behaviour.callback is not None:
            threading.Timer(behaviour.delay, self._call_back,
                            (seen.body["callback_url"], behaviour.callback)).start()

    def _call_back(self, url: str, payload: dict) -> None:
        self.callback_replies.append(requests.post(url, json=payload, timeout=10))
