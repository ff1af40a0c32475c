"""Browser fixtures: Debian's Chromium driven by Playwright against the live stack.

Screenshots of the main views are committed in tests/ui/screenshots/, to review the views.
A run writes them there only with UPDATE_SCREENSHOTS=1 (else into a temporary folder), so
the suite leaves the work tree as it found it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SHOTS = (Path(__file__).parent / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") == "1"
         else Path(tempfile.gettempdir()) / "orchestrator-ui-screenshots")


def _missing(reason: str) -> None:
    # Like the core's services: in CI a missing browser is a failure, not a skip.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright import sync_api
    except ImportError:
        _missing("playwright is not installed (pip install playwright; never `playwright install`)")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture(scope="session")
def keys(api) -> dict[str, str]:
    made = {}
    for role in ("viewer", "operator"):
        body = api.ok("POST", "/api/keys", {"name": f"{role}-ui", "role": role}, 201)
        made[role] = body["key"]
    return made


@pytest.fixture
def open_page(browser, stack):
    """open_page(key=None, **context options) -> a signed-in page on the Pipelines view."""
    contexts = []

    def make(key: str | None = None, **options):
        options.setdefault("viewport", {"width": 1280, "height": 860})
        ctx = browser.new_context(base_url=stack.base_url, **options)
        ctx.set_default_timeout(10_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto("/")
        if key:
            sign_in(page, key)
        return page

    yield make
    for ctx in contexts:
        ctx.close()


def sign_in(page, key: str) -> None:
    page.fill("#signin-key", key)
    page.click("#signin-submit")
    page.wait_for_selector("#topbar:not([hidden])")
    page.wait_for_selector("#live[data-state='live']")


MAX_SHOT_HEIGHT = 2000  # a page of 50 cards would otherwise make a multi-MB image


def shot(page, name: str, full_page: bool = True) -> None:
    SHOTS.mkdir(exist_ok=True)
    clip = None
    if full_page:
        width, height = page.evaluate(
            "[document.documentElement.clientWidth, document.documentElement.scrollHeight]")
        clip = {"x": 0, "y": 0, "width": width, "height": min(height, MAX_SHOT_HEIGHT)}
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page, clip=clip)
