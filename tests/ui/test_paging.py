"""Long template and pipeline lists come a page (50) at a time, with previous / next; a
server that sends no `total` is taken to have sent the whole list."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.ui.conftest import shot, sign_in
from tests.ui.spec_shapes import LISTS, paged_lists
from tests.ui.test_ui_browser import unique


def ids_on(page, selector: str, attr: str) -> list[int]:
    return [int(x) for x in page.locator(selector).evaluate_all(
        f"els => els.map(e => e.dataset.{attr})")]


def test_template_and_pipeline_lists_page_by_fifty(open_page, keys, api):
    made = [api.template("echo x", agent="echo", name=unique(f"Paged {i:02}"))["id"]
            for i in range(55)]
    for _ in range(51):
        api.pipeline(made[0], made[1], name=unique("Paged pipeline"))
    templates = [t["id"] for t in api.ok("GET", "/api/workflows")["templates"]]
    pipelines = [p["id"] for p in api.ok("GET", "/api/pipelines")["pipelines"]]
    page = open_page()
    page.route(LISTS, paged_lists())

    sign_in(page, keys["operator"])

    pager = page.locator("#pipelines-pager")
    expect(pager.locator(".pager-range")).to_have_text(f"1–50 of {len(pipelines)} pipelines")
    expect(page.locator(".pipeline")).to_have_count(50)
    assert ids_on(page, ".pipeline", "pipelineId") == pipelines[:50]
    expect(pager.locator("[data-page=previous]")).to_be_disabled()
    pager.locator("[data-page=next]").click()
    expect(pager.locator(".pager-range")).to_have_text(
        f"51–{min(100, len(pipelines))} of {len(pipelines)} pipelines")
    assert ids_on(page, ".pipeline", "pipelineId") == pipelines[50:100]
    pager.scroll_into_view_if_needed()
    shot(page, "pipelines-paged", full_page=False)

    # The pipeline form still offers every template, not just a page of them.
    page.click("#new-pipeline")
    expect(page.locator("#pf-add-template option")).to_have_count(len(templates) + 1)
    page.locator("#pipeline-form").get_by_role("button", name="Cancel").click()

    page.click("[data-nav=templates]")
    tpager = page.locator("#templates-pager")
    expect(tpager.locator(".pager-range")).to_have_text(f"1–50 of {len(templates)} templates")
    assert ids_on(page, ".template", "templateId") == templates[:50]
    tpager.locator("[data-page=next]").click()
    expect(tpager.locator(".pager-range")).to_contain_text("51–")
    assert ids_on(page, ".template", "templateId") == templates[50:100]
    tpager.locator("[data-page=previous]").click()
    expect(tpager.locator(".pager-range")).to_have_text(f"1–50 of {len(templates)} templates")
    tpager.scroll_into_view_if_needed()
    shot(page, "templates-paged", full_page=False)
    assert page.errors == []


def test_without_total_the_list_is_whole(open_page, keys, api):
    for i in range(51):
        api.template("echo x", agent="echo", name=unique(f"Whole {i:02}"))
    templates = api.ok("GET", "/api/workflows")["templates"]
    page = open_page()
    page.route(LISTS, paged_lists(with_total=False))

    sign_in(page, keys["viewer"])
    page.click("[data-nav=templates]")
    expect(page.locator(".template")).to_have_count(len(templates))
    expect(page.locator("#templates-pager")).to_have_count(0)
