"""'Rerun from here' on a failed run's steps, in a real browser against the live stack."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.ui.conftest import shot


def test_rerun_from_a_step_opens_the_new_run(open_page, keys, api, tmp_path):
    log, fixed = tmp_path / "spawns", tmp_path / "fixed"
    fetch = api.template(f"echo fetch >> {log}", name="Fetch")["id"]
    test = api.template(f"echo test >> {log}; test -f {fixed} || exit 3", name="Test")["id"]
    report = api.template(f"echo report >> {log}", name="Report")["id"]
    source = api.wait(api.start(api.pipeline(fetch, test, report)["id"])["id"])
    assert source["status"] == "failed"

    viewer = open_page(keys["viewer"])
    viewer.goto(f"/#/runs/{source['id']}")
    expect(viewer.locator(".step-item")).to_have_count(3)
    expect(viewer.locator("[data-action=rerun-from]")).to_have_count(0)  # viewers cannot

    page = open_page(keys["operator"])
    page.goto(f"/#/runs/{source['id']}")
    buttons = page.locator("[data-action=rerun-from]")
    expect(buttons).to_have_count(3)
    shot(page, "rerun-from-here")
    fixed.touch()
    page.locator(".step-item[data-step='1'] [data-action=rerun-from]").click()
    expect(page).to_have_url(re.compile(rf"#/runs/(?!{source['id']}$)\d+$"))  # the new run
    new_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator(".run-head")).to_have_attribute("data-status", "completed")
    expect(page.locator("[data-action=rerun-from]")).to_have_count(0)  # a completed run
    rerun = api.run(new_id)
    assert rerun["rerun_of"] == source["id"]
    assert [s["reused"] for s in rerun["steps_snapshot"]] == [True, False, False]
    assert log.read_text().split() == ["fetch", "test", "test", "report"]
    assert page.errors == []
