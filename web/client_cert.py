"""How the application reads the TLS client certificate of a request.

Two sources, in this order:

1. **The TLS connection itself.** ``web.server.serve`` puts the peer certificate into the
   ASGI scope following the ASGI TLS extension (asgiref ``specs/tls.rst``, version 0.2)::

       scope["extensions"]["tls"] = {
           "server_cert": str | None,        # PEM of our server certificate
           "client_cert_chain": [str, ...],  # PEM; [0] is the client's; [] if none sent
           "client_cert_name": str | None,   # RFC 4514 subject of [0]
           "client_cert_error": None,        # failures never get this far (handshake refused)
           "tls_version": int | None,        # 0x0303 TLS 1.2, 0x0304 TLS 1.3
           "cipher_suite": int | None,       # IANA number, e.g. 0x1301
       }

   The extension is present only on TLS connections, as the spec requires.

2. **An RFC 9440 ``Client-Cert`` header**, set by a TLS-terminating reverse proxy (load
   balancer) that verified the certificate itself. Anyone can send that header, so it is
   believed *only* when the direct TCP peer (``scope["client"][0]``) lies in one of the
   ``trusted_proxies`` networks; from any other peer it is ignored, whatever it contains.

Neither source says the certificate identifies one of *our* devices: Hypercorn trusts every
CA in its ``ca_certs`` file and the proxy trusts whatever it was configured with. Callers
that authenticate a device must still check ``CertificateAuthority.is_issued_by(cert,
purpose=CLIENT_AUTH)`` and look the certificate up.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from cryptography import x509

__all__ = [
    "CLIENT_CERT_HEADER",
    "ClientCertHeaderError",
    "IPNetwork",
    "client_certificate",
    "is_trusted_proxy",
    "parse_client_cert_header",
    "parse_trusted_proxies",
    "request_client_certificate",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CLIENT_CERT_HEADER = b"client-cert"

# A DER certificate of a device is 1-2 KiB; 16 KiB of base64 is generous and keeps a hostile
# (or broken) proxy from making us decode and parse megabytes per request.
MAX_HEADER_LENGTH = 16 * 1024

# RFC 8941 section 3.3.5: sf-binary = ":" *(base64) ":" with base64 = ALPHA / DIGIT / "+" /
# "/" / "=". Parameters after the closing colon are valid RFC 8941 but RFC 9440 defines none,
# and a proxy we trust does not send any: refusing them keeps the parser small and strict.
_SF_BINARY = re.compile(rb":([A-Za-z0-9+/=]*):")


class ClientCertHeaderError(ValueError):
    """A trusted proxy sent a ``Client-Cert`` header that is not one valid certificate.

    The web layer answers it with ``400 Bad Request``: the proxy is misconfigured, and
    silently treating the request as anonymous would hide that.
    """


def parse_trusted_proxies(values: Iterable[str]) -> list[IPNetwork]:
    """Turn configuration strings (``"10.0.0.0/8"``, ``"::1"``) into networks."""
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values]


def parse_client_cert_header(value: bytes | str) -> x509.Certificate:
    """Decode an RFC 9440 ``Client-Cert`` value: a structured-field Byte Sequence of DER.

    Raises :class:`ClientCertHeaderError` for anything else, with a message saying what.
    """
    raw = value.encode("latin-1") if isinstance(value, str) else value
    if len(raw) > MAX_HEADER_LENGTH:
        raise ClientCertHeaderError(f"Client-Cert header longer than {MAX_HEADER_LENGTH} bytes")
    # RFC 8941 4.2: parsers discard leading and trailing spaces.
    match = _SF_BINARY.fullmatch(raw.strip(b" "))
    if match is None:
        raise ClientCertHeaderError(
            "Client-Cert header is not a structured-field Byte Sequence (:base64-DER:)"
        )
    encoded = match.group(1)
    # RFC 8941 4.2.7: parsers SHOULD NOT fail when "=" padding is missing.
    encoded += b"=" * (-len(encoded) % 4)
    try:
        der = base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise ClientCertHeaderError(f"Client-Cert header: bad base64 ({error})") from None
    if not der:
        raise ClientCertHeaderError("Client-Cert header is empty")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as error:
        raise ClientCertHeaderError(
            f"Client-Cert header: not a DER certificate ({error})"
        ) from None


def _peer_is_trusted(scope: Mapping[str, Any], trusted_proxies: Sequence[IPNetwork]) -> bool:
    client = scope.get("client")
    return bool(client) and is_trusted_proxy(str(client[0]), trusted_proxies)


def is_trusted_proxy(text: str, trusted_proxies: Sequence[IPNetwork]) -> bool:
    """Whether ``text`` is an IP address inside one of ``trusted_proxies``."""
    if not trusted_proxies:
        return False
    try:
        address = ipaddress.ip_address(text)
    except ValueError:  # a Unix socket path, or no address at all: nothing to trust
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; configured IPv4 networks
    # must still match them.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate.version == network.version and candidate in network
        for candidate in candidates
        for network in trusted_proxies
    )


def _tls_client_certificate(scope: Mapping[str, Any]) -> x509.Certificate | None:
    tls = (scope.get("extensions") or {}).get("tls")
    if not tls:
        return None
    chain = list(tls.get("client_cert_chain") or ())
    if not chain:
        return None
    return x509.load_pem_x509_certificate(chain[0].encode("ascii"))


def client_certificate(
    scope: Mapping[str, Any], *, trusted_proxies: Sequence[IPNetwork]
) -> x509.Certificate | None:
    """The client certificate of this request, or None if there is none to believe.

    The TLS peer certificate wins when the connection has one. Otherwise a ``Client-Cert``
    header counts only from a peer inside ``trusted_proxies``; from other peers it is
    ignored (it never raises for them, so an attacker cannot turn it into an error oracle).

    Raises :class:`ClientCertHeaderError` if a trusted proxy sent a malformed header, or
    sent it more than once (RFC 9440 makes it a single Item; two would be ambiguous).
    """
    cert = _tls_client_certificate(scope)
    if cert is not None:
        return cert
    if not _peer_is_trusted(scope, trusted_proxies):
        return None
    values = [v for k, v in scope.get("headers", ()) if k.lower() == CLIENT_CERT_HEADER]
    if not values:
        return None
    if len(values) > 1:
        raise ClientCertHeaderError("more than one Client-Cert header")
    return parse_client_cert_header(values[0])


class _HasScope(Protocol):
    scope: Mapping[str, Any]


def request_client_certificate(
    request: _HasScope, trusted_proxies: Sequence[IPNetwork]
) -> x509.Certificate | None:
    """:func:`client_certificate` for a Quart ``request`` (or ``websocket``) object."""
    return client_certificate(request.scope, trusted_proxies=trusted_proxies)
