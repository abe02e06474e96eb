"""``/api/v1/organisations``: the tenants of the service."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import organisations as domain
from engine.principals import Principal

from ..context import service
from .operations import operation
from .schema import array, boolean, component, integer, nullable, obj, string, timestamp

blueprint = Blueprint("api_organisations", __name__)

_CODE = string(
    pattern=domain.CODE_PATTERN.pattern.join("^$"),
    description="typed at login and shown on devices; never changes",
)
_FEATURES = obj({name: boolean() for name in domain.FEATURES})
_VALUES = {
    "short_name": string(minLength=1, maxLength=100),
    "long_name": string(maxLength=200),
    "licences": integer(minimum=0, description="active device licences; 0: not limited"),
    "devices_per_user": nullable(integer(minimum=1)),
    "subscription_expires": nullable(timestamp()),
}
ORGANISATION = component(
    "Organisation",
    obj(
        {
            "id": string(),
            "code": _CODE,
            **_VALUES,
            "features": _FEATURES,
            "active": boolean(),
            "vendor": nullable(string(description="vendor admin account that looks after it")),
            "created_at": timestamp(),
        },
        "id",
        "code",
        "short_name",
        "long_name",
        "licences",
        "devices_per_user",
        "subscription_expires",
        "features",
        "active",
        "vendor",
        "created_at",
    ),
)


@operation(
    blueprint,
    "POST",
    "/organisations",
    summary="Create an organisation (and its first manager)",
    tag="organisations",
    body=obj(
        {
            "code": _CODE,
            **_VALUES,
            "first_manager_login": string(minLength=1, maxLength=64),
            "first_manager_password": nullable(string()),
        },
        "code",
        "short_name",
    ),
    responses={201: ORGANISATION},
    example={
        "code": "example-org",
        "short_name": "Example",
        "long_name": "Example Organisation Ltd",
        "licences": 100,
        "first_manager_password": "first manager secret",
    },
)
async def create_organisation(
    who: Principal, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    created = await domain.create_organisation(service().store, who, domain.NewOrganisation(**body))
    return created, 201, {"Location": f"/api/v1/organisations/{created['id']}"}


@operation(
    blueprint,
    "GET",
    "/organisations",
    summary="Organisations this account may see",
    tag="organisations",
    responses={200: obj({"items": array(ORGANISATION), "total": integer()}, "items", "total")},
)
async def list_organisations(who: Principal) -> dict[str, Any]:
    items = await domain.organisations_of(service().store, who)
    return {"items": items, "total": len(items)}


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}",
    summary="One organisation, by id or code",
    tag="organisations",
    responses={200: ORGANISATION},
)
async def get_organisation(who: Principal, organisation: str) -> dict[str, Any]:
    return await domain.get_organisation(service().store, who, organisation)


@operation(
    blueprint,
    "PATCH",
    "/organisations/{organisation}",
    summary="Change an organisation; active=false stops its logins and devices",
    tag="organisations",
    body=obj(
        {
            **_VALUES,
            "features": _FEATURES,
            "active": boolean(),
            "vendor": nullable(string(description="vendor admin account that looks after it")),
        }
    ),
    responses={200: ORGANISATION},
    example={"long_name": "Example Organisation Plc", "licences": 250},
)
async def update_organisation(
    who: Principal, organisation: str, body: dict[str, Any]
) -> dict[str, Any]:
    return await domain.update_organisation(service().store, who, organisation, body)


@operation(
    blueprint,
    "DELETE",
    "/organisations/{organisation}",
    summary="Remove an inactive organisation and everything it owns",
    tag="organisations",
    responses={204: None},
)
async def remove_organisation(who: Principal, organisation: str) -> tuple[str, int]:
    await domain.remove_organisation(service().store, who, organisation)
    return "", 204
