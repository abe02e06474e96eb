"""``POST /omadm``: the OMA DM 1.2 service URL, SyncML DM in XML or WBXML.

Windows posts here too: the provisioning document of its enrolment names this URL as the
management server (``ADDR``), and Windows adds ``?mode=...&Platform=...``. A request that
presents a TLS client certificate (or an RFC 9440 ``Client-Cert`` header from a trusted
proxy) is a Windows device: the certificate must be one the service's CA issued to an
enrolment still current, which identifies the device; any other certificate is refused
with 403 before the message reaches a session. Without a certificate the message is a plain
OMA DM client's, authenticated in the session (Basic, MD5 or the ``x-syncml-hmac`` header);
the server answers an HMAC client with its own ``x-syncml-hmac`` header, keyed with its
credentials on the device (:mod:`engine.omadm_credentials`, derived once here at start).

The message is parsed here (a malformed one is refused with 400 and a short text before any
actor is bothered) and handed to the DeviceSession actor of the device
(:class:`engine.omadm.OmadmSessionLogic`). Wake-ups: queued commands for ``oma_dm`` devices
are recorded as pending alerts with their package 0 (no push channel reaches them from
here).
"""

from __future__ import annotations

import logging

import trio

from engine.actors import start_listener
from engine.config import Bootstrap
from engine.omadm import (
    PROTOCOL,
    DmRequest,
    DmResponse,
    OmadmSessionLogic,
    error_message,
    known_dm_id,
    record_wakeups,
    refuse_unknown,
)
from engine.omadm_credentials import ServerSecrets
from engine.protocols import omadm as dm, syncml
from engine.wakeups import Waiting
from engine.windows_enrolment import WindowsEnrolment

from .context import ServiceContext, authority
from .device_edge import EdgeRequest, EdgeResponse
from .edge import ask_device_session
from .syncml_http import parse_syncml, syncml_route

log = logging.getLogger(__name__)

HMAC_HEADER = b"x-syncml-hmac"
MAX_BODY = 1024 * 1024
SESSION_IDLE = 60.0


async def omadm(request: EdgeRequest) -> EdgeResponse:
    message, wbxml = await parse_syncml(request, MAX_BODY)
    context = request.context
    certificate = request.client_certificate()
    device = None
    if certificate is not None:
        device = await WindowsEnrolment(
            context.store, context.deployment, authority(context)
        ).device_of_certificate(certificate)
        if device is None:
            refused = error_message(message.header, dm.FORBIDDEN)
            return EdgeResponse(
                403, syncml.encode_message(refused, wbxml), syncml.content_type(wbxml, dm=True)
            )
    dm_id = message.header.source.loc_uri
    dm_request = DmRequest(
        message,
        request.body,
        wbxml,
        None if device is not None else request.query("s"),
        request.url,
        hmac=dm.parse_hmac_header(request.header(HMAC_HEADER)),
        device=device,
        mode=request.query("mode"),
    )
    if device is not None:
        key = f"windows:{device['id']}"
        reply: DmResponse = await ask_device_session(PROTOCOL, key, dm_request, context)
    elif await known_dm_id(context.store, dm_id):
        reply = await ask_device_session(PROTOCOL, f"dm:{dm_id}", dm_request, context)
    else:  # a DevId nobody knows: no actor is started for it
        reply = await refuse_unknown(context.store, dm_request)
    headers = () if reply.hmac is None else ((HMAC_HEADER.decode(), reply.hmac),)
    # With HMAC the server authenticates itself as the client does: in the transport header.
    return EdgeResponse(200, reply.body, syncml.content_type(reply.wbxml, dm=True), headers)


#: The OMA DM service URL, served by ``web.device_edge``.
ROUTES = (syncml_route("/omadm", omadm, MAX_BODY),)


async def start(nursery: trio.Nursery, context: ServiceContext, bootstrap: Bootstrap) -> None:
    """Start the OMA DM listener (one DeviceSession actor per device) and the task that
    records wake-ups for OMA DM devices."""
    store = context.store
    server = ServerSecrets.of(authority(context))  # derived once: the CA key stays put
    # A DM session lasts seconds and the device is back hours later: its actor need not
    # wait long for it (what must last is in the store).
    context.listeners[PROTOCOL] = await start_listener(
        nursery,
        PROTOCOL,
        lambda key: OmadmSessionLogic(store, server),
        session_idle=SESSION_IDLE,
    )
    send, receive = trio.open_memory_channel[list[Waiting]](1024)

    def wake(devices: list[Waiting]) -> None:
        ours = [w for w in devices if w.protocol == PROTOCOL]
        if ours:
            try:
                send.send_nowait(ours)
            except trio.WouldBlock:
                log.warning("OMA DM wake-ups dropped: %d devices", len(ours))

    context.wakeups.subscribe(wake)  # type: ignore[arg-type]

    async def record() -> None:
        async for waiting in receive:
            try:
                await record_wakeups(store, waiting, server)
            except Exception:
                log.exception("recording OMA DM wake-ups failed")

    nursery.start_soon(record)
