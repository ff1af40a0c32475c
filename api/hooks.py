"""/api/hooks: outgoing webhooks (admin only) and their delivery log. Body-id style, like
/api/schedules. Deliveries are written by the write path and sent by workers
(orchestrator.hooks, orchestrator.hook_delivery)."""

from __future__ import annotations

from flask import Blueprint, current_app, g, request

from api.audit import record_change
from api.auth import require
from api.errors import ApiError
from api.schemas import (
    HookCreate,
    HookUpdate,
    IdBody,
    delivery_json,
    hook_json,
    int_arg,
    json_body,
    parse_id,
)
from orchestrator import db, hooks

bp = Blueprint("hooks", __name__, url_prefix="/api/hooks")


def _target(url: str) -> str:
    try:
        return hooks.check_target(url, current_app.config["SETTINGS"])
    except hooks.InvalidHook as exc:
        raise ApiError(400, str(exc)) from None


@bp.get("")
@require("admin")
def list_hooks():
    with db.read_session() as s:
        return {"hooks": [hook_json(h) for h in hooks.list_hooks(s)]}


@bp.post("")
@require("admin")
def create_hook():
    body = HookCreate.model_validate(json_body())
    fields = body.model_dump()
    fields["url"] = _target(body.url)
    with db.session() as s:
        hook = hooks.create_hook(s, fields, g.identity.name)
        record_change(s, "created", "hook", hook.id)
        return {"hook": hook_json(hook, with_secret=True)}, 201


@bp.put("")
@require("admin")
def update_hook():
    data = json_body()
    body = HookUpdate.model_validate(data)
    fields = body.fields(set(data))
    if "url" in fields:
        fields["url"] = _target(fields["url"])
    with db.session() as s:
        hook = hooks.update_hook(s, body.id, fields)
        record_change(s, "updated", "hook", hook.id)
        return {"hook": hook_json(hook)}


@bp.delete("")
@require("admin")
def delete_hook():
    body = IdBody.model_validate(json_body())
    with db.session() as s:
        hooks.delete_hook(s, body.id)
        record_change(s, "deleted", "hook", body.id)
    return {"success": True}


@bp.get("/deliveries")
@require("admin")
def list_deliveries():
    args = request.args
    hook_id = parse_id(args["hook_id"], "hook_id") if "hook_id" in args else None
    limit = int_arg(args.get("limit"), "limit", 50, 1, 200)
    with db.read_session() as s:
        return {"deliveries": [delivery_json(d)
                               for d in hooks.list_deliveries(s, hook_id, limit)]}
