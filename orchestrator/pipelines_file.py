"""Pipelines as code: a YAML file of templates, pipelines and schedules, keyed by name.

`load` validates a document, `plan` compares it with what the server has (as the API
returns it) and lists the creations and updates that would make the server match, and
`export` writes the server's objects back out in the same shape. A field the file leaves
out means its default, so applying a file twice changes nothing the second time, and
applying an export changes nothing at all. Objects the file does not name are left alone.

Names are references: a step names its template. Where two templates share a name (the
API allows it), an item says which one with `id`, and gives itself a `ref`, unique in the
file, that steps name instead; `export` writes both for every name the server has twice.

A schedule names its pipeline, and is known within it by its `name` if it has one, else by
its cron and timezone together (so changing the cron of an unnamed schedule in a file
makes another schedule beside it; give it a `name` to edit it in place).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.schedules import InvalidSchedule, check_cron, check_timezone
from orchestrator.transitions import MAX_STEPS, MIN_STEPS
from orchestrator.vocab import OnFailure, OnInjection, OnLimit, RunIf

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
    "on_injection": OnInjection.WARN.value,  # plain strings: these are written as YAML
    "output_contract": None,
}
# Which stored object an item is, and how steps refer to it: never sent as fields.
REFERENCES = ("id", "ref")
TEMPLATE_FIELDS = ("name", "prompt", *TEMPLATE_DEFAULTS)
STEP_DEFAULTS: dict[str, Any] = {"on_failure": OnFailure.STOP.value, "run_if": RunIf.ON_SUCCESS.value}
# A pipeline's concurrency limit (SPEC §10): none, and queue beyond it, unless it says so.
PIPELINE_DEFAULTS: dict[str, Any] = {"max_concurrent_runs": None, "on_limit": OnLimit.QUEUE.value}
PIPELINE_FIELDS = ("name", "description", "steps", *PIPELINE_DEFAULTS)
SCHEDULE_DEFAULTS: dict[str, Any] = {"name": None, "timezone": "UTC", "inputs": {},
                                     "enabled": True}
SCHEDULE_FIELDS = ("pipeline", "cron", *SCHEDULE_DEFAULTS)
SECTIONS = ("templates", "pipelines", "schedules")


class FileError(ValueError):
    pass


@dataclass(frozen=True)
class Problem:
    """Why one item of a document cannot be applied."""

    kind: str  # "template" | "pipeline" | "schedule" | "document"
    name: str
    error: str


@dataclass
class Change:
    kind: str  # "template" | "pipeline" | "schedule"
    action: str  # "create" | "update" | "unchanged"
    name: str
    id: int | None = None
    # field -> (current, wanted), for updates
    diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # what to send (template fields; pipeline fields with steps by template ref; schedule
    # fields with its pipeline by name)
    body: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None  # a template's ref: what steps call it


@dataclass
class Document:
    templates: list[dict[str, Any]]
    pipelines: list[dict[str, Any]]
    schedules: list[dict[str, Any]] = field(default_factory=list)
    # what steps may call the template items refused while reading: steps naming them are
    # not blamed as well
    refused: set[str] = field(default_factory=set)
    # the same for pipelines, which schedules name
    refused_pipelines: set[str] = field(default_factory=set)


def ref_of(template: dict[str, Any]) -> str:
    return template.get("ref") or template["name"]


def schedule_key(schedule: dict[str, Any]) -> str:
    """What a schedule is known by within its pipeline: its name, else cron and timezone."""
    return schedule.get("name") or f"{schedule['cron']} {schedule['timezone']}"


def schedule_label(pipeline: str, schedule: dict[str, Any]) -> str:
    return f"{pipeline}: {schedule_key(schedule)}"


# -- reading -----------------------------------------------------------------------------


def load(text: str, source: str = "<file>") -> Document:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FileError(f"{source}: not valid YAML: {exc}") from None
    return parse({} if data is None else data, source)


def parse(data: Any, source: str = "<file>") -> Document:
    """A document from its parsed form; FileError at its first problem."""
    doc, problems = parse_items(data, source)
    if problems:
        raise FileError(problems[0].error)
    return doc


def parse_items(data: Any, source: str = "<body>") -> tuple[Document, list[Problem]]:
    """A document from its parsed form, and every item's problem (the items that have one
    are left out of the document)."""
    if not isinstance(data, dict):
        return Document([], []), [Problem("document", source, f"{source}: expected a mapping "
                                          "with `templates`, `pipelines` and `schedules`")]
    problems: list[Problem] = []
    try:
        _no_unknown(data, SECTIONS, source)
        raw = {key: _list(data, key, source) for key in SECTIONS}
    except FileError as exc:
        return Document([], []), [Problem("document", source, str(exc))]
    doc = Document([], [])
    for kind, read, out in (("template", _template, doc.templates),
                            ("pipeline", _pipeline, doc.pipelines),
                            ("schedule", _schedule, doc.schedules)):
        for i, item in enumerate(raw[f"{kind}s"]):
            try:
                out.append(read(item, f"{source}: {kind}s[{i}]"))
            except FileError as exc:
                name = _item_name(kind, item)
                problems.append(Problem(kind, str(name or f"{kind}s[{i}]"), str(exc)))
                if kind == "template" and isinstance(item, dict):
                    doc.refused |= {str(item[k]) for k in ("name", "ref") if item.get(k)}
                if kind == "pipeline" and isinstance(item, dict) and item.get("name"):
                    doc.refused_pipelines.add(str(item["name"]))
    problems += _duplicates(doc, source)
    return doc, problems


def _item_name(kind: str, item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    if kind == "schedule" and isinstance(item.get("pipeline"), str):
        return f"{item['pipeline']}: {item.get('name') or item.get('cron')}"
    return item.get("name")


def merge(docs: list[Document]) -> Document:
    """Several files applied as one; a name may still appear only once."""
    merged = Document([t for d in docs for t in d.templates],
                      [p for d in docs for p in d.pipelines],
                      [sc for d in docs for sc in d.schedules])
    problems = _duplicates(merged, "the files")
    if problems:
        raise FileError(problems[0].error)
    return merged


def _duplicates(doc: Document, where: str) -> list[Problem]:
    """Two items that are the same object, or two templates steps cannot tell apart."""
    keys = [("template", ref_of(t)) for t in doc.templates]
    keys += [("template", f"#{t['id']}") for t in doc.templates if t.get("id")]
    keys += [("pipeline", p["name"] if p.get("id") is None else f"#{p['id']}")
             for p in doc.pipelines]
    keys += [("schedule", schedule_label(sc["pipeline"], sc)) for sc in doc.schedules]
    return [Problem(kind, name, f"{where}: {kind} {name!r} appears twice")
            for (kind, name), n in Counter(keys).items() if n > 1]


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


def _name(data: dict[str, Any], where: str) -> str:
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise FileError(f"{where}: `name` (a non-empty string) is required")
    return name


def _references(data: dict[str, Any], where: str, ref_ok: bool) -> None:
    item_id = data.get("id")
    if item_id is not None and (isinstance(item_id, bool) or not isinstance(item_id, int)
                                or item_id < 1):
        raise FileError(f"{where}: `id` must be a positive whole number")
    if ref_ok and "ref" in data and (not isinstance(data["ref"], str) or not data["ref"]):
        raise FileError(f"{where}: `ref` must be a non-empty string")


def _template(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FileError(f"{where}: expected a mapping")
    data = dict(data)
    if "task_prompt" in data and "prompt" not in data:
        data["prompt"] = data.pop("task_prompt")
    _no_unknown(data, (*TEMPLATE_FIELDS, *REFERENCES), where)
    name = _name(data, where)
    if not isinstance(data.get("prompt"), str) or not data["prompt"]:
        raise FileError(f"{where} ({name}): `prompt` (a non-empty string) is required")
    _references(data, where, ref_ok=True)
    return {**TEMPLATE_DEFAULTS, **data}


def _pipeline(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FileError(f"{where}: expected a mapping")
    _no_unknown(data, (*PIPELINE_FIELDS, "id"), where)
    name = _name(data, where)
    _references(data, where, ref_ok=False)
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
    pipeline = {"name": name, "description": data.get("description"), "steps": out,
                **{k: data.get(k, v) for k, v in PIPELINE_DEFAULTS.items()}}
    return pipeline if data.get("id") is None else {"id": data["id"], **pipeline}


def _schedule(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FileError(f"{where}: expected a mapping")
    _no_unknown(data, SCHEDULE_FIELDS, where)
    out = {**SCHEDULE_DEFAULTS, **data}
    for key in ("pipeline", "cron", "timezone"):
        if not isinstance(out.get(key), str) or not out[key]:
            raise FileError(f"{where}: `{key}` (a non-empty string) is required")
    if out["name"] is not None and (not isinstance(out["name"], str) or not out["name"]):
        raise FileError(f"{where}: `name` must be a non-empty string")
    if not isinstance(out["inputs"], dict):
        raise FileError(f"{where}: `inputs` must be a mapping")
    if not isinstance(out["enabled"], bool):
        raise FileError(f"{where}: `enabled` must be true or false")
    try:
        check_cron(out["cron"])
        check_timezone(out["timezone"])
    except InvalidSchedule as exc:
        raise FileError(f"{where}: {exc}") from None
    return out


# -- comparing ---------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


class _Server:
    """The server's objects, found the way a file item names them: by `id` if it gives
    one, else by a name only one object has."""

    def __init__(self, objects: list[dict[str, Any]], kind: str):
        self.kind = kind
        self.by_id = {o["id"]: o for o in objects}
        self.by_name: dict[str, list[dict[str, Any]]] = {}
        for o in objects:
            self.by_name.setdefault(o["name"], []).append(o)

    def find(self, item: dict[str, Any]) -> dict[str, Any] | None:
        if item.get("id") is not None:
            found = self.by_id.get(item["id"])
            if found is None:
                raise FileError(f"{self.kind} id {item['id']} not found on the server")
            return found
        same = self.by_name.get(item["name"], [])
        if len(same) > 1:
            raise FileError(
                f"the server has {len(same)} {self.kind}s named {item['name']!r} (ids "
                f"{', '.join(str(o['id']) for o in same)}): give the item the `id` it means")
        return same[0] if same else None

    def unique_ids(self) -> dict[str, int]:
        return {name: objs[0]["id"] for name, objs in self.by_name.items() if len(objs) == 1}


def plan(doc: Document, templates: list[dict[str, Any]], pipelines: list[dict[str, Any]],
         schedules: list[dict[str, Any]] | None = None) -> list[Change]:
    """What applying `doc` would do, given the server's templates and pipelines; FileError
    at the first item that cannot be applied."""
    changes, problems = plan_items(doc, templates, pipelines, schedules)
    if problems:
        raise FileError(problems[0].error)
    return changes


def plan_items(doc: Document, templates: list[dict[str, Any]],
               pipelines: list[dict[str, Any]], schedules: list[dict[str, Any]] | None = None,
               ) -> tuple[list[Change], list[Problem]]:
    """The plan, and every item's problem (items with one have no change). `schedules` are
    the server's (as GET /api/schedules answers them)."""
    have_t, have_p = _Server(templates, "template"), _Server(pipelines, "pipeline")
    changes: list[Change] = []
    problems: list[Problem] = []
    # what steps may name: the server's unique names, then the file's refs over them
    step_ids: dict[str, int | None] = dict(have_t.unique_ids())
    step_ids.update(dict.fromkeys(doc.refused))
    for wanted in doc.templates:
        try:
            current = have_t.find(wanted)
        except FileError as exc:
            problems.append(Problem("template", wanted["name"], str(exc)))
            step_ids[ref_of(wanted)] = None  # refused already: its steps are not blamed too
            continue
        fields = {k: v for k, v in wanted.items() if k not in REFERENCES}
        step_ids[ref_of(wanted)] = None if current is None else current["id"]
        if current is None:
            changes.append(Change("template", "create", wanted["name"], body=fields,
                                  ref=ref_of(wanted)))
            continue
        diff = {k: (current[k], v) for k, v in fields.items()
                if k in current and not _same(current[k], v)}
        changes.append(Change("template", "update" if diff else "unchanged", wanted["name"],
                              current["id"], diff, {k: fields[k] for k in diff},
                              ref=ref_of(wanted)))
    for wanted in doc.pipelines:
        unknown = {s["template"] for s in wanted["steps"]} - set(step_ids)
        shared = sorted(unknown & set(have_t.by_name))
        if shared:
            problems.append(Problem("pipeline", wanted["name"], (
                f"pipeline {wanted['name']!r} names template(s) the server has more than one "
                f"of: {', '.join(shared)}; list the one meant in the file, with its `id` and "
                "a `ref` for the steps to name")))
            continue
        if unknown:
            problems.append(Problem("pipeline", wanted["name"], (
                f"pipeline {wanted['name']!r} uses template(s) that neither the file nor the "
                f"server has: {', '.join(sorted(unknown))}")))
            continue
        try:
            current = have_p.find(wanted)
        except FileError as exc:
            problems.append(Problem("pipeline", wanted["name"], str(exc)))
            continue
        body = {k: v for k, v in wanted.items() if k != "id"}
        if current is None:
            changes.append(Change("pipeline", "create", wanted["name"], body=body))
            continue
        diff = {}
        if current.get("description") != wanted["description"]:
            diff["description"] = (current.get("description"), wanted["description"])
        for key, default in PIPELINE_DEFAULTS.items():  # a server without limits has none
            if current.get(key, default) != wanted[key]:
                diff[key] = (current.get(key, default), wanted[key])
        if _step_keys(current["steps"]) != [(step_ids[s["template"]], s["on_failure"],
                                             s["run_if"]) for s in wanted["steps"]]:
            diff["steps"] = (_steps_as_file(current["steps"]), wanted["steps"])
        if current["name"] != wanted["name"]:
            diff["name"] = (current["name"], wanted["name"])
        changes.append(Change("pipeline", "update" if diff else "unchanged", wanted["name"],
                              current["id"], diff, {k: body[k] for k in diff}))
    blamed = doc.refused_pipelines | {p.name for p in problems if p.kind == "pipeline"}
    planned = _plan_schedules(doc, have_p, schedules or [], blamed)
    changes += [c for c in planned if isinstance(c, Change)]
    problems += [p for p in planned if isinstance(p, Problem)]
    return changes, problems


