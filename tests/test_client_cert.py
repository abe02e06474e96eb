"""The TLS client certificate reaches the app: real Hypercorn, real TLS, real httpx client."""

from __future__ import annotations

import base64
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypercorn.config import Config
from quart import request
from quart_trio import QuartTrio

from engine.pki import CertificateAuthority, TLSFiles, ensure_tls_files, write_pem
from web.client_cert import (
    ClientCertHeaderError,
    IPNetwork,
    client_certificate,
    parse_client_cert_header,
    parse_trusted_proxies,
    request_client_certificate,
)
from web.requests import forwarded_client
from web.server import BoundAddress, hypercorn_config, serve

LOOPBACK = parse_trusted_proxies(["127.0.0.1/32"])
ELSEWHERE = parse_trusted_proxies(["10.0.0.0/8"])


@dataclass(frozen=True)
class PKI:
    ca: CertificateAuthority
    files: TLSFiles
    device_cert: x509.Certificate
    device_identity: Path  # cert + key, as a device holds it
    foreign_identity: Path  # issued by a CA the server does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    base = tmp_path_factory.mktemp("pki")
    files = ensure_tls_files(TLSFiles.in_directory(base / "tls"))
    ca = CertificateAuthority.load(files.ca_cert, files.ca_key)
    device_cert, device_key = ca.issue_client_certificate("device-0001")
    assert device_key is not None
    foreign_ca = CertificateAuthority.create("Someone Else's CA")
    foreign_cert, foreign_key = foreign_ca.issue_client_certificate("device-0001")
    assert foreign_key is not None
    return PKI(
        ca=ca,
        files=files,
        device_cert=device_cert,
        device_identity=write_pem(base / "device.pem", device_cert, device_key),
        foreign_identity=write_pem(base / "foreign.pem", foreign_cert, foreign_key),
    )


def make_app(trusted_proxies: Sequence[IPNetwork], seen: list[dict[str, Any]]) -> QuartTrio:
    """An app that reports which certificate it was given; ``seen`` records each request."""
    app = QuartTrio(__name__)

    @app.route("/whoami", methods=["GET", "POST"])
    async def whoami() -> Any:
        tls = request.scope["extensions"].get("tls")
        seen.append({"tls": tls})
        try:
            cert = request_client_certificate(request, trusted_proxies)
        except ClientCertHeaderError as error:
            return {"error": str(error)}, 400
        cn = None
        if cert is not None:
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return {"cn": cn, "http_version": request.scope["http_version"], "tls": tls}

    @app.route("/upload", methods=["POST"])
    async def upload() -> Any:
        seen.append({"upload": True})
        return {"size": len(await request.get_data())}

    return app


def tls_config(pki: PKI, mode: str = "optional", **kwargs: Any) -> Config:
    return hypercorn_config(
        https_binds=["127.0.0.1:0"],
        http_binds=["127.0.0.1:0"],
        certfile=str(pki.files.server_cert),
        keyfile=str(pki.files.server_key),
        ca_certs=str(pki.files.ca_cert),
        client_certificates=mode,  # type: ignore[arg-type]
        **kwargs,
    )


@asynccontextmanager
async def running(app: QuartTrio, config: Config) -> AsyncIterator[dict[str, BoundAddress]]:
    """Serve in a nursery for the body of the ``async with``; cancel it afterwards."""
    async with trio.open_nursery() as nursery:
        binds: list[BoundAddress] = await nursery.start(partial(serve, app, config))
        try:
            yield {b.scheme: b for b in binds}
        finally:
            nursery.cancel_scope.cancel()


def client_context(pki: PKI, identity: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.files.ca_cert))
    if identity is not None:
        context.load_cert_chain(str(identity))
    return context


def header_value(cert: x509.Certificate) -> str:
    return ":" + base64.b64encode(cert.public_bytes(Encoding.DER)).decode() + ":"


