"""``/api/v1``: commands to devices (lock, wipe, locate...), one device or many at once."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import commands as domain
from engine.listing import ListQuery
from engine.principals import Principal

from ..context import service
from .operations import PREFIX, operation
from .schema import (
    array,
    component,
    enum,
    integer,
    nullable,
    obj,
    page_of,
    string,
    timestamp,
)

blueprint = Blueprint("api_commands", __name__)

_KINDS = enum(*(kind.value for kind in domain.CommandKind))
_STATES = [state.value for state in domain.State]


def _describe_parameters() -> str:
    """Each kind's parameters, from the same table the domain checks them with."""
    lines = []
    for spec in domain.KINDS.values():
        described = [parameter.describe() for parameter in spec.parameters]
        lines.append(f"{spec.kind}: {'; '.join(described) if described else 'none'}")
    return "Parameters per kind. " + " | ".join(lines)


_PARAMETERS = obj({}, extra=True) | {"description": _describe_parameters()}
COMMAND = component(
    "Command",
    obj(
        {
            "id": string(),
            "device_id": string(),
            "kind": _KINDS,
            "parameters": obj({}, extra=True),
            "state": enum(*_STATES),
            "result": nullable(obj({}, extra=True)),
            "batch_id": nullable(string()),
            "created_by": nullable(string()),
            "created_at": timestamp(),
            "updated_at": timestamp(),
            "sent_at": nullable(timestamp()),
            "completed_at": nullable(timestamp()),
        },
        "id",
        "device_id",
        "kind",
        "parameters",
        "state",
        "result",
        "batch_id",
        "created_by",
        "created_at",
        "updated_at",
        "sent_at",
        "completed_at",
    ),
)


COMMAND_PAGE = component("CommandPage", page_of(COMMAND))
BATCH = component(
    "CommandBatch",
    obj(
        {
            "batch_id": string(),
            "kind": _KINDS,
            "created_at": timestamp(),
            "total": integer(minimum=0),
            "counts": obj({state: integer(minimum=0) for state in _STATES}, *_STATES),
        },
        "batch_id",
        "kind",
        "created_at",
        "total",
        "counts",
    ),
)
QUEUED_BATCH = component(
    "QueuedBatch",
    obj(
        {
            "batch_id": string(),
            "kind": _KINDS,
            "queued": integer(minimum=1),
            "skipped": array(string(), description="devices that take no commands (removed…)"),
        },
        "batch_id",
        "kind",
        "queued",
        "skipped",
    ),
)
_IDS = array(string(minLength=1, maxLength=64), maxItems=domain.MAX_BULK_DEVICES)


def _location(organisation: str, tail: str) -> dict[str, str]:
    return {"Location": f"{PREFIX}/organisations/{organisation}/{tail}"}


@operation(
    blueprint,
    "POST",
    "/organisations/{organisation}/devices/{device}/commands",
    summary="Queue a command for one device (owners: self-service kinds, own devices)",
    tag="commands",
    body=obj({"kind": _KINDS, "parameters": _PARAMETERS}, "kind"),
    example={"kind": "lock", "parameters": {"message": "Found me? Please call the service desk"}},
    responses={201: COMMAND},
)
async def queue_command(
    who: Principal, organisation: str, device: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    command = await domain.queue_command(
        service().store,
        who,
        organisation,
        device,
        body["kind"],
        body.get("parameters", {}),
        wakeups=service().wakeups,
    )
    return command, 201, _location(organisation, f"commands/{command['id']}")


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/devices/{device}/commands",
    summary="One device's commands, newest first",
    tag="commands",
    listing=domain.COMMAND_LIST,
    responses={200: COMMAND_PAGE},
)
async def device_commands(
    who: Principal, organisation: str, device: str, query: ListQuery
) -> dict[str, Any]:
    page = await domain.device_commands(service().store, who, organisation, device, query)
    return page.as_json()


@operation(
    blueprint,
    "POST",
    "/organisations/{organisation}/commands",
    summary="Queue one command for many devices: named ones and members of groups (a batch)",
    tag="commands",
    body=obj(
        {"kind": _KINDS, "parameters": _PARAMETERS, "device_ids": _IDS, "group_ids": _IDS},
        "kind",
    ),
    example={"kind": "lock", "parameters": {}, "device_ids": ["{device}"]},
    responses={201: QUEUED_BATCH},
)
async def queue_bulk(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    batch = await domain.queue_bulk(
        service().store,
        who,
        organisation,
        body["kind"],
        body.get("parameters", {}),
        device_ids=body.get("device_ids", ()),
        group_ids=body.get("group_ids", ()),
        wakeups=service().wakeups,
    )
    return batch, 201, _location(organisation, f"command-batches/{batch['batch_id']}")


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/commands",
    summary="The organisation's commands (owners: their devices' only), newest first",
    tag="commands",
    listing=domain.COMMAND_LIST,
    responses={200: COMMAND_PAGE},
)
async def organisation_commands(
    who: Principal, organisation: str, query: ListQuery
) -> dict[str, Any]:
    page = await domain.organisation_commands(service().store, who, organisation, query)
    return page.as_json()


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/commands/{command}",
    summary="One command, with its state and the device's result",
    tag="commands",
    responses={200: COMMAND},
)
async def get_command(who: Principal, organisation: str, command: str) -> dict[str, Any]:
    return await domain.get_command(service().store, who, organisation, command)


@operation(
    blueprint,
    "POST",
    "/organisations/{organisation}/commands/{command}/cancel",
    summary="Cancel a queued or sent command (best effort once sent)",
    tag="commands",
    responses={200: COMMAND},
)
async def cancel_command(who: Principal, organisation: str, command: str) -> dict[str, Any]:
    return await domain.cancel_command(service().store, who, organisation, command)


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/command-batches/{batch}",
    summary="How far a bulk command got: its commands counted per state",
    tag="commands",
    responses={200: BATCH},
)
async def batch_status(who: Principal, organisation: str, batch: str) -> dict[str, Any]:
    return await domain.batch_status(service().store, who, organisation, batch)
