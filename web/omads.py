"""``POST /omads``: the OMA DS 1.2 service URL, SyncML in XML or WBXML.

The route parses the message (so a malformed one is refused before any actor is bothered),
then hands it to the DeviceSession actor of the client's SyncML device id, which runs the
session (:class:`engine.omads.OmadsSessionLogic`). The session continues at the RespURI it
gave (``/omads?s=<token>``). Errors are answered in SyncML's own terms: a message that
cannot be read gets an HTTP error with a short text (there is no header to answer), a
message whose content type is not SyncML gets 415.
"""

from __future__ import annotations

import functools
import logging

import trio
from quart import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from engine.actors import ActorError, MailboxFull, start_listener
from engine.config import Bootstrap
from engine.omads import DsRequest, DsResponse, OmadsSessionLogic, known_sync_id, refuse_unknown
from engine.protocols import syncml

from .context import ServiceContext, service
from .edge import ask_device_session
from .problems import RETRY_AFTER_BUSY

PROTOCOL = "oma_ds"

blueprint = Blueprint("omads", __name__)
log = logging.getLogger(__name__)


#: Bodies larger than this are parsed in a worker thread: parsing happens before anyone is
#: authenticated, and a few megabytes of XML would hold the event loop for a noticeable
#: time (every other request of the service waits meanwhile).
PARSE_ON_LOOP_BYTES = 64 * 1024


async def parse_syncml(
    body: bytes, content_type: str, max_bytes: int = syncml.MAX_MESSAGE_BYTES
) -> syncml.Message:
    """:func:`engine.protocols.syncml.parse_message`, off the event loop for large bodies."""
    parse = functools.partial(syncml.parse_message, body, content_type, max_bytes=max_bytes)
    if len(body) <= PARSE_ON_LOOP_BYTES:
        return parse()
    return await trio.to_thread.run_sync(parse)


def _text(status: int, text: str) -> Response:
    return Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")


# Errors before a SyncML header could be read have no SyncML answer: a plain HTTP status
# with a short text, which sync clients log, rather than the REST API's problem+json.


@blueprint.errorhandler(HTTPException)
async def http_error(exc: HTTPException) -> Response:
    return _text(exc.code or 400, exc.description or exc.name)


@blueprint.errorhandler(MailboxFull)
@blueprint.errorhandler(trio.TooSlowError)
async def busy(exc: Exception) -> Response:
    response = _text(503, "the service is busy; try again shortly")
    response.headers["Retry-After"] = str(RETRY_AFTER_BUSY)
    return response


@blueprint.errorhandler(ActorError)
async def failed(exc: ActorError) -> Response:
    log.error("OMA DS request failed inside the service: %r", exc)
    return _text(500, "the sync session failed; start a new one")


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
        return _text(status, f"SyncML status {exc.status}: {exc}")
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
