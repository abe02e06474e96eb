"""Microsoft's Windows enrolment services over HTTP (MS-MDE2), under ``/EnrollmentServer/``.

* ``GET /EnrollmentServer/Discovery.svc``: Windows probes the address first; an empty 200
  says the service is here.
* ``POST /EnrollmentServer/Discovery.svc``, ``/Policy.svc``, ``/Enrollment.svc``: SOAP 1.2
  (``application/soap+xml``); every error, including ours, is a SOAP fault, never HTML.
* ``GET``/``POST /EnrollmentServer/Login``: the Federated auth policy's sign-in page. Windows
  opens it in its web authentication broker with ``appru`` (its ``ms-app://`` return
  address) and ``login_hint``; after a good sign-in the page posts the one-time token as
  ``wresult`` to ``appru``, as "Federated authentication device enrollment" describes.
"""

from __future__ import annotations

import html
import logging

from quart import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from engine.protocols import windows_enrolment as wire
from engine.windows_enrolment import Answer, WindowsEnrolment

from .client_cert import request_client_certificate
from .context import authority, service
from .requests import client_address

log = logging.getLogger(__name__)

blueprint = Blueprint("windows_enrolment", __name__, url_prefix="/EnrollmentServer")

SOAP_TYPE = "application/soap+xml; charset=utf-8"
_SIGN_IN_FORM_LIMIT = 8 * 1024


def _enrolment() -> WindowsEnrolment:
    context = service()
    return WindowsEnrolment(context.store, context.deployment, authority(context))


def _soap(answer: Answer) -> Response:
    # Windows refuses chunked answers: Quart sends a bytes body with Content-Length.
    return Response(answer.body, status=answer.status, content_type=SOAP_TYPE)


def _fault(subcode: wire.Subcode, reason: str, *, action: str = wire.ACTION_FAULT) -> Response:
    return _soap(Answer(500, wire.fault_response(None, wire.Fault(subcode, reason), action=action)))


async def _envelope_bytes() -> bytes | Response:
    if request.mimetype != "application/soap+xml":
        return _fault(wire.Subcode.MESSAGE_FORMAT, "send the message as application/soap+xml")
    if (request.content_length or 0) > wire.MAX_ENVELOPE:
        return _fault(wire.Subcode.MESSAGE_FORMAT, "the message is too large")
    return await request.get_data(as_text=False)


@blueprint.get("/Discovery.svc")
async def discovery_probe() -> Response:
    return Response(b"", status=200, content_type="text/html")


@blueprint.post("/Discovery.svc")
async def discovery() -> Response:
    body = await _envelope_bytes()
    if isinstance(body, Response):
        return body
    return _soap(await _enrolment().discover(body))


@blueprint.post("/Policy.svc")
async def policy() -> Response:
    body = await _envelope_bytes()
    if isinstance(body, Response):
        return body
    return _soap(await _enrolment().get_policies(body, source=client_address()))


@blueprint.post("/Enrollment.svc")
async def enrolment() -> Response:
    body = await _envelope_bytes()
    if isinstance(body, Response):
        return body
    certificate = request_client_certificate(request, service().trusted_proxies)
    answer = await _enrolment().enrol(body, client_certificate=certificate, source=client_address())
    return _soap(answer)


# --------------------------------------------------------------------------- Federated


def _page(title: str, content: str, status: int = 200) -> Response:
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title></head><body>{content}</body></html>"
    )
    response = Response(page, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'unsafe-inline'; form-action 'self' ms-app:"
    )
    return response


def _return_address(appru: str | None) -> str | None:
    """Only Windows' own ``ms-app://`` return address: the token must go nowhere else."""
    if appru and appru.startswith("ms-app://") and appru.isprintable() and len(appru) < 512:
        return appru
    return None


def _sign_in_form(appru: str, login_hint: str, message: str = "", status: int = 200) -> Response:
    e = html.escape
    error = f"<p role='alert'>{e(message)}</p>" if message else ""
    return _page(
        "Enrol this device",
        "<h1>Enrol this device</h1>"
        f"{error}<form method='post' action='Login'>"
        f"<input type='hidden' name='appru' value='{e(appru)}'>"
        "<p><label>User (login@organisation)<br>"
        f"<input name='username' value='{e(login_hint)}' autocomplete='username' required>"
        "</label></p><p><label>Password<br>"
        "<input name='password' type='password' autocomplete='current-password' required>"
        "</label></p><p><button type='submit'>Sign in</button></p></form>",
        status,
    )


@blueprint.get("/Login")
async def sign_in_page() -> Response:
    appru = _return_address(request.args.get("appru"))
    if appru is None:
        return _page("Enrol this device", "<p>Start the enrolment from Windows.</p>", 400)
    return _sign_in_form(appru, request.args.get("login_hint", "")[:320])


@blueprint.post("/Login")
async def sign_in() -> Response:
    if (request.content_length or 0) > _SIGN_IN_FORM_LIMIT:
        return _page("Enrol this device", "<p>The form is too large.</p>", 413)
    form = await request.form
    appru = _return_address(form.get("appru"))
    if appru is None:
        return _page("Enrol this device", "<p>Start the enrolment from Windows.</p>", 400)
    username = form.get("username", "")
    try:
        token = await _enrolment().federated_sign_in(
            username, form.get("password", ""), client_address()
        )
    except wire.Fault as fault:
        return _sign_in_form(appru, username, fault.reason, 401)
    e = html.escape
    return _page(
        "Working...",
        f"<form method='post' action='{e(appru)}'>"
        f"<input type='hidden' name='wresult' value='{e(token)}'>"
        "<noscript><button type='submit'>Continue</button></noscript></form>"
        "<script>document.forms[0].submit();</script>",
    )


# --------------------------------------------------------------------------- errors


@blueprint.errorhandler(HTTPException)
async def http_error(exc: HTTPException) -> Response:
    return _fault(wire.Subcode.MESSAGE_FORMAT, exc.description or exc.name)


@blueprint.errorhandler(Exception)
async def unexpected(exc: Exception) -> Response:
    log.exception("Windows enrolment request failed")
    return _fault(wire.Subcode.INTERNAL_SERVICE_FAULT, "the server hit an unexpected problem")
