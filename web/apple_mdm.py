"""Apple MDM's HTTP side: check-in, the command queue, the enrolment page, the actors.

* ``PUT /mdm/checkin`` (``application/x-apple-aspen-mdm-checkin``) and ``PUT /mdm/server``
  (``application/x-apple-aspen-mdm``): the body is parsed here (sans-IO), the sender's
  identity proven (``Mdm-Signature`` or the TLS client certificate), and the message handed
  to the device's session, which answers. Served by ``web/device_edge.py`` beneath Quart:
  every poll and acknowledgement of a fleet comes through them.
* ``GET``/``POST /mdm/enrol``: a person types an installation code and gets the signed
  enrolment profile (``application/x-apple-aspen-config``).

Errors are the protocol's own: plain ``400`` with a short reason (never ``401``: a device
unenrols on a ``401``), ``410`` for UserAuthenticate, ``503`` when the device's session is
busy.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from quart import Blueprint, Response, request

from engine import apple_mdm as domain
from engine.actors import start_listener
from engine.actors.apns import ApnsNotifier, ClientIdentity, Push
from engine.actors.offload import start_offload
from engine.config import Bootstrap
from engine.errors import DomainError
from engine.installation_codes import InstallationCodeRefused
from engine.protocols import apple_mdm as protocol, mobileconfig
from engine.timestamps import format_time
from engine.wakeups import Waiting

from .client_cert import ClientCertHeaderError
from .context import ServiceContext, authority, service
from .device_edge import DeviceRoute, EdgeRequest, EdgeResponse, Handler
from .edge import ask_device_session
from .requests import client_address

log = logging.getLogger(__name__)

blueprint = Blueprint("apple_mdm", __name__)

M = TypeVar("M")

#: How often the scheduled-notification timer looks for devices due a push.
SCHEDULE_TICK = 60.0


class _BadRequest(Exception):
    pass


def _text(status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> EdgeResponse:
    return EdgeResponse(status, f"{reason}\n".encode(), "text/plain; charset=utf-8", headers)


def _refuse(status: int, reason: str) -> EdgeResponse:
    """What the edge refuses by itself: an oversized message is a 400 like every other bad
    message (never 401, never a status a device could take for "unenrol")."""
    if status == 413:
        return _text(400, "message too large")
    if status == 503:
        return _text(503, reason, (("Retry-After", "1"),))
    return _text(status, reason)


def _mdm(request: EdgeRequest) -> domain.AppleMdm:
    mdm = request.context.apple_mdm
    if mdm is None:
        raise _BadRequest("Apple MDM is not running")
    return mdm


async def _checked(
    request: EdgeRequest, content_type: str, parse: Callable[[bytes], M]
) -> tuple[str, M]:
    """The sender's identity and its message, or a refusal (400)."""
    if request.media_type != content_type:
        raise _BadRequest(f"Content-Type must be {content_type}")
    mdm = _mdm(request)
    signature = request.header(b"mdm-signature")
    if signature is not None:
        return await domain.checked_message(mdm, signature, request.body, parse)
    identity = domain.identity_of(mdm, request.client_certificate())
    return identity, parse(request.body)


def _answer(request: EdgeRequest, answer: domain.Answer) -> EdgeResponse:
    if answer.status != 200:
        log.info("apple mdm: refused %s: %s", request.path, answer.body[:200])
    if not answer.body:
        return EdgeResponse(answer.status)
    return EdgeResponse(answer.status, answer.body, answer.content_type)


async def check_in(request: EdgeRequest) -> EdgeResponse:
    identity, message = await _checked(
        request, protocol.CHECK_IN_CONTENT_TYPE, protocol.parse_check_in
    )
    answer = await ask_device_session(
        domain.PROTOCOL,
        message.channel.device,
        domain.CheckInRequest(message, identity),
        request.context,
    )
    return _answer(request, answer)


async def command_queue(request: EdgeRequest) -> EdgeResponse:
    identity, report = await _checked(request, protocol.SERVER_CONTENT_TYPE, protocol.parse_report)
    answer = await ask_device_session(
        domain.PROTOCOL,
        report.channel.device,
        domain.ReportRequest(report, identity),
        request.context,
    )
    return _answer(request, answer)


def _route(path: str, handler: Handler) -> DeviceRoute:
    async def answer(request: EdgeRequest) -> EdgeResponse:
        try:
            return await handler(request)
        except (
            protocol.ProtocolError,
            domain.Refused,
            DomainError,
            _BadRequest,
            ClientCertHeaderError,
        ) as exc:
            # 400, never 401: a 401 makes the device remove its enrolment.
            log.info("apple mdm: refused %s: %s", request.path, exc)
            return _text(400, str(exc))
        except domain.Gone:
            return EdgeResponse(410)

    return DeviceRoute(path, frozenset({"PUT"}), answer, _refuse, protocol.MAX_MESSAGE_BYTES)


