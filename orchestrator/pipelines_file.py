"""Pipelines as code: a YAML file of templates and pipelines, keyed by name.

`load` validates a document, `plan` compares it with what the server has (as the API
returns it) and lists the creations and updates that would make the server match, and
`export` writes the server's objects back out in the same shape. A field the file leaves
out means its default, so applying a file twice changes nothing the second time, and
applying an export changes nothing at all. Objects the file does not name are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.transitions import MAX_STEPS, MIN_STEPS

TEMPLATE_DEFAULTS: dict[str, Any] = {
    "description": None,
    "model": "sonnet",
    "parameters": {},
    "timeout_seconds": 300,
    "agent": "default",
    "agent_role": None,
    "tags": [],
    "retries": 0,
    "retry_backoff_seconds": 0,
    "on_injection": "warn",
}
TEMPLATE_FIELDS = ("name", "prompt", *TEMPLATE_DEFAULTS)
STEP_DEFAULTS: dict[str, Any] = {"on_failure": "stop", "run_if": "on_success"}
PIPELINE_FIELDS = ("name", "description", "steps")


class FileError(ValueError):
    pass


@dataclass
class Change:
    kind: str  # "template" | "pipeline"
    action: str  # "create" | "update" | "unchanged"
    name: str
    id: int | None = None
    # field -> (current, wanted), for updates
    diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # what to send (template fields; pipeline fields with steps by template name)
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class Document:
    templates: list[dict[str, Any]]
    pipelines: list[dict[str, Any]]


# -- reading -----------------------------------------------------------------------------


def load(text: str, source: str = "<file>") -> Document:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FileError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FileError(f"{source}: expected a mapping with `templates` and `pipelines`")
    _no_unknown(data, ("templates", "pipelines"), source)
    templates = [_template(t, f"{source}: templates[{i}]")
                 for i, t in enumerate(_list(data, "templates", source))]
    pipelines = [_pipeline(p, f"{source}: pipelines[{i}]")
                 for i, p in enumerate(_list(data, "pipelines", source))]
    _unique([t["name"] for t in templates], "template", source)
    _unique([p["name"] for p in pipelines], "pipeline", source)
    return Document(templates, pipelines)


def merge(docs: list[Document]) -> Document:
    """Several files applied as one; a name may still appear only once."""
    merged = Document([t for d in docs for t in d.templates],
                      [p for d in docs for p in d.pipelines])
    _unique([t["name"] for t in merged.templates], "template", "the files")
    _unique([p["name"] for p in merged.pipelines], "pipeline", "the files")
    return merged


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise FileError(f"{where}: `{key}` must be a list")
    return value


def _no_unknown(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    # YAML keys need not be strings (a bare `on:` is True): show each as it was read.
    unknown = sorted(str(key) for key in set(data) - set(allowed))
    if unknown:
        raise FileError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(allowed)}")


def _unique(names: list[str], kind: str, where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FileError(f"{where}: {kind} {name!r} appears twice")
        seen.add(name)


def _name(data: dict[str, Any], where: str) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise FileError(f"{where}: `name` (a non-empty string) is required")
    return name


def _template(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FileError(f"{where}: expected a mapping")
    data = dict(data)
    if "task_prompt" in data and "prompt" not in data:
        data["prompt"] = data.pop("task_prompt")
    _no_unknown(data, TEMPLATE_FIELDS, where)
    name = _name(data, where)
    if not isinstance(data.get("prompt"), str) or not data["prompt"]:
        raise FileError(f"{where} ({name}): `prompt` (a non-empty string) is required")
    return {**TEMPLATE_DEFAULTS, **data}


def _pipeline(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FileError(f"{where}: expected a mapping")
    _no_unknown(data, PIPELINE_FIELDS, where)
    name = _name(data, where)
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise FileError(f"{where} ({name}): `steps` must be a list of templates")
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:  # refused here, before anything is written
        raise FileError(f"{where} ({name}): a pipeline has {MIN_STEPS} to {MAX_STEPS} steps")
    out = []
    for i, step in enumerate(steps):
        if isinstance(step, str):
            step = {"template": step}
        if not isinstance(step, dict):
            raise FileError(f"{where}.steps[{i}]: expected a template name or a mapping")
        _no_unknown(step, ("template", *STEP_DEFAULTS), f"{where}.steps[{i}]")
        if not isinstance(step.get("template"), str) or not step["template"]:
            raise FileError(f"{where}.steps[{i}]: `template` (a template's name) is required")
        out.append({**STEP_DEFAULTS, **step})
    return {"name": name, "description": data.get("description"), "steps": out}


# -- comparing ---------------------------------------------------------------------------


def _by_name(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for obj in objects:
        if obj["name"] in found:
            raise FileError(
                f"the server has two {kind}s named {obj['name']!r} (ids {found[obj['name']]['id']}"
                f" and {obj['id']}): rename one before applying by name")
        found[obj["name"]] = obj
    return found


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def plan(doc: Document, templates: list[dict[str, Any]],
         pipelines: list[dict[str, Any]]) -> list[Change]:
    """What applying `doc` would do, given the server's templates and pipelines."""
    have_t = _by_name(templates, "template")
    have_p = _by_name(pipelines, "pipeline")
    changes: list[Change] = []
    for wanted in doc.templates:
        current = have_t.get(wanted["name"])
        if current is None:
            changes.append(Change("template", "create", wanted["name"], body=wanted))
            continue
        diff = {k: (current[k], v) for k, v in wanted.items()
                if k in current and not _same(current[k], v)}
        changes.append(Change("template", "update" if diff else "unchanged", wanted["name"],
                              current["id"], diff, {k: wanted[k] for k in diff}))
    known = set(have_t) | {t["name"] for t in doc.templates}
    for wanted in doc.pipelines:
        missing = sorted({s["template"] for s in wanted["steps"]} - known)
        if missing:
            raise FileError(f"pipeline {wanted['name']!r} uses template(s) that neither the "
                            f"file nor the server has: {', '.join(missing)}")
        current = have_p.get(wanted["name"])
        if current is None:
            changes.append(Change("pipeline", "create", wanted["name"], body=wanted))
            continue
        have = _pipeline_as_file(current)
        diff = {k: (have[k], wanted[k]) for k in ("description", "steps")
                if have[k] != wanted[k]}
        changes.append(Change("pipeline", "update" if diff else "unchanged", wanted["name"],
                              current["id"], diff, {k: wanted[k] for k in diff}))
    return changes


