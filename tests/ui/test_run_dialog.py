"""The Run dialog: it asks for the inputs the pipeline's prompts use, starts the run with
them, opens the new run, and keeps the dialog open with the reason when a start fails."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.ui.conftest import shot
from tests.ui.test_ui_browser import unique


def runs_of(api, pipeline_id: int) -> list[dict]:
    return api.ok("GET", f"/api/pipelines/run?pipeline_id={pipeline_id}&limit=200")["runs"]


def open_dialog(page, pipeline_id: int):
    card = page.locator(f".pipeline[data-pipeline-id='{pipeline_id}']")
    card.get_by_role("button", name="Run", exact=True).click()
    dialog = page.locator("#run-dialog")
    expect(dialog).to_be_visible()
    return dialog


def test_the_dialog_asks_for_the_inputs_the_prompts_use_and_opens_the_run(open_page, keys, api):
    draft = api.template("Draft notes on {{ inputs.topic }} for {{ inputs['audience'] }}.",
                         agent="echo", name=unique("Draft"))
    review = api.template("{% if inputs.get(\"tone\") %}Tone: {{ inputs.tone }}. {% endif %}"
                          "Review {{ steps[0].output }} about {{ inputs.topic }}.",
                          agent="echo", name=unique("Review"))
    pipeline = api.pipeline(draft["id"], review["id"], name=unique("Notes"))
    page = open_page(keys["operator"])
    dialog = open_dialog(page, pipeline["id"])
    fields = dialog.locator("[data-input]")
    expect(fields).to_have_count(3)
    assert [f.get_attribute("data-input") for f in fields.all()] == ["topic", "audience", "tone"]
    expect(dialog.locator("label", has=page.locator("[data-input=topic]"))).to_contain_text("steps 1, 2")
    expect(dialog.locator("label", has=page.locator("[data-input=tone]"))).to_contain_text("step 2")
    dialog.locator("[data-input=topic]").fill("the release")
    dialog.locator("[data-input=audience]").fill("operators")
    dialog.locator("[data-input=tone]").fill("calm")
    shot(page, "run-dialog", full_page=False)
    dialog.locator("#rd-start").click()

    expect(dialog).to_have_count(0)
    expect(page).to_have_url(re.compile(r"#/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    assert api.run(run_id)["inputs"] == {"topic": "the release", "audience": "operators",
                                         "tone": "calm"}
    detail = page.locator("#run-detail")
    expect(detail.locator(".run-head .badge")).to_have_text("completed")
    expect(detail.locator("#run-inputs [data-input=topic] pre")).to_have_text("the release")
    expect(detail.locator(".step-item[data-step='1'] .output pre")).to_have_text(
        "Tone: calm. Review Draft notes on the release for operators. about the release.")
    shot(page, "run-detail-inputs")
    assert page.errors == []


def test_a_pipeline_without_inputs_and_the_json_fallback(open_page, keys, api):
    plain = api.template("echo {{ run.id }}", agent="echo", name=unique("Plain"))
    pipeline = api.pipeline(plain["id"], plain["id"], name=unique("Plain twice"))
    page = open_page(keys["operator"])
    dialog = open_dialog(page, pipeline["id"])
    expect(dialog.locator("#rd-none")).to_have_text("The prompts of this pipeline use no inputs.")
    dialog.locator("#rd-json summary").click()
    box = dialog.locator("#rd-json-text")
    expect(box).to_have_value("{}")
    box.fill('{"retries": 3, "tags": ["a"]')
    dialog.locator("#rd-start").click()
    expect(dialog.locator("#rd-error")).to_contain_text("The inputs must be valid JSON")
    box.fill('["not", "an", "object"]')
    dialog.locator("#rd-start").click()
    expect(dialog.locator("#rd-error")).to_contain_text("must be a JSON object")
    assert runs_of(api, pipeline["id"]) == []  # nothing was started by the refusals

    box.fill('{"retries": 3, "tags": ["a"]}')
    dialog.locator("#rd-start").click()
    expect(page).to_have_url(re.compile(r"#/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    assert api.run(run_id)["inputs"] == {"retries": 3, "tags": ["a"]}  # types kept
    expect(page.locator("#run-inputs [data-input=retries] pre")).to_have_text("3")


def test_the_json_box_and_the_fields_show_the_same_inputs(open_page, keys, api):
    tpl = api.template("Hi {{ inputs.name }}", agent="echo", name=unique("Greet"))
    pipeline = api.pipeline(tpl["id"], tpl["id"], name=unique("Greet twice"))
    page = open_page(keys["operator"])
    dialog = open_dialog(page, pipeline["id"])
    field = dialog.locator("[data-input=name]")
    field.fill("Ada")
    dialog.locator("#rd-json summary").click()
    expect(dialog.locator("#rd-json-text")).to_have_value('{\n  "name": "Ada"\n}')
    expect(field).to_be_disabled()
    dialog.locator("#rd-json-text").fill('{"name": "Grace"}')
    dialog.locator("#rd-json summary").click()
    expect(field).to_be_enabled()
    expect(field).to_have_value("Grace")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    assert runs_of(api, pipeline["id"]) == []


def test_a_failed_start_keeps_the_dialog_open_with_the_reason(open_page, keys, api):
    tpl = api.template("echo {{ inputs.x }}", agent="echo", name=unique("Gone"))
    pipeline = api.pipeline(tpl["id"], tpl["id"], name=unique("Deleted meanwhile"))
    page = open_page(keys["operator"])
    dialog = open_dialog(page, pipeline["id"])
    expect(dialog.locator("[data-input=x]")).to_be_visible()
    api.ok("DELETE", "/api/pipelines", {"id": pipeline["id"]})
    dialog.locator("#rd-start").click()
    error = dialog.locator("#rd-error")
    expect(error).to_contain_text("It may have been deleted by someone else.")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#rd-start")).to_be_enabled()
    shot(page, "run-dialog-error", full_page=False)


def test_inputs_are_found_only_inside_template_tags(open_page, keys):
    page = open_page(keys["viewer"])
    found = page.evaluate("""async () => {
        const { inputsOf } = await import("/ui/static/js/run_dialog.js");
        return [
            inputsOf("{{ inputs.a }} {{ inputs['b c'] }} {% for k, v in inputs.items() %}{% endfor %}"),
            inputsOf("plain inputs.shell_text and {{ inputs . spaced }} {{inputs[\\"q\\"]|upper}}"),
            inputsOf("{% if inputs.get('d') and inputs.a %}{{ inputs.keys() }}{% endif %}"),
            inputsOf(null),
        ];
    }""")
    assert found == [["a", "b c"], ["spaced", "q"], ["d", "a"], []]


def test_the_dialog_reads_the_prompts_as_they_are_now(open_page, keys, api):
    tpl = api.template("Hello", agent="echo", name=unique("Edited"))
    pipeline = api.pipeline(tpl["id"], tpl["id"], name=unique("Edited twice"))
    page = open_page(keys["operator"])
    expect(page.locator(f".pipeline[data-pipeline-id='{pipeline['id']}']")).to_be_visible()
    api.ok("PUT", "/api/workflows", {"id": tpl["id"], "prompt": "Hello {{ inputs.late }}"})
    dialog = open_dialog(page, pipeline["id"])
    expect(dialog.locator("[data-input]")).to_have_count(1)
    expect(dialog.locator("[data-input=late]")).to_be_visible()
