"""What the SyncML routes (OMA DS at ``/omads``, OMA DM at ``/omadm``) share over HTTP.

Both are served by ``web/device_edge.py``. A message that cannot be read has no SyncML
header to answer to, so those errors are a plain HTTP status with a short text, which sync
clients log, rather than the REST API's problem+json. Parsing happens before anyone is
authenticated: large bodies are parsed in a worker thread, so a few megabytes of XML do not
hold the event loop (every other request of the service waits meanwhile).
"""

from __future__ import annotations

import functools
import logging

import trio

from engine.protocols import syncml

from .device_edge import DeviceRoute, EdgeRequest, EdgeResponse, Handler
from .problems import RETRY_AFTER_BUSY

log = logging.getLogger(__name__)

#: Bodies larger than this are parsed in a worker thread.
PARSE_ON_LOOP_BYTES = 64 * 1024

#: SyncML's status for what could not be read → the HTTP status answering it.
_HTTP_STATUS = {syncml.UNSUPPORTED_MEDIA_TYPE: 415, syncml.REQUEST_ENTITY_TOO_LARGE: 413}


async def parse_syncml(request: EdgeRequest, max_bytes: int) -> tuple[syncml.Message, bool]:
    """The message and whether it came as WBXML (:func:`engine.protocols.syncml.parse_message`,
    off the event loop for large bodies); :class:`syncml.SyncmlError` if it cannot be read."""
    content_type = request.header(b"content-type") or ""
    wbxml = syncml.is_wbxml(content_type)
    parse = functools.partial(syncml.parse_message, request.body, content_type, max_bytes=max_bytes)
    if len(request.body) <= PARSE_ON_LOOP_BYTES:
        return parse(), wbxml
    return await trio.to_thread.run_sync(parse), wbxml


def plain_text(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> EdgeResponse:
    return EdgeResponse(status, (text + "\n").encode(), "text/plain; charset=utf-8", headers)


def _refuse(status: int, reason: str) -> EdgeResponse:
    if status == 503:
        return plain_text(503, reason, (("Retry-After", str(RETRY_AFTER_BUSY)),))
    if status == 413:
        return plain_text(413, "SyncML status 413: the message is too large")
    if status == 500:
        return plain_text(500, "the session failed; start a new one")
    return plain_text(status, reason)


def syncml_route(path: str, handler: Handler, max_bytes: int) -> DeviceRoute:
    """A SyncML service URL: ``POST`` only; a message that cannot be read is refused in
    plain text before any session is bothered."""

    async def answer(request: EdgeRequest) -> EdgeResponse:
        try:
            return await handler(request)
        except syncml.SyncmlError as exc:
            status = _HTTP_STATUS.get(exc.status, 400)
            return plain_text(status, f"SyncML status {exc.status}: {exc}")

    return DeviceRoute(path, frozenset({"POST"}), answer, _refuse, max_bytes)
