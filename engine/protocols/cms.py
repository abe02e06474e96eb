"""CMS SignedData (RFC 5652) as Apple MDM uses it: signed profiles and ``Mdm-Signature``.

Two directions:

* **Signing** an enrolment profile with the service's certificate: the profile travels inside
  the SignedData (attached content), so the device shows the signer ("Verified") and can
  tell the profile was not changed on the way. ``cryptography`` builds it.
* **Verifying** the ``Mdm-Signature`` header of a device's check-in or command report: a
  base64 SignedData over the request body, *detached* (no content inside), signed with the
  identity the enrolment profile gave the device. ``cryptography`` offers no CMS
  verification, so this module reads the few DER structures involved itself, strictly
  (definite lengths only, every element where RFC 5652 puts it), and checks:
  the content type, the signed attributes' ``messageDigest`` against the body's digest
  (or, without signed attributes, the signature over the body itself), and the signature
  with the signer certificate named by ``sid`` and carried in ``certificates``.

Whether the signer certificate is one of *ours* (issued by the service's CA, bound to the
enrolment) is the caller's decision; this module only proves who signed the body.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

__all__ = [
    "SignatureError",
    "sign",
    "sign_detached",
    "signed_content",
    "verify_detached",
    "verify_header",
]

_SIGNED_DATA = "1.2.840.113549.1.7.2"
_DATA = "1.2.840.113549.1.7.1"
_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_CONTENT_TYPE = "1.2.840.113549.1.9.3"
#: Digest algorithms a signer may use. SHA-1 stays: devices of the iOS 4-era protocol
#: version still sign with it, and it only names the digest of the body (collision
#: attacks need a chosen prefix the attacker cannot sign anyway).
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
#: A signature of a device is 1-3 KiB of DER; more is refused before it is decoded.
MAX_SIGNATURE_LENGTH = 32 * 1024

# DER tags used below (universal, or context-specific constructed).
_INTEGER, _OCTET_STRING, _OID = 0x02, 0x04, 0x06
_SEQUENCE, _SET = 0x30, 0x31
_CONTEXT_0, _CONTEXT_1 = 0xA0, 0xA1


class SignatureError(ValueError):
    """The signature is missing, malformed, or does not sign this body."""


def sign(content: bytes, certificate: x509.Certificate, key: PrivateKeyTypes) -> bytes:
    """DER SignedData with ``content`` attached, signed with SHA-256 (a signed profile)."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(certificate, key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def sign_detached(content: bytes, certificate: x509.Certificate, key: PrivateKeyTypes) -> bytes:
    """DER SignedData over ``content`` without it: what a device puts in ``Mdm-Signature``."""
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(certificate, key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(Encoding.DER, [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.DetachedSignature])
    )


