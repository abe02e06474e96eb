"""Serve the ASGI app with Hypercorn (trio worker), handing the TLS peer certificate to it.

Hypercorn verifies client certificates (``config.verify_mode``) but never tells the
application which one was presented. The service authenticates Apple and Windows devices by
that certificate, so :func:`serve` adds the ASGI TLS extension (``scope["extensions"]["tls"]``,
see ``web/client_cert.py``) to every HTTP and WebSocket scope of a TLS connection.

How, and why this way
---------------------
Hypercorn's ``trio.tcp_server.TCPServer`` owns each connection's ``trio.SSLStream`` and runs
the handshake in ``run()``. :class:`_TLSTCPServer` subclasses it and overrides ``run()`` only
to complete the handshake first (``SSLStream.do_handshake`` is idempotent, so Hypercorn's own
call then returns at once), read the peer certificate, and wrap ``self.app`` in a
per-connection :class:`_ConnectionApp` that adds the extension to each scope of *this*
connection. The subclass also replaces two per-request costs of Hypercorn's on keep-alive
connections (:class:`_KeepAliveTimer`, ``_TLSTCPServer.corked``). Everything else (HTTP/1.1,
HTTP/2, lifespan, graceful shutdown) is Hypercorn's own code, unchanged.

To put the subclass in, :func:`serve` runs a copy of ``hypercorn.trio.run.worker_serve``
whose global ``TCPServer`` name points at our factory: the same code object, a different
globals mapping. Nothing in Hypercorn's modules is mutated, so a second server in the same
process (tests run several) is unaffected. Alternatives considered and rejected:

* Per-connection state (``ConnectionState`` -> ``scope["state"]``): in Hypercorn 0.18 every
  connection of a listener shares *one* state dict (``ConnectionState(self.state)`` wraps it
  without copying), so writing a certificate there would show it to other connections'
  requests: an authentication bug.
* Assigning ``hypercorn.trio.run.TCPServer = ...``: process-global and order-dependent.
* Copying ``worker_serve`` into this module: ~80 lines of lifespan and shutdown logic that
  would silently drift from Hypercorn's fixes.
* ``SSLContext.sslobject_class``: sees the certificate but not which ASGI scope it belongs to.

The copy depends on ``worker_serve`` looking ``TCPServer`` up as a module global; an import
check fails loudly if a Hypercorn upgrade changes that, and ``tests/test_client_cert.py``
exercises the whole path against a real server.

Request bodies: Hypercorn enforces ``config.wsgi_max_body_size`` for WSGI apps only; the
same wrapper applies it to ASGI requests too (413 before the app runs when Content-Length is
too large, 413 and ``http.disconnect`` to the app when a streamed body grows past it).
"""

from __future__ import annotations

import math
import ssl
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypercorn.config import Config
from hypercorn.events import Event, RawData, Updated
from hypercorn.trio import run as _hypercorn_run
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import AppWrapper, ASGIFramework
from hypercorn.utils import wrap_app

__all__ = ["BoundAddress", "ClientCertificates", "hypercorn_config", "serve"]

ClientCertificates = Literal["none", "optional", "required"]

if "TCPServer" not in _hypercorn_run.worker_serve.__code__.co_names:  # pragma: no cover
    raise ImportError(
        "hypercorn.trio.run.worker_serve no longer looks up TCPServer as a global; "
        "web/server.py cannot hand TLS client certificates to the app with this Hypercorn"
    )

_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class BoundAddress(NamedTuple):
    """One listening socket, as actually bound (port 0 resolved to the real port)."""

    scheme: str  # "http" or "https"
    host: str  # IP literal without brackets, or the socket path for "unix:" binds
    port: int | None  # None for Unix sockets
    url: str  # base URL: "https://127.0.0.1:43117", "http://[::1]:8080"


def _bound_address(url: str) -> BoundAddress:
    scheme, _, rest = url.partition("://")
    if rest.startswith("unix:"):
        return BoundAddress(scheme, rest.removeprefix("unix:"), None, url)
    parts = urlsplit(url)
    return BoundAddress(scheme, parts.hostname or "", parts.port, url)


