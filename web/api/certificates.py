"""``/api/v1``: the APNS certificate of Apple MDM (Configuration → Services → Apple MDM)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from quart import Blueprint

from engine import apns_certificates as domain
from engine.principals import Principal

from ..context import service
from .operations import operation
from .schema import boolean, component, enum, integer, nullable, obj, string, timestamp

blueprint = Blueprint("api_certificates", __name__)

_FIELDS = obj(
    {
        "id": string(),
        "topic": string(description="the push topic: the certificate's subject UID"),
        "subject": string(),
        "not_before": timestamp(),
        "not_after": timestamp(description="expiry"),
        "days_left": integer(description="whole days until expiry (negative once expired)"),
        "source": enum("system", "organisation"),
    },
    "id",
    "topic",
    "subject",
    "not_before",
    "not_after",
    "days_left",
    "source",
)
APNS_CERTIFICATE = component("ApnsCertificate", _FIELDS)
CURRENT = component(
    "CurrentApnsCertificate", obj({"certificate": nullable(_FIELDS)}, "certificate")
)
UPLOAD = obj(
    {
        "pem": string(minLength=1, maxLength=65536, description="certificate and private key, PEM"),
        "pkcs12": string(minLength=1, maxLength=131072, description="a .p12 file, base64"),
        "password": string(maxLength=1024, description="of the .p12 file or the PEM key"),
        "allow_topic_change": boolean(
            description="accept a topic other than the current one (devices must re-enrol)"
        ),
    }
)


def _sample_pem() -> str:
    """A self-signed stand-in for an Apple push certificate, for the documented example.

    Made at start-up (an EC key takes microseconds), so no private key lives in the source.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(
                NameOID.USER_ID, "com.apple.mgmt.External.00000000-0000-4000-8000-000000000000"
            ),
            x509.NameAttribute(NameOID.COMMON_NAME, "APSP:sample"),
        ]
    )
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (
        certificate.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    ).decode()


_EXAMPLE = {"pem": _sample_pem()}


@operation(
    blueprint,
    "POST",
    "/config/apns-certificate",
    summary="Upload the system-wide APNS certificate and make it Apple MDM's (supervisor)",
    tag="configuration",
    body=UPLOAD,
    example=_EXAMPLE,
    responses={201: APNS_CERTIFICATE},
)
async def upload_system_certificate(
    who: Principal, body: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    context = service()
    uploaded = await domain.upload_system_certificate(
        context.store, who, context.deployment, domain.Upload(**body)
    )
    return uploaded, 201


@operation(
    blueprint,
    "GET",
    "/config/apns-certificate",
    summary="The system-wide APNS certificate: topic and expiry, never the key (supervisor)",
    tag="configuration",
    responses={200: CURRENT},
)
async def system_certificate(who: Principal) -> dict[str, Any]:
    context = service()
    return {"certificate": await domain.system_certificate(context.store, who, context.deployment)}


@operation(
    blueprint,
    "POST",
    "/organisations/{organisation}/config/apns-certificate",
    summary="Upload the organisation's own APNS certificate; Apple MDM then uses it",
    tag="configuration",
    body=UPLOAD,
    example=_EXAMPLE,
    responses={201: APNS_CERTIFICATE},
)
async def upload_organisation_certificate(
    who: Principal, organisation: str, body: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    context = service()
    uploaded = await domain.upload_organisation_certificate(
        context.store, who, context.deployment, organisation, domain.Upload(**body)
    )
    return uploaded, 201


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/config/apns-certificate",
    summary="The APNS certificate the organisation's Apple devices use (own or system-wide)",
    tag="configuration",
    responses={200: CURRENT},
)
async def organisation_certificate(who: Principal, organisation: str) -> dict[str, Any]:
    context = service()
    current = await domain.organisation_certificate(
        context.store, who, context.deployment, organisation
    )
    return {"certificate": current}
