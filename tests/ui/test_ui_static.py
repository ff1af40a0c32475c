"""The UI blueprint on its own: the page, its modules and its headers, no browser needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask

from api.ui import bp

STATIC = Path(__file__).resolve().parents[2] / "api" / "ui" / "static"


@pytest.fixture()
def client():
    app = Flask(__name__)
    app.register_blueprint(bp)
    return app.test_client()


def test_page_is_served_with_a_strict_policy(client):
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    assert b'<script type="module" src="/ui/static/js/main.js">' in resp.data
    policy = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert resp.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("path", sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*.*")))
def test_every_static_file_is_served(client, path):
    resp = client.get(f"/ui/static/{path}")
    assert resp.status_code == 200
    if path.endswith(".js"):
        assert "javascript" in resp.mimetype  # module scripts need a JS MIME type
    resp.close()


def test_module_imports_resolve_to_files():
    for js in STATIC.rglob("*.js"):
        for spec in re.findall(r'from\s+"(\.[^"]+)"', js.read_text()):
            assert (js.parent / spec).resolve().is_file(), f"{js.name} imports missing {spec}"


def test_nothing_is_loaded_from_another_host():
    for f in STATIC.rglob("*.*"):
        text = f.read_text()
        urls = re.findall(r"https?://[^\s\"')]+", text)
        assert all(u.startswith("http://www.w3.org/") for u in urls), f"{f.name}: {urls}"