# -- TLS peer certificate ----------------------------------------------------------------------


@pytest.mark.parametrize(("http2", "expected"), [(False, "HTTP/1.1"), (True, "HTTP/2")])
async def test_client_certificate_reaches_app(pki: PKI, http2: bool, expected: str) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app([], seen), tls_config(pki)) as binds,
        httpx.AsyncClient(verify=client_context(pki, pki.device_identity), http2=http2) as client,
    ):
        assert binds["https"].host == "127.0.0.1" and binds["https"].port not in (None, 0)
        response = await client.get(binds["https"].url + "/whoami")
    assert response.status_code == 200
    assert response.http_version == expected
    body = response.json()
    assert body["cn"] == "device-0001"
    assert body["http_version"] == ("2" if http2 else "1.1")
    tls = body["tls"]
    assert tls["client_cert_chain"] == [pki.device_cert.public_bytes(Encoding.PEM).decode()]
    assert tls["client_cert_name"] == pki.device_cert.subject.rfc4514_string()
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int) and 0 < tls["cipher_suite"] <= 0xFFFF
    server_cert = x509.load_pem_x509_certificate(pki.files.server_cert.read_bytes())
    assert tls["server_cert"] == server_cert.public_bytes(Encoding.PEM).decode()


async def test_each_connection_sees_its_own_certificate(pki: PKI) -> None:
    """A certificate must never leak to another connection's requests."""
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app([], seen), tls_config(pki)) as binds,
        httpx.AsyncClient(verify=client_context(pki, pki.device_identity)) as device,
        httpx.AsyncClient(verify=client_context(pki)) as anonymous,
    ):
        url = binds["https"].url + "/whoami"
        first = await device.get(url)
        second = await anonymous.get(url)
        third = await device.get(url)  # same keep-alive connection again
    assert [r.json()["cn"] for r in (first, second, third)] == ["device-0001", None, "device-0001"]


async def test_no_client_certificate_in_optional_mode(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app([], seen), tls_config(pki)) as binds,
        httpx.AsyncClient(verify=client_context(pki), http2=True) as client,
    ):
        response = await client.get(binds["https"].url + "/whoami")
    assert response.status_code == 200
    body = response.json()
    assert body["cn"] is None
    assert body["tls"]["client_cert_chain"] == []
    assert body["tls"]["client_cert_name"] is None


async def test_certificate_from_another_ca_is_refused(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app([], seen), tls_config(pki)) as binds,
        httpx.AsyncClient(verify=client_context(pki, pki.foreign_identity)) as client,
    ):
        # With TLS 1.3 the client finishes its side of the handshake before the server
        # rejects the certificate, so the failure may surface on the first read.
        with pytest.raises(httpx.TransportError):
            await client.get(binds["https"].url + "/whoami")
    assert seen == []


async def test_required_mode_refuses_anonymous_clients(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []
    async with running(make_app([], seen), tls_config(pki, mode="required")) as binds:
        async with httpx.AsyncClient(verify=client_context(pki)) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(binds["https"].url + "/whoami")
        assert seen == []
        async with httpx.AsyncClient(verify=client_context(pki, pki.device_identity)) as client:
            response = await client.get(binds["https"].url + "/whoami")
    assert response.json()["cn"] == "device-0001"


async def test_plain_http_has_no_tls_extension(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app([], seen), tls_config(pki)) as binds,
        httpx.AsyncClient() as client,
    ):
        assert binds["http"].url.startswith("http://127.0.0.1:")
        response = await client.get(binds["http"].url + "/whoami")
    assert response.json() == {"cn": None, "http_version": "1.1", "tls": None}


# -- RFC 9440 Client-Cert from a trusted proxy ----------------------------------------------------


def plain_config(**kwargs: Any) -> Config:
    return hypercorn_config(http_binds=["127.0.0.1:0"], **kwargs)


