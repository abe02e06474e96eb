"""``/api/v1/auth``: sign in for a bearer token, change password, sign out, who am I."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import auth
from engine.principals import Principal

from ..context import service
from ..requests import client_address
from .operations import operation
from .schema import array, boolean, component, enum, nullable, obj, string, timestamp

blueprint = Blueprint("api_auth", __name__)

TOKEN = component(
    "Token",
    obj(
        {
            "token": string(description="send as Authorization: Bearer <token>"),
            "token_type": enum("Bearer"),
            "expires_at": timestamp(),
            "password_change_required": boolean(
                description="signed in with a one-time password: only /auth/password works"
            ),
        },
        "token",
        "token_type",
        "expires_at",
        "password_change_required",
    ),
)


def _issued(token: auth.IssuedToken) -> dict[str, Any]:
    return {
        "token": token.token,
        "token_type": "Bearer",
        "expires_at": token.expires_at,
        "password_change_required": token.password_change_required,
    }


@operation(
    blueprint,
    "POST",
    "/auth/token",
    summary="Sign in",
    description="organisation is the organisation code id; omit it for system accounts. "
    "Repeated wrong passwords lock the account for a growing delay (429, Retry-After).",
    tag="auth",
    auth="none",
    body=obj(
        {
            "organisation": nullable(string()),
            "login": string(minLength=1),
            "password": string(),
            "label": string(maxLength=100),
        },
        "login",
        "password",
    ),
    responses={201: TOKEN},
    example={"organisation": "acme", "login": "admin", "password": "correct horse battery"},
)
async def create_token(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    issued = await auth.login(
        service().store,
        organisation_code=body.get("organisation"),
        login_id=body["login"],
        password=body["password"],
        source=client_address(),
        label=body.get("label", ""),
    )
    return _issued(issued), 201


@operation(
    blueprint,
    "DELETE",
    "/auth/token",
    summary="Sign out (revoke this token)",
    tag="auth",
    auth="password-change",
    responses={204: None},
)
async def delete_token(who: Principal) -> tuple[str, int]:
    await auth.logout(service().store, who)
    return "", 204


@operation(
    blueprint,
    "POST",
    "/auth/password",
    summary="Change one's own password; answers with a new token",
    tag="auth",
    auth="password-change",
    body=obj(
        {"current_password": string(), "new_password": string()}, "current_password", "new_password"
    ),
    responses={200: TOKEN},
    example={"current_password": "correct horse battery", "new_password": "staple battery horse"},
)
async def change_password(who: Principal, body: dict[str, Any]) -> dict[str, Any]:
    issued = await auth.change_password(
        service().store, who, current=body["current_password"], new=body["new_password"]
    )
    return _issued(issued)


@operation(
    blueprint,
    "GET",
    "/auth/me",
    summary="The signed-in account",
    tag="auth",
    auth="password-change",
    responses={
        200: component(
            "Me",
            obj(
                {
                    "account_id": string(),
                    "login": string(),
                    "kind": enum("supervisor", "vendor", "manager", "user", "resource"),
                    "organisation_id": nullable(string()),
                    "rights": array(string()),
                    "password_change_required": boolean(),
                },
                "account_id",
                "login",
                "kind",
                "organisation_id",
                "rights",
                "password_change_required",
            ),
        )
    },
)
async def me(who: Principal) -> dict[str, Any]:
    return {
        "account_id": who.account_id,
        "login": who.login,
        "kind": who.kind.value,
        "organisation_id": who.organisation_id,
        "rights": sorted(who.rights),
        "password_change_required": who.password_change_only,
    }
