"""Exchange ActiveSync over the API: the organisation's settings and device policy, and
the ActiveSync state of a device."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import activesync_admin as domain
from engine.activesync import DEFAULT_SETTINGS
from engine.principals import Principal
from engine.protocols.activesync import PROVISION_DOC

from ..context import service
from .operations import operation
from .schema import array, boolean, component, enum, integer, nullable, obj, string, timestamp

blueprint = Blueprint("api_activesync", __name__)
_PATH = "/organisations/{organisation}/activesync"


def _setting_schema(default: object) -> dict[str, Any]:
    if isinstance(default, bool):
        return boolean()
    if default is None:
        return nullable(integer(minimum=-1))
    return integer(minimum=-1)


_SETTINGS = {
    name: _setting_schema(default)
    for name, default in [*DEFAULT_SETTINGS.items(), *((n, d) for _, n, d in PROVISION_DOC)]
}
EAS_SETTINGS = component(
    "ActiveSyncSettings",
    obj(
        {
            "organisation": string(),
            "revision": integer(
                description="0 until first changed; devices provision again when it moves"
            ),
            "settings": obj(_SETTINGS, *_SETTINGS),
        },
        "organisation",
        "revision",
        "settings",
    ),
)
_FOLDER = obj(
    {
        "id": string(),
        "name": string(),
        "type": nullable(
            integer(description="MS-ASCMD folder type; null: the folder is gone from the hierarchy")
        ),
        "sync_key": string(),
        "items_on_device": integer(),
        "items": integer(),
        "last_sync_at": nullable(timestamp()),
    },
    "id",
    "name",
    "type",
    "sync_key",
    "items_on_device",
    "items",
    "last_sync_at",
)
_USER_FOLDER = obj(
    {
        "id": string(description="the folder's ServerId"),
        "name": string(),
        "type": integer(description="12-17 (MS-ASCMD 2.2.3.186.3), or 1"),
        "parent_id": string(description="the parent's ServerId, 0: the root"),
        "items": integer(),
    },
    "id",
    "name",
    "type",
    "parent_id",
    "items",
)
EAS_DEVICE = component(
    "ActiveSyncDevice",
    obj(
        {
            "enrolled": boolean(description="false until the device spoke ActiveSync"),
            "eas_device_id": string(),
            "device_type": string(),
            "protocol_version": nullable(string()),
            "policy": enum(
                "none", "not provisioned", "current", "outdated", "wipe pending", "wiped"
            ),
            "provisioned_at": nullable(timestamp()),
            "wipe": nullable(enum("wipe", "enterprise_wipe")),
            "wipe_sent_at": nullable(timestamp()),
            "wiped_at": nullable(timestamp()),
            "heartbeat": nullable(integer()),
            "last_command": nullable(string()),
            "last_seen_at": nullable(timestamp()),
            "last_sync_at": nullable(timestamp()),
            "device_information": {"type": "object"},
            "folders": array(_FOLDER),
            "user_folders": array(
                _USER_FOLDER, description="the folders the owner made on any of their devices"
            ),
        },
        "enrolled",
        "policy",
        "folders",
        "user_folders",
    ),
)


@operation(
    blueprint,
    "GET",
    _PATH,
    summary="The organisation's ActiveSync settings and device policy",
    tag="activesync",
    responses={200: EAS_SETTINGS},
)
async def get_settings(who: Principal, organisation: str) -> dict[str, Any]:
    return await domain.organisation_settings(service().store, who, organisation)


@operation(
    blueprint,
    "PATCH",
    _PATH,
    summary="Change the ActiveSync settings and device policy (devices provision again)",
    description="Needs the configuration right. Only the settings given change.",
    tag="activesync",
    body=obj(_SETTINGS),
    example={"passcode_required": True, "min_passcode_length": 6, "camera_allowed": False},
    responses={200: EAS_SETTINGS},
)
async def change_settings(
    who: Principal, organisation: str, body: dict[str, Any]
) -> dict[str, Any]:
    return await domain.change_settings(service().store, who, organisation, body)


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/devices/{device}/activesync",
    summary="A device's ActiveSync state: policy key, wipe, folders, last sync",
    tag="activesync",
    responses={200: EAS_DEVICE},
)
async def device_state(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    return await domain.device_state(service().store, who, organisation, device)
