"""Browser sessions of the portals: a cookie holding a short-lived token, and CSRF checks.

The cookie carries an API token of the signed-in account (stored hashed, revocable, expiring
after :data:`SESSION_LIFETIME`), so the portals authenticate exactly as the REST API does.
It is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and
Secure, except for plain HTTP on a loopback address where a developer runs the service.

Every form that changes something carries a CSRF token derived from the session secret
(HMAC), which another site cannot compute; the sign-in form, which has no session yet, uses a
random double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from datetime import timedelta
from typing import Any

from quart import Response, request

from engine.auth import authenticate
from engine.errors import Forbidden, Unauthenticated
from engine.principals import Principal

from ..context import service
from ..requests import client_address

SESSION_COOKIE = "emm_session"
LOGIN_CSRF_COOKIE = "emm_login_csrf"
FLASH_COOKIE = "emm_flash"
SESSION_LIFETIME = timedelta(hours=8)


def _secure() -> bool:
    if request.scheme == "https":
        return True
    try:
        return not ipaddress.ip_address(request.host.rsplit(":", 1)[0].strip("[]")).is_loopback
    except ValueError:
        return request.host.split(":")[0] != "localhost"


def set_cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        secure=_secure(),
        samesite="Strict",
        path="/",
    )


def start_session(response: Response, token: str) -> None:
    set_cookie(response, SESSION_COOKIE, token, max_age=int(SESSION_LIFETIME.total_seconds()))


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def session_token() -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


async def session_principal(*, password_change: bool = False) -> Principal:
    """Who this browser is signed in as; Unauthenticated sends it to the sign-in page."""
    token = session_token()
    if token is None:
        raise Unauthenticated("please sign in")
    who = await authenticate(service().store, token, source=client_address())
    if who.password_change_only and not password_change:
        raise Forbidden("change your one-time password first")
    return who


def csrf_token() -> str:
    """The CSRF token of this session (empty without one); forms embed it."""
    token = session_token()
    if token is None:
        return ""
    return hmac.new(token.encode(), b"emm-csrf", hashlib.sha256).hexdigest()


def check_csrf(form: Any) -> None:
    expected = csrf_token()
    if not expected or not hmac.compare_digest(str(form.get("csrf_token", "")), expected):
        raise Forbidden("the form has expired or did not come from this site; try again")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def check_login_csrf(form: Any) -> None:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(str(form.get("csrf_token", "")), cookie):
        raise Forbidden("the sign-in form has expired; try again")


def flash(response: Response, message: str, kind: str = "info") -> None:
    """A one-time message shown on the next page (errors and confirmations)."""
    set_cookie(response, FLASH_COOKIE, f"{kind}:{message}"[:500], max_age=60)


def take_flash() -> tuple[str, str] | None:
    value = request.cookies.get(FLASH_COOKIE)
    if not value or ":" not in value:
        return None
    kind, _, message = value.partition(":")
    return kind, message
