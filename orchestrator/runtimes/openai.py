"""`openai`: one chat completion from an OpenAI-compatible endpoint (hosted, vLLM, Ollama,
llama.cpp).

The request is made on the worker process's waiter loop with httpx, so a thousand
requests in flight cost sockets, not threads, and a cancel or a timeout aborts one
mid-flight (the task awaiting it is cancelled). spawn_id is the reply's `id`, output is
`choices[0].message.content`, and `usage` is kept. A connection reset, a 429 or a 5xx is
retried within the step's time; anything else fails the step at once.

Profile options: `base_url` (required, e.g. `http://127.0.0.1:8000/v1`), `api_key_env`
(the environment variable holding the key; read when the step starts, never stored),
`headers` (table), `max_retries` (default 4), `retry_backoff_seconds` (default 0.5,
doubling), `connect_timeout_seconds` (default 10), `max_connections` (requests one worker
process has open to this endpoint at once, default 1000; more wait for a connection).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
import weakref
from typing import Any

import httpx

from orchestrator import masking
from orchestrator.profiles import Profile
from orchestrator.runtimes import AgentSession, Outcome, SpawnError, SpawnRequest, httpio, register

log = logging.getLogger("orchestrator.runtimes.openai")

# Retry-After may ask for a long wait; a step never sleeps longer than this between tries.
MAX_RETRY_DELAY = 30.0
# The body keys the runtime owns; parameters cannot replace them.
RESERVED = ("model", "messages", "stream")
# Idle connections kept per endpoint and process, for the next request to reuse.
KEEPALIVE_CONNECTIONS = 20

# One client per waiter loop and profile: its pool is the endpoint's connections.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary())
_tls: ssl.SSLContext | None = None


def _client(profile: str, max_connections: int) -> httpx.AsyncClient:
    global _tls
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(profile)
    if client is None:
        _tls = _tls or ssl.create_default_context()  # loaded once: it is the costly part
        client = per_loop[profile] = httpx.AsyncClient(
            verify=_tls, trust_env=False, follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=KEEPALIVE_CONNECTIONS))
    return client


@register("openai")
class OpenAIRuntime:
    holds_worker = True

    def __init__(self, profile: Profile):
        opts = profile.options
        problem = httpio.check_url(opts.get("base_url"))
        if problem:
            raise SpawnError(f"agent profile {profile.name!r}: base_url {problem}")
        self.profile = profile.name
        self.url = str(opts["base_url"]).rstrip("/") + "/chat/completions"
        self.key_env = opts.get("api_key_env")
        if self.key_env is not None and not isinstance(self.key_env, str):
            raise SpawnError(f"agent profile {profile.name!r}: api_key_env must be a string")
        self.headers = {str(k): str(v) for k, v in opts.get("headers", {}).items()}
        self.max_retries = int(opts.get("max_retries", 4))
        self.backoff = float(opts.get("retry_backoff_seconds", 0.5))
        self.connect_timeout = float(opts.get("connect_timeout_seconds", 10))
        self.max_connections = int(opts.get("max_connections", 1000))
        if self.max_connections < 1:
            raise SpawnError(f"agent profile {profile.name!r}: max_connections must be at least 1")

    def spawn(self, req: SpawnRequest) -> AgentSession:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **self.headers}
        key = ""
        if self.key_env:
            key = os.environ.get(self.key_env, "")
            if not key:
                raise SpawnError(
                    f"agent profile {self.profile!r}: environment variable {self.key_env} "
                    f"(its api_key_env) is not set on this worker"
                )
            headers["Authorization"] = f"Bearer {key}"
        body: dict[str, Any] = {k: v for k, v in req.parameters.items() if k not in RESERVED}
        body.update(model=req.model, messages=[{"role": "user", "content": req.prompt}])
        call = _Completion(self, body, headers, key, time.time() + req.timeout_seconds,
                           {"run_id": req.run_id, "step_index": req.step_index})
        return AgentSession(None, handle=call)

    async def wait(self, session: AgentSession) -> Outcome:
        call: _Completion = session.handle
        try:
            return await call.complete()
        finally:
            session.spawn_id = call.spawn_id

    async def stop(self, session: AgentSession) -> None:
        # The task awaiting the request was cancelled, which closed its connection.
        return None

    def terminate(self, session: AgentSession) -> None:
        pass  # the request starts only when the session is awaited

    def cancel(self, spawn_id: str) -> None:
        # Only the worker holding the request can abort it, and it does so as soon as it
        # sees the step is no longer running; a finished completion has nothing to end.
        pass


class _Completion:
    """The request and its retries."""

    def __init__(self, runtime: OpenAIRuntime, body: dict[str, Any], headers: dict[str, str],
                 key: str, deadline: float, log_extra: dict[str, Any]):
        self.rt = runtime
        self.body = body
        self.headers = headers
        self.key = key
        self.deadline = deadline
        self.extra = log_extra
        self.where = httpio.display_url(runtime.url)
        self.spawn_id: str | None = None

    async def complete(self) -> Outcome:
        try:
            return await self._complete()
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug here must still end the step, with a reason
            log.exception("openai request failed unexpectedly", extra=self.extra)
            return Outcome(False, error=self._scrub(f"openai runtime error: {exc}"))

    async def _complete(self) -> Outcome:
        client = _client(self.rt.profile, self.rt.max_connections)
        payload = httpio.encode(self.body)
        tries = 0
        while True:
            tries += 1
            remaining = max(0.1, self.deadline - time.time())
            timeout = httpx.Timeout(remaining, connect=max(0.1, min(self.rt.connect_timeout,
                                                                    remaining)))
            retry_after: float | None = None
            try:
                reply = await _post(client, self.rt.url, payload, self.headers, timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                return self._fail(f"cannot connect to {self.where}: {_reason(exc)}")
            except httpx.TimeoutException:
                return self._fail(f"no reply from {self.where} within {max(0, round(remaining))} s")
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                problem = f"connection to {self.where} was reset ({type(exc).__name__})"
            except (httpx.HTTPError, httpio.TooLarge) as exc:
                return self._fail(f"request to {self.where} failed: {exc}")
            else:
                if reply.ok:
                    return self._parse(reply)
                problem = f"{reply.status} from {self.where}: {httpio.error_detail(reply)}"
                if reply.status != 429 and reply.status < 500:
                    return self._fail(problem)
                retry_after = _seconds(reply.headers.get("Retry-After"))
            delay = self.rt.backoff * 2 ** (tries - 1) if retry_after is None else retry_after
            delay = min(delay, MAX_RETRY_DELAY)
            if tries > self.rt.max_retries or time.time() + delay >= self.deadline:
                return self._fail(f"{problem} (gave up after {tries} tries)")
            log.warning("retrying in %.1f s: %s", delay, self._scrub(problem), extra=self.extra)
            await asyncio.sleep(delay)

    def _parse(self, reply: httpio.Reply) -> Outcome:
        try:
            data = reply.json()
        except ValueError:
            snippet = reply.body[:80].decode("utf-8", "replace")
            return self._fail(f"malformed reply from {self.where}: not JSON ({snippet!r})")
        if not isinstance(data, dict):
            return self._fail(f"malformed reply from {self.where}: not a JSON object")
        if isinstance(data.get("id"), str) and data["id"]:
            self.spawn_id = data["id"][:200]
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        choices = data.get("choices")
        message = choices[0].get("message") if choices and isinstance(choices, list) \
            and isinstance(choices[0], dict) else None
        if not isinstance(message, dict):
            return self._fail(f"malformed reply from {self.where}: no choices[0].message")
        content = message.get("content")
        if isinstance(content, list):  # content parts, as some servers send them
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not content and isinstance(message.get("refusal"), str):
            return Outcome(False, error=self._scrub(f"the model refused: {message['refusal']}"),
                           usage=usage)
        if not isinstance(content, str):
            return self._fail(
                f"malformed reply from {self.where}: choices[0].message.content is not text")
        return Outcome(True, output=content, usage=usage)

    def _fail(self, error: str) -> Outcome:
        return Outcome(False, error=self._scrub(error))

    def _scrub(self, text: str) -> str:
        """A server may quote the key back in an error; it must not reach the step."""
        return text.replace(self.key, masking.MASK) if self.key else text


async def _post(client: httpx.AsyncClient, url: str, payload: bytes, headers: dict[str, str],
                timeout: httpx.Timeout) -> httpio.Reply:
    """POST and read the reply, at most httpio.MAX_REPLY_BYTES of it."""
    async with client.stream("POST", url, content=payload, headers=headers,
                             timeout=timeout) as resp:
        chunks, size = [], 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
            if size > httpio.MAX_REPLY_BYTES:
                raise httpio.TooLarge(f"reply larger than {httpio.MAX_REPLY_BYTES} bytes")
            chunks.append(chunk)
        return httpio.Reply(resp.status_code, resp.headers, b"".join(chunks))


def _reason(exc: httpx.HTTPError) -> str:
    """Why no connection was made, in the words httpio uses."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timed out"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, BaseExceptionGroup):  # each address tried (happy eyeballs)
            cause = cause.exceptions[0]
        elif isinstance(cause, OSError) and cause.errno is not None:
            return httpio.os_reason(cause)
        else:
            cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff
