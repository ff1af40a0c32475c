"""`webhook`: an asynchronous agent gateway that runs a session and reports back.

Spawning POSTs the step to the gateway's `url`; its 2xx reply names the session
(`{"spawn_id": "..."}`). The step then waits without holding a worker until the gateway
POSTs the outcome to the step's `callback_url`, an advance resolves it, or the sweeper
times it out. A cancel or a timeout POSTs `cancel_url` (if the profile has one).

Profile options: `url` (required), `cancel_url` (may contain `{spawn_id}`), `headers`
(table, sent with both), `request_timeout_seconds` (default 10).
"""

from __future__ import annotations

import http.client
import logging
from urllib.parse import quote

from orchestrator.profiles import Profile
from orchestrator.runtimes import AgentSession, SpawnError, SpawnRequest, httpio, register

log = logging.getLogger("orchestrator.runtimes.webhook")

MAX_SPAWN_ID = 200


@register("webhook")
class WebhookRuntime:
    holds_worker = False
    # The executor arms a per-attempt secret and passes `callback_url` in the request.
    takes_callback = True

    def __init__(self, profile: Profile):
        opts = profile.options
        self.profile = profile.name
        problem = httpio.check_url(opts.get("url"))
        if problem:
            raise SpawnError(f"agent profile {profile.name!r}: url {problem}")
        self.url: str = opts["url"]
        self.cancel_url: str | None = opts.get("cancel_url")
        if self.cancel_url is not None:
            problem = httpio.check_url(self.cancel_url.replace("{spawn_id}", "x"))
            if problem:
                raise SpawnError(f"agent profile {profile.name!r}: cancel_url {problem}")
        self.headers = {str(k): str(v) for k, v in opts.get("headers", {}).items()}
        self.timeout = float(opts.get("request_timeout_seconds", 10))

    def spawn(self, req: SpawnRequest) -> AgentSession:
        if not req.callback_url:
            raise SpawnError("webhook steps need a callback URL; none was given")
        payload = {
            "run_id": req.run_id,
            "step_index": req.step_index,
            "attempt": req.attempt,
            "template_id": req.template_id,
            "template_name": req.template_name,
            "model": req.model,
            "prompt": req.prompt,
            "parameters": req.parameters,
            "callback_url": req.callback_url,
        }
        where = httpio.display_url(self.url)
        timeout = min(self.timeout, req.timeout_seconds)
        try:
            reply = self._post(self.url, payload, timeout)
        except httpio.ConnectError as exc:
            raise SpawnError(f"cannot connect to {where}: {exc}") from None
        except TimeoutError:
            raise SpawnError(f"no reply from {where} within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SpawnError(f"request to {where} failed: {exc}") from None
        if not reply.ok:
            raise SpawnError(f"{reply.status} from {where}: {httpio.error_detail(reply)}")
        try:
            data = reply.json()
        except ValueError:
            snippet = reply.body[:80].decode("utf-8", "replace")
            raise SpawnError(f"malformed reply from {where}: not JSON ({snippet!r})") from None
        spawn_id = data.get("spawn_id") if isinstance(data, dict) else None
        if isinstance(spawn_id, int) and not isinstance(spawn_id, bool):
            spawn_id = str(spawn_id)
        if not isinstance(spawn_id, str) or not spawn_id or len(spawn_id) > MAX_SPAWN_ID:
            raise SpawnError(
                f"malformed reply from {where}: expected {{\"spawn_id\": \"...\"}} "
                f"(a string of 1 to {MAX_SPAWN_ID} characters)"
            )
        return AgentSession(spawn_id)

    def terminate(self, session: AgentSession) -> None:
        if session.spawn_id:
            self.cancel(session.spawn_id)

    def cancel(self, spawn_id: str) -> None:
        """Tell the gateway to end the session; best effort (the step is over anyway)."""
        if not self.cancel_url:
            return
        url = self.cancel_url.replace("{spawn_id}", quote(spawn_id, safe=""))
        where = httpio.display_url(url)
        try:
            reply = self._post(url, {"spawn_id": spawn_id}, self.timeout)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("could not cancel session %s at %s: %s", spawn_id, where, exc,
                        extra={"spawn_id": spawn_id})
            return
        if not reply.ok:
            log.warning("cancelling session %s: %s from %s: %s", spawn_id, reply.status, where,
                        httpio.error_detail(reply), extra={"spawn_id": spawn_id})
            return
        log.info("cancelled session %s at %s", spawn_id, where, extra={"spawn_id": spawn_id})

    def _post(self, url: str, payload: dict, timeout: float) -> httpio.Reply:
        request = httpio.Request(url, payload, self.headers, connect_timeout=timeout,
                                 read_timeout=timeout)
        return request.send()
