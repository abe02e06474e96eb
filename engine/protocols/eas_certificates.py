"""ValidateCert (MS-ASCMD 2.2.1.22), sans-IO: the status of each S/MIME certificate a
device asks about, checked with ``cryptography``'s X.509 path validation against the trust
anchors the caller gives (the service's CA and the system's roots).

Per-certificate statuses (MS-ASCMD 2.2.3.177.18): 1 valid; 3 the signature cannot be
validated; 4 issued by an untrusted source; 6 not valid for signing email (an extended key
usage without emailProtection); 7 expired or not yet valid; 8 a certificate of the chain is
outside its validity; 10 the certificate cannot be read; 16 revocation cannot be checked
(``CheckCRL`` for a certificate not issued by the service: the service fetches no CRLs; it
revokes none of its own).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

VALID = 1
BAD_SIGNATURE = 3
UNTRUSTED = 4
NOT_FOR_EMAIL = 6
EXPIRED = 7
CHAIN_TIMES = 8
UNREADABLE = 10
REVOCATION_UNKNOWN = 16


def certificate_of(text: str) -> x509.Certificate | None:
    """A certificate sent as base64 of DER (or as PEM), or None."""
    try:
        if "-----BEGIN" in text:
            return x509.load_pem_x509_certificate(text.encode())
        return x509.load_der_x509_certificate(base64.b64decode("".join(text.split())))
    except (ValueError, binascii.Error):
        return None


def _current(cert: x509.Certificate, at: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _for_email(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return (
        ExtendedKeyUsageOID.EMAIL_PROTECTION in usages
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    )


def _issuers(cert: x509.Certificate, pool: list[x509.Certificate]) -> list[x509.Certificate]:
    return [c for c in pool if c.subject == cert.issuer and c != cert]


def _failure(
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    anchors: list[x509.Certificate],
    at: dt.datetime,
) -> int:
    """Why a path from ``leaf`` to an anchor could not be built."""
    pool = chain + anchors
    seen = leaf
    for _ in range(8):
        issuers = _issuers(seen, pool)
        if not issuers:
            return UNTRUSTED
        issuer = issuers[0]
        try:
            seen.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return BAD_SIGNATURE
        if not _current(issuer, at):
            return CHAIN_TIMES
        if issuer in anchors:
            return UNTRUSTED  # reached an anchor, yet the path broke a rule on the way
        seen = issuer
    return UNTRUSTED


def status_of(
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    anchors: list[x509.Certificate],
    at: dt.datetime,
    check_crl: bool,
    own: x509.Certificate | None,
) -> int:
    """:func:`validate`, with a certificate whose extensions cannot be read answered 10."""
    try:
        return validate(leaf, chain, anchors, at, check_crl, own)
    except ValueError:  # extensions are parsed lazily: a malformed one shows only now
        return UNREADABLE


def validate(
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    anchors: list[x509.Certificate],
    at: dt.datetime,
    check_crl: bool,
    own: x509.Certificate | None,
) -> int:
    """The ValidateCert status of ``leaf`` with the intermediates ``chain``."""
    if not _current(leaf, at):
        return EXPIRED
    if not _for_email(leaf):
        return NOT_FOR_EMAIL
    if not anchors:
        return UNTRUSTED
    verifier = (
        PolicyBuilder()
        .store(Store(anchors))
        .time(at)
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, chain)
    except (VerificationError, ValueError, TypeError, UnsupportedAlgorithm):
        return _failure(leaf, chain, anchors, at)
    if check_crl and (own is None or verified.chain[-1] != own):
        return REVOCATION_UNKNOWN
    return VALID
