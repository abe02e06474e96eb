"""Admin portal: what a WSDM device reported, on its device page.

The device page is the inventory's; this module only adds what WSDM knows (last check-in,
overdue, push identity, locations) to its template context, through the same domain
operations as ``GET .../devices/{device}/wsdm`` and ``.../locations``. The page has
already checked the session and the organisation before its template is rendered.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from engine import wsdm
from engine.errors import DomainError

from ..context import service
from .session import session_principal

#: How many of the latest locations the device page lists.
LOCATIONS_SHOWN = 20


def register(blueprint: Blueprint) -> None:
    @blueprint.context_processor
    async def wsdm_device() -> dict[str, Any]:
        if request.endpoint != "portal.device_page":
            return {}
        args = request.view_args or {}
        try:
            who = await session_principal()
            store = service().store
            status = await wsdm.device_status(store, who, args["organisation"], args["device"])
            locations = await wsdm.device_locations(
                store, who, args["organisation"], args["device"], LOCATIONS_SHOWN, 0
            )
        except DomainError:
            return {}  # the page itself answers for sessions and organisations
        return {"wsdm": status | {"locations": locations["items"]}}
