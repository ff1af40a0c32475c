"""A pipeline's concurrency limit in the UI: the card says it, a queued run is badged
"queued" in the lists and the run detail, and raising the limit in the form starts it."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.ui.conftest import shot
from tests.ui.test_ui_browser import unique


def test_a_limited_pipeline_shows_its_queue_and_the_form_raises_the_limit(open_page, keys, api):
    first = api.template("One", agent="manual", name=unique("Gate"))
    second = api.template("Two", agent="manual", name=unique("Gate"))
    pipeline = api.ok("POST", "/api/pipelines", {
        "name": unique("Deploy"), "steps": [{"template_id": first["id"]},
                                            {"template_id": second["id"]}],
        "max_concurrent_runs": 1, "on_limit": "queue"}, status=201)["pipeline"]
    running = api.start(pipeline["id"])
    queued = api.start(pipeline["id"])
    assert (running["queued"], queued["queued"]) == (False, True)

    page = open_page(keys["operator"])
    card = page.locator(f".pipeline[data-pipeline-id='{pipeline['id']}']")
    expect(card.locator(".meta-limit")).to_have_text("at most 1 at once, then queue")

    page.goto(page.url.split("#")[0] + f"#/runs/{queued['id']}")
    head = page.locator(".run-head")
    expect(head.locator(".badge[data-status='queued']")).to_have_text("queued")
    expect(head).to_contain_text("Queued: starts when the pipeline has a free slot")
    shot(page, "run-queued")

    page.goto(page.url.split("#")[0] + "#/pipelines")
    card.get_by_role("button", name="Edit").click()
    form = page.locator("#pipeline-form")
    expect(form.locator("#pf-max-runs")).to_have_value("1")
    expect(form.locator("#pf-on-limit")).to_have_value("queue")
    form.locator("#pf-max-runs").fill("2")
    form.locator("#pf-save").click()
    expect(form).to_have_count(0)
    expect(card.locator(".meta-limit")).to_have_text("at most 2 at once, then queue")
    assert api.run(queued["id"])["queued"] is False, "the raised limit started the queued run"
    assert page.errors == []