async def test_client_cert_header_from_trusted_proxy(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app(LOOPBACK, seen), plain_config()) as binds,
        httpx.AsyncClient() as client,
    ):
        assert set(binds) == {"http"}
        response = await client.get(
            binds["http"].url + "/whoami",
            headers={"Client-Cert": header_value(pki.device_cert)},
        )
    assert response.status_code == 200
    assert response.json()["cn"] == "device-0001"


async def test_client_cert_header_ignored_from_untrusted_peer(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app(ELSEWHERE, seen), plain_config()) as binds,
        httpx.AsyncClient() as client,
    ):
        good = await client.get(
            binds["http"].url + "/whoami",
            headers={"Client-Cert": header_value(pki.device_cert)},
        )
        garbage = await client.get(
            binds["http"].url + "/whoami", headers={"Client-Cert": "not even close"}
        )
    assert good.status_code == 200 and good.json()["cn"] is None
    # Untrusted peers cannot even provoke an error with it.
    assert garbage.status_code == 200 and garbage.json()["cn"] is None
    assert len(seen) == 2


async def test_malformed_client_cert_header_from_trusted_proxy(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []
    async with (
        running(make_app(LOOPBACK, seen), plain_config()) as binds,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(
            binds["http"].url + "/whoami", headers={"Client-Cert": ":!!not-base64!!:"}
        )
    assert response.status_code == 400
    assert "Byte Sequence" in response.json()["error"]


def _scope(
    *,
    client: tuple[str, int] | None = ("127.0.0.1", 50000),
    headers: Sequence[tuple[bytes, bytes]] = (),
    tls_cert: x509.Certificate | None = None,
) -> dict[str, Any]:
    extensions: dict[str, Any] = {}
    if tls_cert is not None:
        extensions["tls"] = {"client_cert_chain": [tls_cert.public_bytes(Encoding.PEM).decode()]}
    return {"type": "http", "client": client, "headers": list(headers), "extensions": extensions}


def test_tls_certificate_wins_over_header(pki: PKI) -> None:
    other, _ = pki.ca.issue_client_certificate("device-from-header")
    scope = _scope(
        headers=[(b"client-cert", header_value(other).encode())], tls_cert=pki.device_cert
    )
    assert client_certificate(scope, trusted_proxies=LOOPBACK) == pki.device_cert


def test_peer_address_forms(pki: PKI) -> None:
    headers = [(b"client-cert", header_value(pki.device_cert).encode())]
    mapped = _scope(client=("::ffff:127.0.0.1", 1), headers=headers)
    assert client_certificate(mapped, trusted_proxies=LOOPBACK) == pki.device_cert
    for client in (None, ("/run/emm.sock", 0), ("::1", 1), ("127.0.0.2", 1)):
        scope = _scope(client=client, headers=headers)
        assert client_certificate(scope, trusted_proxies=LOOPBACK) is None
    assert client_certificate(_scope(headers=headers), trusted_proxies=[]) is None
    v6 = [ipaddress.ip_network("::1/128")]
    assert client_certificate(_scope(client=("::1", 1), headers=headers), trusted_proxies=v6)


def test_two_client_cert_headers_are_refused(pki: PKI) -> None:
    value = header_value(pki.device_cert).encode()
    scope = _scope(headers=[(b"client-cert", value), (b"client-cert", value)])
    with pytest.raises(ClientCertHeaderError, match="more than one"):
        client_certificate(scope, trusted_proxies=LOOPBACK)


def test_header_parser_accepts_rfc_forms(pki: PKI) -> None:
    der = pki.device_cert.public_bytes(Encoding.DER)
    unpadded = base64.b64encode(der).rstrip(b"=")
    assert parse_client_cert_header(b"  :" + unpadded + b":  ") == pki.device_cert
    assert parse_client_cert_header(header_value(pki.device_cert)) == pki.device_cert


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "Byte Sequence"),
        (b"MIIB", "Byte Sequence"),  # no colons: a token, not a byte sequence
        (b":MIIB", "Byte Sequence"),
        (b":AAAA:;param=1", "Byte Sequence"),
        (b"::", "empty"),
        (b":A:", "bad base64"),
        (b":" + base64.b64encode(b"not a certificate at all") + b":", "not a DER certificate"),
        (b":" + b"A" * 20000 + b":", "longer than"),
    ],
)
def test_header_parser_rejects(value: bytes, message: str) -> None:
    with pytest.raises(ClientCertHeaderError, match=message):
        parse_client_cert_header(value)