def hypercorn_config(
    *,
    http_binds: Sequence[str] = (),
    https_binds: Sequence[str] = (),
    certfile: str | None = None,
    keyfile: str | None = None,
    ca_certs: str | None = None,
    client_certificates: ClientCertificates = "none",
    max_body: int = 16 * 1024 * 1024,
    graceful_timeout: float = 5.0,
    keep_alive_timeout: float = 75.0,
    ssl_handshake_timeout: float = 10.0,
    server_header: bool = False,
) -> Config:
    """Build a Hypercorn config for plain HTTP and/or HTTPS listeners.

    Hypercorn's semantics are easy to get wrong: ``bind`` is TLS only while ``certfile`` and
    ``keyfile`` are set, and ``insecure_bind`` is *ignored* when they are not. So TLS is on
    exactly when there are ``https_binds``, and the plain binds move to ``bind`` otherwise.

    ``client_certificates``: "optional" asks every TLS client for a certificate and accepts
    none (devices enrol without one, then present the issued identity); "required" refuses
    the handshake without one. Either way a certificate not chaining to ``ca_certs`` is
    refused during the handshake, so the application never sees an unverified one. Browsers
    holding any client certificate may prompt their user when asked for one, which is a
    reason to give portals and device endpoints separate listeners.

    ``keep_alive_timeout``: how long an idle keep-alive connection stays open. It must be
    longer than clients keep idle connections in their pools (httpx: 5 s; phone HTTP stacks
    tens of seconds): a server that closes first races with the client's next request on
    that connection, which then fails with no answer at all. Hypercorn's 5 s default equals
    httpx's, and lost requests under load showed it.

    ``ssl_handshake_timeout`` is shorter than Hypercorn's 60 s default: a handshake holds a
    connection slot, and a device that cannot finish one in 10 s will retry anyway.
    """
    if not http_binds and not https_binds:
        raise ValueError("nothing to listen on: give http_binds and/or https_binds")
    config = Config()
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = keep_alive_timeout
    config.ssl_handshake_timeout = ssl_handshake_timeout
    config.include_server_header = server_header
    config.wsgi_max_body_size = max_body  # applied to ASGI requests too, by serve()
    config.accesslog = None
    if https_binds:
        if certfile is None or keyfile is None:
            raise ValueError("https_binds need certfile and keyfile")
        config.certfile = certfile
        config.keyfile = keyfile
        config.bind = list(https_binds)
        config.insecure_bind = list(http_binds)
        config.alpn_protocols = ["h2", "http/1.1"]
        if client_certificates != "none":
            if ca_certs is None:
                raise ValueError("client certificates need ca_certs to verify them against")
            config.ca_certs = ca_certs
            config.verify_mode = (
                ssl.CERT_REQUIRED if client_certificates == "required" else ssl.CERT_OPTIONAL
            )
        elif ca_certs is not None:
            config.ca_certs = ca_certs
    else:
        if client_certificates != "none":
            raise ValueError("client certificates need https_binds")
        config.bind = list(http_binds)
        config.insecure_bind = []
    return config


# -- per-connection machinery ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ServerSettings:
    """What every connection of one serve() call needs beyond Hypercorn's own config."""

    server_cert_pem: str | None
    max_body: int | None


def _first_certificate_pem(certfile: str | None) -> str | None:
    if certfile is None:
        return None
    with open(certfile, "rb") as handle:
        certs = x509.load_pem_x509_certificates(handle.read())
    return certs[0].public_bytes(Encoding.PEM).decode("ascii") if certs else None


def _tls_extension(stream: trio.SSLStream[Any], server_cert_pem: str | None) -> dict[str, Any]:
    der = stream.getpeercert(binary_form=True)
    chain: list[str] = []
    name = None
    if der:
        # Python 3.11 exposes only the leaf; intermediates a client sent stay invisible
        # (ssl.SSLObject.get_verified_chain arrives in 3.13). Our CA issues leaves directly.
        chain.append(ssl.DER_cert_to_PEM_cert(der))
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    cipher_suite = None
    negotiated = stream.cipher()
    if negotiated is not None:
        # OpenSSL reports names; the spec wants IANA numbers. get_ciphers() has both
        # (the id's low 16 bits are the IANA code point).
        for info in stream.context.get_ciphers():
            if info["name"] == negotiated[0]:
                cipher_suite = info["id"] & 0xFFFF
                break
    return {
        "server_cert": server_cert_pem,
        "client_cert_chain": chain,
        "client_cert_name": name,
        # A certificate that fails verification aborts the handshake, so none gets here.
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(stream.version() or ""),
        "cipher_suite": cipher_suite,
    }