def verify_header(header: str, body: bytes) -> x509.Certificate:
    """The signer of ``body`` according to an ``Mdm-Signature`` header (base64 DER)."""
    if len(header) > MAX_SIGNATURE_LENGTH * 4 // 3 + 4:
        raise SignatureError("Mdm-Signature is too long")
    try:
        der = base64.b64decode("".join(header.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("Mdm-Signature is not base64") from None
    return verify_detached(der, body)


def verify_detached(der: bytes, body: bytes) -> x509.Certificate:
    """The certificate whose key signed ``body``, per the detached SignedData ``der``."""
    return _guarded(der, body)[1]


def signed_content(der: bytes) -> tuple[bytes, x509.Certificate]:
    """The content of an attached SignedData (a signed profile) and its signer, verified."""
    return _guarded(der, None)


def _guarded(der: bytes, body: bytes | None) -> tuple[bytes, x509.Certificate]:
    try:
        return _verify(der, body)
    except SignatureError:
        raise
    except (ValueError, TypeError, IndexError, UnsupportedAlgorithm) as exc:
        raise SignatureError(f"malformed signature: {exc}") from None


# --------------------------------------------------------------------------- DER reading


@dataclass(frozen=True, slots=True)
class _Element:
    tag: int
    raw: bytes  # the whole TLV
    value: bytes  # the contents


def _read(data: bytes, offset: int = 0) -> tuple[_Element, int]:
    """One TLV at ``offset``; definite lengths only (DER)."""
    if offset + 2 > len(data):
        raise SignatureError("truncated DER")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise SignatureError("high tag numbers do not occur in CMS signatures")
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise SignatureError("indefinite or oversized DER length")
        if position + count > len(data):
            raise SignatureError("truncated DER length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise SignatureError("DER element runs past its container")
    return _Element(tag, data[offset:end], data[position:end]), end


def _children(element: _Element) -> list[_Element]:
    items = []
    offset = 0
    while offset < len(element.value):
        item, offset = _read(element.value, offset)
        items.append(item)
    return items


def _expect(element: _Element, tag: int, what: str) -> _Element:
    if element.tag != tag:
        raise SignatureError(f"{what}: expected tag {tag:#04x}, found {element.tag:#04x}")
    return element


def _oid(element: _Element) -> str:
    return _oid_text(_expect(element, _OID, "object identifier").value)


@functools.lru_cache(maxsize=256)
def _oid_text(value: bytes) -> str:
    """Dotted form of an OID's content octets; a message carries the same dozen each time."""
    if not value or value[-1] & 0x80:
        raise SignatureError("malformed object identifier")
    parts: list[int] = []
    number = 0
    for byte in value:
        number = (number << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(number)
            number = 0
    first = min(parts[0] // 40, 2)
    return ".".join(str(p) for p in (first, parts[0] - 40 * first, *parts[1:]))


def _whole(data: bytes, tag: int, what: str) -> _Element:
    element, end = _read(data)
    if end != len(data):
        raise SignatureError(f"{what}: trailing bytes")
    return _expect(element, tag, what)


def _verify(der: bytes, body: bytes | None) -> tuple[bytes, x509.Certificate]:
    if body is not None and len(der) > MAX_SIGNATURE_LENGTH:
        raise SignatureError("signature is too long")
    content_info = _children(_whole(der, _SEQUENCE, "ContentInfo"))
    if len(content_info) != 2 or _oid(content_info[0]) != _SIGNED_DATA:
        raise SignatureError("not a CMS SignedData")
    (signed_data,) = _children(_expect(content_info[1], _CONTEXT_0, "content"))
    parts = _children(_expect(signed_data, _SEQUENCE, "SignedData"))
    if len(parts) < 4:
        raise SignatureError("SignedData is incomplete")
    _expect(parts[0], _INTEGER, "version")
    _expect(parts[1], _SET, "digestAlgorithms")
    encapsulated = _children(_expect(parts[2], _SEQUENCE, "encapContentInfo"))
    if not encapsulated or _oid(encapsulated[0]) != _DATA:
        raise SignatureError("the signed content is not data")
    if body is None:  # attached: the content is inside, [0] EXPLICIT OCTET STRING
        if len(encapsulated) != 2:
            raise SignatureError("the signature carries no content")
        (inner,) = _children(_expect(encapsulated[1], _CONTEXT_0, "eContent"))
        body = _expect(inner, _OCTET_STRING, "eContent").value
    elif len(encapsulated) != 1:
        raise SignatureError("the signature is not detached")
    certificates: list[_Certificate] = []
    signer_infos: _Element | None = None
    for part in parts[3:]:
        if part.tag == _CONTEXT_0:
            certificates = [
                _certificate(item.raw) for item in _children(part) if item.tag == _SEQUENCE
            ]
        elif part.tag == _SET:
            signer_infos = part
    if signer_infos is None:
        raise SignatureError("no signerInfos")
    signers = _children(signer_infos)
    if len(signers) != 1:
        raise SignatureError("exactly one signer expected")
    return body, _check_signer(signers[0], certificates, body)


@dataclass(frozen=True, slots=True)
class _Certificate:
    """A certificate with what matching a signer and checking its signature read of it."""

    certificate: x509.Certificate
    key: object  # the public key
    issuer: bytes  # DER of the issuer name
    serial_number: int


@functools.lru_cache(maxsize=8192)
def _certificate(der: bytes) -> _Certificate:
    """Parsed once per certificate: a device sends the same one with every message."""
    certificate = x509.load_der_x509_certificate(der)
    return _Certificate(
        certificate,
        certificate.public_key(),
        certificate.issuer.public_bytes(),
        certificate.serial_number,
    )


def _check_signer(
    signer: _Element, certificates: list[_Certificate], body: bytes
) -> x509.Certificate:
    fields = _children(_expect(signer, _SEQUENCE, "SignerInfo"))
    if len(fields) < 5:
        raise SignatureError("SignerInfo is incomplete")
    certificate = _signer_certificate(fields[1], certificates)
    digest_oid = _oid(_children(_expect(fields[2], _SEQUENCE, "digestAlgorithm"))[0])
    if digest_oid not in _DIGESTS:
        raise SignatureError(f"unsupported digest algorithm {digest_oid}")
    algorithm = _DIGESTS[digest_oid]()
    index = 3
    signed_attributes: _Element | None = None
    if fields[index].tag == _CONTEXT_0:
        signed_attributes = fields[index]
        index += 1
    if len(fields) < index + 2:
        raise SignatureError("SignerInfo is incomplete")
    _expect(fields[index], _SEQUENCE, "signatureAlgorithm")
    signature = _expect(fields[index + 1], _OCTET_STRING, "signature").value
    if signed_attributes is None:
        signed = body
    else:
        _check_attributes(signed_attributes, algorithm, body)
        # RFC 5652 5.4: the signature covers the attributes' DER with the SET tag, not [0].
        signed = bytes([_SET]) + signed_attributes.raw[1:]
    _check_signature(certificate.key, signature, signed, algorithm)
    return certificate.certificate


def _signer_certificate(sid: _Element, certificates: list[_Certificate]) -> _Certificate:
    if sid.tag == _SEQUENCE:  # IssuerAndSerialNumber
        issuer, serial = _children(sid)
        number = int.from_bytes(_expect(serial, _INTEGER, "serialNumber").value, "big", signed=True)
        for certificate in certificates:
            if certificate.serial_number == number and certificate.issuer == issuer.raw:
                return certificate
    elif sid.tag == 0x80:  # [0] SubjectKeyIdentifier
        for certificate in certificates:
            try:
                ski = certificate.certificate.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                )
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == sid.value:
                return certificate
    raise SignatureError("the signer's certificate is not in the signature")


def _check_attributes(attributes: _Element, algorithm: hashes.HashAlgorithm, body: bytes) -> None:
    found: dict[str, list[_Element]] = {}
    for attribute in _children(attributes):
        kind, values = _children(_expect(attribute, _SEQUENCE, "Attribute"))
        if _oid(kind) in found:
            raise SignatureError("a signed attribute appears twice")
        found[_oid(kind)] = _children(_expect(values, _SET, "attrValues"))
    if [_oid(v) for v in found.get(_CONTENT_TYPE, [])] != [_DATA]:
        raise SignatureError("the signed content type is not data")
    digests = found.get(_MESSAGE_DIGEST, [])
    if len(digests) != 1:
        raise SignatureError("no message digest among the signed attributes")
    hasher = hashes.Hash(algorithm)
    hasher.update(body)
    if _expect(digests[0], _OCTET_STRING, "messageDigest").value != hasher.finalize():
        raise SignatureError("the signature is not over this body")


def _check_signature(
    key: object, signature: bytes, signed: bytes, algorithm: hashes.HashAlgorithm
) -> None:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signed, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, signed, ec.ECDSA(algorithm))
        else:
            raise SignatureError(f"unsupported signer key {type(key).__name__}")
    except InvalidSignature:
        raise SignatureError("the signature does not verify") from None
