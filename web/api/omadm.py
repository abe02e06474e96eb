"""``/api/v1``: the OMA DM management tree snapshot of a device (Windows and OMA DM)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import omadm as domain
from engine.principals import Principal

from ..context import service
from .operations import operation
from .schema import array, component, enum, integer, nullable, obj, string, timestamp

blueprint = Blueprint("api_omadm", __name__)

_NODE = obj(
    {
        "uri": string(description="the node's path in the management tree"),
        "value": nullable(string()),
        "format": nullable(string(description="Meta Format: chr, int, bool, b64, node, ...")),
        "type": nullable(string(description="Meta Type (a MIME type)")),
        "source": string(description="device: read or reported; server: written"),
        "updated_at": timestamp(),
    },
    "uri",
    "value",
    "format",
    "type",
    "source",
    "updated_at",
)

TREE = component(
    "OmadmTree",
    obj(
        {
            "device_id": string(),
            "sessions": integer(description="OMA DM sessions the device has held"),
            "last_session_at": nullable(timestamp()),
            "pending_alert_at": nullable(
                timestamp(
                    description="a command waits since then; the device picks it up at its "
                    "next scheduled session (no push channel reaches it)"
                )
            ),
            "login_status": nullable(string(description="Windows: who was signed in (1224)")),
            "bootstrapped_at": nullable(
                timestamp(
                    description="plain OMA DM: since when the device's DM account holds the "
                    "server's credentials (its sessions and package 0 are signed)"
                )
            ),
            "nodes": array(_NODE),
        },
        "device_id",
        "sessions",
        "last_session_at",
        "pending_alert_at",
        "login_status",
        "bootstrapped_at",
        "nodes",
    ),
)


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/devices/{device}/omadm-tree",
    summary="The device's OMA DM management tree: the last known value of every node",
    description="Every node the service read from the device or wrote to it, with its "
    "format, type and time. Empty for devices that do not speak OMA DM.",
    tag="devices",
    responses={200: TREE},
)
async def get_tree(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    return await domain.device_tree(service().store, who, organisation, device)


SETTING = component(
    "OmadmSetting",
    obj(
        {
            "id": string(),
            "device_id": string(),
            "uri": string(),
            "value": string(),
            "format": string(),
            "type": nullable(string()),
            "state": enum("queued", "sent", "applied", "failed"),
            "status": nullable(integer(description="the device's SyncML Status code")),
            "created_at": timestamp(),
            "updated_at": timestamp(),
        },
        "id",
        "device_id",
        "uri",
        "value",
        "format",
        "type",
        "state",
        "status",
        "created_at",
        "updated_at",
    ),
)

_SETTINGS = "/organisations/{organisation}/devices/{device}/omadm-settings"


@operation(
    blueprint,
    "POST",
    _SETTINGS,
    summary="Set a node of the device's management tree at its next OMA DM session",
    description="A Replace of ``uri`` with ``value`` (Meta Format ``format``, Type ``type``): "
    "a setting, or a Windows Policy CSP value such as "
    "``./Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength``. Needs the "
    "configuration right. Devices that do not speak OMA DM keep it until they do.",
    tag="devices",
    body=obj(
        {
            "uri": string(minLength=3, maxLength=1024, pattern=r"^\./"),
            "value": string(maxLength=domain.MAX_SETTING_VALUE),
            "format": enum(*domain.FORMATS),
            "type": nullable(string(maxLength=100)),
        },
        "uri",
        "value",
    ),
    example={
        "uri": "./Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength",
        "value": "8",
        "format": "int",
    },
    responses={202: SETTING},
)
async def queue_setting(
    who: Principal, organisation: str, device: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    context = service()
    setting = await domain.queue_setting(
        context.store, who, organisation, device, body, wakeups=context.wakeups
    )
    return setting, 202


@operation(
    blueprint,
    "GET",
    _SETTINGS,
    summary="The settings queued for a device and the device's answers",
    tag="devices",
    responses={200: obj({"items": array(SETTING)}, "items")},
)
async def list_settings(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    return {"items": await domain.device_settings(service().store, who, organisation, device)}
