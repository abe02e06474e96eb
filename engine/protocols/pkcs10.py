"""Certificate requests as Windows sends them: PKCS#10, bare or inside a PKCS#7 SignedData.

Why not just ``cryptography.x509.load_der_x509_csr``: Windows enrolment clients put in the
subject whatever the device was told or had at hand, and some of those names break strict
X.509 parsers (a ``PrintableString`` holding ``@`` or ``_``, an empty RDN, a string type
the parser refuses). The service signs the request with a subject of its own anyway, so
all it needs from a request is the public key and a valid signature proving the device
holds the matching private key. This module reads exactly that from the DER (RFC 2986
``CertificationRequest``) and checks the signature itself, whatever the subject holds.

For renewal (MS-WSTEP ``RequestType`` Renew) Windows wraps the new PKCS#10 in a CMS
``SignedData`` (RFC 5652) signed with the certificate being renewed; :func:`open_signed_data`
takes the request out and verifies that signature, so the signer's certificate is proven to
be held by the requester.

Everything here is sans-IO and raises :class:`RequestError` for anything malformed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = [
    "CertificateRequest",
    "RequestError",
    "SignedRequest",
    "open_signed_data",
    "parse_certificate_request",
]


class RequestError(ValueError):
    """The bytes are not a usable certificate request (malformed, bad signature, ...)."""


# --------------------------------------------------------------------------- DER reading

_SEQUENCE, _SET, _INTEGER, _BIT_STRING, _OCTET_STRING, _OID = 0x30, 0x31, 0x02, 0x03, 0x04, 0x06


@dataclass(frozen=True, slots=True)
class _TLV:
    tag: int
    start: int  # offset of the tag byte
    content: int  # offset of the first content byte
    end: int  # offset just after the content

    def raw(self, data: bytes) -> bytes:
        return data[self.start : self.end]

    def value(self, data: bytes) -> bytes:
        return data[self.content : self.end]


def _read(data: bytes, offset: int, limit: int | None = None) -> _TLV:
    """One DER element at ``offset`` (single-byte tags only: all this module needs)."""
    limit = len(data) if limit is None else limit
    if offset + 2 > limit:
        raise RequestError("truncated DER")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise RequestError("multi-byte DER tags are not expected here")
    length = data[offset + 1]
    pos = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > limit:
            raise RequestError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > limit:
        raise RequestError("DER element runs past its container")
    return _TLV(tag, offset, pos, pos + length)


def _children(data: bytes, parent: _TLV) -> list[_TLV]:
    items = []
    pos = parent.content
    while pos < parent.end:
        item = _read(data, pos, parent.end)
        items.append(item)
        pos = item.end
    return items


def _expect(item: _TLV, tag: int, what: str) -> _TLV:
    if item.tag != tag:
        raise RequestError(f"{what}: expected tag {tag:#x}, found {item.tag:#x}")
    return item


def _oid(data: bytes, item: _TLV) -> str:
    raw = _expect(item, _OID, "OID").value(data)
    if not raw:
        raise RequestError("empty OID")
    parts: list[int] = []
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in [first, parts[0] - 40 * first, *parts[1:]])


def _bit_string(data: bytes, item: _TLV) -> bytes:
    raw = _expect(item, _BIT_STRING, "BIT STRING").value(data)
    if not raw or raw[0] != 0:
        raise RequestError("signatures are whole bytes")
    return raw[1:]


# --------------------------------------------------------------------------- signatures

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
#: Signature algorithm OIDs → (key type, hash). ``None`` key type: take it from the key
#: (CMS often names just ``rsaEncryption`` and puts the hash in ``digestAlgorithm``).
_SIGNATURES: dict[str, tuple[str | None, type[hashes.HashAlgorithm] | None]] = {
    "1.2.840.113549.1.1.5": ("rsa", hashes.SHA1),
    "1.2.840.113549.1.1.11": ("rsa", hashes.SHA256),
    "1.2.840.113549.1.1.12": ("rsa", hashes.SHA384),
    "1.2.840.113549.1.1.13": ("rsa", hashes.SHA512),
    "1.2.840.113549.1.1.1": ("rsa", None),
    "1.2.840.10045.4.3.2": ("ec", hashes.SHA256),
    "1.2.840.10045.4.3.3": ("ec", hashes.SHA384),
    "1.2.840.10045.4.3.4": ("ec", hashes.SHA512),
}


def _verify(
    key: PublicKeyTypes,
    algorithm: str,
    signature: bytes,
    message: bytes,
    digest: type[hashes.HashAlgorithm] | None = None,
) -> None:
    kind, hash_type = _SIGNATURES.get(algorithm, (None, None))
    hash_type = hash_type or digest
    if hash_type is None:
        raise RequestError(f"unsupported signature algorithm {algorithm}")
    try:
        if isinstance(key, rsa.RSAPublicKey) and kind in ("rsa", None):
            key.verify(signature, message, padding.PKCS1v15(), hash_type())
        elif isinstance(key, ec.EllipticCurvePublicKey) and kind in ("ec", None):
            key.verify(signature, message, ec.ECDSA(hash_type()))
        else:
            raise RequestError(f"signature algorithm {algorithm} does not fit the key")
    except InvalidSignature:
        raise RequestError("the signature does not verify") from None


# --------------------------------------------------------------------------- PKCS#10


@dataclass(frozen=True)
class CertificateRequest:
    """What the service uses of a PKCS#10: the proven public key (and the raw DER)."""

    der: bytes
    public_key: PublicKeyTypes
    signature_algorithm: str

    @property
    def key_size(self) -> int:
        size = getattr(self.public_key, "key_size", None)
        return int(size) if size is not None else 0


