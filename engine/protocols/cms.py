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

Verification runs on every message a device sends, so it is kept cheap, in two steps:
:func:`_read_signed_data` walks the DER by offsets into the one ``bytes`` object (no
element is copied, only the few values the check needs are sliced out) and
:func:`_check_signature` does the cryptography (the body's digest and the signature).

Whether the signer certificate is one of *ours* (issued by the service's CA, bound to the
enrolment) is the caller's decision; this module only proves who signed the body.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, ParamSpec, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
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

# DER tags used below (universal, or context-specific).
_INTEGER, _OCTET_STRING, _OID = 0x02, 0x04, 0x06
_SEQUENCE, _SET = 0x30, 0x31
_CONTEXT_0 = 0xA0  # constructed [0]
_PRIMITIVE_0 = 0x80  # primitive [0]: a SubjectKeyIdentifier signer id
#: Any tag, for elements whose tag RFC 5652 leaves open or this module does not check.
_ANY = -1

#: What reading a malformed signature can raise besides SignatureError: some of
#: ``cryptography``'s certificate errors (an unknown version, a duplicated extension, an
#: unknown kind of name among the extensions) are not ValueErrors.
_MALFORMED = (
    ValueError,
    TypeError,
    IndexError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_P = ParamSpec("_P")
_R = TypeVar("_R")


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
    return _check_signature(_read_signed_data(der, detached=True), body)


def signed_content(der: bytes) -> tuple[bytes, x509.Certificate]:
    """The content of an attached SignedData (a signed profile) and its signer, verified."""
    signed = _read_signed_data(der, detached=False)
    assert signed.content is not None  # an attached SignedData without content is refused
    return signed.content, _check_signature(signed, signed.content)


def _refusing(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Whatever a malformed signature makes go wrong inside ``function`` is a SignatureError.

    Callers catch one exception; the parsers involved (``cryptography``'s certificate
    loader, the key's ``verify``) have their own, which must not escape as a crash.
    """

    @functools.wraps(function)
    def refusing(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except SignatureError:
            raise
        except _MALFORMED as exc:
            raise SignatureError(f"malformed signature: {exc}") from None

    return refusing


# --------------------------------------------------------------------------- DER reading
#
# An element is located by offsets into the whole DER: ``start`` (its tag), ``content``
# (after its length) and ``end`` (after its contents); ``limit`` is the end of the element
# that contains it. Nothing is copied until a value is needed.


def _tlv(
    der: bytes, start: int, limit: int, tag: int = _ANY, what: str = "element"
) -> tuple[int, int, int]:
    """The tag, content offset and end of the element at ``start``, which ends by ``limit``.

    DER only: definite lengths of at most four bytes and low tag numbers (which is all CMS
    uses). With ``tag``, an element with another tag is refused.
    """
    if start + 2 > limit:
        raise SignatureError(f"{what}: truncated DER")
    found = der[start]
    if found & 0x1F == 0x1F:
        raise SignatureError("high tag numbers do not occur in CMS signatures")
    if tag != _ANY and found != tag:
        raise SignatureError(f"{what}: expected tag {tag:#04x}, found {found:#04x}")
    length = der[start + 1]
    content = start + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise SignatureError("indefinite or oversized DER length")
        if content + count > limit:
            raise SignatureError("truncated DER length")
        length = int.from_bytes(der[content : content + count], "big")
        content += count
    end = content + length
    if end > limit:
        raise SignatureError("DER element runs past its container")
    return found, content, end


def _only(der: bytes, start: int, limit: int, tag: int, what: str) -> tuple[int, int]:
    """The content and end of the element at ``start``, the last one before ``limit``."""
    _, content, end = _tlv(der, start, limit, tag, what)
    if end != limit:
        raise SignatureError(f"{what}: trailing bytes")
    return content, end


def _walk(der: bytes, start: int, limit: int) -> None:
    """Read the elements from ``start`` to ``limit`` only to refuse malformed ones."""
    while start < limit:
        start = _tlv(der, start, limit)[2]


def _oid(der: bytes, start: int, limit: int, what: str) -> tuple[str, int]:
    """The object identifier at ``start`` (dotted) and its end."""
    _, content, end = _tlv(der, start, limit, _OID, what)
    return _oid_text(der[content:end]), end


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


# --------------------------------------------------------------------------- SignedData


@dataclass(frozen=True, slots=True)
class _Certificate:
    """A certificate with what matching a signer and checking its signature read of it."""

    certificate: x509.Certificate
    key: CertificatePublicKeyTypes
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


class _SignedData(NamedTuple):
    """What reading a SignedData found: everything the cryptographic check needs."""

    signer: _Certificate
    algorithm: hashes.HashAlgorithm
    signature: bytes
    #: The signed attributes as signed (RFC 5652 5.4: with the SET tag, not [0]) and their
    #: messageDigest; without signed attributes the signature is over the content itself.
    attributes: bytes | None
    message_digest: bytes | None
    content: bytes | None  # attached content (a signed profile); None when detached


@_refusing
def _read_signed_data(der: bytes, *, detached: bool) -> _SignedData:
    """The structural part of verifying ``der``: every element where RFC 5652 puts it.

    Cheap (no cryptography besides parsing a certificate not seen before), and nothing in
    it is trusted until :func:`_check_signature` has checked the signature.
    """
    if detached and len(der) > MAX_SIGNATURE_LENGTH:
        raise SignatureError("signature is too long")
    # ContentInfo ::= SEQUENCE { contentType OID, [0] EXPLICIT SignedData }
    start, limit = _only(der, 0, len(der), _SEQUENCE, "ContentInfo")
    content_type, position = _oid(der, start, limit, "contentType")
    if content_type != _SIGNED_DATA:
        raise SignatureError("not a CMS SignedData")
    start, limit = _only(der, position, limit, _CONTEXT_0, "content")
    start, limit = _only(der, start, limit, _SEQUENCE, "SignedData")
    # SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo,
    #   [0] certificates OPTIONAL, [1] crls OPTIONAL, signerInfos SET }
    position = _tlv(der, start, limit, _INTEGER, "version")[2]
    position = _tlv(der, position, limit, _SET, "digestAlgorithms")[2]
    _, encapsulated, position = _tlv(der, position, limit, _SEQUENCE, "encapContentInfo")
    content = _encapsulated_content(der, encapsulated, position, detached)
    certificates: list[_Certificate] = []
    signer_infos: tuple[int, int] | None = None
    while position < limit:
        tag, inner, end = _tlv(der, position, limit)
        if tag == _CONTEXT_0:
            certificates = []
            while inner < end:
                item, _, item_end = _tlv(der, inner, end)
                if item == _SEQUENCE:
                    certificates.append(_certificate(der[inner:item_end]))
                inner = item_end
        elif tag == _SET:
            signer_infos = inner, end
        position = end
    if signer_infos is None:
        raise SignatureError("no signerInfos")
    start, end = signer_infos
    _, start, limit = _tlv(der, start, end, _SEQUENCE, "SignerInfo")
    if limit != end:
        raise SignatureError("exactly one signer expected")
    return _read_signer_info(der, start, limit, certificates, content)


def _encapsulated_content(der: bytes, start: int, limit: int, detached: bool) -> bytes | None:
    """The attached content of EncapsulatedContentInfo, which must be data (None if detached)."""
    content_type, position = _oid(der, start, limit, "eContentType")
    if content_type != _DATA:
        raise SignatureError("the signed content is not data")
    if detached:
        if position != limit:
            raise SignatureError("the signature is not detached")
        return None
    if position == limit:
        raise SignatureError("the signature carries no content")
    start, limit = _only(der, position, limit, _CONTEXT_0, "eContent")  # [0] EXPLICIT
    start, limit = _only(der, start, limit, _OCTET_STRING, "eContent")
    return der[start:limit]


def _read_signer_info(
    der: bytes, start: int, limit: int, certificates: list[_Certificate], content: bytes | None
) -> _SignedData:
    """What the one SignerInfo says: who signed (``sid``), with which digest, over what.

    Its fields are read even where nothing in them is used (version, unsigned attributes),
    so that a malformed element anywhere is refused.
    """
    # SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm, [0] signedAttrs OPTIONAL,
    #   signatureAlgorithm, signature OCTET STRING, [1] unsignedAttrs OPTIONAL }
    position = _tlv(der, start, limit, _ANY, "SignerInfo version")[2]
    sid, sid_content, position = _tlv(der, position, limit, _ANY, "sid")
    signer = _signer_certificate(der, sid, sid_content, position, certificates)
    _, start, position = _tlv(der, position, limit, _SEQUENCE, "digestAlgorithm")
    digest_oid, parameters = _oid(der, start, position, "digestAlgorithm")
    _walk(der, parameters, position)
    if digest_oid not in _DIGESTS:
        raise SignatureError(f"unsupported digest algorithm {digest_oid}")
    attributes: bytes | None = None
    message_digest: bytes | None = None
    tag, start, end = _tlv(der, position, limit, _ANY, "signedAttrs")
    if tag == _CONTEXT_0:
        message_digest = _message_digest(der, start, end)
        attributes = bytes([_SET]) + der[position + 1 : end]
        position = end
    position = _tlv(der, position, limit, _SEQUENCE, "signatureAlgorithm")[2]
    _, start, position = _tlv(der, position, limit, _OCTET_STRING, "signature")
    _walk(der, position, limit)
    return _SignedData(
        signer,
        _DIGESTS[digest_oid](),
        der[start:position],
        attributes,
        message_digest,
        content,
    )


def _signer_certificate(
    der: bytes, sid: int, start: int, limit: int, certificates: list[_Certificate]
) -> _Certificate:
    """The certificate the signer identifier (``sid``, contents from ``start``) names."""
    if sid == _SEQUENCE:  # IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber }
        issuer_end = _tlv(der, start, limit, _ANY, "issuer")[2]
        number, number_end = _only(der, issuer_end, limit, _INTEGER, "serialNumber")
        serial_number = int.from_bytes(der[number:number_end], "big", signed=True)
        issuer = der[start:issuer_end]
        for certificate in certificates:
            if certificate.serial_number == serial_number and certificate.issuer == issuer:
                return certificate
    elif sid == _PRIMITIVE_0:  # [0] SubjectKeyIdentifier
        identifier = der[start:limit]
        for certificate in certificates:
            try:
                ski = certificate.certificate.extensions.get_extension_for_class(
                    x509.SubjectKeyIdentifier
                )
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == identifier:
                return certificate
    raise SignatureError("the signer's certificate is not in the signature")


def _message_digest(der: bytes, start: int, limit: int) -> bytes:
    """The messageDigest of the signed attributes from ``start`` to ``limit``.

    Each attribute type may appear once, the content type must be data and exactly one
    digest must be there; the other attributes' values are only read as DER.
    """
    seen: set[str] = set()
    message_digest: bytes | None = None
    content_type = False
    while start < limit:
        # Attribute ::= SEQUENCE { attrType OID, attrValues SET OF AttributeValue }
        _, position, end = _tlv(der, start, limit, _SEQUENCE, "Attribute")
        kind, position = _oid(der, position, end, "attrType")
        if kind in seen:
            raise SignatureError("a signed attribute appears twice")
        seen.add(kind)
        position, values_end = _only(der, position, end, _SET, "attrValues")
        if kind == _CONTENT_TYPE:
            value, position = _oid(der, position, values_end, "contentType")
            if value != _DATA or position != values_end:
                raise SignatureError("the signed content type is not data")
            content_type = True
        elif kind == _MESSAGE_DIGEST:
            _, value_start, position = _tlv(
                der, position, values_end, _OCTET_STRING, "messageDigest"
            )
            if position != values_end:
                raise SignatureError("exactly one message digest expected")
            message_digest = der[value_start:position]
        else:
            _walk(der, position, values_end)
        start = end
    if not content_type:
        raise SignatureError("the signed content type is not data")
    if message_digest is None:
        raise SignatureError("no message digest among the signed attributes")
    return message_digest


# --------------------------------------------------------------------------- cryptography


@_refusing
def _check_signature(signed: _SignedData, body: bytes) -> x509.Certificate:
    """The signer of ``body`` once the digest and the signature check out.

    The expensive part of verifying (hashing the body, the RSA or ECDSA verification),
    kept apart from the reading so that it can run where the CPU time is best spent.
    """
    algorithm = signed.algorithm
    if signed.attributes is None:
        message = body
    else:
        hasher = hashes.Hash(algorithm)
        hasher.update(body)
        if hasher.finalize() != signed.message_digest:
            raise SignatureError("the signature is not over this body")
        message = signed.attributes
    key = signed.signer.key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signed.signature, message, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signed.signature, message, ec.ECDSA(algorithm))
        else:
            raise SignatureError(f"unsupported signer key {type(key).__name__}")
    except InvalidSignature:
        raise SignatureError("the signature does not verify") from None
    return signed.signer.certificate
