"""Enrolment profiles (``.mobileconfig``): the MDM payload, the device identity, the root.

An enrolment profile is a ``Configuration`` profile with three payloads:

* ``com.apple.security.root``: the service's CA, so the device trusts the service's TLS
  certificate and the profile's signer;
* ``com.apple.security.pkcs12``: the device identity issued by the service's CA, with its
  password (the profile is the secret that carries it, served over HTTPS only);
* ``com.apple.mdm``: ``ServerURL``, ``CheckInURL``, ``Topic`` (the push certificate's
  UID), ``IdentityCertificateUUID`` (the PKCS#12 payload), ``SignMessage`` (devices sign
  every message, ``Mdm-Signature``), ``AccessRights`` (all: 8191),
  ``CheckOutWhenRemoved`` and ``ServerCapabilities``.

The profile is then signed (CMS, attached) with the service's certificate by the caller
(:func:`engine.protocols.cms.sign`), served as ``application/x-apple-aspen-config``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import pkcs12

from .apple_mdm import write_plist

CONTENT_TYPE = "application/x-apple-aspen-config"
#: Every access right of the MDM payload (Apple: bits 1..4096 summed).
ALL_ACCESS_RIGHTS = 8191
#: What the service does beyond the base protocol: user channels, bootstrap tokens.
SERVER_CAPABILITIES = ("com.apple.mdm.per-user-connections", "com.apple.mdm.bootstraptoken")


@dataclass(frozen=True)
class EnrolmentProfile:
    """What goes into one enrolment profile."""

    identifier: str  # PayloadIdentifier of the profile, e.g. "com.example.emm.acme"
    organisation_name: str
    server_url: str
    check_in_url: str
    topic: str
    root: x509.Certificate
    identity: x509.Certificate
    identity_key: RSAPrivateKey
    identity_password: str


def _uuid() -> str:
    return str(uuid.uuid4()).upper()


def identity_pkcs12(
    certificate: x509.Certificate, key: RSAPrivateKey, password: str, name: str
) -> bytes:
    """The device identity as PKCS#12, encrypted the way every iOS and macOS release reads
    (PBES1 3DES with SHA-1 MAC; the AES variants are refused by older releases)."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(name.encode(), key, certificate, None, encryption)


def build_profile(profile: EnrolmentProfile) -> bytes:
    """The unsigned profile (XML plist)."""
    identity_uuid = _uuid()
    root_der = profile.root.public_bytes(serialization.Encoding.DER)
    payloads = [
        {
            "PayloadType": "com.apple.security.root",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{profile.identifier}.root",
            "PayloadUUID": _uuid(),
            "PayloadDisplayName": "Management root certificate",
            "PayloadCertificateFileName": "root.cer",
            "PayloadContent": root_der,
        },
        {
            "PayloadType": "com.apple.security.pkcs12",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{profile.identifier}.identity",
            "PayloadUUID": identity_uuid,
            "PayloadDisplayName": "Device management identity",
            "PayloadCertificateFileName": "identity.p12",
            "Password": profile.identity_password,
            "PayloadContent": identity_pkcs12(
                profile.identity,
                profile.identity_key,
                profile.identity_password,
                "Device management identity",
            ),
        },
        {
            "PayloadType": "com.apple.mdm",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{profile.identifier}.mdm",
            "PayloadUUID": _uuid(),
            "PayloadDisplayName": "Device management",
            "ServerURL": profile.server_url,
            "CheckInURL": profile.check_in_url,
            "Topic": profile.topic,
            "IdentityCertificateUUID": identity_uuid,
            "SignMessage": True,
            "AccessRights": ALL_ACCESS_RIGHTS,
            "CheckOutWhenRemoved": True,
            "ServerCapabilities": list(SERVER_CAPABILITIES),
        },
    ]
    return write_plist(
        {
            "PayloadType": "Configuration",
            "PayloadVersion": 1,
            "PayloadIdentifier": profile.identifier,
            "PayloadUUID": _uuid(),
            "PayloadDisplayName": f"{profile.organisation_name} device management",
            "PayloadOrganization": profile.organisation_name,
            "PayloadDescription": "Lets your organisation manage this device.",
            "PayloadScope": "System",
            "PayloadContent": payloads,
        }
    )
