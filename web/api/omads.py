"""The datastores a device synchronises over OMA DS, and asking for a refresh.

``GET .../devices/{device}/datastores``: per datastore the item counts, the last sync time
and mode, whether the organisation allows it and whether a refresh is pending.
``POST .../devices/{device}/datastores/refresh``: the device's next sync of the chosen
datastores is a slow sync (the owner of the device may ask, and managers with the commands
right).
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import pim as domain
from engine.principals import Principal

from ..context import service
from .operations import operation
from .schema import array, boolean, enum, integer, nullable, obj, record, string, timestamp

blueprint = Blueprint("omads_api", __name__)

_DATASTORES = "/organisations/{organisation}/devices/{device}/datastores"

DATASTORE = record(
    {
        "kind": enum(*domain.KINDS),
        "datastore": string(description="the device's name of the datastore (its SyncML URI)"),
        "enabled": boolean(description="the organisation's feature switch for this kind"),
        "items": integer(description="items of the owner's collection"),
        "device_items": integer(description="items the device holds of it (by id map)"),
        "last_sync_at": nullable(timestamp()),
        "last_mode": nullable(string(description="two-way, slow, refresh-from-server, ...")),
        "refresh_requested": boolean(description="the next sync will be a slow sync"),
    }
)
DATASTORES = record({"items": array(DATASTORE), "total": integer()})


@operation(
    blueprint,
    "GET",
    _DATASTORES,
    summary="The device's OMA DS datastores: counts, last sync time and mode",
    tag="devices",
    responses={200: DATASTORES},
)
async def get_datastores(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    items = await domain.device_datastores(service().store, who, organisation, device)
    return {"items": items, "total": len(items)}


@operation(
    blueprint,
    "POST",
    _DATASTORES + "/refresh",
    summary="Make the device's next sync a slow sync (all datastores, or the kinds named)",
    description="The device's owner may ask, and managers with the commands right. At its "
    "next session the device is answered 508 (refresh required) and both sides compare all "
    "items; nothing is duplicated or lost.",
    tag="devices",
    body=obj({"kinds": array(enum(*domain.KINDS), uniqueItems=True, minItems=1)}),
    responses={200: DATASTORES},
    example={"kinds": ["contacts", "calendar"]},
)
async def refresh_datastores(
    who: Principal, organisation: str, device: str, body: dict[str, Any]
) -> dict[str, Any]:
    items = await domain.request_refresh(
        service().store, who, organisation, device, body.get("kinds")
    )
    return {"items": items, "total": len(items)}
