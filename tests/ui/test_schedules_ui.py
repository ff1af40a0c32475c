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


def test_the_pipeline_form_adds_changes_and_removes_schedules(open_page, keys, api):
    first = api.template("One", agent="echo", name=unique("One"))
    second = api.template("Two", agent="echo", name=unique("Two"))
    pipeline = api.pipeline(first["id"], second["id"], name=unique("Cron"))
    page = open_page(keys["operator"])
    card = page.locator(f".pipeline[data-pipeline-id='{pipeline['id']}']")

    card.get_by_role("button", name="Edit").click()
    form = page.locator("#pipeline-form")
    form.locator("#pf-add-schedule").click()
    form.get_by_label("Cron of schedule 1").fill("15 4 * * 1-5")
    form.get_by_label("Time zone of schedule 1").fill("Asia/Tokyo")
    form.locator("#pf-save").click()
    expect(form).to_have_count(0)
    expect(card.locator(".schedules li")).to_have_count(1)
    expect(card.locator(".schedules li")).to_contain_text("15 4 * * 1-5 Asia/Tokyo · next ")
    stored = api.ok("GET", f"/api/schedules?pipeline_id={pipeline['id']}")["schedules"]
    assert [(s["cron"], s["timezone"], s["enabled"]) for s in stored] == [
        ("15 4 * * 1-5", "Asia/Tokyo", True)]

    card.get_by_role("button", name="Edit").click()
    form.get_by_label("Cron of schedule 1").fill("not a cron")
    form.locator("#pf-save").click()
    expect(card.locator(".inline-error")).to_contain_text("Pipeline saved, but not schedule")
    assert api.ok("GET", f"/api/schedules?pipeline_id={pipeline['id']}")["schedules"] == stored

    card.get_by_role("button", name="Edit").click()
    form.get_by_role("button", name="Remove schedule 1").click()
    form.locator("#pf-save").click()
    expect(card.locator(".schedules")).to_have_count(0)
    assert api.ok("GET", f"/api/schedules?pipeline_id={pipeline['id']}")["schedules"] == []
    assert page.errors == []
