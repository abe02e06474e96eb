"""``/Microsoft-Server-ActiveSync``: Exchange ActiveSync over HTTP (MS-ASHTTP).

``OPTIONS`` tells the protocol versions and commands; ``POST`` carries one command. The
route checks what it can without the device's state (the Basic credentials, against the
sessions' cache of verified ones, before the body is read; the request line; the WBXML
body) and hands the rest to the device's DeviceSession actor
(:class:`engine.activesync.EasSessionLogic`). A Ping the session parks comes back as a
:class:`~engine.activesync.Parked` slot; the route then waits for it up to the heartbeat
(plus a margin), not the edge's usual deadline, holding no thread and no task of its own
beyond the request's. Errors are ActiveSync's: HTTP statuses of MS-ASHTTP, no JSON.
"""

from __future__ import annotations

import base64
import binascii
import weakref

import trio
from quart import Blueprint, Response, request

from engine.activesync import (
    IMPLEMENTED,
    NOTHING_CHANGED,
    PROTOCOL,
    RESUME,
    Backend,
    EasCall,
    EasReply,
    EasSessionLogic,
    Parked,
    ping_changes,
    wbxml_reply,
)
from engine.actors import ActorError, MailboxFull, start_listener
from engine.actors.eas_pings import PingBoard, sweep
from engine.config import Bootstrap
from engine.protocols import activesync as eas
from engine.protocols.activesync import el
from engine.protocols.activesync_tables import PING
from engine.store import activesync as db

from .context import ServiceContext, service
from .edge import ask_device_session
from .requests import client_address

blueprint = Blueprint("activesync", __name__)
PATH = "/Microsoft-Server-ActiveSync"
#: How long past its heartbeat a parked Ping is waited for before it is answered here.
PING_MARGIN = 30.0
#: Device sessions outlive the longest heartbeat, so a parked Ping is never passivated.
SESSION_IDLE = 3700.0
#: Bodies larger than this are decoded on a worker thread, not on the service's event loop.
THREAD_DECODE_BYTES = 64 * 1024
#: Each running service's Backend (by its context's id): the route checks the credentials
#: with the sessions' cache of verified ones before it reads anything else of a request.
_BACKENDS: weakref.WeakValueDictionary[int, Backend] = weakref.WeakValueDictionary()


def _response(reply: EasReply) -> Response:
    response = Response(reply.body, status=reply.status)
    for name, value in reply.headers:
        response.headers[name] = value
    response.headers["MS-Server-ActiveSync"] = eas.SERVER_VERSION
    if not reply.body:
        response.headers.pop("Content-Type", None)
    return response


def _credentials() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep and user else None


#: Commands whose protocol 12.1 body is the message itself (``message/rfc822``).
RAW_MESSAGE_COMMANDS = ("SendMail", "SmartReply", "SmartForward")
_UNAUTHORISED = EasReply(401, b"", (("WWW-Authenticate", 'Basic realm="ActiveSync"'),))


@blueprint.route(PATH, methods=["OPTIONS"])
async def options() -> Response:
    credentials = _credentials()
    if credentials is None or not await _signed_in(credentials):
        return _response(_UNAUTHORISED)
    headers = eas.options_headers()
    headers["MS-ASProtocolCommands"] = ",".join(c for c in eas.COMMANDS if c in IMPLEMENTED)
    return _response(EasReply(200, b"", tuple(headers.items())))