def _plan_schedules(doc: Document, have_p: _Server, schedules: list[dict[str, Any]],
                    blamed: set[str]) -> list[Change | Problem]:
    """A schedule's pipeline is one of the file's (which may be new) or the server's one
    of that name; within it, the schedule is the server's one with the same key."""
    in_file = {p["name"] for p in doc.pipelines}
    by_pipeline: dict[int, list[dict[str, Any]]] = {}
    for sc in schedules:
        by_pipeline.setdefault(sc["pipeline_id"], []).append(sc)
    out: list[Change | Problem] = []
    for wanted in doc.schedules:
        name, label = wanted["pipeline"], schedule_label(wanted["pipeline"], wanted)
        if name in blamed:
            continue  # its pipeline is refused already
        same = have_p.by_name.get(name, [])
        if len(same) > 1:
            out.append(Problem("schedule", label, (
                f"the server has {len(same)} pipelines named {name!r}: a schedule names its "
                "pipeline, so rename one of them")))
            continue
        if not same and name not in in_file:
            out.append(Problem("schedule", label, (
                f"schedule {label!r} names a pipeline that neither the file nor the server "
                f"has: {name}")))
            continue
        current = [sc for sc in by_pipeline.get(same[0]["id"], []) if
                   schedule_key(sc) == schedule_key(wanted)] if same else []
        if len(current) > 1:
            out.append(Problem("schedule", label, (
                f"pipeline {name!r} has {len(current)} schedules known as "
                f"{schedule_key(wanted)!r}: give them names, or delete one")))
            continue
        if not current:
            out.append(Change("schedule", "create", label, body=dict(wanted)))
            continue
        diff = {k: (current[0][k], wanted[k]) for k in ("cron", "timezone", "inputs",
                                                          "enabled", "name")
                if not _same(current[0][k], wanted[k])}
        out.append(Change("schedule", "update" if diff else "unchanged", label,
                          current[0]["id"], diff, {k: wanted[k] for k in diff}))
    return out


