"""Hardening headers on every response, errors and event streams included.

Browsers must not guess a content type (a JSON error shown as HTML) nor send our URLs,
which may carry `?key=`, to other sites. HTML gets a Content-Security-Policy: the UI's
own, stricter for anything else that is HTML.
"""

from __future__ import annotations

from flask import Flask, Response

# Everything the UI page loads comes from this origin; inline scripts and foreign hosts
# are refused, so an injected string in a template name cannot run as code.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
# HTML that is not the UI (a framework page, say) may load nothing at all.
OTHER_HTML_CSP = "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"


def harden(resp: Response) -> Response:
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    if resp.mimetype == "text/html":
        resp.headers.setdefault("Content-Security-Policy", OTHER_HTML_CSP)
    return resp


def init_app(app: Flask) -> None:
    app.after_request(harden)
