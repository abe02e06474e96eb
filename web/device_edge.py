"""Device routes served beneath Quart: the hot path of fleets checking in.

Device protocols answer thousands of small requests a second, each in the protocol's own
format; none of them uses what Quart adds to a request (request and app contexts, sessions,
blueprints' hooks, form parsing, the response object's header machinery, error pages in
problem+json). Measured on the WSDM check-in bench, those layers cost as much CPU per
request as the check-in's own work does outside the store. So the routes listed here are
answered by :class:`DeviceEdge`, a small ASGI app in front of Quart: it matches the path
exactly, reads the body within the route's limit, calls the route's handler with an
:class:`EdgeRequest`, and sends its :class:`EdgeResponse`. Every other request, and the
lifespan, goes to Quart unchanged.

What the edge still guarantees for every device route, as Quart did:

* the body limit: a body over the route's ``max_body`` is read to its end (up to the
  service's own request limit, which ``web.server.serve`` enforces below this layer) and
  refused in the protocol's format, so an HTTP/1.1 client is not left sending;
* a method the route does not take gets the protocol's 405 with ``Allow`` (``OPTIONS``:
  204 with ``Allow``); a body that does not arrive within 60 s gets 408;
* a full mailbox or a session that does not answer in time is 503 with ``Retry-After``, a
  domain error gets the REST API's status for it, and a bug is a logged 500, each in the
  protocol's format (``DeviceRoute.refuse``);
* ``Server-Timing: app;dur=…``, as every Quart response carries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import trio
from cryptography import x509

from engine.actors import MailboxFull
from engine.errors import DomainError, Throttled

from .client_cert import client_certificate
from .context import ServiceContext
from .problems import domain_status
from .requests import forwarded_client

log = logging.getLogger(__name__)

#: How long a request body may take to arrive, as Quart allows its routes.
BODY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class EdgeResponse:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class EdgeRequest:
    """One device request: the ASGI scope, its whole body, and the service it came to."""

    __slots__ = ("body", "context", "scope")

    def __init__(self, scope: dict[str, Any], body: bytes, context: ServiceContext) -> None:
        self.scope = scope
        self.body = body
        self.context = context

    @property
    def path(self) -> str:
        return self.scope["path"]

    @property
    def url(self) -> str:
        """The URL the request was sent to, without its query: ``scheme://host/path``."""
        host = self.header(b"host")
        if host is None:
            server = self.scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        return f"{self.scope['scheme']}://{host}{self.path}"

    def query(self, name: str) -> str | None:
        """The first value of the query parameter ``name``, if present."""
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    def header(self, name: bytes) -> str | None:
        """The first value of the header ``name`` (lower-case bytes), if sent."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None

    def header_values(self, name: bytes) -> list[str]:
        return [value.decode("latin-1") for key, value in self.scope["headers"] if key == name]

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower-cased ("" when none was sent)."""
        return (self.header(b"content-type") or "").split(";")[0].strip().lower()

    def client_address(self) -> str | None:
        """Who sent the request, as the audit log records it (behind trusted proxies too)."""
        client = self.scope.get("client")
        return forwarded_client(
            client[0] if client else None,
            self.header_values(b"x-forwarded-for"),
            self.context.trusted_proxies,
        )

    def client_certificate(self) -> x509.Certificate | None:
        """The TLS client certificate, or a trusted proxy's ``Client-Cert`` header."""
        return client_certificate(self.scope, trusted_proxies=self.context.trusted_proxies)


Handler = Callable[[EdgeRequest], Awaitable[EdgeResponse]]


@dataclass(frozen=True, slots=True)
class DeviceRoute:
    """A device route: its path and methods, its handler, and how its protocol refuses.

    ``refuse(status, reason)`` answers what the edge itself refuses (405, 413, 500, 503) in
    the protocol's own format.
    """

    path: str
    methods: frozenset[str]
    handler: Handler
    refuse: Callable[[int, str], EdgeResponse]
    max_body: int


ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class DeviceEdge:
    """ASGI app: the device routes here, everything else to ``app`` (Quart)."""

    def __init__(
        self, app: ASGIApp, context: ServiceContext, routes: Iterable[DeviceRoute]
    ) -> None:
        self._app = app
        self._context = context
        self._routes = {route.path: route for route in routes}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        with trio.move_on_after(BODY_SECONDS) as waiting:
            body, complete = await _read_body(receive, route.max_body)
        if waiting.cancelled_caught:
            response = route.refuse(408, f"the body did not arrive within {BODY_SECONDS:g} s")
        elif not complete:
            # The client left, or sent more than the service takes at all (web.server.serve
            # has answered 413 already): there is nobody to answer.
            return
        elif scope["method"] == "OPTIONS":
            response = EdgeResponse(204, headers=(("Allow", _allow(route)),))
        else:
            response = await self._answer(route, scope, body)
        elapsed = (time.perf_counter() - started) * 1000
        headers = [(b"server-timing", b"app;dur=%.2f" % elapsed)]
        if response.content_type is not None:
            headers.append((b"content-type", response.content_type.encode("latin-1")))
        headers.append((b"content-length", b"%d" % len(response.body)))
        headers.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers
        )
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _answer(
        self, route: DeviceRoute, scope: dict[str, Any], body: bytes | None
    ) -> EdgeResponse:
        if scope["method"] not in route.methods:
            refused = route.refuse(405, f"{scope['method']} is not allowed here")
            return EdgeResponse(
                refused.status,
                refused.body,
                refused.content_type,
                (*refused.headers, ("Allow", _allow(route))),
            )
        if body is None:
            return route.refuse(413, f"the body is larger than {route.max_body} bytes")
        try:
            return await route.handler(EdgeRequest(scope, body, self._context))
        except (MailboxFull, trio.TooSlowError):
            return route.refuse(503, "the service is busy; try again shortly")
        except DomainError as exc:
            # What the domain refuses (a licence limit, a throttled sign-in...), with the
            # status the REST API gives it, in the protocol's format.
            refused = route.refuse(domain_status(exc)[0], str(exc))
            if isinstance(exc, Throttled):
                retry = ("Retry-After", str(exc.retry_after))
                return EdgeResponse(
                    refused.status, refused.body, refused.content_type, (*refused.headers, retry)
                )
            return refused
        except Exception:
            log.exception("%s %s failed inside the service", scope["method"], scope["path"])
            return route.refuse(500, "the request could not be completed")


def _allow(route: DeviceRoute) -> str:
    return ", ".join(sorted(route.methods | {"OPTIONS"}))


async def _read_body(receive: Any, limit: int) -> tuple[bytes | None, bool]:
    """The whole body (None when it outgrew ``limit``), and whether it arrived complete."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit and chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limit:
        return None, True
    return b"".join(chunks), True
