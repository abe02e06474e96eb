"""WSDM's HTTP routes, under the REST API's base URL: ``/api/v1/wsdm/...``.

These are device routes, not account routes: a device authenticates with the device token
it got at enrolment (``Authorization: Bearer <device token>``), and every answer, errors
included, is a WSDM JSON message (``engine/protocols/wsdm.py``), not problem+json. They are
therefore not in the OpenAPI document of the account API; ``docs/wsdm.md`` documents them.

Check-ins, results and unenrolment go through the device's session actor (one at a time
per device); enrolment has no device yet and calls the domain directly. The routes are
served by ``web/device_edge.py`` beneath Quart (the check-in is the fleet's hot path). The
protocol's actors (listener, XMPP notifier, scheduler) are started by :func:`start_wsdm`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from engine import wsdm, wsdm_schedules
from engine.actors import start_listener
from engine.actors.scheduler import Scheduler, node_name
from engine.actors.xmpp import XmppAccount, XmppNotifier, run_notifier
from engine.config import Bootstrap
from engine.protocols import wsdm as protocol
from engine.protocols.wsdm import ProtocolError
from engine.wakeups import Waiting

from .context import ServiceContext
from .device_edge import DeviceRoute, EdgeRequest, EdgeResponse, Handler
from .edge import ask_device_session

log = logging.getLogger(__name__)

PREFIX = "/api/v1/wsdm"


def _answer(body: dict[str, Any], status: int = 200) -> EdgeResponse:
    return EdgeResponse(status, protocol.encode(body), protocol.MEDIA_TYPE)


def _error(error: ProtocolError) -> EdgeResponse:
    headers: tuple[tuple[str, str], ...] = ()
    if error.status == 401:
        headers = (("WWW-Authenticate", 'Bearer realm="wsdm"'),)
    elif error.status == 503:
        headers = (("Retry-After", "1"),)
    elif error.status == 429 and "retry_after" in error.extra:
        headers = (("Retry-After", str(error.extra["retry_after"])),)
    return EdgeResponse(error.status, protocol.error_body(error), protocol.MEDIA_TYPE, headers)


#: What the edge refuses by itself, in WSDM's words; any other status is ``refused``.
_REFUSALS = {
    405: "method_not_allowed",
    408: "too_slow",
    413: "too_large",
    429: "throttled",
    500: "internal",
    503: "busy",
}


def _refuse(status: int, reason: str) -> EdgeResponse:
    return _error(ProtocolError(_REFUSALS.get(status, "refused"), reason, status))


def _message(request: EdgeRequest) -> dict[str, Any]:
    """The request body as a versioned WSDM object."""
    if request.media_type != protocol.MEDIA_TYPE:
        raise ProtocolError("malformed", "send the body as application/json", 415)
    return protocol.decode(request.body)


async def _device(request: EdgeRequest) -> wsdm.DeviceIdentity:
    context = request.context
    return await wsdm.authenticate_device(
        context.store, request.header(b"authorization"), context.xmpp
    )


async def _in_session(
    request: EdgeRequest, action: str, device: wsdm.DeviceIdentity, message: Any
) -> Any:
    request_ = wsdm.SessionRequest(action, device, message, request.client_address())
    result = await ask_device_session(wsdm.PROTOCOL, device.device_id, request_, request.context)
    return result.unwrap()


async def enrol(request: EdgeRequest) -> EdgeResponse:
    message = protocol.parse_enrolment(_message(request))
    context = request.context
    answer = await wsdm.enrol(
        context.store,
        context.deployment,
        context.xmpp,
        message,
        source=request.client_address(),
    )
    return _answer(answer, 201)


async def check_in(request: EdgeRequest) -> EdgeResponse:
    device = await _device(request)
    message = protocol.parse_check_in(_message(request))
    return _answer(await _in_session(request, "check_in", device, message))


async def results(request: EdgeRequest) -> EdgeResponse:
    device = await _device(request)
    message = protocol.parse_results(_message(request))
    return _answer(await _in_session(request, "results", device, message))


async def unenrol(request: EdgeRequest) -> EdgeResponse:
    device = await _device(request)
    message = protocol.parse_unenrolment(_message(request))
    await _in_session(request, "unenrol", device, message)
    return _answer({"unenrolled": True})


def _route(path: str, handler: Handler) -> DeviceRoute:
    async def answer(request: EdgeRequest) -> EdgeResponse:
        try:
            return await handler(request)
        except ProtocolError as exc:
            return _error(exc)

    return DeviceRoute(PREFIX + path, frozenset({"POST"}), answer, _refuse, protocol.MAX_BODY)


#: WSDM's routes, served by ``web.device_edge``.
ROUTES = (
    _route("/enrol", enrol),
    _route("/checkin", check_in),
    _route("/results", results),
    _route("/unenrol", unenrol),
)


# --------------------------------------------------------------------------- actors


async def start_wsdm(nursery: trio.Nursery, context: ServiceContext, bootstrap: Bootstrap) -> None:
    """The listener with the device sessions; with XMPP configured, the notifier (woken by
    queued commands) and the scheduler."""
    notifier: XmppNotifier | None = None
    if bootstrap.xmpp is not None:
        account = XmppAccount(
            bootstrap.xmpp.jid, bootstrap.xmpp.password, bootstrap.xmpp.host, bootstrap.xmpp.port
        )
        notifier = await nursery.start(run_notifier, XmppNotifier(account))
        context.xmpp = notifier
        domain = account.domain

        def wake(waiting: Sequence[Waiting]) -> None:
            notifier.push(
                wsdm.push_jid(w.device_id, domain) for w in waiting if w.protocol == wsdm.PROTOCOL
            )

        def push(device_ids: Sequence[str]) -> None:
            notifier.push(wsdm.push_jid(device_id, domain) for device_id in device_ids)

        context.wakeups.subscribe(wake)
    context.listeners[wsdm.PROTOCOL] = await start_listener(
        nursery,
        wsdm.PROTOCOL,
        lambda _key: wsdm.WsdmSession(context.store, context.deployment, context.xmpp),
        session_idle=bootstrap.limits.session_idle_seconds,
    )
    scheduler = Scheduler(
        partial(
            wsdm_schedules.run_schedules,
            context.store,
            context.deployment,
            node_name(),
            push if notifier is not None else None,
        )
    )
    await nursery.start(scheduler.run)
