"""Pipelines as code: the file format, plans, and apply/export against the live service."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from orchestrator import pipelines_file as pf
from tests.conftest import ADMIN_KEY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- the format, no server ----------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("- a list", "expected a mapping"),
    ("templates: [{name: a}]", "`prompt` (a non-empty string) is required"),
    ("templates: [{name: a, prompt: p, colour: red}]", "unknown field(s) colour"),
    ("templates: [{name: a, prompt: p}, {name: a, prompt: q}]", "template 'a' appears twice"),
    ("pipelines: [{name: p, steps: [a, {template: a, on_failure: maybe_not, x: 1}]}]",
     "unknown field(s) x"),
    ("pipelines: [{name: p, steps: [a, {template: a, on: failure}]}]",
     "unknown field(s) True"),  # YAML reads a bare `on` as true
    ("pipelines: [{name: p}]", "`steps` must be a list"),
    ("pipelines: [{name: p, steps: [a]}]", "a pipeline has 2 to 50 steps"),
    ("templates: {a: 1}", "`templates` must be a list"),
    ("templates: [", "not valid YAML"),
])
def test_bad_files_are_refused_with_a_reason(text, message):
    with pytest.raises(pf.FileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pf.load(text, "f.yaml")


def server_state(doc: pf.Document) -> tuple[list[dict], list[dict]]:
    """What a server that applied `doc` would return (the API's shapes)."""
    templates = [{"id": i + 1, "task_prompt": t["prompt"], **t}
                 for i, t in enumerate(doc.templates)]
    ids = {t["name"]: t["id"] for t in templates}
    pipelines = [{"id": i + 1, "name": p["name"], "description": p["description"],
                  "steps": [{"template_id": ids[s["template"]], "template_name": s["template"],
                             "on_failure": s["on_failure"], "run_if": s["run_if"]}
                            for s in p["steps"]]} for i, p in enumerate(doc.pipelines)]
    return templates, pipelines


@pytest.mark.parametrize("example", ["ci-cd.yaml", "data-processing.yaml"])
def test_examples_plan_creations_then_nothing_and_export_round_trips(example):
    doc = pf.load((EXAMPLES / example).read_text(), example)
    assert {c.action for c in pf.plan(doc, [], [])} == {"create"}
    templates, pipelines = server_state(doc)
    assert {c.action for c in pf.plan(doc, templates, pipelines)} == {"unchanged"}
    exported = pf.load(pf.export(templates, pipelines))
    assert exported == doc
    assert {c.action for c in pf.plan(exported, templates, pipelines)} == {"unchanged"}


def test_a_change_is_planned_field_by_field():
    doc = pf.load((EXAMPLES / "ci-cd.yaml").read_text())
    templates, pipelines = server_state(doc)
    templates[0]["prompt"] = "old prompt"
    templates[1]["timeout_seconds"] = 300
    pipelines[0]["steps"][5]["on_failure"] = "stop"
    changes = {(c.kind, c.name): c for c in pf.plan(doc, templates, pipelines)}
    lint = changes[("template", "Run Linter")]
    assert lint.action == "update" and set(lint.diff) == {"prompt"}
    assert lint.body == {"prompt": doc.templates[0]["prompt"]}
    assert changes[("template", "Run Unit Tests")].diff == {"timeout_seconds": (300, 900)}
    cicd = changes[("pipeline", "CI/CD Pipeline")]
    assert cicd.action == "update" and set(cicd.diff) == {"steps"}
    text = "\n".join(pf.describe(list(changes.values())))
    assert "~ template 'Run Linter' (id 1)\n    prompt: old prompt -> " in text
    assert "Notify Team (continue) -> Deploy to Production]" in text
    assert "= template 'Build Docker Image'" in text


def test_a_step_naming_a_template_nobody_has_is_refused():
    doc = pf.load("pipelines: [{name: p, steps: [ghost, ghost]}]")
    with pytest.raises(pf.FileError, match="neither the file nor the server has: ghost"):
        pf.plan(doc, [], [])


# -- apply and export through the API -----------------------------------------------------


@pytest.fixture
def cli(stack):
    runner = CliRunner()
    env = {"ORCHESTRATOR_URL": stack.base_url, "ORCHESTRATOR_API_KEY": ADMIN_KEY}
    return lambda *args: runner.invoke(main, list(args), env=env)


def by_name(api) -> tuple[dict, dict]:
    templates = {t["name"]: t for t in api.ok("GET", "/api/workflows")["templates"]}
    pipelines = {p["name"]: p for p in api.ok("GET", "/api/pipelines")["pipelines"]}
    return templates, pipelines


def test_apply_twice_changes_nothing_the_second_time(api, cli, tmp_path):
    path = str(EXAMPLES / "ci-cd.yaml")
    dry = cli("apply", "-f", path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "+ pipeline 'CI/CD Pipeline'" in dry.output and "dry run: nothing changed" in dry.output
    assert "CI/CD Pipeline" not in by_name(api)[1]
    first = cli("apply", "-f", path)
    assert first.exit_code == 0, first.output
    assert "create 8, update 0" in first.output
    templates, pipelines = by_name(api)
    cicd = pipelines["CI/CD Pipeline"]
    assert [s["template_name"] for s in cicd["steps"]][:2] == ["Run Linter", "Run Unit Tests"]
    assert [s["on_failure"] for s in cicd["steps"]].count("continue") == 1
    assert templates["Run Linter"]["parameters"] == {"temperature": 0.2, "max_tokens": 4000}
    second = cli("apply", "-f", path)
    assert second.exit_code == 0
    assert second.output.strip().endswith("nothing to change")
    assert by_name(api) == (templates, pipelines)  # not even updated_at moved

    # an edit shows up in the dry-run diff, then applies, then is steady again
    edited = yaml.safe_load(Path(path).read_text())
    edited["templates"][0]["prompt"] = "Run ruff and report."
    edited["pipelines"][0]["steps"][5] = "Notify Team"
    changed = tmp_path / "edited.yaml"
    changed.write_text(yaml.safe_dump(edited))
    diff = cli("apply", "-f", str(changed), "--dry-run")
    assert "~ template 'Run Linter'" in diff.output
    assert "    prompt: Run the linters" in diff.output and "-> Run ruff and report." in diff.output
    assert "~ pipeline 'CI/CD Pipeline'" in diff.output
    assert by_name(api)[0]["Run Linter"]["prompt"].startswith("Run the linters")
    assert "update 2" in cli("apply", "-f", str(changed)).output
    assert by_name(api)[0]["Run Linter"]["prompt"] == "Run ruff and report."
    assert "nothing to change" in cli("apply", "-f", str(changed)).output

    # what export writes, apply takes back unchanged; the example pipeline runs to the end
    out = tmp_path / "exported.yaml"
    assert cli("export", "-o", str(out), "--pipeline", "CI/CD Pipeline").exit_code == 0
    assert len(yaml.safe_load(out.read_text())["templates"]) == 7
    assert cli("apply", "-f", str(out)).output.strip().endswith("nothing to change")
    run = cli("runs", "start", "CI/CD Pipeline", "--follow")
    assert run.exit_code == 0, run.output
    assert run.output.splitlines()[-1].startswith("Run #") and "completed  step 7/7" in run.output


def test_apply_reports_the_apis_refusal(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("templates: [{name: Uses a ghost, prompt: p, agent: no-such-profile}]\n")
    result = cli("apply", "-f", str(bad))
    assert result.exit_code == 3
    assert "unknown agent profile 'no-such-profile'" in result.output
    unreadable = cli("apply", "-f", str(tmp_path / "missing.yaml"))
    assert unreadable.exit_code == 2 and "cannot read" in unreadable.output
    example = str(EXAMPLES / "ci-cd.yaml")
    twice = cli("apply", "-f", example, "-f", example, "--dry-run")
    assert twice.exit_code == 2 and "template 'Run Linter' appears twice" in twice.output


def test_a_dry_run_is_checked_by_the_server(api, cli, tmp_path, database_url):
    from tests.support import state_digest

    bad = tmp_path / "bad.yaml"
    bad.write_text("templates:\n- {name: fine, prompt: p, agent: echo}\n"
                   "- {name: Uses a ghost, prompt: p, agent: no-such-profile}\n")
    before = state_digest(database_url)
    result = cli("apply", "-f", str(bad), "--dry-run")
    assert result.exit_code == 3, result.output
    assert "  template 'Uses a ghost': agent: unknown agent profile 'no-such-profile'" in (
        result.output)
    assert state_digest(database_url) == before


def test_export_names_two_templates_of_one_name_apart_and_applies_back(api, cli, tmp_path):
    first = api.template("echo one", agent="echo", name="Twin")
    second = api.template("echo two", agent="echo", name="Twin")
    api.pipeline(first["id"], second["id"], name="Twins")
    out = tmp_path / "twins.yaml"
    done = cli("export", "-o", str(out), "--pipeline", "Twins")
    assert done.exit_code == 0, done.output
    written = yaml.safe_load(out.read_text())
    assert written["pipelines"][0]["steps"] == [f"Twin #{first['id']}", f"Twin #{second['id']}"]
    assert cli("apply", "-f", str(out)).output.strip().endswith("nothing to change")


@pytest.mark.parametrize("text, message", [
    ("templates: [{name: a, prompt: p, id: 0}]", "`id` must be a positive whole number"),
    ("templates: [{name: a, prompt: p, ref: ''}]", "`ref` must be a non-empty string"),
    ("templates: [{name: a, prompt: p, ref: r}, {name: b, prompt: q, ref: r}]",
     "template 'r' appears twice"),
    ("templates: [{name: a, prompt: p, id: 3, ref: x}, {name: a, prompt: q, id: 3, ref: y}]",
     "template '#3' appears twice"),
    ("pipelines: [{name: p, ref: r, steps: [a, a]}]", "unknown field(s) ref"),
])
def test_bad_references_are_refused_with_a_reason(text, message):
    with pytest.raises(pf.FileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pf.load(text, "f.yaml")


def test_items_say_which_of_two_same_named_templates_they_are():
    templates = [{"id": 3, "name": "a", "prompt": "one", **pf.TEMPLATE_DEFAULTS},
                 {"id": 4, "name": "a", "prompt": "two", **pf.TEMPLATE_DEFAULTS}]
    doc = pf.load("templates: [{name: a, id: 4, ref: a-4, prompt: two!}]\n"
                  "pipelines: [{name: p, steps: [a-4, a-4]}]")
    [template, pipeline] = pf.plan(doc, templates, [])
    assert (template.action, template.id, template.diff) == ("update", 4, {"prompt": ("two", "two!")})
    assert pipeline.action == "create"
    ghost = pf.load("templates: [{name: a, id: 9, prompt: p}]\npipelines: [{name: p, steps: [a, a]}]")
    changes, problems = pf.plan_items(ghost, templates, [])
    # the pipeline is not blamed for the refused template it names
    assert [p.error for p in problems] == ["template id 9 not found on the server"]
    assert [(c.kind, c.action) for c in changes] == [("pipeline", "create")]


def test_a_pipelines_concurrency_limit_is_planned_and_exported():
    doc = pf.load(
        "templates:\n  - {name: Deploy, prompt: ./deploy.sh}\n"
        "pipelines:\n  - name: Release\n    steps: [Deploy, Deploy]\n"
        "    max_concurrent_runs: 1\n    on_limit: skip\n")
    templates, pipelines = server_state(doc)
    assert {c.action for c in pf.plan(doc, templates, pipelines)} == {"update", "unchanged"}
    release = next(c for c in pf.plan(doc, templates, pipelines) if c.kind == "pipeline")
    assert release.diff == {"max_concurrent_runs": (None, 1), "on_limit": ("queue", "skip")}
    pipelines[0].update(max_concurrent_runs=1, on_limit="skip")
    assert {c.action for c in pf.plan(doc, templates, pipelines)} == {"unchanged"}
    exported = pf.export(templates, pipelines)
    assert "max_concurrent_runs: 1" in exported and "on_limit: skip" in exported
    assert pf.load(exported) == doc
    pipelines[0].update(max_concurrent_runs=None, on_limit="queue")
    assert "on_limit" not in pf.export(templates, pipelines), "defaults are not written"
