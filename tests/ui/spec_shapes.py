"""Route handlers that answer the browser in shapes the SPEC gives but this server may not
send yet (list paging with `total`, run lists without outputs), built from the real
answer, so the UI is tested against the contract whichever server version runs."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

LISTS = re.compile(r"/api/(workflows|pipelines)(\?.*)?$")
KEY = {"workflows": "templates", "pipelines": "pipelines"}


def paged_lists(with_total: bool = True):
    """GET /api/workflows|pipelines?limit=&offset= answered as SPEC §12 says."""

    def handle(route, request):
        if request.method != "GET":
            return route.continue_()
        url = urlsplit(request.url)
        query = parse_qs(url.query)
        whole = route.fetch(url=f"{url.scheme}://{url.netloc}{url.path}")
        body = whole.json()
        key = KEY[url.path.rsplit("/", 1)[1]]
        items = body[key]
        body.pop("total", None)
        if with_total and "limit" in query:
            offset = int(query.get("offset", ["0"])[0])
            body[key] = items[offset:offset + int(query["limit"][0])]
            body["total"] = len(items)
        route.fulfill(response=whole, body=json.dumps(body))

    return handle


def runs_without_outputs(route, request):
    """GET /api/pipelines/run lists with step output null and inputs {} (SPEC §12)."""
    if request.method != "GET" or "id=" in urlsplit(request.url).query:
        return route.continue_()
    real = route.fetch()
    body = real.json()
    for run in body.get("runs", []):
        run["inputs"] = {}
        run["output_omitted"] = True
        for step in run["steps_snapshot"]:
            step["output"] = None
    route.fulfill(response=real, body=json.dumps(body))