#: The check-in and command-queue routes, served by ``web.device_edge``.
ROUTES = (_route("/mdm/checkin", check_in), _route("/mdm/server", command_queue))


_ENROL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Enrol your Apple device</title></head>
<body><h1>Enrol your Apple device</h1>
<p>Type the installation code you were given, then install the profile.</p>
{problem}
<form method="post" action="/mdm/enrol">
<label>Installation code <input name="code" autocomplete="off" autocapitalize="characters"
 required maxlength="20"></label>
<button type="submit">Get the profile</button></form></body></html>
"""


@blueprint.route("/mdm/enrol", methods=["GET"])
async def enrol_page() -> Response:
    return Response(_ENROL_PAGE.format(problem=""), content_type="text/html; charset=utf-8")


@blueprint.route("/mdm/enrol", methods=["POST"])
async def enrol() -> Response:
    form = await request.form
    code = form.get("code", "")
    mdm = service().apple_mdm
    if mdm is None:
        return Response("Apple MDM is not running\n", 503, content_type="text/plain")
    try:
        profile = await domain.profile_for_code(mdm, code, client_address())
    except (InstallationCodeRefused, DomainError) as exc:
        problem = f"<p role='alert'>{html.escape(str(exc))}</p>"
        return Response(
            _ENROL_PAGE.format(problem=problem), 400, content_type="text/html; charset=utf-8"
        )
    return profile_response(profile)


def profile_response(profile: bytes) -> Response:
    response = Response(profile, 200, content_type=mobileconfig.CONTENT_TYPE)
    response.headers["Content-Disposition"] = 'attachment; filename="enrol.mobileconfig"'
    response.headers["Cache-Control"] = "no-store"  # it holds the device's private key
    return response


# --------------------------------------------------------------------------- start-up


def _load_mdm(context: ServiceContext, bootstrap: Bootstrap) -> domain.AppleMdm:
    tls = bootstrap.tls
    ca = authority(context)
    signer = x509.load_pem_x509_certificate(tls.certificate.read_bytes())
    signer_key = serialization.load_pem_private_key(tls.private_key.read_bytes(), None)
    return domain.AppleMdm(
        store=context.store,
        deployment=context.deployment,
        ca=ca,
        signer=signer,
        signer_key=signer_key,
        sealer=domain.Sealer.from_authority(ca),
    )


def notifier_for(mdm: domain.AppleMdm, bootstrap: Bootstrap) -> ApnsNotifier:
    """The APNs notifier, wired to the store through the domain."""
    store = mdm.store

    async def lookup(device_ids: Sequence[str]) -> list[Push]:
        targets, certificates = await domain.push_targets(store, mdm.deployment, device_ids)
        identities = {
            key: ClientIdentity(key, c.certificate_pem, c.private_key_pem)
            for key, c in certificates.items()
        }
        return [
            Push(t.token, t.push_magic, t.topic, identities[t.certificate_id], t) for t in targets
        ]

    async def refused(push: Push, reason: str) -> None:
        await domain.mark_token_bad(store, push.target, reason)

    async def sent(pushes: list[Push]) -> None:
        await domain.record_pushes(store, [p.target.enrolment_id for p in pushes])

    ca = bootstrap.apns.ca_certificate
    return ApnsNotifier(
        bootstrap.apns.base_url, lookup, refused, sent, ca_file=str(ca) if ca else None
    )


async def _schedule(mdm: domain.AppleMdm, notifier: ApnsNotifier) -> None:
    """Scheduled notifications: push devices whose organisation asks for them."""

    def cutoff(minutes: int) -> str:
        return format_time(datetime.now(UTC) - timedelta(minutes=minutes))

    while True:
        await trio.sleep(SCHEDULE_TICK)
        try:
            due = await domain.scheduled_devices(mdm.store, mdm.deployment, cutoff)
        except Exception:
            log.exception("apple mdm: scheduled notifications failed")
            continue
        if due:
            notifier.wake(due)


async def start_apple_mdm(
    nursery: trio.Nursery, context: ServiceContext, bootstrap: Bootstrap
) -> None:
    mdm = await trio.to_thread.run_sync(_load_mdm, context, bootstrap)
    mdm.offload = await start_offload(nursery, "apple-mdm-offload")
    notifier = notifier_for(mdm, bootstrap)
    await nursery.start(notifier.run)
    mdm.push = notifier.wake

    def woken(waiting: Sequence[Waiting]) -> None:
        mine = [w.device_id for w in waiting if w.protocol == domain.PROTOCOL]
        if mine:
            notifier.wake(mine)

    context.wakeups.subscribe(woken)
    context.apple_mdm = mdm
    context.listeners[domain.PROTOCOL] = await start_listener(
        nursery,
        domain.PROTOCOL,
        lambda key: domain.AppleSession(mdm, key),
        session_capacity=bootstrap.limits.mailbox_capacity,
        session_idle=bootstrap.limits.session_idle_seconds,
    )
    nursery.start_soon(_schedule, mdm, notifier)
