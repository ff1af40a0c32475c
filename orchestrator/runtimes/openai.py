"""`openai`: one chat completion from an OpenAI-compatible endpoint (hosted, vLLM, Ollama,
llama.cpp).

The request runs on a thread of its own, so the worker keeps watching for a cancel while
the model thinks, and a cancel or a timeout aborts it mid-flight. spawn_id is the reply's
`id`, output is `choices[0].message.content`, and `usage` is kept. A connection reset, a
429 or a 5xx is retried within the step's time; anything else fails the step at once.

Profile options: `base_url` (required, e.g. `http://127.0.0.1:8000/v1`), `api_key_env`
(the environment variable holding the key; read when the step starts, never stored),
`headers` (table), `max_retries` (default 4), `retry_backoff_seconds` (default 0.5,
doubling), `connect_timeout_seconds` (default 10).
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
from typing import Any

from orchestrator import masking
from orchestrator.profiles import Profile
from orchestrator.runtimes import AgentSession, Outcome, SpawnError, SpawnRequest, httpio, register

log = logging.getLogger("orchestrator.runtimes.openai")

# Retry-After may ask for a long wait; a step never sleeps longer than this between tries.
MAX_RETRY_DELAY = 30.0
# The body keys the runtime owns; parameters cannot replace them.
RESERVED = ("model", "messages", "stream")


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

    def spawn(self, req: SpawnRequest) -> AgentSession:
        headers = dict(self.headers)
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
        call.start()
        return AgentSession(None, handle=call)

    def poll(self, session: AgentSession, wait: float) -> Outcome | None:
        call: _Completion = session.handle
        if not call.done.wait(wait):
            return None
        session.spawn_id = call.spawn_id
        return call.outcome

    def terminate(self, session: AgentSession) -> None:
        call: _Completion = session.handle
        call.abort()
        call.join(timeout=5)

    def cancel(self, spawn_id: str) -> None:
        # Only the worker holding the request can abort it, and it does so as soon as it
        # sees the step is no longer running; a finished completion has nothing to end.
        pass


class _Completion(threading.Thread):
    """The request and its retries; `outcome` is set when `done` is."""

    def __init__(self, runtime: OpenAIRuntime, body: dict[str, Any], headers: dict[str, str],
                 key: str, deadline: float, log_extra: dict[str, Any]):
        super().__init__(name="openai-completion", daemon=True)
        self.rt = runtime
        self.body = body
        self.headers = headers
        self.key = key
        self.deadline = deadline
        self.extra = log_extra
        self.where = httpio.display_url(runtime.url)
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.spawn_id: str | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._request: httpio.Request | None = None

    def run(self) -> None:
        try:
            self.outcome = self._complete()
        except Exception as exc:  # a bug here must still end the step, with a reason
            log.exception("openai request failed unexpectedly", extra=self.extra)
            self.outcome = Outcome(False, error=self._scrub(f"openai runtime error: {exc}"))
        finally:
            self.done.set()

    def abort(self) -> None:
        with self._lock:
            self._wake.set()
            request = self._request
        if request is not None:
            request.abort()

    def _complete(self) -> Outcome:
        tries = 0
        while True:
            tries += 1
            remaining = self.deadline - time.time()
            request = httpio.Request(
                self.rt.url, self.body, self.headers,
                connect_timeout=max(0.1, min(self.rt.connect_timeout, remaining)),
                read_timeout=max(0.1, remaining),
            )
            with self._lock:
                if self._wake.is_set():
                    return self._aborted()
                self._request = request
            retry_after: float | None = None
            try:
                reply = request.send()
            except httpio.Aborted:
                return self._aborted()
            except httpio.ConnectError as exc:
                return self._fail(f"cannot connect to {self.where}: {exc}")
            except TimeoutError:
                return self._fail(f"no reply from {self.where} within {max(0, round(remaining))} s")
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.IncompleteRead) as exc:
                problem = f"connection to {self.where} was reset ({type(exc).__name__})"
            except (OSError, http.client.HTTPException) as exc:
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
            if self._wake.wait(delay):
                return self._aborted()

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

    def _aborted(self) -> Outcome:
        return Outcome(False, error=f"request to {self.where} aborted")

    def _scrub(self, text: str) -> str:
        """A server may quote the key back in an error; it must not reach the step."""
        return text.replace(self.key, masking.MASK) if self.key else text


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff
