"""What the SyncML routes (OMA DS at ``/omads``, OMA DM at ``/omadm``) share over HTTP.

A message that cannot be read has no SyncML header to answer to, so those errors are a
plain HTTP status with a short text, which sync clients log, rather than the REST API's
problem+json. Parsing happens before anyone is authenticated: large bodies are parsed in a
worker thread, so a few megabytes of XML do not hold the event loop (every other request
of the service waits meanwhile).
"""

from __future__ import annotations

import functools
import logging

import trio
from quart import Blueprint, Response
from werkzeug.exceptions import HTTPException

from engine.actors import ActorError, MailboxFull
from engine.protocols import syncml

from .problems import RETRY_AFTER_BUSY

log = logging.getLogger(__name__)

#: Bodies larger than this are parsed in a worker thread.
PARSE_ON_LOOP_BYTES = 64 * 1024


async def parse_syncml(
    body: bytes, content_type: str, max_bytes: int = syncml.MAX_MESSAGE_BYTES
) -> syncml.Message:
    """:func:`engine.protocols.syncml.parse_message`, off the event loop for large bodies."""
    parse = functools.partial(syncml.parse_message, body, content_type, max_bytes=max_bytes)
    if len(body) <= PARSE_ON_LOOP_BYTES:
        return parse()
    return await trio.to_thread.run_sync(parse)


def plain_text(status: int, text: str) -> Response:
    return Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")


def answer_errors_in_plain_text(blueprint: Blueprint, protocol: str) -> None:
    """HTTP errors, a busy service and a failed session, each as a short text."""

    @blueprint.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        return plain_text(exc.code or 400, exc.description or exc.name)

    @blueprint.errorhandler(MailboxFull)
    @blueprint.errorhandler(trio.TooSlowError)
    async def busy(exc: Exception) -> Response:
        response = plain_text(503, "the service is busy; try again shortly")
        response.headers["Retry-After"] = str(RETRY_AFTER_BUSY)
        return response

    @blueprint.errorhandler(ActorError)
    async def failed(exc: ActorError) -> Response:
        log.error("%s request failed inside the service: %r", protocol, exc)
        return plain_text(500, "the session failed; start a new one")