@blueprint.route(PATH, methods=["POST"])
async def post() -> Response:
    credentials = _credentials()
    if credentials is None or not await _signed_in(credentials):
        return _response(_UNAUTHORISED)
    try:
        query = eas.parse_request_line(request.query_string.decode("latin-1"), request.headers)
        length = request.content_length
        if length is not None and length > eas.MAX_BODY_BYTES:
            raise eas.EasError("the request body is too large", eas.INVALID_CONTENT, 413)
        data = await request.get_data(as_text=False)
        raw = None
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if query.command in RAW_MESSAGE_COMMANDS and content_type == "message/rfc822":
            raw, data = data, b""  # protocol 12.1 sends the message itself
        body = await _decode(data) if data else None
    except eas.EasError as exc:
        return _response(
            EasReply(
                exc.http, f"{exc}\n".encode(), (("Content-Type", "text/plain; charset=utf-8"),)
            )
        )
    if query.command not in IMPLEMENTED:
        return _response(EasReply(501))
    user, password = credentials
    key = f"{user.lower()}|{query.device_id}"
    call = EasCall(query, user, password, body, client_address(), raw)
    reply = await ask_device_session(PROTOCOL, key, call)
    if isinstance(reply, Parked):
        parked = reply
        reply = await _wait(parked)
        if reply is RESUME and parked.resume is not None:
            # A watched folder changed under a Sync with Wait: run it now, without the wait.
            reply = await ask_device_session(PROTOCOL, key, parked.resume)
            if isinstance(reply, Parked):
                reply = NOTHING_CHANGED
    return _response(reply)


async def _signed_in(credentials: tuple[str, str]) -> bool:
    """Whether the request's Basic credentials open an account: checked before its body is
    read or decoded, so nobody without them makes the service parse WBXML. Verified
    credentials are cached, so a device's every request costs no password hash."""
    return await _BACKENDS[id(service())].verify(*credentials) is not None


async def _decode(data: bytes) -> eas.Element:
    """The WBXML body; a large one on a worker thread so the loop keeps serving others."""
    if len(data) > THREAD_DECODE_BYTES:
        return await trio.to_thread.run_sync(eas.decode, data)
    return eas.decode(data)


async def _wait(parked: Parked) -> EasReply:
    """The parked request's answer, or the one for a heartbeat over, should the board's
    sweeper be late by more than the margin."""
    with trio.move_on_after(parked.heartbeat + PING_MARGIN):
        return await parked.slot.wait()
    return _answer("expired", (), False, parked.resume is not None)


@blueprint.errorhandler(MailboxFull)
@blueprint.errorhandler(trio.TooSlowError)
async def busy(_: Exception) -> Response:
    return _response(EasReply(503, b"", (("Retry-After", "30"),)))


@blueprint.errorhandler(ActorError)
async def failed(_: Exception) -> Response:
    return _response(EasReply(500))


def _answer(kind: str, folders: object, before_14: bool, sync: bool) -> EasReply:
    """What a parked Ping (or Sync with Wait) is answered with when the board settles it: a
    Ping is told the folders that changed, or status 1; a Sync runs again (RESUME) or ends
    empty."""
    if sync:
        return NOTHING_CHANGED if kind == "expired" else RESUME
    if kind == "changes":
        return ping_changes(list(folders))  # type: ignore[call-overload]
    if kind == "hierarchy":  # the folders changed: FolderSync first (MS-ASCMD Ping 7)
        return wbxml_reply(el(PING, "Ping", el(PING, "Status", "7")))
    return wbxml_reply(el(PING, "Ping", el(PING, "Status", "1")))


async def start(nursery: trio.Nursery, context: ServiceContext, bootstrap: Bootstrap) -> None:
    """Start the ActiveSync listener, the Ping board's sweeper and its wake-up subscriber."""
    store = context.store
    board = PingBoard(_answer)
    backend = Backend(store, context.deployment, board, authority=context.certificate_authority)
    _BACKENDS[id(context)] = backend
    context.listeners[PROTOCOL] = await start_listener(
        nursery,
        PROTOCOL,
        lambda key: EasSessionLogic(backend, key),
        session_idle=SESSION_IDLE,
    )
    context.wakeups.subscribe(board.wake)
    context.pim_changes.subscribe(board.changed)  # OMA DS: at once, not at the next poll

    async def read_versions(ids: list[str]) -> dict[str, int]:
        return await store.read(db.collection_versions, ids)

    nursery.start_soon(sweep, board, read_versions)
