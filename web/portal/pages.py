"""Declaring portal pages and actions.

The portals add pages, not logic: a page reads through domain operations, and every form
that changes something is an *action* that names the REST operation doing the same thing
(``api=("POST", "/organisations/{organisation}/devices")``) and calls the same domain
operation. :data:`ACTIONS` lists them, so a test can check that each has its REST twin.

Pages and actions check the session (sign-in page when there is none), actions the CSRF
token too; a domain error in an action comes back as a message on the page it came from
(post/redirect/get), so the browser's back button and reload never resubmit a form.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, Response, redirect, render_template, request, url_for

from engine.errors import DomainError, Forbidden, NotFound, Unauthenticated
from engine.organisations import visible_organisation
from engine.principals import AccountKind, Principal

from ..context import service
from .session import FLASH_COOKIE, check_csrf, csrf_token, flash, session_principal, take_flash


@dataclass(frozen=True)
class PortalAction:
    path: str
    api: tuple[str, str]


ACTIONS: list[PortalAction] = []

Handler = Callable[..., Awaitable[Any]]


def home_of(who: Principal) -> str:
    """Where an account lands after signing in."""
    if who.kind is AccountKind.USER:
        return url_for("portal.my_devices")
    if who.kind is AccountKind.MANAGER:
        return url_for("portal.dashboard", organisation=who.organisation_id)
    return url_for("portal.organisations")


def _to_sign_in() -> Response:
    return redirect(url_for("portal.sign_in", next=request.full_path.rstrip("?")))


async def render(template: str, who: Principal | None, **context: Any) -> Response:
    message = take_flash()
    body = await render_template(
        template, who=who, csrf_token=csrf_token(), flash=message, **context
    )
    response = Response(body, content_type="text/html; charset=utf-8")
    if message is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


async def _check_organisation(who: Principal, params: dict[str, Any]) -> None:
    """Another organisation's pages are not found, before any form field is even read."""
    if "organisation" in params:
        await visible_organisation(service().store, who, params["organisation"])


async def error_page(who: Principal, exc: NotFound | Forbidden) -> Response:
    status = 404 if isinstance(exc, NotFound) else 403
    response = await render(
        "portal/error.html", who, status=status, message=str(exc), home=home_of(who)
    )
    response.status_code = status
    return response


def page(
    blueprint: Blueprint, path: str, *, kinds: tuple[AccountKind, ...] = ()
) -> Callable[[Handler], Handler]:
    """A GET page for signed-in accounts (of ``kinds``, when given)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def view(**params: Any) -> Any:
            try:
                who = await session_principal()
            except Unauthenticated:
                return _to_sign_in()
            except Forbidden:
                return redirect(url_for("portal.password"))
            try:
                if kinds and who.kind not in kinds:
                    raise Forbidden("this page is not for your account")
                await _check_organisation(who, params)
                return await handler(who=who, **params)
            except (NotFound, Forbidden) as exc:
                return await error_page(who, exc)

        blueprint.add_url_rule(path, view_func=view, methods=["GET"], endpoint=handler.__name__)
        return handler

    return decorate


def action(
    blueprint: Blueprint, path: str, *, api: tuple[str, str]
) -> Callable[[Handler], Handler]:
    """A form POST that does what the REST operation ``api`` does; answers with a redirect."""
    ACTIONS.append(PortalAction(path, api))

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def post(**params: Any) -> Any:
            try:
                who = await session_principal()
            except Unauthenticated:
                return _to_sign_in()
            form = await request.form
            try:
                check_csrf(form)
                await _check_organisation(who, params)
            except (NotFound, Forbidden) as exc:
                return await error_page(who, exc)
            try:
                return await handler(who=who, form=form, **params)
            except NotFound as exc:
                # Never say more about another organisation's things than "not found".
                return await error_page(who, exc)
            except DomainError as exc:
                return refused(back_location(), str(exc))

        blueprint.add_url_rule(path, view_func=post, methods=["POST"], endpoint=handler.__name__)
        return handler

    return decorate


def done(location: str, message: str) -> Response:
    """The redirect after a successful action, with its confirmation."""
    response = redirect(location)
    flash(response, message, "ok")
    return response


def refused(location: str, message: str) -> Response:
    """The redirect after a refused action, with the reason shown as an error."""
    response = redirect(location)
    flash(response, message, "error")
    return response


def back_location() -> str:
    """The page the form was on (same site only), else the portal's start."""
    referrer = request.referrer or ""
    parts = urlsplit(referrer)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.netloc == request.host and safe_path(path):
        return path
    return "/"


def safe_path(target: str) -> bool:
    """A plain path on this site. Browsers read ``//host``, ``/\\host`` and paths with tabs
    or newlines as other sites, so those are refused (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return False
    if any(ord(c) < 33 or ord(c) == 127 for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc
