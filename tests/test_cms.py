"""How strictly ``Mdm-Signature`` is read: real signatures, edited one element at a time.

Each malformed input starts as a SignedData ``cryptography`` made; the helpers below
re-encode the DER around the edited element so that only that element is wrong.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding

from engine.pki import CertificateAuthority
from engine.protocols import cms

BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">\n<dict>\n'
    b"    <key>Status</key>\n    <string>Idle</string>\n"
    b"    <key>UDID</key>\n    <string>00008120-001A2D3E0C12801E</string>\n"
    b"</dict>\n</plist>\n"
)

# Where the elements are in the SignedData ``cryptography`` makes (child indices from
# ContentInfo): ContentInfo > [0] > SignedData > {version, digestAlgorithms,
# encapContentInfo, [0] certificates, signerInfos} > SignerInfo > {version, sid,
# digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature}.
SIGNED_DATA = (1, 0)
ENCAPSULATED = (*SIGNED_DATA, 2)
CERTIFICATES = (*SIGNED_DATA, 3)
SIGNER_INFOS = (*SIGNED_DATA, 4)
SIGNER_INFO = (*SIGNER_INFOS, 0)
DIGEST_ALGORITHM = (*SIGNER_INFO, 2)
SIGNED_ATTRIBUTES = (*SIGNER_INFO, 3)

CONTENT_TYPE = bytes.fromhex("2a864886f70d010903")  # 1.2.840.113549.1.9.3
MESSAGE_DIGEST = bytes.fromhex("2a864886f70d010904")  # 1.2.840.113549.1.9.4
SIGNED_DATA_OID = bytes.fromhex("2a864886f70d010702")  # 1.2.840.113549.1.7.2
MD5 = bytes.fromhex("2a864886f70d0205")  # 1.2.840.113549.2.5


# --------------------------------------------------------------------------- DER editing


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = (len(content).bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + len(content).to_bytes(size, "big") + content


def parse(element: bytes) -> tuple[int, bytes, int]:
    """Tag, content and length in bytes of the (well-formed) element at the start."""
    tag, first = element[0], element[1]
    start = 2
    length = first
    if first & 0x80:
        start += first & 0x7F
        length = int.from_bytes(element[2:start], "big")
    return tag, element[start : start + length], start + length


def children(content: bytes) -> list[bytes]:
    """The elements, whole, one after another in ``content``."""
    items = []
    while content:
        *_, size = parse(content)
        items.append(content[:size])
        content = content[size:]
    return items


def element(der: bytes, path: tuple[int, ...]) -> bytes:
    """The element at ``path`` (child indices) under ``der``."""
    for index in path:
        der = children(parse(der)[1])[index]
    return der


def edit(der: bytes, path: tuple[int, ...], change: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """``der`` with the children of the element at ``path`` changed, lengths re-encoded."""
    tag, content, _ = parse(der)
    items = children(content)
    if path:
        items[path[0]] = edit(items[path[0]], path[1:], change)
    else:
        items = change(items)
    return tlv(tag, b"".join(items))


def attribute(der: bytes, oid: bytes) -> int:
    """Index of the signed attribute of type ``oid``."""
    attributes = children(parse(element(der, SIGNED_ATTRIBUTES))[1])
    return [parse(children(parse(a)[1])[0])[1] for a in attributes].index(oid)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("CMS test CA", key_size=2048)


@pytest.fixture(scope="module")
def signer(ca: CertificateAuthority) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate, _ = ca.issue_client_certificate("device", public_key=key.public_key())
    return certificate, key


@pytest.fixture(scope="module")
def signature(signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> bytes:
    return cms.sign_detached(BODY, *signer)


def refused(der: bytes, match: str | None = None, body: bytes = BODY) -> None:
    with pytest.raises(cms.SignatureError, match=match):
        cms.verify_detached(der, body)


# --------------------------------------------------------------------------- the tests


def test_the_unedited_signature_names_its_signer(
    signature: bytes, signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    assert cms.verify_detached(signature, BODY) == signer[0]
    assert cms.verify_header(base64.encodebytes(signature).decode(), BODY) == signer[0]
    # The editing helpers give back what they read.
    assert edit(signature, SIGNER_INFO, lambda items: items) == signature


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 10, 100, -100, -2, -1])
def test_truncated_der(signature: bytes, cut: int) -> None:
    refused(signature[:cut])


def test_a_truncated_length() -> None:
    refused(b"\x30\x82\x01", "truncated DER length")


def test_an_indefinite_length(signature: bytes) -> None:
    def indefinite(items: list[bytes]) -> list[bytes]:
        tag, content, _ = parse(items[0])
        return [bytes([tag, 0x80]) + content + b"\x00\x00"]

    refused(b"\x30\x80" + parse(signature)[1] + b"\x00\x00", "indefinite")
    refused(edit(signature, SIGNER_INFOS, indefinite), "indefinite")


def test_a_length_of_five_bytes(signature: bytes) -> None:
    content = parse(signature)[1]
    refused(b"\x30\x85" + len(content).to_bytes(5, "big") + content, "oversized")


def test_a_high_tag_number(signature: bytes) -> None:
    refused(edit(signature, ENCAPSULATED, lambda items: [b"\x1f" + items[0][1:]]), "high tag")


def test_a_length_running_past_its_container(signature: bytes) -> None:
    def longer(items: list[bytes]) -> list[bytes]:  # the last child claims one byte more
        tag, content, _ = parse(items[-1])
        return [*items[:-1], bytes([tag, len(content) + 1]) + content]

    refused(edit(signature, ENCAPSULATED, longer), "runs past its container")
    refused(edit(signature, DIGEST_ALGORITHM, longer), "runs past its container")


def test_trailing_bytes(signature: bytes) -> None:
    refused(signature + b"\x00", "trailing bytes")
    refused(signature + b"\x05\x00", "trailing bytes")
    refused(edit(signature, (), lambda items: [*items, b"\x05\x00"]), "trailing bytes")
    refused(edit(signature, (1,), lambda items: [*items, b"\x05\x00"]), "trailing bytes")


def test_elements_where_rfc_5652_does_not_put_them(signature: bytes) -> None:
    refused(edit(signature, SIGNED_DATA, lambda items: [items[1], items[0], *items[2:]]), "tag")
    refused(edit(signature, SIGNER_INFO, lambda items: [*items[:5], b"\x03\x01\x00"]), "tag")
    refused(
        edit(signature, (), lambda items: [tlv(0x06, SIGNED_DATA_OID[:-1] + b"\x01"), items[1]])
    )
    refused(edit(signature, SIGNED_DATA, lambda items: items[:3]), "no signerInfos")


def test_two_signers(signature: bytes) -> None:
    refused(edit(signature, SIGNER_INFOS, lambda items: items * 2), "exactly one signer")


def test_a_tampered_body(signature: bytes) -> None:
    refused(signature, "not over this body", BODY.replace(b"Idle", b"Idl3"))
    refused(signature, "not over this body", BODY + b"\n")


def test_a_tampered_message_digest(signature: bytes) -> None:
    """A digest of another body: the signature over the attributes no longer verifies."""
    other = BODY.replace(b"Idle", b"Idl3")
    index = attribute(signature, MESSAGE_DIGEST)

    def digest_of_other(items: list[bytes]) -> list[bytes]:
        digest = tlv(
            0x30, tlv(0x06, MESSAGE_DIGEST) + tlv(0x31, tlv(0x04, hashlib.sha256(other).digest()))
        )
        return [*items[:index], digest, *items[index + 1 :]]

    tampered = edit(signature, SIGNED_ATTRIBUTES, digest_of_other)
    refused(tampered, "does not verify", other)
    refused(tampered, "not over this body")


def test_a_message_digest_with_two_values(signature: bytes) -> None:
    index = attribute(signature, MESSAGE_DIGEST)
    refused(
        edit(signature, (*SIGNED_ATTRIBUTES, index, 1), lambda items: items * 2),
        "exactly one message digest",
    )


def test_a_duplicated_signed_attribute(signature: bytes) -> None:
    for oid in (CONTENT_TYPE, MESSAGE_DIGEST):
        index = attribute(signature, oid)
        refused(
            edit(signature, SIGNED_ATTRIBUTES, lambda items, i=index: [*items, items[i]]),
            "appears twice",
        )


def test_a_content_type_other_than_data(signature: bytes) -> None:
    index = attribute(signature, CONTENT_TYPE)
    refused(
        edit(signature, (*SIGNED_ATTRIBUTES, index, 1), lambda _: [tlv(0x06, SIGNED_DATA_OID)]),
        "content type is not data",
    )
    refused(
        edit(signature, SIGNED_ATTRIBUTES, lambda items: items[:index] + items[index + 1 :]),
        "content type is not data",
    )


def test_an_unknown_digest_algorithm(signature: bytes) -> None:
    refused(
        edit(signature, DIGEST_ALGORITHM, lambda items: [tlv(0x06, MD5), *items[1:]]),
        r"unsupported digest algorithm 1\.2\.840\.113549\.2\.5",
    )


def test_a_subject_key_identifier_names_the_signer(
    signature: bytes, signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    identifier = signer[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    by_key = edit(
        signature,
        SIGNER_INFO,
        lambda items: [items[0], tlv(0x80, identifier.value.digest), *items[2:]],
    )
    assert cms.verify_detached(by_key, BODY) == signer[0]
    unknown = edit(
        signature, SIGNER_INFO, lambda items: [items[0], tlv(0x80, b"\x00" * 20), *items[2:]]
    )
    refused(unknown, "signer's certificate is not in the signature")


def test_a_signer_not_among_the_certificates(signature: bytes) -> None:
    refused(edit(signature, CERTIFICATES, lambda _: []), "not in the signature")


def test_a_malformed_certificate(signature: bytes) -> None:
    """``cryptography``'s own errors (not all ValueErrors) end as SignatureError too."""
    version = (*CERTIFICATES, 0, 0, 0)  # Certificate > TBSCertificate > [0] version
    refused(edit(signature, version, lambda _: [tlv(0x02, b"\x07")]), "malformed signature")