def _pipeline_as_file(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": p["name"],
        "description": p.get("description"),
        "steps": [{"template": s["template_name"],
                   **{k: s.get(k, v) for k, v in STEP_DEFAULTS.items()}} for s in p["steps"]],
    }


def describe(changes: list[Change]) -> list[str]:
    """The plan as lines a person reads: + create, ~ update (with each field), = unchanged."""
    lines = []
    for c in changes:
        if c.action == "create":
            lines.append(f"+ {c.kind} {c.name!r}")
        elif c.action == "unchanged":
            lines.append(f"= {c.kind} {c.name!r}")
        else:
            lines.append(f"~ {c.kind} {c.name!r} (id {c.id})")
            for key, (old, new) in c.diff.items():
                lines.append(f"    {key}: {_short(old)} -> {_short(new)}")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict) and "template" in value[0]:
        text = " -> ".join(
            s["template"] + ("" if s["on_failure"] == "stop" else " (continue)")
            + ("" if s["run_if"] == "on_success" else f" [{s['run_if']}]") for s in value)
        return f"[{text}]"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 120 else text[:117] + "..."


def pipeline_body(wanted: dict[str, Any], template_ids: dict[str, int]) -> dict[str, Any]:
    """A pipeline's API body, its steps' template names turned into ids."""
    body = {k: v for k, v in wanted.items() if k != "steps"}
    if "steps" in wanted:
        body["steps"] = [{"template_id": template_ids[s["template"]], "on_failure": s["on_failure"],
                          "run_if": s["run_if"]} for s in wanted["steps"]]
    return body


# -- writing -----------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (prompts, scripts) as literal blocks, the way people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not any(c in value for c in "\t\r") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def export(templates: list[dict[str, Any]], pipelines: list[dict[str, Any]],
           only: list[str] | None = None) -> str:
    """The server's objects as a file `load` reads back. With `only`, those pipelines and
    the templates they use."""
    if only:
        missing = sorted(set(only) - {p["name"] for p in pipelines})
        if missing:
            raise FileError(f"no pipeline named {', '.join(repr(m) for m in missing)}")
        pipelines = [p for p in pipelines if p["name"] in only]
        used = {s["template_id"] for p in pipelines for s in p["steps"]}
        templates = [t for t in templates if t["id"] in used]
    _by_name(templates, "template")
    _by_name(pipelines, "pipeline")
    doc: dict[str, Any] = {
        "templates": [_template_out(t) for t in templates],
        "pipelines": [_pipeline_out(p) for p in pipelines],
    }
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _template_out(t: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": t["name"]}
    for key, default in TEMPLATE_DEFAULTS.items():
        if key in t and not _same(t[key], default) and key != "description":
            out[key] = t[key]
    if t.get("description") is not None:
        out = {"name": t["name"], "description": t["description"], **out}
    out["prompt"] = t["prompt"]
    return out


def _pipeline_out(p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p["name"]}
    if p.get("description") is not None:
        out["description"] = p["description"]
    steps = []
    for s in _pipeline_as_file(p)["steps"]:
        extra = {k: v for k, v in s.items() if k != "template" and STEP_DEFAULTS[k] != v}
        steps.append({"template": s["template"], **extra} if extra else s["template"])
    out["steps"] = steps
    return out
