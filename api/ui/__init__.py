"""The operator web UI: one HTML page plus plain JS modules and CSS, served by Flask.

The page talks to the JSON API with the key the user signed in with (kept in the tab's
sessionStorage and sent as `x-api-key`), and follows `/api/events` for live updates.
No build step: the files under `static/` are what the browser runs.
"""

from __future__ import annotations

from flask import Blueprint, Response, send_from_directory

from api.headers import UI_CSP

bp = Blueprint("ui", __name__, static_folder="static", static_url_path="/ui/static")


@bp.get("/")
def index() -> Response:
    resp = send_from_directory(bp.static_folder, "index.html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.after_request
def _csp(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", UI_CSP)
    return resp
