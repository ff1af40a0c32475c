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
PAGE = 1000  # the largest page the API gives


class ApiFailure(Exception):
    """The API said no (status > 0), or could not be reached (status 0)."""

    def __init__(self, status: int, message: str, items: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        # the refused items of a document (POST /api/apply), each {"kind", "name", "error"}
        self.items = items or []


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
            items = None
            try:
                answer = json.loads(raw)
                message = answer.get("error") or raw.decode(errors="replace")
                items = answer.get("items")
                message += "".join(finding_lines(answer.get("injection")))
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace").strip() or exc.reason
            raise ApiFailure(exc.code, f"{message} (HTTP {exc.code})",
                             items if isinstance(items, list) else None) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiFailure(0, f"cannot reach {self.base}: {reason}") from None

    # -- the calls the commands make --------------------------------------------------

    def templates(self) -> list[dict[str, Any]]:
        return self.every("/api/workflows", "templates")

    def pipelines(self) -> list[dict[str, Any]]:
        return self.every("/api/pipelines", "pipelines")

    def every(self, path: str, key: str) -> list[dict[str, Any]]:
        """Every item of a list, a page at a time (an unpaged list stops at 10,000)."""
        items: list[dict[str, Any]] = []
        while True:
            answer = self.get(path, limit=PAGE, offset=len(items))
            items += answer[key]
            # A server from before paging sends no `total`, and everything at once.
            if "total" not in answer or not answer[key] or len(items) >= answer["total"]:
                return items

    def run(self, run_id: int) -> dict[str, Any]:
        return self.get("/api/pipelines/run", id=run_id)["run"]

    def runs(self, **query: Any) -> list[dict[str, Any]]:
        return self.get("/api/pipelines/run", **query)["runs"]

    def start(self, pipeline_id: int, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": "start", "pipeline_id": pipeline_id}
        if inputs:
            body["inputs"] = inputs
        return self.post("/api/pipelines/run", body)["run"]

    def advance(self, run_id: int, success: bool, error: str | None = None,
                step_index: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": "advance", "run_id": run_id, "success": success}
        if error is not None:
            body["error"] = error
        if step_index is not None:
            body["step_index"] = step_index
        return self.post("/api/pipelines/run", body)["run"]

    def rerun(self, run_id: int, from_step: int | None = None,
              inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": "rerun", "run_id": run_id}
        if from_step is not None:
            body["from_step"] = from_step
        if inputs:
            body["inputs"] = inputs
        return self.post("/api/pipelines/run", body)["run"]

    def cancel(self, run_id: int) -> dict[str, Any]:
        return self.post("/api/pipelines/run", {"action": "cancel", "run_id": run_id})["run"]


def finding_lines(findings: Any) -> list[str]:
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
