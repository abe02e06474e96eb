"""The APNS certificate (Configuration → Services → Apple MDM): upload, check, use.

Apple MDM wakes devices with push notifications sent through the Apple Push Notification
service, authenticated by a push certificate Apple issues for the MDM vendor's customer.
Its subject's UID (OID 0.9.2342.19200300.100.1.1) is the push *topic*
(``com.apple.mgmt.External.<uuid>``) that every enrolled device learns at enrolment.

An upload is a certificate with its private key, as PEM text or as a base64 PKCS#12 file
with its password. It is refused (422, with the reason) unless it is an Apple push
certificate, its key matches, and it is valid now. The accepted certificate is stored in
``certificates`` (purpose ``apns``) and the Apple MDM setting ``apns_certificate`` is set to
its id by the service-settings units, in the same write (with their audit event).

Decisions worth knowing:

* An organisation that uploads its own certificate wants it used: the upload sets the
  override *and* turns *Use system-wide settings* off for Apple MDM. Other Apple MDM values
  it does not override keep following the system-wide ones; overrides it stored earlier
  count again (the settings view shows each value's source).
* Changing the topic strands every enrolled device (they only accept pushes for the topic
  they enrolled with), so a certificate whose topic differs from the one in use is refused
  unless the request says ``allow_topic_change``. Renewing with Apple keeps the topic.
* The private key is stored unencrypted (PKCS#8 PEM) because the notifier must use it
  unattended; the database file is the service's secret store, as for the CA key files.
* The topic check, the certificate row, the setting and their audit events are one unit
  of work: a failed settings change leaves no certificate behind, and of two uploads at
  once the second is checked against the first's topic.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from .audit import audit_event
from .errors import Invalid, Stale
from .ids import new_id
from .organisations import visible_organisation
from .principals import (
    AccountKind,
    Principal,
    Right,
    require_kind,
    require_right,
    require_supervisor,
)
from .service_settings import (
    Deployment,
    change_organisation_unit,
    change_system_unit,
    effective_settings_unit,
)
from .store import Conflict, Store
from .store.audit import insert_event
from .store.certificates import certificate_usable_by, insert_certificate
from .store.rows import Row
from .timestamps import format_time, now, parse_time

PURPOSE = "apns"
SERVICE = "apple_mdm"
SETTING = "apns_certificate"
TOPIC_PREFIX = "com.apple.mgmt"
#: A certificate issued minutes ago may look "not yet valid" on a clock a little behind.
_CLOCK_SKEW = timedelta(minutes=5)
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class Upload:
    """What the administrator sends: ``pem`` (certificate and key) or ``pkcs12`` (base64)."""

    pem: str | None = None
    pkcs12: str | None = None
    password: str | None = None  # of the PKCS#12 file, or of an encrypted PEM key
    allow_topic_change: bool = False


@dataclass(frozen=True)
class PushCertificate:
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # whatever else came with it (Apple's intermediate)
    key: PrivateKeyTypes
    topic: str


# --------------------------------------------------------------------------- checking


def read_push_certificate(upload: Upload, at: datetime) -> PushCertificate:
    """The push certificate of an upload, checked; :class:`Invalid` says what is wrong.

    Synchronous and CPU-bound (PKCS#12 key derivation): run it in a worker thread.
    """
    if (upload.pem is None) == (upload.pkcs12 is None):
        raise Invalid("send either pem or pkcs12 (with its password)", field="pem")
    field = "pem" if upload.pem is not None else "pkcs12"
    if upload.pem is not None:
        certificates, key = _from_pem(upload.pem, upload.password)
    else:
        assert upload.pkcs12 is not None
        certificates, key = _from_pkcs12(upload.pkcs12, upload.password)
    pushes = [c for c in certificates if topic_of(c) is not None]
    if not pushes:
        raise Invalid(
            "not an Apple push certificate: no certificate has a subject UID starting with "
            f"{TOPIC_PREFIX} (get one at identity.apple.com with your signed CSR)",
            field=field,
        )
    if key is None:
        raise Invalid("the private key is missing: send it with the certificate", field=field)
    matching = [c for c in pushes if _public_der(c.public_key()) == _public_der(key.public_key())]
    if not matching:
        raise Invalid("the private key does not belong to the push certificate", field=field)
    certificate = matching[0]
    if certificate.not_valid_after_utc <= at:
        raise Invalid(
            f"the push certificate expired on {format_time(certificate.not_valid_after_utc)}; "
            "renew it at identity.apple.com",
            field=field,
        )
    if certificate.not_valid_before_utc > at + _CLOCK_SKEW:
        raise Invalid(
            "the push certificate is not valid before "
            f"{format_time(certificate.not_valid_before_utc)}",
            field=field,
        )
    topic = topic_of(certificate)
    assert topic is not None
    chain = tuple(c for c in certificates if c is not certificate)
    return PushCertificate(certificate, chain, key, topic)


def topic_of(certificate: x509.Certificate) -> str | None:
    """The push topic (subject UID), if this is an Apple MDM push certificate."""
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.USER_ID):
        value = attribute.value
        if isinstance(value, str) and value.startswith(TOPIC_PREFIX):
            return value
    return None


def _from_pem(
    text: str, password: str | None
) -> tuple[list[x509.Certificate], PrivateKeyTypes | None]:
    certificates: list[x509.Certificate] = []
    key: PrivateKeyTypes | None = None
    blocks = list(_PEM_BLOCK.finditer(text))
    if not blocks:
        raise Invalid(
            "pem: no PEM blocks (-----BEGIN CERTIFICATE----- and a private key) found",
            field="pem",
        )
    for block in blocks:
        label, data = block.group(1), block.group(0).encode()
        if label == "CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(data))
            except ValueError:
                raise Invalid("pem: a CERTIFICATE block is malformed", field="pem") from None
        elif label.endswith("PRIVATE KEY"):
            if key is not None:
                raise Invalid("pem: send one private key, not several", field="pem")
            key = _pem_key(label, data, password)
    return certificates, key


def _pem_key(label: str, data: bytes, password: str | None) -> PrivateKeyTypes:
    encrypted = label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in data
    if encrypted and password is None:
        raise Invalid("the private key is encrypted: send its password", field="password")
    try:
        return serialization.load_pem_private_key(
            data, password.encode() if encrypted and password is not None else None
        )
    except ValueError:
        if encrypted:
            raise Invalid("wrong password for the private key", field="password") from None
        raise Invalid("pem: the private key is malformed", field="pem") from None
    except (TypeError, UnsupportedAlgorithm):
        raise Invalid("pem: the private key is of an unsupported kind", field="pem") from None


def _from_pkcs12(
    text: str, password: str | None
) -> tuple[list[x509.Certificate], PrivateKeyTypes | None]:
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("pkcs12: not base64", field="pkcs12") from None
    try:
        key, certificate, others = pkcs12.load_key_and_certificates(
            data, password.encode() if password else None
        )
    except ValueError as exc:
        # The library tells a failed decryption ("Invalid password or PKCS12 data") from
        # data it cannot parse at all; a damaged file can still look like the former.
        if "password" in str(exc).lower():
            raise Invalid(
                "wrong password for the PKCS#12 file (or the file is damaged)", field="password"
            ) from None
        raise Invalid("pkcs12: not a PKCS#12 (.p12) file", field="pkcs12") from None
    except UnsupportedAlgorithm:
        raise Invalid("pkcs12: encrypted with an unsupported algorithm", field="pkcs12") from None
    return [c for c in (certificate, *others) if c is not None], key


def _public_der(key: Any) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------------------- operations


def view(row: Row, at: datetime | None = None) -> dict[str, Any]:
    """A stored push certificate as the API shows it: never its key."""
    left = parse_time(row["not_after"]) - (at or datetime.now(UTC))
    return {
        "id": row["id"],
        "topic": row["topic"],
        "subject": row["subject"],
        "not_before": row["not_before"],
        "not_after": row["not_after"],
        "days_left": left.days,
        "source": "system" if row["organisation_id"] is None else "organisation",
    }


async def upload_system_certificate(
    store: Store, principal: Principal, deployment: Deployment, upload: Upload
) -> dict[str, Any]:
    """The supervisor's push certificate, used by every organisation that does not set one."""
    require_supervisor(principal)
    row = await _new_certificate(principal, None, upload)
    await _write(store, _upload_system, principal, deployment, row, upload.allow_topic_change)
    return view(row)


async def upload_organisation_certificate(
    store: Store, principal: Principal, deployment: Deployment, organisation: str, upload: Upload
) -> dict[str, Any]:
    """An organisation's own push certificate, used instead of the system-wide one."""
    org = await visible_organisation(store, principal, organisation)
    require_right(principal, Right.CONFIGURATION)
    row = await _new_certificate(principal, org["id"], upload)
    await _write(store, _upload_organisation, principal, deployment, row, upload.allow_topic_change)
    return view(row)


async def _new_certificate(
    principal: Principal, organisation_id: str | None, upload: Upload
) -> dict[str, Any]:
    """The certificate row of an upload, checked (in a worker thread: PKCS#12 is slow)."""
    push = await trio.to_thread.run_sync(read_push_certificate, upload, datetime.now(UTC))
    pem = serialization.Encoding.PEM
    return {
        "id": new_id(),
        "organisation_id": organisation_id,
        "purpose": PURPOSE,
        "subject": push.certificate.subject.rfc4514_string(),
        "topic": push.topic,
        "not_before": format_time(push.certificate.not_valid_before_utc),
        "not_after": format_time(push.certificate.not_valid_after_utc),
        "certificate_pem": b"".join(
            c.public_bytes(pem) for c in (push.certificate, *push.chain)
        ).decode(),
        "private_key_pem": push.key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "created_by": principal.account_id,
        "created_at": now(),
    }


async def _write(store: Store, unit: Callable[..., None], /, *args: Any) -> None:
    try:
        await store.write(unit, *args)
    except Conflict as exc:  # the settings moved on meanwhile, as with a stale If-Match
        raise Stale(str(exc)) from None


def _upload_system(
    conn: sqlite3.Connection,
    principal: Principal,
    deployment: Deployment,
    row: dict[str, Any],
    allow_topic_change: bool,
) -> None:
    _insert(conn, principal, deployment, row, allow_topic_change)
    values = {SETTING: row["id"]}
    event = audit_event(
        principal,
        "settings.system_changed",
        organisation_id=None,
        target_type="service",
        target_id=SERVICE,
        details={"values": values},
    )
    change_system_unit(conn, deployment, SERVICE, values, None, event)


def _upload_organisation(
    conn: sqlite3.Connection,
    principal: Principal,
    deployment: Deployment,
    row: dict[str, Any],
    allow_topic_change: bool,
) -> None:
    _insert(conn, principal, deployment, row, allow_topic_change)
    change = {"use_system_wide": False, "overrides": {SETTING: row["id"]}, "clear": []}
    event = audit_event(
        principal,
        "settings.organisation_changed",
        organisation_id=row["organisation_id"],
        target_type="service",
        target_id=SERVICE,
        details=change,
    )
    change_organisation_unit(conn, row["organisation_id"], SERVICE, change, None, event)


def _insert(
    conn: sqlite3.Connection,
    principal: Principal,
    deployment: Deployment,
    row: dict[str, Any],
    allow_topic_change: bool,
) -> None:
    """Store the certificate unless it changes the topic in use unasked.

    The topic is checked against the certificate in use in the same unit that replaces
    it: of two uploads at once, the second sees the first's certificate.
    """
    current = _current_in(conn, deployment, row["organisation_id"])
    if current is not None and current["topic"] != row["topic"] and not allow_topic_change:
        raise Invalid(
            f"the topic {row['topic']} differs from the one in use ({current['topic']}): "
            "devices enrolled with it would have to enrol again. Renew the current "
            "certificate with Apple instead, or send allow_topic_change: true",
            field="allow_topic_change",
        )
    insert_certificate(conn, row)
    insert_event(
        conn,
        audit_event(
            principal,
            "certificate.uploaded",
            organisation_id=row["organisation_id"],
            target_type="certificate",
            target_id=row["id"],
            details={
                "purpose": PURPOSE,
                "topic": row["topic"],
                "subject": row["subject"],
                "not_after": row["not_after"],
                "replaces": current["id"] if current else None,
            },
        ),
    )


async def system_certificate(
    store: Store, principal: Principal, deployment: Deployment
) -> dict[str, Any] | None:
    """The system-wide push certificate, if one is set (supervisor)."""
    require_supervisor(principal)
    row = await _current(store, deployment, None)
    return view(row) if row else None


async def organisation_certificate(
    store: Store, principal: Principal, deployment: Deployment, organisation: str
) -> dict[str, Any] | None:
    """The push certificate the organisation's devices use (its own or the system's)."""
    org = await visible_organisation(store, principal, organisation)
    require_kind(principal, AccountKind.MANAGER, AccountKind.SUPERVISOR, AccountKind.VENDOR)
    row = await _current(store, deployment, org["id"])
    return view(row) if row else None


async def _current(store: Store, deployment: Deployment, organisation_id: str | None) -> Row | None:
    return await store.read(_current_in, deployment, organisation_id)


def _current_in(
    conn: sqlite3.Connection, deployment: Deployment, organisation_id: str | None
) -> Row | None:
    """The certificate Apple MDM's effective setting names for this scope, if usable."""
    effective = effective_settings_unit(conn, deployment, organisation_id)
    certificate_id = effective[SERVICE][SETTING]
    if not isinstance(certificate_id, str):
        return None
    return certificate_usable_by(conn, certificate_id, organisation_id, PURPOSE)
