"""An APNs test server: HTTP/2 over TLS that checks what Apple's push service checks.

A lean HTTP/2 server (``h2`` over a trio TLS stream) on a loopback port, TLS with a
*required* client certificate chaining to ``client_ca`` (the "Apple" CA of a test), HTTP/2
only (ALPN ``h2``), up to 1,000 streams at once on a connection that lives for any number of
requests, as APNs. (Hypercorn served it first; it spent more CPU per push than the notifier
under test and reset connections carrying thousands of pushes, so a bench measured the
server.) For every request it checks, as APNs does:

* ``POST /3/device/<token>`` with the token in hex;
* ``apns-topic`` present and equal to the client certificate's subject UID (an MDM push
  certificate may only push its own topic), ``apns-push-type: mdm``;
* a JSON body that is exactly ``{"mdm": "<PushMagic>"}``.

It answers ``200`` with an ``apns-id``, or Apple's error (``{"reason": ...}``):
``BadPath``/``MethodNotAllowed``/``MissingTopic``/``BadTopic``/``BadMessageId``/
``PayloadEmpty``/``BadDeviceToken``; and the replies a test switches on: ``permanent``
(token → ``(status, reason)``, e.g. ``(410, "Unregistered")``) and ``transient`` (the next
N requests get e.g. ``(503, "ServiceUnavailable")``). Every push it accepts is recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import ipaddress
import json
import re
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEM = serialization.Encoding.PEM
NOW = dt.datetime.now(dt.UTC)


def _name(common_name: str, uid: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if uid is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.USER_ID, uid))
    return x509.Name(attributes)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> str:
    text = certificate.public_bytes(PEM)
    if key is not None:
        text += key.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return text.decode()


@dataclass
class ApplePki:
    """A stand-in for Apple: a CA, the APNs server's certificate, and a push certificate."""

    directory: Path
    topic: str
    push_pem: str  # certificate and key, as an upload sends them

    @property
    def ca_file(self) -> Path:
        return self.directory / "apple-ca.pem"

    @property
    def server_file(self) -> Path:
        return self.directory / "apns-server.pem"

    @property
    def server_key_file(self) -> Path:
        return self.directory / "apns-server-key.pem"

    @classmethod
    def create(cls, directory: Path) -> ApplePki:
        directory.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("Test Apple Root")
        ca = _certificate(ca_name, ca_key, ca_name, ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate(
            _name("api.push.test"),
            server_key,
            ca_name,
            ca_key,
            san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
        push_key = ec.generate_private_key(ec.SECP256R1())
        push = _certificate(_name("APSP:test", topic), push_key, ca_name, ca_key)
        pki = cls(directory, topic, _pem(push, push_key))
        pki.ca_file.write_text(_pem(ca))
        pki.server_file.write_text(_pem(server))
        pki.server_key_file.write_text(
            server_key.private_bytes(
                PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
        )
        return pki


_PATH = re.compile(r"/3/device/([0-9a-fA-F]+)")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names, pseudo-headers left out
    body: bytes
    certificate_uid: str | None  # of the TLS client certificate
    client: tuple[str, int]


@dataclass(frozen=True)
class Received:
    token: str
    topic: str
    push_magic: str
    http_version: str
    at: float
    client: tuple[str, int]  # the connection it came on


@dataclass
class ApnsTestServer:
    certfile: Path  # server certificate + key (PEM)
    keyfile: Path
    client_ca: Path
    pushes: list[Received] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    permanent: dict[str, tuple[int, str]] = field(default_factory=dict)
    transient: list[tuple[int, str]] = field(default_factory=list)
    #: Streams a connection may have open at once (``SETTINGS_MAX_CONCURRENT_STREAMS``).
    max_streams: int = 1000
    #: Answer this many requests on a connection, then ``GOAWAY`` and close it (APNs closes
    #: connections too); the requests already sent past it go unanswered.
    goaway_after: int | None = None
    pushed: trio.Event = field(default_factory=trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.client_ca))
        context.load_cert_chain(str(self.certfile), str(self.keyfile))
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["h2"])
        listeners = await trio.open_ssl_over_tcp_listeners(
            0, context, host="127.0.0.1", https_compatible=True
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(f"https://127.0.0.1:{port}")

    async def wait_for(self, count: int) -> list[Received]:
        """The pushes once at least ``count`` arrived (callers bound the wait)."""
        await self.until(lambda: len(self.pushes) >= count)
        return self.pushes

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked after every request answered."""
        while not condition():
            self.pushed = trio.Event()
            await self.pushed.wait()

    async def _connection(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        """One client connection: a refused handshake or a broken connection ends only it."""
        try:
            await stream.do_handshake()
            if stream.selected_alpn_protocol() != "h2":
                return  # APNs speaks HTTP/2 only
            certificate = stream.getpeercert(binary_form=True)
            client = tuple(stream.transport_stream.socket.getpeername()[:2])
            await self._serve(stream, _uid(certificate) if certificate else None, client)
        except (trio.BrokenResourceError, ssl.SSLError, OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(
        self,
        stream: trio.SSLStream[trio.SocketStream],
        certificate_uid: str | None,
        client: tuple[str, int],
    ) -> None:
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        connection.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams},
        )
        connection.initiate_connection()
        requests: dict[int, tuple[dict[bytes, bytes], bytearray]] = {}
        answered = 0
        while True:
            await stream.send_all(connection.data_to_send())
            data = await stream.receive_some(65536)
            if not data:
                return
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    requests[event.stream_id] = (dict(event.headers), bytearray())
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    if event.stream_id in requests:
                        requests[event.stream_id][1].extend(event.data)
                elif isinstance(event, h2.events.StreamEnded):
                    headers, body = requests.pop(event.stream_id, ({}, bytearray()))
                    request = Request(
                        headers.get(b":method", b"").decode(),
                        headers.get(b":path", b"").decode(),
                        {
                            k.decode().lower(): v.decode()
                            for k, v in headers.items()
                            if k[:1] != b":"
                        },
                        bytes(body),
                        certificate_uid,
                        client,
                    )
                    self._answer(connection, event.stream_id, request)
                    answered += 1
                    if answered == self.goaway_after:
                        connection.close_connection(last_stream_id=event.stream_id)
                        await stream.send_all(connection.data_to_send())
                        return
                elif isinstance(event, h2.events.StreamReset):
                    requests.pop(event.stream_id, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    await stream.send_all(connection.data_to_send())
                    return

    def _answer(
        self, connection: h2.connection.H2Connection, stream_id: int, request: Request
    ) -> None:
        status, reason, received = self.check(request)
        reply = [(b":status", str(status).encode()), (b"apns-id", str(uuid.uuid4()).encode())]
        if reason == "stats":  # not APNs: what a bench asks after its run
            stats = {
                "pushes": len(self.pushes),
                "refused": len(self.refused),
                "connections": len({p.client for p in self.pushes}),
            }
            connection.send_headers(stream_id, reply)
            connection.send_data(stream_id, json.dumps(stats).encode(), end_stream=True)
            return
        self.pushed.set()
        if status == 200:
            assert received is not None
            self.pushes.append(received)
            connection.send_headers(stream_id, reply, end_stream=True)
            return
        self.refused.append((received.token if received else "", status, reason))
        reply.append((b"content-type", b"application/json"))
        connection.send_headers(stream_id, reply)
        connection.send_data(stream_id, json.dumps({"reason": reason}).encode(), end_stream=True)

    def check(self, request: Request) -> tuple[int, str, Received | None]:
        if request.path == "/stats" and request.method == "GET":
            return 200, "stats", None
        match = _PATH.fullmatch(request.path)
        if match is None:
            return 404, "BadPath", None
        if request.method != "POST":
            return 405, "MethodNotAllowed", None
        headers, body = request.headers, request.body
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", None
        if request.certificate_uid is None or topic != request.certificate_uid:
            return 400, "BadTopic", None
        if headers.get("apns-push-type") != "mdm":
            return 400, "InvalidPushType", None
        token = match.group(1).lower()
        try:
            payload = json.loads(body)
        except ValueError:
            return 400, "PayloadEmpty" if not body else "BadPayload", None
        if not isinstance(payload, dict) or set(payload) != {"mdm"}:
            return 400, "BadPayload", None
        if not isinstance(payload["mdm"], str) or not payload["mdm"]:
            return 400, "BadPayload", None
        received = Received(token, topic, payload["mdm"], "2", time.monotonic(), request.client)
        if len(token) != 64:
            return 400, "BadDeviceToken", received
        if self.transient:
            status, reason = self.transient.pop(0)
            return status, reason, received
        if token in self.permanent:
            status, reason = self.permanent[token]
            return status, reason, received
        return 200, "", received


@functools.lru_cache(maxsize=64)
def _uid(der: bytes) -> str | None:
    """The subject UID of a client certificate: the topic its pushes may use."""
    certificate = x509.load_der_x509_certificate(der)
    values = certificate.subject.get_attributes_for_oid(NameOID.USER_ID)
    return str(values[0].value) if values else None


def main(argv: list[str] | None = None) -> None:
    """Run the server alone (benches start it as a subprocess): it makes its own PKI in
    ``--dir`` and prints where it listens."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the PKI files go")
    args = parser.parse_args(argv)
    pki = ApplePki.create(args.dir)
    (args.dir / "push.pem").write_text(pki.push_pem)
    (args.dir / "topic").write_text(pki.topic)
    server = ApnsTestServer(pki.server_file, pki.server_key_file, pki.ca_file)

    async def serve_forever() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.run)
            print(f"apns: listening on {url}", flush=True)

    trio.run(serve_forever)


if __name__ == "__main__":
    main()
