"""Long template and pipeline lists come a page (50) at a time, newest first, with previous
(newer) / next (older); a server that sends no `total` is taken to have sent the whole list,
shown newest first too. What these tests create is deleted after them."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import shot, sign_in
from tests.ui.spec_shapes import LISTS, whole_lists
from tests.ui.test_ui_browser import unique


def ids_on(page, selector: str, attr: str) -> list[int]:
    return [int(x) for x in page.locator(selector).evaluate_all(
        f"els => els.map(e => e.dataset.{attr})")]


def expect_ids(page, selector: str, attr: str, want: list[int], timeout: float = 10) -> None:
    """The cards show exactly `want`, in order, once the page has drawn them (the pager's
    label may change a moment before the list does)."""
    deadline = time.monotonic() + timeout
    while (shown := ids_on(page, selector, attr)) != want and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert shown == want


def newest_first(api, path: str, key: str) -> list[int]:
    return sorted((item["id"] for item in api.ok("GET", path)[key]), reverse=True)


class Made:
    """Templates and pipelines made through the API (or found by name), deleted at the end."""

    def __init__(self, api):
        self.api = api
        self.templates: list[int] = []
        self.pipelines: list[int] = []

    def template(self, name: str, prompt: str = "echo x") -> int:
        self.templates.append(self.api.template(prompt, agent="echo", name=unique(name))["id"])
        return self.templates[-1]

    def pipeline(self, *template_ids: int, name: str = "Paged pipeline") -> int:
        self.pipelines.append(self.api.pipeline(*template_ids, name=unique(name))["id"])
        return self.pipelines[-1]

    def found(self, path: str, key: str, name: str) -> int:
        """The id of an item the browser made, so that it is deleted too."""
        item = next(i for i in self.api.ok("GET", path)[key] if i["name"] == name)
        (self.templates if key == "templates" else self.pipelines).append(item["id"])
        return item["id"]


def delete_all(api, made: Made) -> None:
    # Pipelines first: a template still in a pipeline cannot be deleted.
    for pid in made.pipelines:
        api.ok("DELETE", "/api/pipelines", {"id": pid})
    for tid in made.templates:
        api.ok("DELETE", "/api/workflows", {"id": tid})


@pytest.fixture(scope="module")
def many(api):
    """More than a page of each: 55 templates and 51 pipelines, shared by this module."""
    made = Made(api)
    ids = [made.template(f"Paged {i:02}") for i in range(55)]
    for _ in range(51):
        made.pipeline(ids[0], ids[1])
    yield made
    delete_all(api, made)


@pytest.fixture
def made(api):
    made = Made(api)
    yield made
    delete_all(api, made)


def test_template_and_pipeline_lists_page_by_fifty_newest_first(open_page, keys, api, many):
    templates = newest_first(api, "/api/workflows", "templates")
    pipelines = newest_first(api, "/api/pipelines", "pipelines")
    page = open_page()  # the server pages the lists itself

    sign_in(page, keys["operator"])

    pager = page.locator("#pipelines-pager")
    expect(pager.locator(".pager-range")).to_have_text(f"1–50 of {len(pipelines)} pipelines")
    expect(page.locator(".pipeline")).to_have_count(50)
    expect_ids(page, ".pipeline", "pipelineId", pipelines[:50])
    assert pipelines[0] == many.pipelines[-1]  # the one made last is on top
    expect(pager.locator("[data-page=previous]")).to_be_disabled()
    asked = []
    page.on("request", lambda r: "/api/pipelines?" in r.url and asked.append(r.url))
    pager.locator("[data-page=next]").click()
    expect(pager.locator(".pager-range")).to_have_text(
        f"51–{min(100, len(pipelines))} of {len(pipelines)} pipelines")
    expect_ids(page, ".pipeline", "pipelineId", pipelines[50:100])
    # The total is known: one request reads the window of the next 50 older ones.
    end = len(pipelines) - 50
    assert [parse_qs(urlsplit(u).query) for u in asked] == [
        {"offset": [str(max(0, end - 50))], "limit": [str(min(50, end))]}]
    pager.scroll_into_view_if_needed()
    shot(page, "pipelines-paged", full_page=False)

    # The pipeline form still offers every template, not just a page of them.
    page.click("#new-pipeline")
    expect(page.locator("#pf-add-template option")).to_have_count(len(templates) + 1)
    page.locator("#pipeline-form").get_by_role("button", name="Cancel").click()

    page.click("[data-nav=templates]")
    tpager = page.locator("#templates-pager")
    expect(tpager.locator(".pager-range")).to_have_text(f"1–50 of {len(templates)} templates")
    expect_ids(page, ".template", "templateId", templates[:50])
    tpager.locator("[data-page=next]").click()
    expect(tpager.locator(".pager-range")).to_contain_text("51–")
    expect_ids(page, ".template", "templateId", templates[50:100])
    tpager.locator("[data-page=previous]").click()
    expect(tpager.locator(".pager-range")).to_have_text(f"1–50 of {len(templates)} templates")
    expect_ids(page, ".template", "templateId", templates[:50])
    tpager.scroll_into_view_if_needed()
    shot(page, "templates-paged", full_page=False)
    assert page.errors == []


def test_without_total_the_list_is_whole_and_newest_first(open_page, keys, api, many):
    templates = newest_first(api, "/api/workflows", "templates")
    page = open_page()
    page.route(LISTS, whole_lists)

    sign_in(page, keys["viewer"])
    page.click("[data-nav=templates]")
    expect(page.locator(".template")).to_have_count(len(templates))
    expect_ids(page, ".template", "templateId", templates)
    expect(page.locator("#templates-pager")).to_have_count(0)


def test_with_many_items_a_new_one_is_on_the_first_page(open_page, keys, api, many, made):
    """The real server's paging: what was made last, by the API or in a form, is on page 1."""
    draft = made.template("Fresh draft", "echo {{ inputs.topic }}")
    review = made.template("Fresh review", "echo {{ inputs.audience }}")
    fresh = made.pipeline(draft, review, name="Fresh")
    total = len(api.ok("GET", "/api/pipelines")["pipelines"])
    templates = len(api.ok("GET", "/api/workflows")["templates"])
    assert total > 50 and templates > 50

    page = open_page(keys["operator"])
    cards = page.locator(".pipeline")
    expect(cards).to_have_count(50)
    expect(cards.first).to_have_attribute("data-pipeline-id", str(fresh))
    expect(page.locator("#pipelines-pager .pager-range")).to_have_text(
        f"1–50 of {total} pipelines")

    # The Run dialog finds the new pipeline's templates, the newest of many.
    cards.first.get_by_role("button", name="Run", exact=True).click()
    dialog = page.locator("#run-dialog")
    expect(dialog.locator("[data-input]")).to_have_count(2)
    assert [f.get_attribute("data-input") for f in dialog.locator("[data-input]").all()] == [
        "topic", "audience"]
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)

    # Made in the form while an older page is on show: page 1 comes back, with it on top.
    page.locator("#pipelines-pager [data-page=next]").click()
    expect(page.locator("#pipelines-pager .pager-range")).to_have_text(
        f"51–{min(100, total)} of {total} pipelines")
    page.click("#new-pipeline")
    form = page.locator("#pipeline-form")
    name = unique("Made in the form")
    form.locator("#pf-name").fill(name)
    for _ in range(2):
        form.locator("#pf-add-template").select_option(str(draft))
        form.locator("#pf-add-step").click()
    form.locator("#pf-save").click()
    expect(form).to_have_count(0)
    made.found("/api/pipelines", "pipelines", name)  # deleted at the end, whatever follows
    expect(page.locator("#pipelines-pager .pager-range")).to_have_text(
        f"1–50 of {total + 1} pipelines")
    expect(cards.first.locator("h3")).to_have_text(name)

    page.click("[data-nav=templates]")
    page.locator("#templates-pager [data-page=next]").click()
    expect(page.locator("#templates-pager .pager-range")).to_have_text(
        f"51–{min(100, templates)} of {templates} templates")
    tname = unique("Template made in the form")
    page.click("#new-template")
    tform = page.locator("#template-form")
    tform.locator("#tf-name").fill(tname)
    tform.locator("#tf-agent").select_option("echo")
    tform.locator("#tf-prompt").fill("echo hi")
    tform.locator("#tf-save").click()
    expect(tform).to_have_count(0)
    made.found("/api/workflows", "templates", tname)  # deleted at the end, whatever follows
    expect(page.locator("#templates-pager .pager-range")).to_have_text(
        f"1–50 of {templates + 1} templates")
    expect(page.locator(".template").first.locator("h3")).to_have_text(tname)
    assert page.errors == []
