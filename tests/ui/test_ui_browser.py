"""The web UI in a real browser against the real stack (gunicorn API, Celery worker,
PostgreSQL): forms, live run progress, the manual buttons, roles and error messages."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.conftest import ADMIN_KEY
from tests.ui.conftest import shot

AMBER = "rgb(245, 158, 11)"
GREEN = "rgb(34, 197, 94)"
RED = "rgb(239, 68, 68)"
GREY = "rgb(107, 114, 128)"


def unique(prefix: str) -> str:
    return f"{prefix} {time.monotonic_ns() % 10**7}"


def create_template_in_form(page, name: str, agent: str, prompt: str) -> None:
    page.click("#new-template")
    form = page.locator("#template-form")
    form.locator("#tf-name").fill(name)
    form.locator("#tf-agent").select_option(agent)
    form.locator("#tf-prompt").fill(prompt)
    form.locator("#tf-save").click()
    expect(form).to_have_count(0)
    expect(page.locator(".template h3", has_text=name)).to_be_visible()


def test_build_a_pipeline_in_the_forms_and_watch_it_run(open_page, keys, api):
    page = open_page(keys["operator"])
    page.click("[data-nav=templates]")
    build, ship = unique("Build"), unique("Ship")
    create_template_in_form(page, build, "sh", "sleep 2; echo built")
    create_template_in_form(page, ship, "sh", "sleep 2; echo shipped")
    card = page.locator(".template", has_text=build)
    expect(card.locator(".fact", has_text="Agent")).to_contain_text("sh · command")
    shot(page, "templates")

    page.click("[data-nav=pipelines]")
    page.click("#new-pipeline")
    form = page.locator("#pipeline-form")
    name = unique("Release")
    form.locator("#pf-name").fill(name)
    save = form.locator("#pf-save")
    expect(save).to_be_disabled()
    form.locator("#pf-add-template").select_option(label=build)
    form.locator("#pf-add-step").click()
    expect(save).to_be_disabled()  # one step is not a pipeline
    expect(form.locator("#pf-hint")).to_contain_text("at least 2 steps")
    form.locator("#pf-add-template").select_option(label=ship)
    form.locator("#pf-add-step").click()
    form.locator("#pf-add-template").select_option(label=build)
    form.locator("#pf-add-step").click()
    # Reorder (third up to second), remove the last, and let step 2 continue on failure.
    form.locator("[aria-label='Move step 3 up']").click()
    form.locator("[aria-label='Remove step 3']").click()
    expect(form.locator(".step-row .step-name")).to_have_text([build, build])
    form.locator("[aria-label='Remove step 2']").click()
    expect(save).to_be_disabled()
    form.locator("#pf-add-template").select_option(label=ship)
    form.locator("#pf-add-step").click()
    form.locator(".step-onfail").nth(1).select_option("continue")
    shot(page, "pipeline-form", full_page=False)
    expect(save).to_be_enabled()
    save.click()
    expect(form).to_have_count(0)

    card = page.locator(".pipeline", has_text=name)
    expect(card.locator(".chain-box")).to_have_text([build, ship])
    expect(card.locator(".chain .arrow")).to_have_count(1)
    expect(card.locator(".continue-mark")).to_have_text(["continue on fail"])
    stored = next(p for p in api.ok("GET", "/api/pipelines")["pipelines"] if p["name"] == name)
    assert [(s["template_name"], s["on_failure"]) for s in stored["steps"]] == [
        (build, "stop"), (ship, "continue")]

    page.evaluate("window.__sameDocument = true")
    card.get_by_role("button", name="Run", exact=True).click()
    page.locator("#run-dialog #rd-start").click()
    # The new run opens at once, its program step running.
    expect(page).to_have_url(re.compile(r"#/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    first = page.locator("#run-detail .step-item[data-step='0'] .dot")
    expect(first).to_have_attribute("data-status", "running")
    expect(first).to_have_css("background-color", AMBER)
    expect(first).to_have_css("animation-name", "pulse")
    page.click("[data-nav=pipelines]")
    active = page.locator(f"#active-runs .active-run[data-run-id='{run_id}']")
    expect(active).to_contain_text(f"Run #{run_id}")
    expect(active).to_contain_text(name)
    shot(page, "pipelines-active-run")

    # Open the run history; the same run's dots go green with no reload.
    card.locator(".expander").click()
    row = card.locator(f".run-row[data-run-id='{run_id}']")
    expect(active.locator(".dot[data-step='1']")).to_have_attribute("data-status", "running")
    expect(active).to_contain_text("Step 2 / 2")
    expect(row.locator(".dot[data-step='0']")).to_have_css("background-color", GREEN)
    expect(row).to_have_attribute("data-status", "completed", timeout=10_000)
    expect(active).to_have_count(0)
    for i in (0, 1):
        dot = row.locator(f".dot[data-step='{i}']")
        expect(dot).to_have_attribute("data-status", "completed")
        expect(dot).to_have_css("background-color", GREEN)
    assert page.evaluate("window.__sameDocument") is True
    expect(card.locator(".card-meta")).to_contain_text("1 completed")
    shot(page, "pipelines-history")

    row.click()
    detail = page.locator("#run-detail")
    expect(detail.locator(".run-head .badge")).to_have_text("completed")
    steps = detail.locator(".step-item")
    expect(steps).to_have_count(2)
    expect(steps.nth(0).locator(".output pre")).to_have_text("built")
    expect(steps.nth(1).locator(".output pre")).to_have_text("shipped")
    expect(steps.nth(0).locator(".fact", has_text="Spawn id")).not_to_contain_text("—")
    expect(steps.nth(0).locator(".fact", has_text="Duration")).to_contain_text("s")
    shot(page, "run-detail")
    assert page.errors == []


@pytest.fixture
def manual_pipeline(api):
    names = [unique("Review"), unique("Notify"), unique("Deploy")]
    ids = [api.template("wait for a person", agent="manual", name=n)["id"] for n in names]
    pipeline = api.pipeline(
        {"template_id": ids[0]},
        {"template_id": ids[1], "on_failure": "continue"},
        {"template_id": ids[2]},
        name=unique("Manual release"),
    )
    return pipeline, names


def test_manual_steps_done_failed_and_cancel(open_page, keys, api, manual_pipeline):
    pipeline, names = manual_pipeline
    page = open_page(keys["operator"])
    card = page.locator(f".pipeline[data-pipeline-id='{pipeline['id']}']")
    card.get_by_role("button", name="Run", exact=True).click()
    page.locator("#run-dialog #rd-start").click()
    expect(page).to_have_url(re.compile(r"#/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    page.click("[data-nav=pipelines]")
    active = page.locator(f"#active-runs .active-run[data-run-id='{run_id}']")
    dots = [active.locator(f".dot[data-step='{i}']") for i in range(3)]
    expect(dots[0]).to_have_attribute("data-status", "running")
    expect(active.locator(".waiting-mark")).to_have_text("waiting for you")

    active.locator("[data-action=step-done]").click()
    expect(dots[0]).to_have_attribute("data-status", "completed")
    expect(dots[1]).to_have_attribute("data-status", "running")
    expect(active).to_contain_text("Step 2 / 3")

    active.locator("[data-action=step-failed]").click()
    page.locator("#confirm-dialog [data-confirm=yes]").click()
    expect(dots[1]).to_have_attribute("data-status", "failed")
    expect(dots[1]).to_have_css("background-color", RED)
    expect(dots[2]).to_have_attribute("data-status", "running")  # on_failure: continue
    shot(page, "manual-run-banner")
    run = api.run(run_id)
    assert [s["status"] for s in run["steps_snapshot"]] == ["completed", "failed", "running"]
    assert run["steps_snapshot"][1]["error"]

    active.locator("[data-action=cancel]").click()
    page.locator("#confirm-dialog [data-confirm=yes]").click()
    expect(active).to_have_count(0)
    assert api.run(run_id)["status"] == "cancelled"

    page.goto(f"/#/runs/{run_id}")
    detail = page.locator("#run-detail")
    expect(detail.locator(".run-head .badge")).to_have_text("cancelled")
    last = detail.locator(".step-item[data-step='2']")
    expect(last).to_have_attribute("data-status", "skipped")
    expect(last.locator(".dot")).to_have_css("background-color", GREY)
    expect(last.locator(".step-error")).to_contain_text("cancelled")
    expect(detail.locator(".run-controls")).to_have_count(0)

    page.click("[data-nav=runs]")
    page.select_option("#run-filter", "cancelled")
    row = page.locator(f"#run-list .run-row[data-run-id='{run_id}']")
    expect(row).to_be_visible()
    expect(page.locator("#run-list .run-row:not([data-status='cancelled'])")).to_have_count(0)
    shot(page, "runs", full_page=False)
    assert page.errors == []


def test_a_step_resolved_elsewhere_updates_the_page_within_a_second(
        open_page, keys, api, manual_pipeline):
    """A change made by another client (here the API, as a gateway would) shows up live."""
    pipeline, _ = manual_pipeline
    page = open_page(keys["operator"])
    run = api.start(pipeline["id"])
    active = page.locator(f"#active-runs .active-run[data-run-id='{run['id']}']")
    expect(active.locator(".dot[data-step='0']")).to_have_attribute("data-status", "running")
    api.ok("POST", "/api/pipelines/run",
           {"action": "advance", "run_id": run["id"], "success": True, "step_index": 0}, 202)
    expect(active.locator(".dot[data-step='0']")).to_have_attribute(
        "data-status", "completed", timeout=1_000)
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]}, 202)
    expect(active).to_have_count(0, timeout=1_000)


def test_a_viewer_sees_everything_but_no_buttons(open_page, keys, api, manual_pipeline):
    pipeline, _ = manual_pipeline
    run = api.start(pipeline["id"])
    api.wait_step(run["id"], 0, "running")
    page = open_page(keys["viewer"])
    expect(page.locator(".role")).to_have_text("viewer")
    active = page.locator(f"#active-runs .active-run[data-run-id='{run['id']}']")
    expect(active).to_be_visible()
    expect(page.locator(f".pipeline[data-pipeline-id='{pipeline['id']}']")).to_be_visible()
    shot(page, "viewer-pipelines")
    for gone in ("#new-pipeline", ".run-controls", ".card-actions",
                 "button:text-is('Run')", "button:text-is('Step Done')"):
        expect(page.locator(gone)).to_have_count(0)
    page.click("[data-nav=templates]")
    expect(page.locator(".template").first).to_be_visible()
    expect(page.locator("#new-template")).to_have_count(0)
    expect(page.locator(".template button")).to_have_count(0)
    page.goto(f"/#/runs/{run['id']}")
    expect(page.locator("#run-detail .run-head .badge")).to_have_text("running")
    expect(page.locator(".run-controls")).to_have_count(0)
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]}, 202)
    expect(page.locator("#run-detail .run-head .badge")).to_have_text("cancelled")


def test_api_errors_appear_next_to_their_cause(open_page, keys, api):
    page = open_page()
    page.fill("#signin-key", "not-a-key")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).to_have_text(
        "That key was not recognised. Check it and try again.")
    shot(page, "sign-in-error", full_page=False)

    used = api.template("echo x", agent="echo", name=unique("In use"))
    api.pipeline(used["id"], used["id"], name=unique("Uses it"))
    page.fill("#signin-key", keys["operator"])
    page.click("#signin-submit")
    page.click("[data-nav=templates]")
    card = page.locator(f".template[data-template-id='{used['id']}']")
    card.get_by_role("button", name="Delete").click()
    page.locator("#confirm-dialog [data-confirm=yes]").click()
    error = card.locator(".inline-error")
    expect(error).to_be_visible()
    text = error.inner_text()
    assert text.startswith("Cannot delete this template.") and "used by pipeline" in text
    kept = api.ok("GET", "/api/workflows")["templates"]
    assert any(tpl["id"] == used["id"] for tpl in kept)  # nothing was deleted
    card.scroll_into_view_if_needed()
    shot(page, "template-delete-error", full_page=False)

    # Invalid JSON parameters are caught in the form, with the field named.
    page.click("#new-template")
    form = page.locator("#template-form")
    form.locator("#tf-name").fill("Bad params")
    form.locator("#tf-prompt").fill("x")
    form.locator("#tf-parameters").fill("{temperature: 0.2")
    form.locator("#tf-save").click()
    expect(form.locator("#tf-error")).to_contain_text("Parameters must be valid JSON")
    # And a value only the server refuses comes back in words, in the form.
    form.locator("#tf-parameters").fill("")
    form.locator("#tf-tags").fill("ok, " + "t" * 101)
    form.locator("#tf-save").click()
    expect(form.locator("#tf-error")).to_have_text(
        "Tags, item 2: should have at most 100 characters.")
    expect(form).to_be_visible()


def test_phone_width_and_dark_mode(open_page, keys, manual_pipeline, api):
    pipeline, _ = manual_pipeline
    run = api.start(pipeline["id"])
    api.wait_step(run["id"], 0, "running")
    page = open_page(keys["operator"], viewport={"width": 390, "height": 844},
                     color_scheme="dark", is_mobile=True, has_touch=True)
    active = page.locator(f"#active-runs .active-run[data-run-id='{run['id']}']")
    expect(active).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(14, 16, 20)"
    shot(page, "phone-dark-pipelines")
    page.goto(f"/#/runs/{run['id']}")
    expect(page.locator("#run-detail .step-item")).to_have_count(3)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "phone-dark-run-detail")
    api.ok("POST", "/api/pipelines/run", {"action": "cancel", "run_id": run["id"]}, 202)


def test_admin_key_signs_in_and_signs_out(open_page):
    page = open_page(ADMIN_KEY)
    expect(page.locator(".role")).to_have_text("admin")
    page.click("#sign-out")
    expect(page.locator("#signin-key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.locator("#signin-key")).to_be_visible()


def test_edit_keeps_what_the_form_does_not_change(open_page, keys, api):
    a = api.template("echo a", agent="echo", name=unique("Check"))
    b = api.template("echo b", agent="echo", name=unique("Cleanup"))
    pipeline = api.pipeline(
        {"template_id": a["id"]},
        {"template_id": b["id"], "run_if": "always", "on_failure": "continue"},
        name=unique("Nightly"),
    )
    page = open_page(keys["operator"])
    card = page.locator(f".pipeline[data-pipeline-id='{pipeline['id']}']")
    expect(card.locator(".runif-mark")).to_have_text(["always runs"])
    card.get_by_role("button", name="Edit").click()
    form = page.locator("#pipeline-form")
    expect(form.locator("#pf-name")).to_have_value(pipeline["name"])
    form.locator("#pf-name").fill(pipeline["name"] + " v2")
    form.locator("[aria-label='Move step 2 up']").click()
    form.locator("#pf-save").click()
    expect(form).to_have_count(0)
    expect(card.locator("h3")).to_have_text(pipeline["name"] + " v2")
    expect(card.locator(".chain-box")).to_have_text([b["name"], a["name"]])
    stored = next(p for p in api.ok("GET", "/api/pipelines")["pipelines"]
                  if p["id"] == pipeline["id"])
    assert [(s["template_id"], s["on_failure"], s["run_if"]) for s in stored["steps"]] == [
        (b["id"], "continue", "always"), (a["id"], "stop", "on_success")]
