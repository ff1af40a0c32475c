"""/api/workflows: workflow templates."""

from __future__ import annotations

from flask import Blueprint, current_app, g, request

from api.audit import record_change
from api.auth import require
from api.errors import ApiError
from api.schemas import (
    IdBody,
    TemplateCreate,
    TemplateUpdate,
    json_body,
    page_args,
    template_json,
)
from orchestrator import catalog, db, injection
from orchestrator.models import WorkflowTemplate
from orchestrator.profiles import scan_context
from orchestrator.prompts import check_syntax

bp = Blueprint("workflows", __name__, url_prefix="/api/workflows")


def check_agent(fields: dict) -> None:
    agent = fields.get("agent")
    profiles = current_app.config["PROFILES"]
    if agent is not None and agent not in profiles:
        raise ApiError(
            400, f"agent: unknown agent profile {agent!r} (configured: {', '.join(sorted(profiles))})"
        )


def check_edit_role(fields: dict, current: WorkflowTemplate | None) -> None:
    """A template on a profile with `edit_role = "admin"` is written only by an admin:
    creating one, changing one, or moving one onto such a profile."""
    profiles = current_app.config["PROFILES"]
    if current is None:
        agents = {fields.get("agent") or WorkflowTemplate.agent.default.arg}
    else:
        agents = {fields.get("agent"), current.agent}
    for agent in sorted(a for a in agents if a in profiles):
        needed = profiles[agent].edit_role
        if not g.identity.can(needed):
            raise ApiError(403, (
                f"this needs the {needed} role: agent profile {agent!r} has "
                f'edit_role = "{needed}", because what its templates say runs with the '
                f"workers' access, so only an {needed} may create or change a template "
                f"that uses it; your key has {g.identity.role}"))


def check_template(fields: dict, current: WorkflowTemplate | None = None) -> None:
    """Every rule a template write must pass once its body is valid, in SPEC §15's order
    (body → profile's edit_role → prompt parses → injection scan). `fields` is what the
    request sets; `current` the stored template an update changes (None on create).
    Every path that writes a template (POST, PUT, apply) calls this, and only this."""
    check_agent(fields)
    check_edit_role(fields, current)
    check_prompt(fields)
    check_injection(fields, current)


def check_prompt(fields: dict) -> None:
    """A prompt that does not parse could only fail every run at its step: refused here
    (where Mission Control stores it), with the way to send braces literally."""
    problem = check_syntax(fields["prompt"]) if fields.get("prompt") else None
    if problem:
        raise ApiError(400, f"prompt: {problem}")


BLOCKED = "Task prompt blocked: potentially unsafe content detected"


def check_injection(fields: dict, current: WorkflowTemplate | None) -> None:
    """422 if the prompt trips a critical rule in its profile's context. An update is
    scanned when it changes the prompt or the agent (the agent decides the context)."""
    if current is not None and not fields.keys() & {"prompt", "agent"}:
        return
    prompt = fields.get("prompt", current.prompt if current else "")
    agent = fields.get("agent", current.agent if current else "default")
    context = scan_context(current_app.config["PROFILES"].get(agent))
    found = injection.critical(injection.scan(prompt, context))
    if found:
        raise ApiError(422, BLOCKED, extra={"injection": [
            {"rule": f.rule, "description": f.description} for f in found]})


@bp.get("")
@require("viewer")
def list_templates():
    page = page_args(request.args)
    with db.read_session() as s:
        return {"templates": [template_json(t) for t in catalog.list_templates(s, page)],
                "total": catalog.count(s, WorkflowTemplate)}


@bp.post("")
@require("operator")
def create_template():
    body = TemplateCreate.model_validate(json_body())
    fields = {
        k: v for k, v in body.model_dump(exclude={"task_prompt"}).items() if v is not None
    }
    fields.setdefault("description", None)
    check_template(fields)
    with db.session() as s:
        tpl = catalog.create_template(s, fields, g.identity.name)
        record_change(s, "created", "template", tpl.id)
        return {"template": template_json(tpl)}, 201


@bp.put("")
@require("operator")
def update_template():
    data = json_body()
    body = TemplateUpdate.model_validate(data)
    fields = body.fields(set(data) - {"id"})
    with db.session() as s:
        check_template(fields, catalog.get_template(s, body.id))
        tpl = catalog.update_template(s, body.id, fields)
        record_change(s, "updated", "template", tpl.id)
        return {"template": template_json(tpl)}


@bp.delete("")
@require("operator")
def delete_template():
    body = IdBody.model_validate(json_body())
    with db.session() as s:
        catalog.delete_template(s, body.id)
        record_change(s, "deleted", "template", body.id)
    return {"success": True}
