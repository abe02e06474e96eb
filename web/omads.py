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
from quart import Blueprint, Response, request

from engine.actors import start_listener
from engine.config import Bootstrap
from engine.omads import DsRequest, DsResponse, OmadsSessionLogic, known_sync_id, refuse_unknown
from engine.protocols import syncml

from .context import ServiceContext, service
from .edge import ask_device_session
from .syncml_http import answer_errors_in_plain_text, parse_syncml, plain_text

PROTOCOL = "oma_ds"

blueprint = Blueprint("omads", __name__)
log = logging.getLogger(__name__)


answer_errors_in_plain_text(blueprint, "OMA DS")


@blueprint.post("/omads")
async def omads() -> Response:
    content_type = request.headers.get("Content-Type", "")
    try:
        wbxml = syncml.is_wbxml(content_type)
        body = await request.get_data(as_text=False)
        message = await parse_syncml(body, content_type)
    except syncml.SyncmlError as exc:
        status = 415 if exc.status == syncml.UNSUPPORTED_MEDIA_TYPE else 400
        if exc.status == syncml.REQUEST_ENTITY_TOO_LARGE:
            status = 413
        return plain_text(status, f"SyncML status {exc.status}: {exc}")
    base_url = request.base_url.rstrip("/")
    if request.headers.get("X-Forwarded-Proto") is None and request.scheme:
        base_url = f"{request.scheme}://{request.host}{request.path}"
    sync_id = message.header.source.loc_uri
    ds_request = DsRequest(message, wbxml, request.args.get("s"), base_url)
    context = service()
    if await known_sync_id(context.store, sync_id):
        reply: DsResponse = await ask_device_session(PROTOCOL, sync_id, ds_request)
    else:  # a device id nobody knows: no actor is started for it
        reply = await refuse_unknown(context.store, context.deployment, ds_request)
    return Response(reply.body, status=200, content_type=syncml.content_type(reply.wbxml))


async def start(nursery: trio.Nursery, context: ServiceContext, bootstrap: Bootstrap) -> None:
    """Start the OMA DS listener with one DeviceSession actor per sync client."""
    store, deployment = context.store, context.deployment
    context.listeners[PROTOCOL] = await start_listener(
        nursery,
        PROTOCOL,
        lambda key: OmadsSessionLogic(store, deployment),
        session_capacity=bootstrap.limits.mailbox_capacity,
        session_idle=bootstrap.limits.session_idle_seconds,
    )
