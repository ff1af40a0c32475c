"""One JSON POST over `http.client`, abortable from another thread.

The network runtimes need a request that a waiting worker can end at once on a cancel or
a timeout. Shutting the socket down wakes a thread blocked reading it, which closing a
pooled client does not promise; so each request owns its connection. No proxies and no
redirects: a runtime talks to the URL its profile names.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_REPLY_BYTES = 16 * 1024 * 1024


class Aborted(Exception):
    """The request was aborted by `Request.abort`."""


class TooLarge(http.client.HTTPException):
    """The reply was larger than MAX_REPLY_BYTES."""


class ConnectError(OSError):
    """No connection was made (refused, unreachable, unknown host, connect timeout)."""


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


def encode(payload: Any) -> bytes:
    """A JSON body as sent: a value's JSON, or bytes as they are."""
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def display_url(url: str) -> str:
    """The URL as errors and logs show it: no credentials, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_url(url: Any) -> str | None:
    """Why `url` cannot be used, or None."""
    if not isinstance(url, str) or not url:
        return "must be a URL"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http:// or https:// URL, got {url!r}"
    try:
        parts.port  # noqa: B018 (parsed on access: out of range or not a number raises)
    except ValueError as exc:
        return f"has a bad port ({exc}): {url!r}"
    return None


def error_detail(reply: Reply, limit: int = 300) -> str:
    """The human part of an error reply: an OpenAI-style `error.message`, or the text."""
    try:
        data = reply.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:limit]
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return data[key][:limit]
    text = " ".join(reply.body.decode("utf-8", "replace").split())
    return text[:limit] or http.client.responses.get(reply.status, "error")


class Request:
    """A POST of a JSON body (a value, or its bytes as they are to be sent); `send`
    blocks, `abort` (any thread) ends it."""

    def __init__(self, url: str, payload: Any, headers: dict[str, str] | None = None,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0):
        self.url = url
        self.body = encode(payload)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json",
                        **(headers or {})}
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._aborted = False

    def send(self) -> Reply:
        parts = urlsplit(self.url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.connect_timeout,
                context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(
                parts.hostname, parts.port, timeout=self.connect_timeout)
        try:
            try:
                conn.connect()
            except OSError as exc:
                raise ConnectError(os_reason(exc)) from exc
            with self._lock:
                if self._aborted:
                    raise Aborted()
                self._sock = conn.sock
            conn.sock.settimeout(self.read_timeout)
            try:
                conn.request("POST", path, body=self.body, headers=self.headers)
                resp = conn.getresponse()
                body = _read_capped(resp)
            except Exception:
                if self._aborted:
                    raise Aborted() from None
                raise
            if self._aborted:
                raise Aborted()
            return Reply(resp.status, resp.msg, body)
        finally:
            conn.close()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


def _read_capped(resp: http.client.HTTPResponse) -> bytes:
    chunks, size = [], 0
    while chunk := resp.read(65536):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise TooLarge(f"reply larger than {MAX_REPLY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def os_reason(exc: OSError) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return exc.strerror or str(exc) or type(exc).__name__
