"""A pipeline card shows its schedules: each cron in its zone and its next fire."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.ui.test_ui_browser import unique


def test_a_card_lists_its_pipelines_schedules(open_page, keys, api):
    first = api.template("One", agent="echo", name=unique("One"))
    second = api.template("Two", agent="echo", name=unique("Two"))
    scheduled = api.pipeline(first["id"], second["id"], name=unique("Nightly"))
    plain = api.pipeline(first["id"], second["id"], name=unique("Plain"))
    nightly = api.ok("POST", "/api/schedules", {
        "pipeline_id": scheduled["id"], "cron": "30 2 * * *", "timezone": "Europe/Berlin",
        "name": "nightly"}, status=201)["schedule"]
    api.ok("POST", "/api/schedules", {"pipeline_id": scheduled["id"], "cron": "0 * * * 1",
                                      "enabled": False}, status=201)

    page = open_page(keys["viewer"])
    card = page.locator(f".pipeline[data-pipeline-id='{scheduled['id']}']")
    items = card.locator(".schedules li")
    expect(items).to_have_count(2)
    first_item = card.locator(f"li[data-schedule-id='{nightly['id']}']")
    expect(first_item).to_contain_text("30 2 * * * Europe/Berlin · nightly · next ")
    expect(items.nth(1)).to_contain_text("0 * * * 1 UTC · paused")
    expect(page.locator(f".pipeline[data-pipeline-id='{plain['id']}'] .schedules")).to_have_count(0)
    assert page.errors == []
