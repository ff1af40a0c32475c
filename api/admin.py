"""Who am I, which agent profiles exist, and API key management (admin)."""

from __future__ import annotations

from typing import Annotated

from flask import Blueprint, current_app, g
from pydantic import Field, StrictStr
from sqlalchemy import select

from api.audit import record_change
from api.auth import require
from api.errors import ApiError
from api.schemas import IdBody, Strict, json_body
from orchestrator import db
from orchestrator.auth import create_key
from orchestrator.models import ApiKey
from orchestrator.vocab import Role

bp = Blueprint("admin", __name__, url_prefix="/api")


class KeyCreate(Strict):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    role: Role


def key_json(row: ApiKey) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "prefix": row.prefix,
        "created_at": int(row.created_at),
        "revoked": row.revoked,
    }


@bp.get("/me")
@require("viewer")
def me():
    return {"name": g.identity.name, "role": g.identity.role}


@bp.get("/agents")
@require("viewer")
def agents():
    profiles = current_app.config["PROFILES"]
    return {
        "agents": [{"name": p.name, "runtime": p.runtime} for p in sorted(
            profiles.values(), key=lambda p: p.name)]
    }


@bp.get("/keys")
@require("admin")
def list_keys():
    with db.read_session() as s:
        return {"keys": [key_json(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.id))]}


@bp.post("/keys")
@require("admin")
def make_key():
    body = KeyCreate.model_validate(json_body())
    with db.session() as s:
        row, key = create_key(s, body.name, body.role)
        record_change(s, "created", "key", row.id)
        return {"key": key, **key_json(row)}, 201


@bp.delete("/keys")
@require("admin")
def revoke_key():
    body = IdBody.model_validate(json_body())
    with db.session() as s:
        row = s.get(ApiKey, body.id, with_for_update=True)
        if row is None:
            raise ApiError(404, f"key {body.id} not found")
        row.revoked = True
        record_change(s, "revoked", "key", row.id)
    return {"success": True}
