"""Configuration → Services over the API; ETags are settings revisions (``If-Match``)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, json

from engine import service_settings as domain
from engine.principals import Principal

from ..context import service
from ..requests import if_match_revision
from .operations import operation
from .schema import array, boolean, component, enum, integer, mapping, obj, string

blueprint = Blueprint("api_settings", __name__)

_VALUE = {"type": ["string", "integer", "boolean", "null"]}
SYSTEM_SETTINGS = component(
    "SystemServiceSettings",
    obj(
        {
            "revision": integer(),
            "services": mapping(obj({"values": mapping(_VALUE)}, "values", extra=True)),
        },
        "revision",
        "services",
    ),
)
ORGANISATION_SETTINGS = component(
    "OrganisationServiceSettings",
    obj(
        {
            "organisation": string(),
            "revision": integer(),
            "services": mapping(
                obj(
                    {
                        "title": string(),
                        "use_system_wide": boolean(),
                        "overrides": mapping(_VALUE),
                        "effective": mapping(
                            obj(
                                {"value": _VALUE, "source": enum("system", "organisation")},
                                "value",
                                "source",
                            )
                        ),
                    },
                    "title",
                    "use_system_wide",
                    "overrides",
                    "effective",
                )
            ),
        },
        "organisation",
        "revision",
        "services",
    ),
)


def _with_etag(view: dict[str, Any]) -> Response:
    response = Response(json.dumps(view), content_type="application/json")
    response.headers["ETag"] = f'"{view["revision"]}"'
    return response


@operation(
    blueprint,
    "GET",
    "/config/services",
    summary="System-wide service settings, with each field's description (supervisor)",
    tag="configuration",
    responses={200: SYSTEM_SETTINGS},
)
async def system_settings(who: Principal) -> Response:
    context = service()
    return _with_etag(await domain.system_settings(context.store, who, context.deployment))


@operation(
    blueprint,
    "PATCH",
    "/config/services/{service_name}",
    summary="Change system-wide values of one service (supervisor); If-Match: revision",
    tag="configuration",
    body=mapping(_VALUE, description="field name to new value"),
    responses={200: SYSTEM_SETTINGS},
    example={"connection_interval": 120},
)
async def change_system_settings(
    who: Principal, service_name: str, body: dict[str, Any]
) -> Response:
    context = service()
    view = await domain.change_system_settings(
        context.store,
        who,
        context.deployment,
        service_name,
        body,
        expected_revision=if_match_revision(),
    )
    return _with_etag(view)


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/config/services",
    summary="An organisation's service settings: switches, overrides, effective values",
    tag="configuration",
    responses={200: ORGANISATION_SETTINGS},
)
async def organisation_settings(who: Principal, organisation: str) -> Response:
    context = service()
    return _with_etag(
        await domain.organisation_settings(context.store, who, context.deployment, organisation)
    )


@operation(
    blueprint,
    "PATCH",
    "/organisations/{organisation}/config/services/{service_name}",
    summary="Switch Use system-wide settings, override or clear single values",
    tag="configuration",
    body=obj(
        {
            "use_system_wide": boolean(),
            "overrides": mapping(_VALUE),
            "clear": array(string(), description="overrides to drop"),
        }
    ),
    responses={200: ORGANISATION_SETTINGS},
    example={"use_system_wide": False, "overrides": {"connection_interval": 30}},
)
async def change_organisation_settings(
    who: Principal, organisation: str, service_name: str, body: dict[str, Any]
) -> Response:
    context = service()
    view = await domain.change_organisation_settings(
        context.store,
        who,
        context.deployment,
        organisation,
        service_name,
        use_system_wide=body.get("use_system_wide"),
        overrides=body.get("overrides"),
        clear=body.get("clear", ()),
        expected_revision=if_match_revision(),
    )
    return _with_etag(view)
