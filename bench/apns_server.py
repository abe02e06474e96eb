"""An APNs test server: HTTP/2 over TLS that checks what Apple's push service checks.

Hypercorn (through ``web.server.serve``) on a loopback port, TLS with a *required* client
certificate chaining to ``client_ca`` (the "Apple" CA of a test). For every request it
checks, as APNs does:

* ``POST /3/device/<token>`` with the token in hex; HTTP/2 only;
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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from web.server import hypercorn_config, serve

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
    pushed: trio.Event = field(default_factory=trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        config = hypercorn_config(
            https_binds=["127.0.0.1:0"],
            certfile=str(self.certfile),
            keyfile=str(self.keyfile),
            ca_certs=str(self.client_ca),
            client_certificates="required",  # type: ignore[arg-type]
        )
        # As APNs: up to 1,000 streams at once, and a connection lives for any number of
        # requests (Hypercorn would close it after 1,000 by default).
        config.h2_max_concurrent_streams = 1000
        config.keep_alive_max_requests = 2**31
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(partial(serve, self.app, config))
            task_status.started(bound[0].url)

    async def wait_for(self, count: int) -> list[Received]:
        """The pushes once at least ``count`` arrived (callers bound the wait)."""
        await self.until(lambda: len(self.pushes) >= count)
        return self.pushes

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked after every request answered."""
        while not condition():
            self.pushed = trio.Event()
            await self.pushed.wait()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, reason, received = self.check(scope, body)
        headers = [(b"apns-id", str(uuid.uuid4()).encode())]
        if reason == "stats":  # not APNs: what a bench asks after its run
            stats = {
                "pushes": len(self.pushes),
                "refused": len(self.refused),
                "connections": len({p.client for p in self.pushes}),
            }
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": json.dumps(stats).encode()})
            return
        if status == 200:
            assert received is not None
            self.pushes.append(received)
            self.pushed.set()
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        self.refused.append((received.token if received else "", status, reason))
        self.pushed.set()
        payload = json.dumps({"reason": reason}).encode()
        headers.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def check(self, scope: dict[str, Any], body: bytes) -> tuple[int, str, Received | None]:
        if scope["path"] == "/stats" and scope["method"] == "GET":
            return 200, "stats", None
        if scope.get("http_version") != "2":
            return 400, "BadPath", None  # APNs speaks HTTP/2 only
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return 404, "BadPath", None
        if scope["method"] != "POST":
            return 405, "MethodNotAllowed", None
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        topic = headers.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", None
        chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
        if not chain or topic != _uid(chain[0]):
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
        received = Received(
            token,
            topic,
            payload["mdm"],
            scope["http_version"],
            time.monotonic(),
            tuple(scope["client"]),
        )
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
def _uid(pem: str) -> str | None:
    certificate = x509.load_pem_x509_certificate(pem.encode())
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
