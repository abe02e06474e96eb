"""Signing in and out of the portals, and changing one's password."""

from __future__ import annotations

from quart import Blueprint, Response, redirect, request, url_for

from engine import auth
from engine.errors import DomainError, Forbidden, Unauthenticated

from ..context import service
from ..requests import client_address
from .pages import ACTIONS, PortalAction, back_location, home_of, refused, render, safe_path
from .session import (
    LOGIN_CSRF_COOKIE,
    SESSION_LIFETIME,
    check_csrf,
    check_login_csrf,
    end_session,
    flash,
    new_login_csrf,
    session_principal,
    session_token,
    set_cookie,
    start_session,
)


def register(blueprint: Blueprint) -> None:
    ACTIONS.extend(
        [
            PortalAction("/sign-in", ("POST", "/auth/token")),
            PortalAction("/sign-out", ("DELETE", "/auth/token")),
            PortalAction("/password", ("POST", "/auth/password")),
        ]
    )

    @blueprint.get("/")
    async def start() -> Response:
        try:
            return redirect(home_of(await session_principal()))
        except Unauthenticated:
            return redirect(url_for("portal.sign_in"))
        except Forbidden:
            return redirect(url_for("portal.password"))

    @blueprint.get("/sign-in")
    async def sign_in() -> Response:
        nonce = new_login_csrf()
        response = await render(
            "portal/sign_in.html",
            None,
            login_csrf=nonce,
            next=_safe_next(request.args.get("next")),
            organisation=request.args.get("organisation", ""),
        )
        set_cookie(response, LOGIN_CSRF_COOKIE, nonce, max_age=3600)
        return response

    @blueprint.post("/sign-in")
    async def sign_in_post() -> Response:
        form = await request.form
        try:
            check_login_csrf(form)
            issued = await auth.login(
                service().store,
                organisation_code=form.get("organisation", "").strip() or None,
                login_id=form.get("login", "").strip(),
                password=form.get("password", ""),
                source=client_address(),
                label="portal",
                lifetime=SESSION_LIFETIME,
            )
        except DomainError as exc:
            return refused(back_location(), str(exc))
        if issued.password_change_required:
            response = redirect(url_for("portal.password"))
        else:
            response = redirect(_safe_next(form.get("next")) or "/")
        start_session(response, issued.token)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return response

    @blueprint.post("/sign-out")
    async def sign_out() -> Response:
        form = await request.form
        response = redirect(url_for("portal.sign_in"))
        try:
            check_csrf(form)
            await auth.logout(service().store, await session_principal(password_change=True))
        except DomainError:
            pass  # an expired session is signed out anyway
        end_session(response)
        return response

    @blueprint.get("/password")
    async def password() -> Response:
        try:
            who = await session_principal(password_change=True)
        except Unauthenticated:
            return redirect(url_for("portal.sign_in"))
        return await render("portal/password.html", who)

    @blueprint.post("/password")
    async def password_post() -> Response:
        form = await request.form
        try:
            who = await session_principal(password_change=True)
            check_csrf(form)
            if form.get("new_password") != form.get("repeat_password"):
                raise DomainError("the two new passwords differ")
            issued = await auth.change_password(
                service().store,
                who,
                current=form.get("current_password", ""),
                new=form.get("new_password", ""),
                lifetime=SESSION_LIFETIME,
            )
        except Unauthenticated as exc:
            if session_token() is None:
                return redirect(url_for("portal.sign_in"))
            return refused(url_for("portal.password"), str(exc))
        except DomainError as exc:
            return refused(url_for("portal.password"), str(exc))
        response = redirect(home_of(who))
        start_session(response, issued.token)
        flash(response, "Your password has been changed.", "ok")
        return response


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    return target if target and safe_path(target) else ""
