"""WSDM's HTTP routes, under the REST API's base URL: ``/api/v1/wsdm/...``.

These are device routes, not account routes: a device authenticates with the device token
it got at enrolment (``Authorization: Bearer <device token>``), and every answer, errors
included, is a WSDM JSON message (``engine/protocols/wsdm.py``), not problem+json. They are
therefore not in the OpenAPI document of the account API; ``docs/wsdm.md`` documents them.

Check-ins, results and unenrolment go through the device's session actor (one at a time
per device); enrolment has no device yet and calls the domain directly. The protocol's
actors (listener, XMPP notifier, scheduler) are started by :func:`start_wsdm`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio
from quart import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from engine import wsdm, wsdm_schedules
from engine.actors import ActorError, MailboxFull, start_listener
from engine.actors.scheduler import Scheduler, node_name
from engine.actors.xmpp import XmppAccount, XmppNotifier, run_notifier
from engine.config import Bootstrap
from engine.protocols import wsdm as protocol
from engine.protocols.wsdm import ProtocolError
from engine.wakeups import Waiting

from .context import ServiceContext, service
from .edge import ask_device_session
from .requests import client_address

log = logging.getLogger(__name__)

PREFIX = "/api/v1/wsdm"
blueprint = Blueprint("wsdm", __name__, url_prefix=PREFIX)


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    return Response(protocol.encode(body), status=status, content_type=protocol.MEDIA_TYPE)


def _error(error: ProtocolError) -> Response:
    response = Response(
        protocol.error_body(error), status=error.status, content_type=protocol.MEDIA_TYPE
    )
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="wsdm"'
    if error.status == 503:
        response.headers["Retry-After"] = "1"
    return response


@blueprint.errorhandler(ProtocolError)
async def protocol_error(exc: ProtocolError) -> Response:
    return _error(exc)


@blueprint.errorhandler(MailboxFull)
@blueprint.errorhandler(trio.TooSlowError)
async def busy(exc: Exception) -> Response:
    return _error(ProtocolError("busy", "the service is busy; try again shortly", 503))


@blueprint.errorhandler(ActorError)
async def failed(exc: Exception) -> Response:
    log.error("WSDM request failed inside the service: %r", exc)
    return _error(ProtocolError("internal", "the request could not be completed", 500))


@blueprint.errorhandler(HTTPException)
async def http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    name = {413: "too_large", 405: "method_not_allowed"}.get(code, "malformed")
    return _error(ProtocolError(name, exc.description or exc.name, code))


async def _message() -> dict[str, Any]:
    """The request body as a versioned WSDM object.

    An oversized body is read (up to the service's own request limit) before it is refused:
    answering while an HTTP/1.1 client is still sending would leave both sides waiting.
    """
    if request.mimetype != protocol.MEDIA_TYPE:
        raise ProtocolError("malformed", "send the body as application/json", 415)
    return protocol.decode(await request.get_data(as_text=False))


async def _device() -> wsdm.DeviceIdentity:
    context = service()
    return await wsdm.authenticate_device(
        context.store, request.headers.get("Authorization"), context.xmpp
    )


async def _in_session(action: str, device: wsdm.DeviceIdentity, message: Any) -> Any:
    request_ = wsdm.SessionRequest(action, device, message, client_address())
    result = await ask_device_session(wsdm.PROTOCOL, device.device_id, request_)
    return result.unwrap()


@blueprint.post("/enrol")
async def enrol() -> Response:
    message = protocol.parse_enrolment(await _message())
    context = service()
    answer = await wsdm.enrol(
        context.store, context.deployment, context.xmpp, message, source=client_address()
    )
    return _answer(answer, 201)


@blueprint.post("/checkin")
async def check_in() -> Response:
    device = await _device()
    message = protocol.parse_check_in(await _message())
    return _answer(await _in_session("check_in", device, message))


@blueprint.post("/results")
async def results() -> Response:
    device = await _device()
    message = protocol.parse_results(await _message())
    return _answer(await _in_session("results", device, message))


@blueprint.post("/unenrol")
async def unenrol() -> Response:
    device = await _device()
    message = protocol.parse_unenrolment(await _message())
    await _in_session("unenrol", device, message)
    return _answer({"unenrolled": True})


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
