"""``/api/v1/auth``: sign in for a bearer token, change password, sign out."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import auth

from ..context import service
from ..requests import client_address, json_object, principal, refuse_unknown, take

blueprint = Blueprint("api_auth", __name__, url_prefix="/auth")


def _issued(token: auth.IssuedToken) -> dict[str, Any]:
    return {
        "token": token.token,
        "token_type": "Bearer",
        "expires_at": token.expires_at,
        "password_change_required": token.password_change_required,
    }


@blueprint.post("/token")
async def create_token() -> tuple[dict[str, Any], int]:
    """Sign in. ``organisation`` is the organisation code id; omit it for system accounts."""
    body = await json_object()
    refuse_unknown(body, "organisation", "login", "password", "label")
    issued = await auth.login(
        service().store,
        organisation_code=take(body, "organisation", (str, type(None)), None),
        login_id=take(body, "login", str),
        password=take(body, "password", str),
        source=client_address(),
        label=take(body, "label", str, ""),
    )
    return _issued(issued), 201


@blueprint.delete("/token")
async def delete_token() -> tuple[str, int]:
    await auth.logout(service().store, await principal(password_change=True))
    return "", 204


@blueprint.post("/password")
async def change_password() -> dict[str, Any]:
    who = await principal(password_change=True)
    body = await json_object()
    refuse_unknown(body, "current_password", "new_password")
    issued = await auth.change_password(
        service().store,
        who,
        current=take(body, "current_password", str),
        new=take(body, "new_password", str),
    )
    return _issued(issued)


@blueprint.get("/me")
async def me() -> dict[str, Any]:
    who = await principal(password_change=True)
    return {
        "account_id": who.account_id,
        "login": who.login,
        "kind": who.kind.value,
        "organisation_id": who.organisation_id,
        "rights": sorted(who.rights),
        "password_change_required": who.password_change_only,
    }