def _step_keys(steps: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(s["template_id"], *(s.get(k, v) for k, v in STEP_DEFAULTS.items())) for s in steps]


def _steps_as_file(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"template": s["template_name"],
             **{k: s.get(k, v) for k, v in STEP_DEFAULTS.items()}} for s in steps]


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
            s["template"] + ("" if s["on_failure"] == OnFailure.STOP else " (continue)")
            + ("" if s["run_if"] == RunIf.ON_SUCCESS else f" [{s['run_if']}]") for s in value)
        return f"[{text}]"
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 120 else text[:117] + "..."


def pipeline_body(wanted: dict[str, Any], template_ids: dict[str, int]) -> dict[str, Any]:
    """A pipeline's API body, its steps' template refs turned into ids."""
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
           only: list[str] | None = None, schedules: list[dict[str, Any]] | None = None) -> str:
    """The server's objects as a file `load` reads back. With `only`, those pipelines and
    the templates they use (and their schedules)."""
    if only:
        missing = sorted(set(only) - {p["name"] for p in pipelines})
        if missing:
            raise FileError(f"no pipeline named {', '.join(repr(m) for m in missing)}")
        pipelines = [p for p in pipelines if p["name"] in only]
        used = {s["template_id"] for p in pipelines for s in p["steps"]}
        templates = [t for t in templates if t["id"] in used]
    shared = {n for n, k in Counter(t["name"] for t in templates).items() if k > 1}
    refs = {t["id"]: f"{t['name']} #{t['id']}" if t["name"] in shared else t["name"]
            for t in templates}
    shared_p = {n for n, k in Counter(p["name"] for p in pipelines).items() if k > 1}
    doc: dict[str, Any] = {
        "templates": [_template_out(t, refs[t["id"]] if t["name"] in shared else None)
                      for t in templates],
        "pipelines": [_pipeline_out(p, refs, p["name"] in shared_p) for p in pipelines],
    }
    names = {p["id"]: p["name"] for p in pipelines}
    written = [_schedule_out(sc, names[sc["pipeline_id"]]) for sc in schedules or []
               if sc["pipeline_id"] in names]
    if written:
        doc["schedules"] = written
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _template_out(t: dict[str, Any], ref: str | None) -> dict[str, Any]:
    """`ref` is given when another template has this one's name: the item then says which
    template it is (`id`) and what steps call it (`ref`)."""
    out: dict[str, Any] = {"name": t["name"]}
    if ref is not None:
        out.update(id=t["id"], ref=ref)
    if t.get("description") is not None:
        out["description"] = t["description"]
    for key, default in TEMPLATE_DEFAULTS.items():
        if key in t and not _same(t[key], default) and key != "description":
            out[key] = t[key]
    out["prompt"] = t["prompt"]
    return out


def _pipeline_out(p: dict[str, Any], refs: dict[int, str], with_id: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p["name"]}
    if with_id:
        out["id"] = p["id"]
    if p.get("description") is not None:
        out["description"] = p["description"]
    steps = []
    for s in p["steps"]:
        extra = {k: s.get(k, v) for k, v in STEP_DEFAULTS.items() if s.get(k, v) != v}
        ref = refs[s["template_id"]]
        steps.append({"template": ref, **extra} if extra else ref)
    out["steps"] = steps
    for key, default in PIPELINE_DEFAULTS.items():
        if p.get(key, default) != default:
            out[key] = p[key]
    return out


def _schedule_out(sc: dict[str, Any], pipeline: str) -> dict[str, Any]:
    out: dict[str, Any] = {"pipeline": pipeline}
    if sc.get("name"):
        out["name"] = sc["name"]
    out["cron"] = sc["cron"]
    for key in ("timezone", "inputs", "enabled"):
        if not _same(sc[key], SCHEDULE_DEFAULTS[key]):
            out[key] = sc[key]
    return out