def parse_certificate_request(der: bytes) -> CertificateRequest:
    """Read a DER PKCS#10 and check its self-signature, tolerating any subject it holds."""
    try:
        outer = _expect(_read(der, 0), _SEQUENCE, "CertificationRequest")
        if outer.end != len(der):
            raise RequestError("trailing bytes after the request")
        info, algorithm, signature = _children(der, outer)
        _expect(info, _SEQUENCE, "certificationRequestInfo")
        version, _subject, spki, *_attributes = _children(der, info)
        _expect(version, _INTEGER, "version")
        _expect(spki, _SEQUENCE, "subjectPKInfo")
        algorithm_oid = _oid(der, _children(der, _expect(algorithm, _SEQUENCE, "algorithm"))[0])
        try:
            key = serialization.load_der_public_key(spki.raw(der))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise RequestError(f"unusable public key: {exc}") from None
        _verify(key, algorithm_oid, _bit_string(der, signature), info.raw(der))
    except (ValueError, IndexError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"not a PKCS#10 request: {exc}") from None
    return CertificateRequest(der, key, algorithm_oid)


# --------------------------------------------------------------------------- PKCS#7 / CMS

_SIGNED_DATA = "1.2.840.113549.1.7.2"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"


@dataclass(frozen=True)
class SignedRequest:
    """A PKCS#10 taken out of a SignedData, with the certificate that signed it."""

    request: CertificateRequest
    signer: x509.Certificate


def open_signed_data(der: bytes) -> SignedRequest:
    """Take the PKCS#10 out of a CMS SignedData and verify the signer's signature over it.

    The signer is the certificate among ``certificates`` that the SignerInfo names (issuer
    and serial number); with signed attributes, the ``messageDigest`` must match the content
    and the signature covers the attributes (RFC 5652 section 5.4). Whether the signer is
    trusted is for the caller to decide.
    """
    try:
        content_info = _expect(_read(der, 0), _SEQUENCE, "ContentInfo")
        content_type, explicit = _children(der, content_info)[:2]
        if _oid(der, content_type) != _SIGNED_DATA:
            raise RequestError("not a SignedData")
        signed_data = _expect(_children(der, explicit)[0], _SEQUENCE, "SignedData")
        parts = _children(der, signed_data)
        encap = _expect(parts[2], _SEQUENCE, "encapContentInfo")
        encap_parts = _children(der, encap)
        if len(encap_parts) < 2:
            raise RequestError("the SignedData carries no request (detached)")
        octets = _children(der, encap_parts[1])[0]
        content = _octets(der, octets)
        certificates = [
            x509.load_der_x509_certificate(item.raw(der))
            for part in parts[3:]
            if part.tag == 0xA0
            for item in _children(der, part)
        ]
        signer_infos = _expect(parts[-1], _SET, "signerInfos")
        infos = _children(der, signer_infos)
        if len(infos) != 1:
            raise RequestError("expected exactly one signer")
        signer = _check_signer(der, infos[0], certificates, content)
    except (ValueError, IndexError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"not a PKCS#7 SignedData: {exc}") from None
    return SignedRequest(parse_certificate_request(content), signer)


def _octets(der: bytes, item: _TLV) -> bytes:
    """An OCTET STRING's bytes, also in the constructed (BER-like) form some encoders use."""
    if item.tag == _OCTET_STRING:
        return item.value(der)
    if item.tag == 0x24:
        return b"".join(_octets(der, child) for child in _children(der, item))
    raise RequestError("eContent is not an OCTET STRING")


def _check_signer(
    der: bytes, info: _TLV, certificates: list[x509.Certificate], content: bytes
) -> x509.Certificate:
    fields = _children(der, _expect(info, _SEQUENCE, "SignerInfo"))
    sid = fields[1]
    if sid.tag != _SEQUENCE:
        raise RequestError("only issuerAndSerialNumber signer ids are supported")
    issuer, serial = _children(der, sid)
    serial_number = int.from_bytes(_expect(serial, _INTEGER, "serial").value(der), "big")
    issuer_der = issuer.raw(der)
    signer = next(
        (
            cert
            for cert in certificates
            if cert.serial_number == serial_number and cert.issuer.public_bytes() == issuer_der
        ),
        None,
    )
    if signer is None:
        raise RequestError("the signer's certificate is not in the SignedData")
    digest_oid = _oid(der, _children(der, fields[2])[0])
    digest_type = _HASHES.get(digest_oid)
    if digest_type is None:
        raise RequestError(f"unsupported digest algorithm {digest_oid}")
    index = 3
    message = content
    if fields[index].tag == 0xA0:  # signedAttrs [0] IMPLICIT
        attributes = fields[index]
        found = None
        for attribute in _children(der, attributes):
            oid_item, values = _children(der, attribute)
            if _oid(der, oid_item) == _MESSAGE_DIGEST:
                found = _expect(_children(der, values)[0], _OCTET_STRING, "digest").value(der)
        expected = hashlib.new(digest_type.name, content).digest()
        if found != expected:
            raise RequestError("the messageDigest does not match the request")
        # The signature covers the attributes DER-encoded as a SET (tag 0x31), not [0].
        message = bytes([_SET]) + attributes.raw(der)[1:]
        index += 1
    algorithm = _oid(der, _children(der, fields[index])[0])
    signature = _expect(fields[index + 1], _OCTET_STRING, "signature").value(der)
    _verify(signer.public_key(), algorithm, signature, message, digest_type)
    return signer
