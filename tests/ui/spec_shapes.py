"""A route handler that answers the browser as an older server would (lists without
`total`), built from the real answer, so the UI is tested against both."""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

LISTS = re.compile(r"/api/(workflows|pipelines)(\?.*)?$")


def whole_lists(route, request):
    """GET /api/workflows|pipelines answered whole and without `total`, whatever the page
    asked for: what a server from before paging sends."""
    if request.method != "GET":
        return route.continue_()
    url = urlsplit(request.url)
    whole = route.fetch(url=f"{url.scheme}://{url.netloc}{url.path}")
    body = whole.json()
    body.pop("total", None)
    route.fulfill(response=whole, body=json.dumps(body))
