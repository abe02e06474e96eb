"""Reading requests: JSON bodies, the client's address, and who is asking."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from quart import request

from engine.auth import authenticate
from engine.errors import Forbidden, Invalid, Unauthenticated
from engine.principals import Principal

from .client_cert import is_trusted_proxy
from .context import Network, service
from .problems import BadRequest


async def json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 400/415 problem."""
    if request.mimetype != "application/json":
        raise BadRequest("send the body as application/json", status=415)
    raw = await request.get_data(as_text=False)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def client_address() -> str | None:
    """Who sent the request, as the audit log records it (see :func:`forwarded_client`)."""
    return forwarded_client(
        request.remote_addr,
        request.headers.getlist("X-Forwarded-For"),
        service().trusted_proxies,
    )


def forwarded_client(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[Network]
) -> str | None:
    """The peer's address; behind a trusted proxy, the nearest address in
    ``X-Forwarded-For`` that is not itself a trusted proxy. The header is believed only as
    far as trusted proxies wrote it: from anyone else it is ignored, and a hop that is not
    an IP address ends the walk at the last trusted one."""
    if peer is None or not is_trusted_proxy(peer, trusted_proxies):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    nearest = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return nearest
        if not is_trusted_proxy(hop, trusted_proxies):
            return hop
        nearest = hop
    return nearest


async def principal(*, password_change: bool = False) -> Principal:
    """Authenticate the bearer token of this request.

    A session opened with a one-time password may only change it (``password_change``).
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send an API token: Authorization: Bearer <token>")
    who = await authenticate(service().store, token.strip(), source=client_address())
    if who.password_change_only and not password_change:
        raise Forbidden("change the one-time password first (POST /api/v1/auth/password)")
    return who


def if_match_revision() -> int | None:
    """The revision named by ``If-Match: "<n>"`` (our ETags are revisions), if any."""
    value = request.headers.get("If-Match")
    if value is None:
        return None
    value = value.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise BadRequest("If-Match must carry an ETag this service gave out")
    return int(value)


_REQUIRED: Any = object()


def take(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = _REQUIRED
) -> Any:
    """One member of a JSON object, checked for type; booleans are never numbers."""
    if name not in body:
        if default is _REQUIRED:
            raise Invalid(f"{name} is required", field=name)
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is None and type(None) in kinds:
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise Invalid(f"{name} must be {names}", field=name)
    return value


def refuse_unknown(body: dict[str, Any], *known: str) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise Invalid(f"unknown member: {unknown[0]}", field=unknown[0])
