"""``/api/v1``: the device inventory, device groups and installation codes."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from engine import device_groups as groups, devices as domain, installation_codes as codes
from engine.accounts import PHONE_PATTERN
from engine.listing import ListQuery
from engine.principals import Principal

from ..context import service
from .operations import operation
from .schema import (
    Schema,
    array,
    boolean,
    component,
    enum,
    integer,
    nullable,
    obj,
    page_of,
    record,
    string,
    timestamp,
)

blueprint = Blueprint("api_devices", __name__)

_DEVICES = "/organisations/{organisation}/devices"
_GROUPS = "/organisations/{organisation}/device-groups"
_CODES = "/organisations/{organisation}/installation-codes"


def _created(thing: dict[str, Any], path: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    return thing, 201, {"Location": f"/api/v1{path}/{thing['id']}"}


def _path(template: str, organisation: str) -> str:
    return template.replace("{organisation}", organisation)


# --------------------------------------------------------------------------- schemas

_NAME = string(minLength=1, maxLength=100)
_OWNER_ID = nullable(string(description="id of a user account of the organisation"))
_PHONE = nullable(string(maxLength=32, pattern=f"^(?:{PHONE_PATTERN.pattern})$"))
_IDENTIFIER = nullable(string(maxLength=64))
_DEVICE_MEMBERS: dict[str, Schema] = {
    "id": string(),
    "name": string(),
    "platform": enum(*domain.PLATFORMS),
    "protocol": enum(*domain.PROTOCOLS),
    "state": enum(*domain.STATES),
    "owner": nullable(obj({"id": string(), "login": string()}, "id", "login")),
    "imei": nullable(string()),
    "serial_number": nullable(string()),
    "udid": nullable(string()),
    "model": nullable(string()),
    "os_version": nullable(string()),
    "phone_number": nullable(string()),
    "compliant": nullable(boolean(description="null until the device was checked")),
    "enrolled_at": nullable(timestamp()),
    "last_seen_at": nullable(timestamp()),
    "created_at": timestamp(),
    "updated_at": timestamp(),
}
_DETAIL_MEMBERS: dict[str, Schema] = {
    **_DEVICE_MEMBERS,
    "inventory": {"type": "object", "description": "what the device last reported"},
    "groups": array(obj({"id": string(), "name": string()}, "id", "name")),
}
DEVICE_SUMMARY = component("DeviceSummary", record(_DEVICE_MEMBERS))
DEVICE = component("Device", record(_DETAIL_MEMBERS))

_CODE_MEMBERS: dict[str, Schema] = {
    "id": string(),
    "code": string(description="typed or scanned at enrolment: ABCD-EFGH-JKLM"),
    "purpose": enum(*codes.PURPOSES),
    "device": nullable(string()),
    "account": nullable(string()),
    "template": nullable(string()),
    "expires_at": nullable(timestamp()),
    "usage_limit": nullable(integer(description="null: unlimited")),
    "times_used": integer(),
    "last_used_at": nullable(timestamp()),
    "state": enum("active", "expired", "used_up"),
    "created_at": timestamp(),
}
INSTALLATION_CODE = component("InstallationCode", record(_CODE_MEMBERS))
CREATED_DEVICE = component(
    "CreatedDevice",
    record({**_DETAIL_MEMBERS, "installation_code": INSTALLATION_CODE}),
)

_GROUP_MEMBERS: dict[str, Schema] = {
    "id": string(),
    "name": string(),
    "description": string(),
    "devices": integer(description="how many devices it holds"),
    "created_at": timestamp(),
    "updated_at": timestamp(),
}
DEVICE_GROUP = component("DeviceGroup", record(_GROUP_MEMBERS))


# --------------------------------------------------------------------------- inventory


@operation(
    blueprint,
    "GET",
    _DEVICES,
    summary="The device inventory (a device owner sees only their own devices)",
    tag="devices",
    listing=domain.LIST,
    responses={200: page_of(DEVICE_SUMMARY)},
)
async def list_devices(who: Principal, organisation: str, query: ListQuery) -> dict[str, Any]:
    page = await domain.list_devices(service().store, who, organisation, query)
    return page.as_json()


@operation(
    blueprint,
    "POST",
    _DEVICES,
    summary="Enter a device in the inventory, with an installation code for its owner",
    description="Needs the devices right. Refused with 409 when all licences of the "
    "organisation, or all devices its owner may have, are in use (licences 0: not limited).",
    tag="devices",
    body=obj(
        {
            "name": _NAME,
            "platform": enum(*domain.PLATFORMS),
            "protocol": enum(*domain.PROTOCOLS),
            "owner": _OWNER_ID,
            "imei": _IDENTIFIER,
            "serial_number": _IDENTIFIER,
            "udid": _IDENTIFIER,
            "model": _IDENTIFIER,
            "os_version": _IDENTIFIER,
            "phone_number": _PHONE,
        },
        "name",
        "platform",
        "protocol",
    ),
    example={
        "name": "Field phone 12",
        "platform": "android",
        "protocol": "wsdm",
        "model": "Pixel 8",
        "imei": "356938035643809",
        "phone_number": "+44 20 7946 0018",
    },
    responses={201: CREATED_DEVICE},
)
async def create_device(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    created = await domain.create_device(
        service().store, who, organisation, domain.NewDevice(**body)
    )
    return _created(created, _path(_DEVICES, organisation))


@operation(
    blueprint,
    "GET",
    _DEVICES + "/{device}",
    summary="One device, with its inventory and groups",
    tag="devices",
    responses={200: DEVICE},
)
async def get_device(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    return await domain.get_device(service().store, who, organisation, device)


@operation(
    blueprint,
    "PATCH",
    _DEVICES + "/{device}",
    summary="Rename a device, change its owner or phone number, deactivate or reactivate it",
    description="state inactive: the device cannot connect and frees its licence; "
    "state active brings it back (if a licence is free).",
    tag="devices",
    body=obj(
        {
            "name": _NAME,
            "owner": _OWNER_ID,
            "phone_number": _PHONE,
            "state": enum(*domain.SETTABLE_STATES),
        }
    ),
    example={"name": "Field phone 12 (spare)", "phone_number": "+44 20 7946 0019"},
    responses={200: DEVICE},
)
async def update_device(
    who: Principal, organisation: str, device: str, body: dict[str, Any]
) -> dict[str, Any]:
    return await domain.update_device(service().store, who, organisation, device, body)


@operation(
    blueprint,
    "DELETE",
    _DEVICES + "/{device}",
    summary="Remove a device: its undelivered commands are cancelled, its codes revoked",
    tag="devices",
    responses={204: None},
)
async def remove_device(who: Principal, organisation: str, device: str) -> tuple[str, int]:
    await domain.remove_device(service().store, who, organisation, device)
    return "", 204


# --------------------------------------------------------------------------- groups


@operation(
    blueprint,
    "GET",
    _GROUPS,
    summary="Device groups",
    tag="devices",
    listing=groups.LIST,
    responses={200: page_of(DEVICE_GROUP)},
)
async def list_device_groups(who: Principal, organisation: str, query: ListQuery) -> dict[str, Any]:
    page = await groups.list_groups(service().store, who, organisation, query)
    return page.as_json()


@operation(
    blueprint,
    "POST",
    _GROUPS,
    summary="Make a device group (names are unique in the organisation)",
    tag="devices",
    body=obj({"name": _NAME, "description": string(maxLength=500)}, "name"),
    example={"name": "Field staff", "description": "Phones of the field service team"},
    responses={201: DEVICE_GROUP},
)
async def create_device_group(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    created = await groups.create_group(service().store, who, organisation, groups.NewGroup(**body))
    return _created(created, _path(_GROUPS, organisation))


@operation(
    blueprint,
    "GET",
    _GROUPS + "/{group}",
    summary="One device group",
    tag="devices",
    responses={200: DEVICE_GROUP},
)
async def get_device_group(who: Principal, organisation: str, group: str) -> dict[str, Any]:
    return await groups.get_group(service().store, who, organisation, group)


@operation(
    blueprint,
    "PATCH",
    _GROUPS + "/{group}",
    summary="Rename a device group or change its description",
    tag="devices",
    body=obj({"name": _NAME, "description": string(maxLength=500)}),
    example={"description": "Phones and tablets of the field service team"},
    responses={200: DEVICE_GROUP},
)
async def update_device_group(
    who: Principal, organisation: str, group: str, body: dict[str, Any]
) -> dict[str, Any]:
    return await groups.update_group(service().store, who, organisation, group, body)


@operation(
    blueprint,
    "DELETE",
    _GROUPS + "/{group}",
    summary="Remove a device group (its devices stay)",
    tag="devices",
    responses={204: None},
)
async def remove_device_group(who: Principal, organisation: str, group: str) -> tuple[str, int]:
    await groups.remove_group(service().store, who, organisation, group)
    return "", 204


# --------------------------------------------------------------------------- members


@operation(
    blueprint,
    "GET",
    _GROUPS + "/{group}/devices",
    summary="The devices of a group",
    tag="devices",
    listing=domain.LIST,
    responses={200: page_of(DEVICE_SUMMARY)},
)
async def list_device_group_members(
    who: Principal, organisation: str, group: str, query: ListQuery
) -> dict[str, Any]:
    page = await groups.list_members(service().store, who, organisation, group, query)
    return page.as_json()


@operation(
    blueprint,
    "PUT",
    _GROUPS + "/{group}/devices/{device}",
    summary="Put a device in a group (no change if it is there already)",
    tag="devices",
    responses={204: None},
)
async def add_device_to_group(
    who: Principal, organisation: str, group: str, device: str
) -> tuple[str, int]:
    await groups.add_device(service().store, who, organisation, group, device)
    return "", 204


@operation(
    blueprint,
    "DELETE",
    _GROUPS + "/{group}/devices/{device}",
    summary="Take a device out of a group (no change if it is not in it)",
    tag="devices",
    responses={204: None},
)
async def remove_device_from_group(
    who: Principal, organisation: str, group: str, device: str
) -> tuple[str, int]:
    await groups.remove_device(service().store, who, organisation, group, device)
    return "", 204


# --------------------------------------------------------------------------- codes


@operation(
    blueprint,
    "GET",
    _CODES,
    summary="Installation codes, with how often and when each was used",
    tag="devices",
    listing=codes.LIST,
    responses={200: page_of(INSTALLATION_CODE)},
)
async def list_installation_codes(
    who: Principal, organisation: str, query: ListQuery
) -> dict[str, Any]:
    page = await codes.list_codes(service().store, who, organisation, query)
    return page.as_json()


@operation(
    blueprint,
    "POST",
    _CODES,
    summary="Make an installation code",
    description="new_account_and_device (optional template), new_device_for_account "
    "(account), bind_device and enrol_device (device). Expires in 14 days and is good for "
    "one use unless told otherwise (usage_limit null: unlimited).",
    tag="devices",
    body=obj(
        {
            "purpose": enum(*codes.PURPOSES),
            "device": nullable(string(description="id of a device of the organisation")),
            "account": nullable(string(description="id of a user account")),
            "template": nullable(string(description="id of a user account template")),
            "expires_at": nullable(timestamp(description="within a year; default 14 days")),
            "usage_limit": nullable(integer(minimum=1, description="null: unlimited")),
        },
        "purpose",
    ),
    example={"purpose": "new_account_and_device", "usage_limit": 25},
    responses={201: INSTALLATION_CODE},
)
async def create_installation_code(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    created = await codes.create_code(service().store, who, organisation, codes.NewCode(**body))
    return _created(created, _path(_CODES, organisation))


@operation(
    blueprint,
    "GET",
    _CODES + "/{code}",
    summary="One installation code, by id",
    tag="devices",
    responses={200: INSTALLATION_CODE},
)
async def get_installation_code(who: Principal, organisation: str, code: str) -> dict[str, Any]:
    return await codes.get_code(service().store, who, organisation, code)


@operation(
    blueprint,
    "GET",
    _CODES + "/{code}/qr.svg",
    summary="The code as a QR code for the client app to scan",
    description="The QR code carries emm://enrol?server=…&organisation=…&code=….",
    tag="devices",
    content_type="image/svg+xml",
    responses={200: {"type": "string"}},
)
async def installation_code_qr(who: Principal, organisation: str, code: str) -> Response:
    context = service()
    svg = await codes.code_qr_svg(
        context.store, who, organisation, code, context.deployment.public_url
    )
    return Response(svg, content_type="image/svg+xml", headers={"Cache-Control": "no-store"})


@operation(
    blueprint,
    "DELETE",
    _CODES + "/{code}",
    summary="Revoke an installation code",
    tag="devices",
    responses={204: None},
)
async def revoke_installation_code(who: Principal, organisation: str, code: str) -> tuple[str, int]:
    await codes.revoke(service().store, who, organisation, code)
    return "", 204
