"""False positives: every prompt in examples/ and in this test suite's own templates passes
the injection guard in the context of the profile it is written for."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from orchestrator import injection
from orchestrator.profiles import load_profiles, scan_context

ROOT = Path(__file__).resolve().parents[2]
# These files hold payloads on purpose.
PAYLOAD_FILES = {"test_injection.py", "test_injection_guard.py", "test_injection_corpus.py"}
# Agent profiles as the suite's stacks and the examples configure them.
PROFILES = load_profiles(str(ROOT / "examples" / "agents.toml"))


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def suite_prompts() -> list[tuple[str, str, str]]:
    """(where, agent, prompt) for each literal prompt: `api.template("...", agent=...)`
    (whose default agent is sh), `prompt="..."` keywords and `"prompt": "..."` entries."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name in PAYLOAD_FILES:
            continue
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                agent = _literal(_keyword(node, "agent"))
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == "template" and node.args:
                    prompt = _literal(node.args[0])
                    if prompt:
                        found.append((where, agent or "sh", prompt))
                prompt = _literal(_keyword(node, "prompt"))
                if prompt:
                    found.append((where, agent or "default", prompt))
            elif isinstance(node, ast.Dict):
                entries = {_literal(k): v for k, v in zip(node.keys, node.values, strict=True)}
                prompt = _literal(entries.get("prompt")) or _literal(entries.get("task_prompt"))
                if prompt:
                    found.append((where, _literal(entries.get("agent")) or "default", prompt))
    return found


def example_prompts() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for tpl in yaml.safe_load(path.read_text()).get("templates", []):
            found.append((path.name, tpl.get("agent", "default"), tpl["prompt"]))
    return found


def test_no_prompt_of_the_examples_or_the_suite_is_refused(capsys):
    prompts = example_prompts() + suite_prompts()
    refused = [(where, agent, prompt) for where, agent, prompt in prompts
               if injection.critical(injection.scan(prompt, scan_context(PROFILES.get(agent))))]
    assert len(prompts) > 100  # the collector found the suite's prompts
    assert refused == []
    with capsys.disabled():
        print(f"\n{len(prompts)} prompts scanned, {len(refused)} refused")
