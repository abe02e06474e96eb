"""The APNs notifier: wakes Apple devices with MDM push notifications over HTTP/2.

One actor per service. Whoever wants devices woken calls :meth:`ApnsNotifier.wake` (it
never blocks: the device ids join a set the actor drains); the actor looks the devices up
(``lookup``: enrolled, with a push token APNs has not refused), and sends each a push with
the APNS certificate of its organisation as the TLS client certificate:

``POST {base_url}/3/device/<hex token>`` with ``apns-topic: <certificate UID>``,
``apns-push-type: mdm`` and the body ``{"mdm": "<PushMagic>"}`` (Apple's MDM push).

One HTTP/2 connection per certificate carries all of that certificate's pushes at once
(streams, bounded by :attr:`max_streams` and by the server's own limit). It is a small
client on ``h2`` (:class:`ApnsConnection`): a generic client spends more CPU on each
request than APNs spends on a push, and a fleet is woken with tens of thousands. Answers:

* ``200``: sent;
* ``410`` (``Unregistered``, ``ExpiredToken``) or ``400`` ``BadDeviceToken`` /
  ``DeviceTokenNotForTopic``: the token is bad for good: ``refused`` marks it, and it is
  never tried again until the device sends a new one;
* ``429`` and ``5xx`` (and a dropped connection, a reset stream, a ``GOAWAY``, no answer
  within :attr:`timeout`): transient, retried with exponential
  backoff up to :attr:`attempts` times;
* anything else (a bad certificate, a malformed request): logged, not retried.

The actor knows nothing of the store: the service hands it ``lookup``, ``refused`` and
``sent`` (``engine/apple_mdm.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import trio

log = logging.getLogger(__name__)

#: APNs reasons that say the token will never work again.
PERMANENT_REASONS = frozenset(
    {"BadDeviceToken", "Unregistered", "ExpiredToken", "DeviceTokenNotForTopic"}
)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ClientIdentity:
    """An APNS certificate (PEM, with its chain) and its private key (PEM)."""

    id: str
    certificate_pem: str
    private_key_pem: str = field(repr=False)


@dataclass(frozen=True)
class Push:
    token: str  # hex
    push_magic: str
    topic: str
    identity: ClientIdentity
    target: Any = None  # handed back to ``refused`` and ``sent``


Lookup = Callable[[Sequence[str]], Awaitable[list[Push]]]
Refused = Callable[[Push, str], Awaitable[None]]
Sent = Callable[[list[Push]], Awaitable[None]]


def client_context(identity: ClientIdentity, ca_file: str | None) -> ssl.SSLContext:
    """TLS for APNs: HTTP/2 by ALPN, the certificate as client identity.

    Blocking (a file written and read, the CA store loaded): the notifier runs it in a
    worker thread.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    # load_cert_chain reads files only: a private temporary file, removed at once.
    fd, name = tempfile.mkstemp(prefix=".apns-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(identity.certificate_pem + "\n" + identity.private_key_pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)
    return context


class ConnectionLost(Exception):
    """The HTTP/2 connection failed or went away before the answer came: worth a retry."""


@dataclass
class _Answer:
    done: trio.Event = field(default_factory=trio.Event)
    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    lost: str = ""


class ApnsConnection:
    """One HTTP/2 connection (h2 over a trio TLS stream) carrying many pushes at once.

    Requests only add frames to the connection's state; one writer task sends whatever
    has piled up in one TLS write, and one reader task hands answers back by stream id, so
    a thousand pushes in flight cost a few socket writes, not a thousand. The server's
    ``SETTINGS_MAX_CONCURRENT_STREAMS`` and flow-control windows are respected; after a
    ``GOAWAY`` no new stream starts here and the streams the server did not take are
    answered with :class:`ConnectionLost` (a new connection retries them).
    """

    def __init__(self, stream: trio.SSLStream[trio.SocketStream], authority: str) -> None:
        self._stream = stream
        self._authority = authority.encode()
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        self._answers: dict[int, _Answer] = {}
        self._dirty = trio.Event()  # frames wait in the h2 state for the writer
        self._changed = trio.Event()  # a stream closed, a window opened, settings came
        self.usable = True

    @classmethod
    async def open(
        cls, nursery: trio.Nursery, host: str, port: int, context: ssl.SSLContext
    ) -> ApnsConnection:
        try:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=context, https_compatible=True
            )
            await stream.do_handshake()
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise ConnectionLost(f"connecting to {host}:{port}: {exc}") from exc
        if stream.selected_alpn_protocol() != "h2":
            await trio.aclose_forcefully(stream)
            raise ConnectionLost(f"{host}:{port} does not speak HTTP/2")
        connection = cls(stream, host if port == 443 else f"{host}:{port}")
        connection._h2.initiate_connection()
        connection._dirty.set()
        nursery.start_soon(connection._run)
        return connection

    async def post(self, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> _Answer:
        """Send one request; its answer once the stream ended (or :class:`ConnectionLost`)."""
        h2c = self._h2
        # Streams in flight are the answers awaited (h2's own count walks every stream).
        while len(self._answers) >= h2c.remote_settings.max_concurrent_streams:
            await self._wait_changed()
        stream_id = h2c.get_next_available_stream_id()
        answer = self._answers[stream_id] = _Answer()
        try:
            h2c.send_headers(
                stream_id,
                [
                    (b":method", b"POST"),
                    (b":scheme", b"https"),
                    (b":path", path.encode()),
                    (b":authority", self._authority),
                    *headers,
                ],
            )
            while h2c.local_flow_control_window(stream_id) < len(body):
                await self._wait_changed()
            h2c.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.H2Error as exc:  # the connection closed meanwhile
            self._answers.pop(stream_id, None)
            raise ConnectionLost(str(exc)) from exc
        self._dirty.set()
        try:
            await answer.done.wait()
        finally:
            if not answer.done.is_set():  # cancelled (a timeout): let the server know
                self._answers.pop(stream_id, None)
                with contextlib.suppress(h2.exceptions.H2Error):
                    h2c.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                    self._dirty.set()
        if answer.lost:
            raise ConnectionLost(answer.lost)
        return answer

    async def _wait_changed(self) -> None:
        if not self.usable:
            raise ConnectionLost("connection closed")
        await self._changed.wait()
        if not self.usable:
            raise ConnectionLost("connection closed")

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _run(self) -> None:
        reason = "connection closed"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                await self._read()
                nursery.cancel_scope.cancel()
        except* (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            ssl.SSLError,
            OSError,
        ) as group:
            reason = f"connection lost: {group.exceptions[0]!r}"
            log.warning("APNs: %s", reason)
        except* h2.exceptions.ProtocolError as group:
            reason = f"HTTP/2 protocol error: {group.exceptions[0]}"
            log.warning("APNs: %s", reason)
        finally:
            self.usable = False
            for answer in self._answers.values():
                answer.lost = answer.lost or reason
                answer.done.set()
            self._answers.clear()
            self._signal()
            await trio.aclose_forcefully(self._stream)

    async def _write(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            data = self._h2.data_to_send()
            if data:
                await self._stream.send_all(data)

    async def _read(self) -> None:
        h2c = self._h2
        while True:
            data = await self._stream.receive_some(65536)
            if not data:
                return
            changed = False
            for event in h2c.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    answer = self._answers.get(event.stream_id)
                    if answer is not None:
                        answer.status = int(dict(event.headers).get(b":status", b"0"))
                elif isinstance(event, h2.events.DataReceived):
                    h2c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    answer = self._answers.get(event.stream_id)
                    if answer is not None:
                        answer.body += event.data
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    answer = self._answers.pop(event.stream_id, None)
                    if answer is not None:
                        if isinstance(event, h2.events.StreamReset):
                            answer.lost = f"stream reset ({event.error_code!r})"
                        answer.done.set()
                    changed = True
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self._goaway(event)
                    changed = True
                elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                    changed = True
            if changed:
                self._signal()
            self._dirty.set()
            if not self.usable and not self._answers:
                return

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """No new streams here; those the server will not answer are lost (retried)."""
        self.usable = False
        log.warning("APNs: GOAWAY %r %r", event.error_code, event.additional_data)
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream_id in [s for s in self._answers if s > last]:
            answer = self._answers.pop(stream_id)
            answer.lost = "GOAWAY"
            answer.done.set()


class ApnsNotifier:
    def __init__(
        self,
        base_url: str,
        lookup: Lookup,
        refused: Refused,
        sent: Sent,
        *,
        ca_file: str | None = None,
        max_streams: int = 1000,
        attempts: int = 5,
        backoff: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._host, self._port, self._prefix = parts.hostname or "", parts.port or 443, parts.path
        self.lookup = lookup
        self.refused = refused
        self.sent = sent
        self.ca_file = ca_file
        self.max_streams = max_streams
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._waiting: set[str] = set()
        self._ready = trio.Event()
        #: Per certificate: its identity, TLS context and current connection.
        self._peers: dict[str, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self._streams = trio.Semaphore(max_streams)
        #: Pushes sent and not yet reported: reported together, one store write per batch.
        self._sent: list[Push] = []
        self._sent_ready = trio.Event()

    # -- what others call ------------------------------------------------------------------

    def wake(self, device_ids: Iterable[str], delay: float = 0.0) -> None:
        """Push these devices (after ``delay`` seconds); never blocks, never raises."""
        ids = list(device_ids)
        if delay > 0 and self._nursery is not None:
            self._nursery.start_soon(self._later, ids, delay)
            return
        self._waiting.update(ids)
        self._ready.set()

    async def _later(self, ids: list[str], delay: float) -> None:
        await trio.sleep(delay)
        self.wake(ids)

    # -- the actor -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._report_sent)
                task_status.started()
                while True:
                    await self._ready.wait()
                    self._ready = trio.Event()
                    batch, self._waiting = list(self._waiting), set()
                    try:
                        pushes = await self.lookup(batch)
                    except Exception:
                        log.exception("APNs: looking up %d devices failed", len(batch))
                        continue
                    for push in pushes:
                        await self._streams.acquire()
                        nursery.start_soon(self._deliver, push)
        finally:
            self._nursery = None
            self._peers.clear()  # their connections ended with the nursery

    async def _report_sent(self) -> None:
        """Tell ``sent`` what went out, in batches (a fleet's pushes are not 10,000 writes)."""
        while True:
            await self._sent_ready.wait()
            self._sent_ready = trio.Event()
            batch, self._sent = self._sent, []
            try:
                await self.sent(batch)
            except Exception:
                log.exception("APNs: recording %d pushes failed", len(batch))

    async def _connection(self, identity: ClientIdentity) -> ApnsConnection:
        """The certificate's connection, opened (or reopened) by one caller at a time; its
        TLS context is made once, off the Trio thread."""
        peer = self._peers.get(identity.id)
        if peer is None or peer.identity != identity:  # new, or a renewed certificate
            if peer is not None and peer.connection is not None:
                peer.connection.usable = False  # its streams finish; no new ones
            peer = self._peers[identity.id] = _Peer(identity)
        async with peer.opening:
            if peer.context is None:
                peer.context = await trio.to_thread.run_sync(client_context, identity, self.ca_file)
            if peer.connection is None or not peer.connection.usable:
                assert self._nursery is not None
                peer.connection = await ApnsConnection.open(
                    self._nursery, self._host, self._port, peer.context
                )
            return peer.connection

    async def _deliver(self, push: Push) -> None:
        try:
            outcome = await self.send(push)
            if outcome == "sent":
                self._sent.append(push)
                self._sent_ready.set()
            elif outcome in PERMANENT_REASONS:
                await self.refused(push, outcome)
        except Exception:
            log.exception("APNs: push to %s failed", push.token[:8])
        finally:
            self._streams.release()

    async def send(self, push: Push) -> str:
        """One push with retries; answers "sent", a permanent reason, or "failed"."""
        if self._nursery is not None:
            return await self._send(push)
        async with trio.open_nursery() as nursery:  # used alone, without run()
            self._nursery = nursery
            try:
                return await self._send(push)
            finally:
                self._nursery = None
                self._peers.clear()
                nursery.cancel_scope.cancel()

    async def _send(self, push: Push) -> str:
        body = json.dumps({"mdm": push.push_magic}).encode()
        headers = [
            (b"apns-topic", push.topic.encode()),
            (b"apns-push-type", b"mdm"),
            (b"apns-priority", b"10"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        path = f"{self._prefix}/3/device/{push.token}"
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                with trio.fail_after(self.timeout):
                    connection = await self._connection(push.identity)
                    answer = await connection.post(path, headers, body)
            except (ConnectionLost, trio.TooSlowError) as exc:
                log.warning("APNs: %s (attempt %d)", exc or "no answer in time", attempt)
            else:
                if answer.status == 200:
                    return "sent"
                reason = _reason(answer.body)
                if reason in PERMANENT_REASONS or answer.status == 410:
                    return reason if reason in PERMANENT_REASONS else "Unregistered"
                if answer.status not in TRANSIENT_STATUSES:
                    log.error("APNs refused a push: %s %s", answer.status, reason)
                    return "failed"
                log.info("APNs: %s %s, retrying", answer.status, reason)
            if attempt < self.attempts:
                await trio.sleep(delay)
                delay *= 2
        return "failed"


@dataclass(eq=False)
class _Peer:
    identity: ClientIdentity
    context: ssl.SSLContext | None = None
    connection: ApnsConnection | None = None
    opening: trio.Lock = field(default_factory=trio.Lock)


def _reason(body: bytes | bytearray) -> str:
    try:
        value = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