def _header_int(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> int | None:
    for key, value in headers:
        if key.lower() == name:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(key.lower() == name for key, _ in headers)


async def _send_413(send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    body = b"request body too large\n"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _ConnectionApp:
    """Hypercorn ``AppWrapper`` for one connection: adds its TLS extension, bounds bodies,
    and sends an HTTP/1.x response's head with its body (``corked``)."""

    def __init__(
        self,
        app: AppWrapper,
        tls: dict[str, Any] | None,
        max_body: int | None,
        corked: Callable[[Callable[[Any], Awaitable[None]]], Callable[[Any], Awaitable[None]]],
    ) -> None:
        self._app = app
        self._tls = tls
        self._max_body = max_body
        self._corked = corked

    async def __call__(
        self,
        scope: Any,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        if scope["type"] in ("http", "websocket") and self._tls is not None:
            # A fresh dict per request: an app editing its scope must not edit the
            # connection's other requests (HTTP/2 streams, keep-alive).
            scope["extensions"]["tls"] = {
                **self._tls,
                "client_cert_chain": list(self._tls["client_cert_chain"]),
            }
        if scope["type"] == "http" and scope["http_version"] in ("1.0", "1.1"):
            send = self._corked(send)
        if scope["type"] == "http" and self._max_body is not None:
            limit = self._max_body
            declared = _header_int(scope["headers"], b"content-length")
            if declared is not None and declared > limit:
                await _send_413(send)
                return
            if declared is None or _has_header(scope["headers"], b"transfer-encoding"):
                # Chunked: only counting tells (h11 reads a request with both headers as
                # chunked). With a Content-Length alone, h11 and h2 hold the body to it.
                receive, send = _bounded_body(receive, send, limit)
        await self._app(scope, receive, send, sync_spawn, call_soon)


def _bounded_body(
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[Any], Awaitable[None]],
    limit: int,
) -> tuple[Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]]:
    """Wrap receive/send so a streamed (chunked, HTTP/2) body cannot exceed ``limit``.

    On overflow the client gets 413 (if the app had not started answering) and the app sees
    ``http.disconnect``, as if the client had left; its later sends are dropped, since the
    response stream is already closed.
    """
    received = 0
    started = False
    answered = False

    async def bounded_receive() -> Any:
        nonlocal received, answered
        if answered:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                answered = True
                if not started:
                    await _send_413(send)
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(message: Any) -> None:
        nonlocal started
        if answered:
            return
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    return bounded_receive, guarded_send


class _KeepAliveTimer:
    """A connection's keep-alive timer: one task per connection, not one per request.

    Hypercorn's ``TCPServer.idle_task`` starts a fresh task (``nursery.start``) each time a
    connection turns idle, and cancels it when the next request arrives. On a keep-alive
    connection that is a task start, a cancellation and two lock round trips for every
    request: about 75 µs of CPU, a quarter of what a small request costs Hypercorn. This keeps the
    same interface (``restart`` when idle, ``stop`` when busy) and the same behaviour (an
    idle connection closes after ``keep_alive_timeout``, or at once when the server shuts
    down; a busy one never), with one task whose cancel-scope deadline moves instead.
    """

    def __init__(self, timeout: float, terminated: Any, close: Callable[[], Awaitable[None]]):
        self._timeout = timeout
        self._terminated = terminated  # Hypercorn's EventWrapper: set at shutdown
        self._close = close
        self._idle = False
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None
        self._watching = False
        self._became_idle: trio.Event | None = None
        self._done = False

    async def restart(self, task_group: Any, action: Any) -> None:
        """The connection is idle (``action``, Hypercorn's own timer, is not needed)."""
        self._idle = True
        self._deadline = trio.current_time() + self._timeout
        if self._scope is not None:
            self._scope.deadline = self._deadline
        if self._became_idle is not None:
            self._became_idle.set()
        if not self._watching:
            self._watching = True
            task_group._nursery.start_soon(self._watch)

    async def stop(self) -> None:
        """A request is in progress: no timer runs until the connection is idle again."""
        self._idle = False
        self._deadline = math.inf
        if self._scope is not None:
            self._scope.deadline = math.inf

    def end(self) -> None:
        """The connection is gone: the timer has nothing left to close."""
        self._done = True
        if self._scope is not None:
            self._scope.cancel()
        if self._became_idle is not None:
            self._became_idle.set()

    async def _watch(self) -> None:
        while not self._done:
            with trio.CancelScope(deadline=self._deadline) as self._scope:
                await self._terminated.wait()
            self._scope = None
            if self._done:
                return
            if self._terminated.is_set() and not self._idle:
                # Shutting down in the middle of a request: close once it is answered.
                self._became_idle = trio.Event()
                await self._became_idle.wait()
                if self._done:
                    return
            if self._idle and (self._terminated.is_set() or trio.current_time() >= self._deadline):
                break
            # Otherwise a request arrived just as the deadline passed: keep watching.
        if self._done:
            return  # the connection ended before the timer first ran
        with trio.CancelScope(shield=True):
            await self._close()


class _TLSTCPServer(TCPServer):
    """Hypercorn's TCPServer, plus the peer certificate handed to the app (see module doc),
    and a cheaper keep-alive timer (:class:`_KeepAliveTimer`)."""

    def __init__(self, *args: Any, settings: _ServerSettings) -> None:
        super().__init__(*args)
        self._settings = settings
        self._held: list[bytes] | None = None  # a response head waiting for its body
        self.idle_task = _KeepAliveTimer(  # type: ignore[assignment]
            self.config.keep_alive_timeout, self.context.terminated, self._initiate_server_close
        )

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            # h11 frames the end of a Content-Length body as no bytes at all: sending them
            # would only take the send lock and yield to the scheduler.
            if not event.data:
                return
            if self._held is not None:
                self._held.append(event.data)
                return
        elif self._held:
            if isinstance(event, Updated):
                # The keep-alive timer first: flushing yields, and a pipelined request may
                # start meanwhile; its stop() must not be overtaken by this older restart().
                await super().protocol_send(event)
                await self._flush()
                return
            await self._flush()  # what the connection does next comes after the response
        await super().protocol_send(event)

    def corked(self, send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """``send`` for an HTTP/1.x request, sending a response's head with its body.

        Hypercorn writes the status line and headers as soon as the app starts its response,
        then the body in a second write: two system calls and two passes through the send
        lock for every small answer. The head is held until the next body message instead
        (each body message is sent at once, so a streamed response is not delayed beyond
        its first part).
        """

        async def corked_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self._held = []
            try:
                await send(message)
            finally:
                if message["type"] == "http.response.body":
                    await self._flush()

        return corked_send

    async def _flush(self) -> None:
        held, self._held = self._held, None
        if held:
            await super().protocol_send(RawData(data=b"".join(held)))

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            self.idle_task.end()  # type: ignore[attr-defined]

    async def run(self) -> None:
        tls = None
        if isinstance(self.stream, trio.SSLStream):
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await self.stream.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                # Refused (e.g. a certificate from another CA) or too slow; Hypercorn would
                # give up the same way. trio.serve_listeners closes the stream.
                return
            tls = _tls_extension(self.stream, self._settings.server_cert_pem)
        self.app = _ConnectionApp(self.app, tls, self._settings.max_body, self.corked)
        await super().run()


def _worker_serve_with(
    settings: _ServerSettings,
) -> Callable[..., Awaitable[None]]:
    """Hypercorn's worker_serve, creating :class:`_TLSTCPServer` instead of TCPServer."""

    def tcp_server(*args: Any) -> _TLSTCPServer:
        return _TLSTCPServer(*args, settings=settings)

    original = _hypercorn_run.worker_serve
    namespace = {**original.__globals__, "TCPServer": tcp_server}
    clone = types.FunctionType(
        original.__code__,
        namespace,
        original.__name__,
        original.__defaults__,
        original.__closure__,
    )
    clone.__kwdefaults__ = original.__kwdefaults__
    return clone


async def serve(
    app: ASGIFramework,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[BoundAddress]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled or until ``shutdown_trigger`` returns.

    Use with ``nursery.start``: once every socket listens (and the app's lifespan startup
    has run), it reports the :class:`BoundAddress` list, HTTPS binds first, so a caller that
    bound port 0 learns the real ports. ``shutdown_trigger`` returning starts Hypercorn's
    graceful shutdown (``config.graceful_timeout``); cancellation stops at once.
    """
    settings = _ServerSettings(
        server_cert_pem=_first_certificate_pem(config.certfile) if config.ssl_enabled else None,
        max_body=config.wsgi_max_body_size,
    )
    worker_serve = _worker_serve_with(settings)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                worker_serve,
                wrap_app(app, config.wsgi_max_body_size, "asgi"),
                config,
                shutdown_trigger=shutdown_trigger,
            )
        )
        task_status.started([_bound_address(b) for b in binds])
