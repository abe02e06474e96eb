"""``/api/v1/organisations``: the tenants of the service."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import organisations as domain

from ..context import service
from ..requests import json_object, principal, refuse_unknown, take

blueprint = Blueprint("api_organisations", __name__, url_prefix="/organisations")


@blueprint.post("")
async def create() -> tuple[dict[str, Any], int, dict[str, str]]:
    body = await json_object()
    refuse_unknown(
        body,
        "code",
        "short_name",
        "long_name",
        "licences",
        "devices_per_user",
        "subscription_expires",
        "first_manager_login",
        "first_manager_password",
    )
    new = domain.NewOrganisation(
        code=take(body, "code", str),
        short_name=take(body, "short_name", str),
        long_name=take(body, "long_name", str, ""),
        licences=take(body, "licences", int, 0),
        devices_per_user=take(body, "devices_per_user", (int, type(None)), None),
        subscription_expires=take(body, "subscription_expires", (str, type(None)), None),
        first_manager_login=take(body, "first_manager_login", str, "admin"),
        first_manager_password=take(body, "first_manager_password", (str, type(None)), None),
    )
    created = await domain.create_organisation(service().store, await principal(), new)
    return created, 201, {"Location": f"/api/v1/organisations/{created['id']}"}


@blueprint.get("")
async def index() -> dict[str, Any]:
    items = await domain.organisations_of(service().store, await principal())
    return {"items": items, "total": len(items)}


@blueprint.get("/<key>")
async def show(key: str) -> dict[str, Any]:
    return await domain.get_organisation(service().store, await principal(), key)
