"""``POST /omads``: the OMA DS 1.2 service URL, SyncML in XML or WBXML.

The route parses the message (so a malformed one is refused before any actor is bothered),
then hands it to the DeviceSession actor of the client's SyncML device id, which runs the
session (:class:`engine.omads.OmadsSessionLogic`). The session continues at the RespURI it
gave (``/omads?s=<token>``). Errors are answered in SyncML's own terms: a message that
cannot be read gets an HTTP error with a short text (there is no header to answer), a
message whose content type is not SyncML gets 415.
"""

from __future__ import annotations

import logging

import trio

from engine.actors import start_listener
from engine.config import Bootstrap
from engine.omads import DsRequest, DsResponse, OmadsSessionLogic, known_sync_id, refuse_unknown
from engine.protocols import syncml

from .context import ServiceContext
from .device_edge import EdgeRequest, EdgeResponse
from .edge import ask_device_session
from .syncml_http import parse_syncml, syncml_route

PROTOCOL = "oma_ds"

log = logging.getLogger(__name__)


async def omads(request: EdgeRequest) -> EdgeResponse:
    message, wbxml = await parse_syncml(request, syncml.MAX_MESSAGE_BYTES)
    sync_id = message.header.source.loc_uri
    ds_request = DsRequest(message, wbxml, request.query("s"), request.url)
    context = request.context
    if await known_sync_id(context.store, sync_id):
        reply: DsResponse = await ask_device_session(PROTOCOL, sync_id, ds_request, context)
    else:  # a device id nobody knows: no actor is started for it
        reply = await refuse_unknown(context.store, context.deployment, ds_request)
    return EdgeResponse(200, reply.body, syncml.content_type(reply.wbxml))


#: The OMA DS service URL, served by ``web.device_edge``.
ROUTES = (syncml_route("/omads", omads, syncml.MAX_MESSAGE_BYTES),)


async def start(nursery: trio.Nursery, context: ServiceContext, bootstrap: Bootstrap) -> None:
    """Start the OMA DS listener with one DeviceSession actor per sync client."""
    store, deployment = context.store, context.deployment
    context.listeners[PROTOCOL] = await start_listener(
        nursery,
        PROTOCOL,
        lambda key: OmadsSessionLogic(store, deployment, context.pim_changes),
        session_capacity=bootstrap.limits.mailbox_capacity,
        session_idle=bootstrap.limits.session_idle_seconds,
    )
