"""The operator web UI: one HTML page plus plain JS modules and CSS, served by Flask.

The page talks to the JSON API with the key the user signed in with (kept in the tab's
sessionStorage and sent as `x-api-key`), and follows `/api/events` for live updates.
No build step: the files under `static/` are what the browser runs.
"""

from __future__ import annotations

from flask import Blueprint, Response, send_from_directory

bp = Blueprint("ui", __name__, static_folder="static", static_url_path="/ui/static")

# Everything the page loads comes from this origin; inline scripts and foreign hosts are
# refused, so an injected string in a template name cannot run as code.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


@bp.get("/")
def index() -> Response:
    resp = send_from_directory(bp.static_folder, "index.html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.after_request
def _harden(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", _CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    return resp
