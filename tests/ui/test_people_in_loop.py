"""People in the loop: a manual step waits for you (banner and run detail) and only it
gets Step Done / Step Failed; a running program is overridden only from the detail's
menu; Cancel, Step Failed and Delete ask once, in an in-page dialog, before acting."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import shot
from tests.ui.test_ui_browser import unique

VIOLET = "rgb(139, 92, 246)"


@pytest.fixture
def person_then_program(api):
    review = api.template("look at it", agent="manual", name=unique("Approve"))
    build = api.template("sleep 30; echo late", name=unique("Long build"))
    return api.pipeline(review["id"], build["id"], name=unique("Gated build"))


def confirm(page, answer: str, reason: str | None = None):
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    if reason is not None:
        dialog.locator("#confirm-reason").fill(reason)
    dialog.locator(f"[data-confirm={answer}]").click()
    expect(dialog).to_have_count(0)


def test_a_manual_step_waits_for_you_and_a_program_has_only_the_override_menu(
        open_page, keys, api, person_then_program):
    run = api.start(person_then_program["id"])
    api.wait_step(run["id"], 0, "running")
    page = open_page(keys["operator"])
    active = page.locator(f"#active-runs .active-run[data-run-id='{run['id']}']")
    expect(active).to_have_attribute("data-waiting", "true")
    expect(active.locator(".waiting-mark")).to_have_text("waiting for you")
    expect(active.locator(".dot[data-step='0']")).to_have_css("background-color", VIOLET)
    expect(active.locator("[data-action=step-done]")).to_be_visible()
    shot(page, "banner-waiting-for-you", full_page=False)

    page.goto(f"/#/runs/{run['id']}")
    detail = page.locator("#run-detail")
    first = detail.locator(".step-item[data-step='0']")
    expect(first.locator(".badge")).to_have_text("waiting for you")
    expect(detail.locator(".step-menu")).to_have_count(0)  # a person's step needs no override
    shot(page, "run-detail-waiting")
    detail.locator(".run-head [data-action=step-done]").click()

    # The program's step is running: no Step Done / Step Failed, only Cancel and the menu.
    second = detail.locator(".step-item[data-step='1']")
    expect(second.locator(".badge")).to_have_text("running")
    expect(detail.locator("[data-action=step-done], [data-action=step-failed]")).to_have_count(0)
    expect(detail.locator(".run-head [data-action=cancel]")).to_be_visible()
    page.goto("/#/pipelines")
    banner = page.locator(f"#active-runs .active-run[data-run-id='{run['id']}']")
    expect(banner.locator(".dot[data-step='1']")).to_have_attribute("data-status", "running")
    expect(banner).not_to_have_attribute("data-waiting", "true")
    expect(banner.locator(".waiting-mark, [data-action=step-done]")).to_have_count(0)

    page.goto(f"/#/runs/{run['id']}")
    second.locator("[data-action=override]").click()
    second.locator("[data-action=override-failed]").click()
    shot(page, "confirm-override", full_page=False)
    confirm(page, "no")
    assert api.run(run["id"])["steps_snapshot"][1]["status"] == "running"  # backed out

    second.locator("[data-action=override-failed]").click()
    confirm(page, "yes", reason="stuck on a lock")
    expect(second).to_have_attribute("data-status", "failed")
    expect(second.locator(".step-error")).to_contain_text("stuck on a lock")
    stored = api.run(run["id"])
    assert stored["status"] == "failed" and stored["steps_snapshot"][1]["error"] == "stuck on a lock"
    assert page.errors == []


def test_cancel_step_failed_and_delete_ask_once(open_page, keys, api, person_then_program):
    run = api.start(person_then_program["id"])
    api.wait_step(run["id"], 0, "running")
    page = open_page(keys["operator"])
    active = page.locator(f"#active-runs .active-run[data-run-id='{run['id']}']")

    active.locator("[data-action=step-failed]").click()
    page.keyboard.press("Escape")  # backing out with the keyboard changes nothing
    expect(page.locator("#confirm-dialog")).to_have_count(0)
    active.locator("[data-action=cancel]").click()
    expect(page.locator("#confirm-dialog")).to_contain_text(f"Cancel run #{run['id']}?")
    shot(page, "confirm-cancel", full_page=False)
    confirm(page, "no")
    stored = api.run(run["id"])
    assert stored["status"] == "running" and stored["steps_snapshot"][0]["status"] == "running"

    active.locator("[data-action=cancel]").click()
    confirm(page, "yes")
    expect(active).to_have_count(0)
    assert api.run(run["id"])["status"] == "cancelled"

    card = page.locator(f".pipeline[data-pipeline-id='{person_then_program['id']}']")
    card.get_by_role("button", name="Delete").click()
    expect(page.locator("#confirm-title")).to_have_text(f"Delete “{person_then_program['name']}”?")
    confirm(page, "no")
    assert any(p["id"] == person_then_program["id"]
               for p in api.ok("GET", "/api/pipelines")["pipelines"])
    card.get_by_role("button", name="Delete").click()
    confirm(page, "yes")
    expect(card).to_have_count(0)
    assert all(p["id"] != person_then_program["id"]
               for p in api.ok("GET", "/api/pipelines")["pipelines"])
    assert page.errors == []


def test_step_failed_keeps_the_reason_typed_in_the_dialog(open_page, keys, api):
    ids = [api.template("check", agent="manual", name=unique("Check"))["id"] for _ in range(2)]
    pipeline = api.pipeline(*ids, name=unique("Two checks"))
    run = api.start(pipeline["id"])
    api.wait_step(run["id"], 0, "running")
    page = open_page(keys["operator"])
    active = page.locator(f"#active-runs .active-run[data-run-id='{run['id']}']")
    active.locator("[data-action=step-failed]").click()
    confirm(page, "yes", reason="numbers do not add up")
    expect(active).to_have_count(0)
    step = api.run(run["id"])["steps_snapshot"][0]
    assert (step["status"], step["error"]) == ("failed", "numbers do not add up")