def test_a_signer_key_neither_rsa_nor_ec(ca: CertificateAuthority, signature: bytes) -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    certificate, _ = ca.issue_client_certificate("ed25519", public_key=key)
    identifier = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    der = certificate.public_bytes(Encoding.DER)
    other = edit(signature, CERTIFICATES, lambda _: [der])
    other = edit(
        other, SIGNER_INFO, lambda items: [items[0], tlv(0x80, identifier.value.digest), *items[2:]]
    )
    refused(other, "unsupported signer key Ed25519PublicKey")


def test_too_long_or_not_base64(signature: bytes) -> None:
    refused(signature + b"\x00" * cms.MAX_SIGNATURE_LENGTH, "too long")
    with pytest.raises(cms.SignatureError, match="too long"):
        cms.verify_header("A" * (cms.MAX_SIGNATURE_LENGTH * 2), BODY)
    with pytest.raises(cms.SignatureError, match="not base64"):
        cms.verify_header(base64.b64encode(signature).decode()[:-1] + "*", BODY)


def test_attached_content(
    signer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], signature: bytes
) -> None:
    signed = cms.sign(BODY, *signer)
    assert cms.signed_content(signed) == (BODY, signer[0])
    other = [tlv(0x04, BODY.replace(b"Idle", b"Idl3"))]  # [0] EXPLICIT OCTET STRING
    with pytest.raises(cms.SignatureError, match="not over this body"):
        cms.signed_content(edit(signed, (*ENCAPSULATED, 1), lambda _: other))
    with pytest.raises(cms.SignatureError, match="carries no content"):
        cms.signed_content(signature)
    with pytest.raises(cms.SignatureError, match="not detached"):
        cms.verify_detached(signed, BODY)
