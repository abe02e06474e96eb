"""``/api/v1``: messages an organisation broadcasts to its device owners."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import messages as domain
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
    record,
    string,
    timestamp,
)

blueprint = Blueprint("api_messages", __name__)

_MESSAGES = "/organisations/{organisation}/messages"
_MESSAGE = _MESSAGES + "/{message}"

_TITLE = string(minLength=1, maxLength=domain.MAX_TITLE)
_BODY = string(maxLength=domain.MAX_BODY, description="plain text; line breaks are kept")
_SEVERITY = enum(*domain.SEVERITIES)
_SHOWN = {
    "id": string(),
    "title": string(),
    "body": string(description="plain text (never markup); line breaks are \\n"),
    "severity": _SEVERITY,
    "valid_from": timestamp(),
    "valid_until": nullable(timestamp(description="shown until then (exclusive)")),
    "created_at": timestamp(),
}
MESSAGE = component(
    "Message",
    record(
        {
            **_SHOWN,
            "audience": enum(
                *domain.AUDIENCES,
                description="all: every device owner; groups: owners of devices in groups",
            ),
            "groups": array(record({"id": string(), "name": string()})),
            "state": enum(*domain.STATES, description="at the time of the answer"),
            "created_by": nullable(record({"id": string(), "login": string()})),
            "withdrawn_at": nullable(timestamp()),
        }
    ),
)
OWNER_MESSAGE = component("OwnerMessage", record(_SHOWN))


@operation(
    blueprint,
    "POST",
    _MESSAGES,
    summary="Post a message to the organisation's device owners",
    description="Needs the commands right. audience all (the default) reaches every device "
    "owner; audience groups reaches the owners of the devices in the named device groups. "
    "valid_from defaults to now; without valid_until the message is shown until withdrawn.",
    tag="messages",
    body=obj(
        {
            "title": _TITLE,
            "body": _BODY,
            "severity": _SEVERITY,
            "audience": enum(*domain.AUDIENCES),
            "groups": array(
                string(description="device group id"),
                maxItems=domain.MAX_GROUPS,
                uniqueItems=True,
            ),
            "valid_from": timestamp(),
            "valid_until": nullable(timestamp()),
        },
        "title",
    ),
    responses={201: MESSAGE},
    example={
        "title": "Mail maintenance on Saturday",
        "body": "Mail will be unavailable from 08:00 to 10:00 UTC.\nNo action is needed.",
        "severity": "warning",
        "audience": "groups",
        "groups": ["{group}"],
        "valid_until": "2099-12-31T23:59:59Z",
    },
)
async def post_message(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int, dict[str, str]]:
    posted = await domain.post_message(
        service().store, who, organisation, domain.NewMessage(**body)
    )
    location = f"{PREFIX}{_MESSAGES.replace('{organisation}', organisation)}/{posted['id']}"
    return posted, 201, {"Location": location}


@operation(
    blueprint,
    "GET",
    _MESSAGES,
    summary="The organisation's messages, newest first (managers and system accounts)",
    tag="messages",
    listing=domain.LIST,
    responses={200: page_of(MESSAGE)},
)
async def list_messages(who: Principal, organisation: str, query: ListQuery) -> dict[str, Any]:
    found = await domain.list_messages(service().store, who, organisation, query)
    return found.as_json()


@operation(
    blueprint,
    "GET",
    _MESSAGE,
    summary="One message",
    tag="messages",
    responses={200: MESSAGE},
)
async def get_message(who: Principal, organisation: str, message: str) -> dict[str, Any]:
    return await domain.get_message(service().store, who, organisation, message)


@operation(
    blueprint,
    "POST",
    _MESSAGE + "/withdraw",
    summary="Withdraw a message: device owners no longer see it (again: no change)",
    tag="messages",
    responses={200: MESSAGE},
)
async def withdraw_message(who: Principal, organisation: str, message: str) -> dict[str, Any]:
    return await domain.withdraw_message(service().store, who, organisation, message)


@operation(
    blueprint,
    "GET",
    "/me/messages",
    summary="The messages shown to the signed-in device owner now, newest first",
    description="Of the owner's organisation, for an audience that includes the owner, "
    "within their validity and not withdrawn. Accounts that own no devices get none.",
    tag="messages",
    responses={200: record({"items": array(OWNER_MESSAGE), "total": integer()})},
)
async def my_messages(who: Principal) -> dict[str, Any]:
    items = await domain.my_messages(service().store, who)
    return {"items": items, "total": len(items)}
