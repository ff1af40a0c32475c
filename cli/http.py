"""A small client for the service's HTTP API, used by the command-line client.

It knows the address and key (`ORCHESTRATOR_URL`, `ORCHESTRATOR_API_KEY`) and turns every
non-2xx answer into `ApiFailure` carrying the API's own error text.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:3000"


class ApiFailure(Exception):
    """The API said no (status > 0), or could not be reached (status 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Client:
    def __init__(self, base_url: str, key: str | None, timeout: float = 30):
        self.base = base_url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        query = {k: v for k, v in query.items() if v is not None}
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body)

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", path, body)

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if self.key:
            headers["x-api-key"] = self.key
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return _decode(resp.read(), resp.status)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                answer = json.loads(raw)
                message = answer.get("error") or raw.decode(errors="replace")
                message += "".join(_finding_lines(answer.get("injection")))
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace").strip() or exc.reason
            raise ApiFailure(exc.code, f"{message} (HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiFailure(0, f"cannot reach {self.base}: {reason}") from None

    # -- the calls the commands make --------------------------------------------------

    def templates(self) -> list[dict[str, Any]]:
        return self.get("/api/workflows")["templates"]

    def pipelines(self) -> list[dict[str, Any]]:
        return self.get("/api/pipelines")["pipelines"]

    def run(self, run_id: int) -> dict[str, Any]:
        return self.get("/api/pipelines/run", id=run_id)["run"]

    def runs(self, **query: Any) -> list[dict[str, Any]]:
        return self.get("/api/pipelines/run", **query)["runs"]

    def start(self, pipeline_id: int, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": "start", "pipeline_id": pipeline_id}
        if inputs:
            body["inputs"] = inputs
        return self.post("/api/pipelines/run", body)["run"]

    def cancel(self, run_id: int) -> dict[str, Any]:
        return self.post("/api/pipelines/run", {"action": "cancel", "run_id": run_id})["run"]


def _finding_lines(findings: Any) -> list[str]:
    """The injection guard's rules, one line each, under the error they explain."""
    if not isinstance(findings, list):
        return []
    return [f"\n  - {f.get('rule')}: {f.get('description')}" for f in findings
            if isinstance(f, dict)]


def _decode(raw: bytes, status: int) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiFailure(status, f"the server answered {status} with something not JSON") from None
    if not isinstance(data, dict):
        raise ApiFailure(status, "the server answered with JSON that is not an object")
    return data
