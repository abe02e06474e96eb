"""``/api/v1``: what WSDM devices reported, for the device page and integrations.

The WSDM protocol's own device routes (``/api/v1/wsdm/...``) are in ``web/wsdm.py``; these
are account routes like the rest of the API.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import wsdm as domain
from engine.principals import Principal

from ..context import service
from .operations import operation
from .schema import boolean, component, integer, mapping, nullable, page_of, record, string

blueprint = Blueprint("api_wsdm", __name__)

_DEVICE = "/organisations/{organisation}/devices/{device}"

WSDM_STATUS = component(
    "WsdmStatus",
    record(
        {
            "device_id": string(),
            "enrolled": boolean(description="enrolled over WSDM and not unenrolled since"),
            "enrolled_at": nullable(string(format="date-time")),
            "unenrolled_at": nullable(string(format="date-time")),
            "last_checkin_at": nullable(string(format="date-time")),
            "checkins": integer(minimum=0),
            "overdue_since": nullable(
                string(
                    format="date-time",
                    description="set when the device missed three connection intervals",
                )
            ),
            "push_jid": nullable(string(description="the device's XMPP address for push")),
            "inventory": mapping({}, description="the state the device last reported"),
        }
    ),
)
LOCATION = component(
    "WsdmLocation",
    record(
        {
            "latitude": {"type": "number"},
            "longitude": {"type": "number"},
            "accuracy": nullable({"type": "number"}),
            "recorded_at": string(description="when the device took it (its clock)"),
            "received_at": string(format="date-time"),
            "command_id": nullable(string()),
        }
    ),
)


@operation(
    blueprint,
    "GET",
    _DEVICE + "/wsdm",
    summary="A device's WSDM status: enrolment, last check-in, push identity, inventory",
    tag="devices",
    responses={200: WSDM_STATUS},
)
async def get_status(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    return await domain.device_status(service().store, who, organisation, device)


@operation(
    blueprint,
    "GET",
    _DEVICE + "/locations",
    summary="The locations a device reported, newest first",
    description="A device owner sees only locations answering commands queued for them.",
    tag="devices",
    query={
        "limit": integer(minimum=1, maximum=500, default=50),
        "offset": integer(minimum=0, default=0),
    },
    responses={200: component("WsdmLocationPage", page_of(LOCATION))},
)
async def list_locations(
    who: Principal, organisation: str, device: str, limit: int, offset: int
) -> dict[str, Any]:
    return await domain.device_locations(service().store, who, organisation, device, limit, offset)