# -- serve() itself ----------------------------------------------------------------------------


async def test_shutdown_trigger_stops_serve(pki: PKI) -> None:
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(serve, make_app([], []), plain_config(), shutdown_trigger=stop.wait)
            )
            async with httpx.AsyncClient() as client:
                assert (await client.get(binds[0].url + "/whoami")).status_code == 200
            stop.set()
        # Reaching here means serve() returned by itself: nothing was cancelled.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(binds[0].url + "/whoami")


async def test_request_body_limit(pki: PKI) -> None:
    seen: list[dict[str, Any]] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 800
        yield b"y" * 800

    async with running(make_app([], seen), plain_config(max_body=1000)) as binds:
        url = binds["http"].url + "/upload"
        async with httpx.AsyncClient() as client:
            small = await client.post(url, content=b"a" * 1000)
            declared = await client.post(url, content=b"b" * 1001)
        assert small.status_code == 200 and small.json() == {"size": 1000}
        assert declared.status_code == 413
        assert len(seen) == 1  # refused on Content-Length before the app ran

        async with httpx.AsyncClient() as client:
            streamed = await client.post(url, content=chunks())
        assert streamed.status_code == 413


def test_hypercorn_config_semantics(pki: PKI) -> None:
    plain = hypercorn_config(http_binds=["127.0.0.1:8080"])
    assert plain.bind == ["127.0.0.1:8080"] and not plain.ssl_enabled
    assert plain.verify_mode is None

    both = tls_config(pki, mode="required")
    assert both.ssl_enabled and both.bind == ["127.0.0.1:0"]
    assert both.insecure_bind == ["127.0.0.1:0"]
    assert both.verify_mode == ssl.CERT_REQUIRED
    assert both.alpn_protocols == ["h2", "http/1.1"]
    assert tls_config(pki).verify_mode == ssl.CERT_OPTIONAL

    with pytest.raises(ValueError, match="ca_certs"):
        hypercorn_config(
            https_binds=["127.0.0.1:0"],
            certfile="c",
            keyfile="k",
            client_certificates="optional",
        )
    with pytest.raises(ValueError, match="certfile"):
        hypercorn_config(https_binds=["127.0.0.1:0"])
    with pytest.raises(ValueError, match="https_binds"):
        hypercorn_config(http_binds=["127.0.0.1:0"], client_certificates="required")


def test_the_client_address_behind_trusted_proxies() -> None:
    """X-Forwarded-For is believed only as far as trusted proxies wrote it."""
    proxies = parse_trusted_proxies(["10.0.0.0/8"])
    assert forwarded_client("203.0.113.9", ["198.51.100.1"], proxies) == "203.0.113.9"
    assert forwarded_client("10.0.0.2", ["198.51.100.1"], proxies) == "198.51.100.1"
    chain = ["192.0.2.66, 198.51.100.1", "10.1.1.1"]  # a client's lie, the client, a proxy
    assert forwarded_client("10.0.0.2", chain, proxies) == "198.51.100.1"
    assert forwarded_client("10.0.0.2", ["unknown, 10.1.1.1"], proxies) == "10.1.1.1"
    assert forwarded_client("10.0.0.2", [], proxies) == "10.0.0.2"
    assert forwarded_client("10.0.0.2", ["198.51.100.1"], []) == "10.0.0.2"
