"""Apple MDM: enrolment profiles, check-in, the command queue, inventory from results.

How a device gets in:

1. A manager (or a device owner, for themselves) downloads an **enrolment profile** from the
   REST API or the self-service portal, or a person redeems an **installation code** at
   ``/mdm/enrol``. Each profile carries a fresh device identity issued by the service's CA;
   its fingerprint is stored with the organisation (and the device or owner the code or the
   request named). Redeeming the code and storing the identity is one write unit.
2. ``Authenticate`` (check-in): the message must be signed (``Mdm-Signature``) or sent over
   TLS with an identity issued here and not bound to another device; its ``Topic`` must be
   the organisation's. The identity is bound to the device's channel id (UDID or
   EnrollmentID); the inventory device is found (same enrolment, or the one the code named)
   or created (licences counted in the same unit). Whatever an earlier enrolment of the
   same device left (tokens, user channels, bootstrap token) is cleared.
3. ``TokenUpdate``: push token, PushMagic, UnlockToken; the first one makes the device
   ``enrolled``. Pushes never go out before it. User channels (``UserID`` /
   ``EnrollmentUserID``) are kept in rows of their own, apart from the device channel.
4. The **command queue** (``ServerURL``): a device reports ``Idle`` or a result and gets the
   next command of the generic command model, translated by
   :func:`engine.protocols.apple_mdm.command_for`, with the command's id as ``CommandUUID``.

Every later message must come from the identity bound at ``Authenticate``; anything else,
and anything malformed, is refused with :class:`Refused` (400 at the web layer, never 401,
which would make the device unenrol) and changes nothing.

``NotNow``: the command stays ``sent``; the session keeps it out of the rest of that
session (until the device next reports ``Idle``), and when the session ends with such
commands waiting, the device is pushed again after :data:`NOT_NOW_RETRY` seconds.

UnlockToken and BootstrapToken are secrets: they are sealed (AES-GCM) with a key derived
from the service CA's private key before they reach the database.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID

from . import commands as command_model
from .actors import ActorDead, ActorRef
from .actors.offload import Call
from .audit import audit_event
from .devices import LicenceLimit, check_room, may_connect
from .errors import DomainError, Invalid, NotFound
from .ids import new_id
from .installation_codes import (
    InstallationCodeRefused,
    Purpose,
    normalise_code,
    redeem_unit as redeem_code_unit,
)
from .organisations import visible_organisation
from .pki import CertificateAuthority, issued_by
from .principals import AccountKind, Principal, Right, require_right
from .protocols import apple_mdm as protocol, cms, mobileconfig
from .service_settings import Deployment, effective_settings_unit
from .store import Store, apple_mdm as units, devices as inventory
from .store.audit import insert_event
from .store.certificates import certificate_usable_by
from .store.commands import command_by_id, commands_of_device
from .store.organisations import organisation_by_id
from .store.rows import Row
from .timestamps import format_time, now

PROTOCOL = "apple_mdm"
#: Seconds after a session ended with NotNow commands waiting before the device is pushed.
NOT_NOW_RETRY = 300.0
#: Device identities in profiles live as long as the service lets a client certificate.
IDENTITY_DAYS = 825


class Refused(Exception):
    """A check-in or report the service does not accept: 400, nothing changed."""


class Gone(Exception):
    """Answered 410: UserAuthenticate, which the service does not ask for."""


# --------------------------------------------------------------------------- secrets


class Sealer:
    """AES-256-GCM for the secrets devices hand over (UnlockToken, BootstrapToken)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_authority(cls, ca: CertificateAuthority) -> Sealer:
        return cls(ca.derived_secret(b"emm apple-mdm sealed secrets v1"))

    def seal(self, value: bytes | None) -> str | None:
        if value is None:
            return None
        nonce = os.urandom(12)
        return "v1:" + base64.b64encode(nonce + self._aead.encrypt(nonce, value, None)).decode()

    def open(self, value: str | None) -> bytes | None:
        if value is None:
            return None
        data = base64.b64decode(value.removeprefix("v1:"))
        return self._aead.decrypt(data[:12], data[12:], None)


# --------------------------------------------------------------------------- the service part


@dataclass
class AppleMdm:
    """What Apple MDM needs of the running service: store, CA, the profile signer."""

    store: Store
    deployment: Deployment
    ca: CertificateAuthority
    signer: x509.Certificate
    signer_key: PrivateKeyTypes
    sealer: Sealer
    #: Asks the push notifier to wake devices (by device id), now or after a delay.
    push: Callable[[Sequence[str], float], None] = field(default=lambda devices, delay: None)

    #: Where signed messages are checked and read (:func:`checked_message`): a worker
    #: process; None: on the caller's thread.
    offload: ActorRef[Call] | None = None

    @functools.cached_property
    def ca_der(self) -> bytes:
        return self.ca.certificate.public_bytes(serialization.Encoding.DER)

    def trusted(self, certificate: x509.Certificate) -> str:
        """The fingerprint of a client certificate of the service's CA; else Refused."""
        return trusted_identity(self.ca_der, certificate)

    def profile_identifier(self, organisation_code: str) -> str:
        host = urlsplit(self.deployment.public_url).hostname or "localhost"
        return ".".join([*reversed(host.split(".")), "emm", organisation_code])


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


#: Identities already checked against a CA, in this process: (the CA's fingerprint, the
#: identity's) → not after. A device's every message then costs one signature check, not
#: two (its own, and the CA's on its certificate).
_CHECKED: dict[tuple[str, str], datetime] = {}


@functools.lru_cache(maxsize=4)
def _ca_certificate(ca_der: bytes) -> tuple[x509.Certificate, str]:
    certificate = x509.load_der_x509_certificate(ca_der)
    return certificate, fingerprint(certificate)


def trusted_identity(ca_der: bytes, certificate: x509.Certificate) -> str:
    """The fingerprint of ``certificate`` if it is a client certificate of the CA whose
    certificate is ``ca_der``; else Refused. Runs in a worker process too."""
    ca, ca_key = _ca_certificate(ca_der)
    key = fingerprint(certificate)
    not_after = _CHECKED.get((ca_key, key))
    if not_after is None:
        if not issued_by(ca, certificate, purpose=ExtendedKeyUsageOID.CLIENT_AUTH):
            raise Refused("the identity was not issued by this service")
        if len(_CHECKED) >= 100_000:
            _CHECKED.clear()
        not_after = _CHECKED[(ca_key, key)] = certificate.not_valid_after_utc
    if not_after <= datetime.now(UTC):
        raise Refused("the identity has expired")
    return key


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class _ProfileSettings:
    organisation: Row
    server_url: str
    check_in_url: str
    topic: str


def _profile_settings(
    conn: sqlite3.Connection, deployment: Deployment, organisation_id: str
) -> _ProfileSettings:
    organisation = organisation_by_id(conn, organisation_id)
    if organisation is None:
        raise NotFound("no such organisation")
    settings = effective_settings_unit(conn, deployment, organisation_id)[PROTOCOL]
    certificate_id = settings.get("apns_certificate")
    certificate = (
        certificate_usable_by(conn, certificate_id, organisation_id, "apns")
        if certificate_id
        else None
    )
    if certificate is None:
        raise Invalid(
            "Apple MDM has no APNS certificate: upload one in Configuration → Services",
            field="apns_certificate",
        )
    return _ProfileSettings(
        organisation, settings["service_url"], settings["check_in_url"], certificate["topic"]
    )


def _issue_identity(mdm: AppleMdm, organisation_code: str) -> tuple[x509.Certificate, Any]:
    """A device identity with its key (RSA: every Apple release reads it in PKCS#12)."""
    return mdm.ca.issue_client_certificate(
        f"apple-mdm {new_id()}",
        subject_extra={"O": organisation_code},
        valid_days=IDENTITY_DAYS,
    )


def _signed_profile(
    mdm: AppleMdm, settings: _ProfileSettings, certificate: x509.Certificate, key: Any
) -> bytes:
    organisation = settings.organisation
    profile = mobileconfig.build_profile(
        mobileconfig.EnrolmentProfile(
            identifier=mdm.profile_identifier(organisation["code"]),
            organisation_name=organisation["long_name"] or organisation["short_name"],
            server_url=settings.server_url,
            check_in_url=settings.check_in_url,
            topic=settings.topic,
            root=mdm.ca.certificate,
            identity=certificate,
            identity_key=key,
            identity_password=secrets.token_urlsafe(18),
        )
    )
    return cms.sign(profile, mdm.signer, mdm.signer_key)


def _identity_row(
    certificate: x509.Certificate,
    organisation_id: str,
    device_id: str | None,
    owner_id: str | None,
) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint(certificate),
        "organisation_id": organisation_id,
        "device_id": device_id,
        "owner_id": owner_id,
        "enrolment_id": None,
        "not_after": format_time(certificate.not_valid_after_utc),
        "created_at": now(),
    }


async def enrolment_profile(mdm: AppleMdm, principal: Principal, organisation: str) -> bytes:
    """A signed enrolment profile for a new device of the organisation (a device owner's
    new device is theirs). An inventory entry made beforehand enrols with its installation
    code instead (:func:`profile_for_code`)."""
    org = await visible_organisation(mdm.store, principal, organisation)
    owner_id = None
    if principal.kind is AccountKind.USER:
        owner_id = principal.account_id
    else:
        require_right(principal, Right.DEVICES)
    settings = await mdm.store.read(_profile_settings, mdm.deployment, org["id"])
    certificate, key = await trio.to_thread.run_sync(_issue_identity, mdm, org["code"])
    identity = _identity_row(certificate, org["id"], None, owner_id)
    event = audit_event(
        principal,
        "apple_mdm.profile_issued",
        organisation_id=org["id"],
        target_type="organisation",
        target_id=org["id"],
        details={"identity": identity["fingerprint"], "owner": owner_id},
    )
    await mdm.store.write(_store_identity, identity, event)
    return await trio.to_thread.run_sync(_signed_profile, mdm, settings, certificate, key)


def _store_identity(
    conn: sqlite3.Connection, identity: dict[str, Any], event: dict[str, Any]
) -> None:
    units.insert_identity(conn, identity)
    insert_event(conn, event)


async def profile_for_code(mdm: AppleMdm, code_text: str, source: str | None) -> bytes:
    """The enrolment profile an installation code gives (redeemed in the same write)."""
    text = normalise_code(code_text)
    if text is None:
        raise InstallationCodeRefused("unknown installation code", "unknown")
    row = await mdm.store.read(inventory.code_by_text, text)
    if row is None:
        raise InstallationCodeRefused("unknown installation code", "unknown")
    settings = await mdm.store.read(_profile_settings, mdm.deployment, row["organisation_id"])
    certificate, key = await trio.to_thread.run_sync(
        _issue_identity, mdm, settings.organisation["code"]
    )
    await mdm.store.write(_redeem_for_profile, text, certificate, source)
    return await trio.to_thread.run_sync(_signed_profile, mdm, settings, certificate, key)


def _redeem_for_profile(
    conn: sqlite3.Connection, text: str, certificate: x509.Certificate, source: str | None
) -> None:
    grant = redeem_code_unit(conn, text, now(), source)
    if grant.purpose == Purpose.NEW_ACCOUNT_AND_DEVICE:
        raise InstallationCodeRefused(
            "this code creates an account; Apple devices enrol with a device code",
            "unknown",
        )
    if grant.device_id is not None:
        device = inventory.device_by_id(conn, grant.device_id)
        if device is None or device["protocol"] != PROTOCOL:
            raise InstallationCodeRefused("the code's device is not an Apple device", "unknown")
    units.insert_identity(
        conn,
        _identity_row(certificate, grant.organisation_id, grant.device_id, grant.account_id),
    )


# --------------------------------------------------------------------------- identities


def identity_of(mdm: AppleMdm, tls_certificate: x509.Certificate | None) -> str:
    """The fingerprint of the TLS client certificate an unsigned message came with; it must
    be a client certificate of the service's CA."""
    if tls_certificate is None:
        raise Refused("the message is neither signed nor sent with a client certificate")
    return mdm.trusted(tls_certificate)


M = TypeVar("M")


def read_signed(
    ca_der: bytes, signature: str, body: bytes, parse: Callable[[bytes], M]
) -> tuple[str, M]:
    """A signed message checked and read: its signer's fingerprint (a client certificate of
    the CA ``ca_der``, per ``Mdm-Signature``) and the message ``parse`` makes of ``body``.

    A pure function of bytes, so that it can run in a worker process; the signature is
    checked before the body is read, so a body nobody signed is never parsed."""
    try:
        certificate = cms.verify_header(signature, body)
    except cms.SignatureError as exc:
        raise Refused(f"Mdm-Signature: {exc}") from None
    return trusted_identity(ca_der, certificate), parse(body)


async def checked_message(
    mdm: AppleMdm, signature: str, body: bytes, parse: Callable[[bytes], M]
) -> tuple[str, M]:
    """:func:`read_signed`, in the offload worker when there is one. Should the worker be
    gone for good, the work is done here: slower, never refused for that reason."""
    if mdm.offload is not None:
        try:
            answer: tuple[str, M] = await mdm.offload.ask(
                Call(read_signed, (mdm.ca_der, signature, body, parse))
            )
            return answer
        except ActorDead:
            pass
    return read_signed(mdm.ca_der, signature, body, parse)


# --------------------------------------------------------------------------- check-in


@dataclass(frozen=True)
class CheckInRequest:
    check_in: protocol.CheckIn
    identity: str  # fingerprint


@dataclass(frozen=True)
class ReportRequest:
    report: protocol.CommandReport
    identity: str


@dataclass(frozen=True)
class Answer:
    """What the route answers: refusals are answers too, so a session never crashes on a
    device's mistake (400 with the reason; 410 to decline UserAuthenticate)."""

    body: bytes = b""
    content_type: str = "application/xml"
    status: int = 200


def _check_takeover(
    conn: sqlite3.Connection, existing: Row, identity: Row, fingerprint: str, organisation_id: str
) -> None:
    """Refuse an Authenticate that would take a device channel from its current enrolment.

    A device enrolling again keeps its UDID, so a new identity may replace the old one; but
    only where that cannot be a hijack: the old enrolment checked out, or its device was
    removed or erased since, or, within the same organisation, the new identity was issued
    for that very device or to that device's owner. Otherwise anyone holding a fresh profile
    could claim another device's channel, and its commands.
    """
    if existing["identity"] == fingerprint or existing["state"] == units.CHECKED_OUT:
        return
    device = inventory.device_by_id(conn, existing["device_id"])
    if device is None or device["state"] == inventory.REMOVED:
        return
    if existing["organisation_id"] != organisation_id:
        raise Refused("the device is enrolled in another organisation")
    if identity["device_id"] == device["id"] or (
        identity["owner_id"] is not None and identity["owner_id"] == device["owner_id"]
    ):
        return
    erased = commands_of_device(
        conn, device["id"], [command_model.State.SENT, command_model.State.ACKNOWLEDGED]
    )
    if any(c["kind"] == "wipe" and c["updated_at"] >= existing["updated_at"] for c in erased):
        return
    raise Refused("the device is enrolled with another identity; check it out first")


def _authenticate(conn: sqlite3.Connection, deployment: Deployment, request: CheckInRequest) -> Row:
    check_in = request.check_in
    key = check_in.channel.key
    identity = units.identity_by_fingerprint(conn, request.identity)
    if identity is None:
        raise Refused("unknown identity")
    if identity["enrolment_id"] not in (None, key):
        raise Refused("the identity belongs to another device")
    organisation = organisation_by_id(conn, identity["organisation_id"])
    if organisation is None or not organisation["active"]:
        raise Refused("the organisation is inactive")
    try:
        settings = _profile_settings(conn, deployment, organisation["id"])
    except Invalid:
        raise Refused("the organisation has no APNS certificate") from None
    if check_in.topic != settings.topic:
        raise Refused("Topic is not the organisation's push topic")
    values = check_in.values
    at = now()
    existing = units.enrolment_by_id(conn, key)
    if existing is not None:
        _check_takeover(conn, existing, identity, request.identity, organisation["id"])
    device = None
    if existing is not None and existing["organisation_id"] == organisation["id"]:
        device = inventory.device_by_id(conn, existing["device_id"])
        if (
            device is not None
            and device["state"] == inventory.REMOVED
            and existing["identity"] != request.identity
        ):
            device = None  # removed, and enrolling with a new profile: a new inventory entry
    if device is None and identity["device_id"] is not None:
        device = inventory.device_by_id(conn, identity["device_id"])
    reported = {
        "udid": check_in.channel.device if not check_in.channel.user_enrolment else None,
        "serial_number": values.get("SerialNumber"),
        "imei": values.get("IMEI"),
        "model": values.get("ProductName") or values.get("Model"),
        "os_version": values.get("OSVersion"),
    }
    reported = {k: v for k, v in reported.items() if v is not None}
    if device is not None:
        if not may_connect(device, organisation):
            raise Refused("the device may not connect")
        inventory.update_device(conn, device["id"], reported | {"updated_at": at})
        device_id = device["id"]
    else:
        try:
            check_room(conn, organisation["id"], identity["owner_id"], new_licence=True)
        except LicenceLimit as exc:
            raise Refused(str(exc)) from None
        device_id = new_id()
        inventory.insert_device(
            conn,
            {
                "id": device_id,
                "organisation_id": organisation["id"],
                "owner_id": identity["owner_id"],
                "name": values.get("DeviceName") or values.get("ProductName") or "Apple device",
                "platform": protocol.platform_of(values.get("ProductName"), values.get("Model")),
                "protocol": PROTOCOL,
                "state": "created",
                "created_at": at,
                "updated_at": at,
            }
            | reported,
        )
    fresh = {
        "organisation_id": organisation["id"],
        "device_id": device_id,
        "identity": request.identity,
        "topic": check_in.topic,
        "state": units.AUTHENTICATED,
        "user_enrolment": int(check_in.channel.user_enrolment),
        "push_token": None,
        "push_magic": None,
        "unlock_token": None,
        "bootstrap_token": None,
        "awaiting_configuration": 0,
        "token_bad_at": None,
        "token_bad_reason": None,
        "last_push_at": None,
        "updated_at": at,
    }
    if existing is not None:
        units.delete_user_channels(conn, key)  # what the earlier enrolment left
        units.update_enrolment(conn, key, fresh)
    else:
        units.insert_enrolment(conn, fresh | {"id": key, "created_at": at})
    units.bind_identity(conn, request.identity, key)
    insert_event(
        conn,
        audit_event(
            None,
            "apple_mdm.authenticated",
            organisation_id=organisation["id"],
            target_type="device",
            target_id=device_id,
            details={"enrolment": key, "again": existing is not None},
            actor="apple_mdm",
        ),
    )
    return units.enrolment_by_id(conn, key) or {}


def _device_channel(conn: sqlite3.Connection, key: str, identity: str) -> tuple[Row, Row]:
    """The device channel and its device (``id``, ``state``, ``organisation_code``), if
    ``identity`` is bound to it and it may connect. One statement: every message of a
    device asks this, on the event loop for its reports."""
    found = units.channel_by_id(conn, key)
    if found is None or found[0]["identity"] != identity:
        raise Refused("unknown device")
    enrolment, device, organisation = found
    if enrolment["state"] == units.CHECKED_OUT:
        raise Refused("the device checked out")
    if device is None or organisation is None or not may_connect(device, organisation):
        raise Refused("the device may not connect")
    device["organisation_code"] = organisation["code"]
    return enrolment, device


def _token_update(conn: sqlite3.Connection, sealer: Sealer, request: CheckInRequest) -> str | None:
    """Store the tokens; answers the device's id if it became enrolled just now with
    commands already waiting for it (queued before it could be pushed)."""
    check_in = request.check_in
    channel = check_in.channel
    enrolment, device = _device_channel(conn, channel.device, request.identity)
    if check_in.topic != enrolment["topic"]:
        raise Refused("Topic is not the one of the enrolment")
    values = check_in.values
    at = now()
    tokens = {
        "push_token": values["Token"].hex(),
        "push_magic": values["PushMagic"],
        "token_bad_at": None,
        "token_bad_reason": None,
        "updated_at": at,
    }
    if channel.user is not None:
        user = units.enrolment_by_id(conn, channel.key)
        user_values = tokens | {
            "user_id": channel.user,
            "user_short_name": values.get("UserShortName"),
            "user_long_name": values.get("UserLongName"),
            "state": units.ENROLLED,
        }
        if user is None:
            units.insert_enrolment(
                conn,
                user_values
                | {
                    "id": channel.key,
                    "organisation_id": enrolment["organisation_id"],
                    "device_id": enrolment["device_id"],
                    "parent_id": channel.device,
                    "user_enrolment": int(channel.user_enrolment),
                    "identity": request.identity,
                    "topic": enrolment["topic"],
                    "created_at": at,
                },
            )
        else:
            units.update_enrolment(conn, channel.key, user_values)
        return None  # a user channel's TokenUpdate never enrols the device
    first = enrolment["state"] == units.AUTHENTICATED
    units.update_enrolment(
        conn,
        channel.device,
        tokens
        | {
            "state": units.ENROLLED,
            "awaiting_configuration": int(values["AwaitingConfiguration"]),
            **(
                {"unlock_token": sealer.seal(values["UnlockToken"])}
                if values["UnlockToken"] is not None
                else {}
            ),
        },
    )
    if first:
        inventory.update_device(
            conn,
            device["id"],
            {"state": "enrolled", "enrolled_at": at, "last_seen_at": at, "updated_at": at},
        )
        insert_event(
            conn,
            audit_event(
                None,
                "apple_mdm.enrolled",
                organisation_id=enrolment["organisation_id"],
                target_type="device",
                target_id=device["id"],
                details={"enrolment": channel.device},
                actor="apple_mdm",
            ),
        )
        waiting = commands_of_device(conn, device["id"], [command_model.State.QUEUED])
        if waiting:
            return str(device["id"])
    return None


def _check_out(conn: sqlite3.Connection, request: CheckInRequest) -> None:
    channel = request.check_in.channel
    enrolment, device = _device_channel(conn, channel.device, request.identity)
    at = now()
    if channel.user is not None:
        units.update_enrolment(
            conn, channel.key, {"state": units.CHECKED_OUT, "push_token": None, "updated_at": at}
        )
        return
    units.delete_user_channels(conn, channel.device)
    units.update_enrolment(
        conn,
        channel.device,
        {
            "state": units.CHECKED_OUT,
            "push_token": None,
            "push_magic": None,
            "unlock_token": None,
            "bootstrap_token": None,
            "updated_at": at,
        },
    )
    inventory.update_device(conn, device["id"], {"state": "created", "updated_at": at})
    insert_event(
        conn,
        audit_event(
            None,
            "apple_mdm.checked_out",
            organisation_id=enrolment["organisation_id"],
            target_type="device",
            target_id=device["id"],
            details={"enrolment": channel.device},
            actor="apple_mdm",
        ),
    )


def _set_bootstrap_token(conn: sqlite3.Connection, sealer: Sealer, request: CheckInRequest) -> None:
    channel = request.check_in.channel
    if channel.user is not None:
        raise Refused("the bootstrap token belongs to the device channel")
    _device_channel(conn, channel.device, request.identity)
    units.update_enrolment(
        conn,
        channel.device,
        {
            "bootstrap_token": sealer.seal(request.check_in.values["BootstrapToken"]),
            "updated_at": now(),
        },
    )


def _channel_for_read(conn: sqlite3.Connection, key: str, identity: str) -> Row:
    return _device_channel(conn, key, identity)[0]


async def check_in(mdm: AppleMdm, request: CheckInRequest) -> Answer:
    """Answer one check-in message (run inside the device's session)."""
    kind = request.check_in.message_type
    if kind is protocol.MessageType.AUTHENTICATE:
        await mdm.store.write(_authenticate, mdm.deployment, request)
    elif kind is protocol.MessageType.TOKEN_UPDATE:
        waiting = await mdm.store.write(_token_update, mdm.sealer, request)
        if waiting is not None:
            mdm.push([waiting], 0.0)  # its first push: the token is known only now
    elif kind is protocol.MessageType.CHECK_OUT:
        await mdm.store.write(_check_out, request)
    elif kind is protocol.MessageType.USER_AUTHENTICATE:
        await mdm.store.read(_channel_for_read, request.check_in.channel.device, request.identity)
        raise Gone("user authentication is not required")
    elif kind is protocol.MessageType.SET_BOOTSTRAP_TOKEN:
        await mdm.store.write(_set_bootstrap_token, mdm.sealer, request)
    elif kind is protocol.MessageType.GET_BOOTSTRAP_TOKEN:
        enrolment = await mdm.store.read(
            _channel_for_read, request.check_in.channel.device, request.identity
        )
        token = mdm.sealer.open(enrolment["bootstrap_token"])
        return Answer(protocol.bootstrap_token_answer(token))
    return Answer()


# --------------------------------------------------------------------------- command queue


@dataclass(frozen=True)
class _Channel:
    enrolment: Row
    device: Row


def _user_channel(conn: sqlite3.Connection, channel: protocol.Channel, identity: str) -> None:
    """A user channel known for this device and identity (reports from it get nothing:
    the command model has no user-channel commands)."""
    _report_channel(conn, channel.device, identity)
    user = units.enrolment_by_id(conn, channel.key)
    if user is None or user["state"] != units.ENROLLED:
        raise Refused("unknown user channel")


def _report_channel(conn: sqlite3.Connection, key: str, identity: str) -> _Channel:
    enrolment, device = _device_channel(conn, key, identity)
    if enrolment["state"] != units.ENROLLED:
        raise Refused("the device has not sent its TokenUpdate")
    return _Channel(enrolment, device)


#: How many of a device's waiting commands one report reads. It runs on the event loop
#: (``Store.lookup``), so it must stay a point read even for a device that was offline
#: while thousands were queued; a session that refuses all of them with NotNow gets the
#: rest in its next session.
REPORT_WINDOW = 64


def _report_state(
    conn: sqlite3.Connection, key: str, identity: str, command_id: str | None
) -> tuple[_Channel, Row | None, list[Row]]:
    """In one snapshot: the channel, the command a report answers, what is still to give.

    The command answered is most often among those still to give (it was sent): then it is
    not read a second time.
    """
    channel = _report_channel(conn, key, identity)
    rows = commands_of_device(
        conn,
        channel.device["id"],
        [command_model.State.QUEUED, command_model.State.SENT],
        REPORT_WINDOW,
    )
    answered = None
    if command_id is not None:
        answered = next((row for row in rows if row["id"] == command_id), None)
        if answered is None:
            answered = command_by_id(conn, command_id)
            if answered is None or answered["device_id"] != channel.device["id"]:
                raise Refused("CommandUUID is not a command of this device")
    return channel, answered, rows


def _record(
    conn: sqlite3.Connection,
    device_id: str,
    read: Row,
    ok: bool,
    result: dict[str, Any],
    found: protocol.Inventory | None,
) -> None:
    """The command's result and what it tells of the device, in one unit. ``read``: the
    command as the report's snapshot read it (see :func:`command_model.record_result_unit`,
    which reads it again only where needed)."""
    if read["device_id"] != device_id:
        raise Refused("CommandUUID is not a command of this device")
    target = command_model.State.ACKNOWLEDGED if ok else command_model.State.FAILED
    command_model.record_result_unit(
        conn, read["id"], target, json.dumps(result, sort_keys=True), read
    )
    at = now()
    changes: dict[str, Any] = {"last_seen_at": at, "updated_at": at}
    if found is not None and (found.sections or found.columns):
        device = inventory.device_by_id(conn, device_id)
        assert device is not None
        current = json.loads(device["inventory"] or "{}")
        current.update(found.sections)
        changes |= found.columns | {"inventory": json.dumps(current, sort_keys=True)}
    inventory.update_device(conn, device_id, changes)


def _record_inventory(
    conn: sqlite3.Connection, device_id: str, command_id: str, found: protocol.Inventory
) -> None:
    """A part of a command (an inventory query) answered: the inventory, not the state."""
    row = command_model.command_row(conn, command_id)
    if row["device_id"] != device_id:
        raise Refused("CommandUUID is not a command of this device")
    device = inventory.device_by_id(conn, device_id)
    assert device is not None
    current = json.loads(device["inventory"] or "{}")
    current.update(found.sections)
    at = now()
    inventory.update_device(
        conn,
        device_id,
        found.columns
        | {"inventory": json.dumps(current, sort_keys=True), "last_seen_at": at, "updated_at": at},
    )


class AppleSession:
    """One device's MDM session state: what was answered NotNow since its last Idle, and
    which parts of a multi-part command (inventory) are done."""

    def __init__(self, mdm: AppleMdm, device_key: str) -> None:
        self.mdm = mdm
        self.device_key = device_key
        self.not_now: set[str] = set()  # CommandUUIDs
        self.parts_done: dict[str, set[str]] = {}  # command id -> RequestTypes answered
        self.device_id: str | None = None

    async def handle(self, message: Any) -> Answer:
        try:
            return await self._handle(message)
        except Gone:
            return Answer(status=410)
        except (Refused, DomainError, protocol.ProtocolError) as exc:
            return Answer(f"{exc}\n".encode(), "text/plain; charset=utf-8", 400)

    async def _handle(self, message: Any) -> Answer:
        if isinstance(message, CheckInRequest):
            if message.check_in.message_type is protocol.MessageType.AUTHENTICATE:
                self.not_now.clear()
                self.parts_done.clear()
            return await check_in(self.mdm, message)
        if isinstance(message, ReportRequest):
            return await self._report(message)
        raise TypeError(f"unexpected message {message!r}")

    async def close(self) -> None:
        """A session the device left before its end with NotNow commands waiting (its end
        asks for the retry push itself, see :meth:`_report`): push it later."""
        if self.not_now and self.device_id is not None:
            self.mdm.push([self.device_id], NOT_NOW_RETRY)

    async def _report(self, request: ReportRequest) -> Answer:
        report = request.report
        store = self.mdm.store
        if report.channel.user is not None:
            await store.read(_user_channel, report.channel, request.identity)
            return Answer()
        command_id = None
        if report.status is protocol.Status.IDLE:
            self.not_now.clear()  # a new session: NotNow commands may be offered again
        elif report.command_uuid is not None:
            command_id = protocol.split_uuid(report.command_uuid)[0]
        channel, answered, rows = await store.lookup(
            _report_state, report.channel.device, request.identity, command_id
        )
        self.device_id = channel.device["id"]
        if answered is not None:
            if report.status is protocol.Status.NOT_NOW:
                self.not_now.add(report.command_uuid or "")
            elif await self._record(channel, answered, report):
                rows = [row for row in rows if row["id"] != answered["id"]]
        for row in rows:
            next_command = await self._translate(channel, row)
            if next_command is None:
                continue
            command_uuid, apple = next_command
            if row["state"] == command_model.State.QUEUED:
                await store.write_point(command_model.mark_sent_unit, row["id"], row)
            return Answer(protocol.build_command(command_uuid, apple.request_type, apple.values))
        if self.not_now:
            # The session ends with commands the device could not do yet: try again later,
            # once (the empty answer ends the session; the next one starts with Idle).
            self.mdm.push([self.device_id], NOT_NOW_RETRY)
            self.not_now.clear()
        return Answer()

    async def _translate(
        self, channel: _Channel, row: Row
    ) -> tuple[str, protocol.AppleCommand] | None:
        """The next Apple command of a queued or sent command, unless NotNow holds it."""
        if row["kind"] == command_model.CommandKind.REQUEST_INVENTORY:
            done = self.parts_done.get(row["id"], set())
            for part in protocol.INVENTORY_PARTS:
                command_uuid = protocol.part_uuid(row["id"], part)
                if part not in done and command_uuid not in self.not_now:
                    return command_uuid, protocol.inventory_part(part)
            return None
        if row["id"] in self.not_now:
            return None
        try:
            unlock_token = None
            if row["kind"] == command_model.CommandKind.UNLOCK:  # the only command needing it
                try:
                    unlock_token = self.mdm.sealer.open(channel.enrolment["unlock_token"])
                except (InvalidTag, ValueError):  # damaged, or sealed with another CA's key
                    raise protocol.Unsupported(
                        "the stored UnlockToken cannot be read: its passcode cannot be cleared"
                    ) from None
            apple = protocol.command_for(
                row["kind"],
                json.loads(row["parameters"]),
                unlock_token=unlock_token,
                profile_identifier=self.mdm.profile_identifier(channel.device["organisation_code"]),
            )
        except protocol.Unsupported as exc:
            reason = {"error": str(exc)}

            def fail(conn: sqlite3.Connection) -> None:
                # The state table fails sent commands only: a queued one is marked sent
                # first, in the same unit. Cancelled meanwhile: it stays cancelled.
                with contextlib.suppress(command_model.RefusedTransition):
                    sent = command_model.mark_sent_unit(conn, row["id"], row)
                    _record(conn, channel.device["id"], sent, False, reason, None)

            await self.mdm.store.write_point(fail)
            return None
        return row["id"], apple

    async def _record(self, channel: _Channel, row: Row, report: protocol.CommandReport) -> bool:
        """Record a result; answers whether the command is done (all its parts)."""
        assert report.command_uuid is not None
        command_id, part = protocol.split_uuid(report.command_uuid)
        store = self.mdm.store
        device_id = channel.device["id"]
        ok = report.status is protocol.Status.ACKNOWLEDGED
        multi_part = row["kind"] == command_model.CommandKind.REQUEST_INVENTORY
        if part is not None and (not multi_part or part not in protocol.INVENTORY_PARTS):
            raise Refused("CommandUUID names no part of this command")
        found = None
        if ok:
            request_type = part or (
                protocol.INVENTORY_PARTS[0]
                if multi_part
                else protocol.command_for(
                    row["kind"],
                    json.loads(row["parameters"]),
                    unlock_token=b"",
                    profile_identifier="",
                ).request_type
            )
            found = protocol.inventory_from(request_type, report)
            if multi_part:
                done = self.parts_done.setdefault(command_id, set())
                done.add(request_type)
                if not done.issuperset(protocol.INVENTORY_PARTS):
                    await store.write_point(_record_inventory, device_id, command_id, found)
                    return False
        self.parts_done.pop(command_id, None)
        # Cancelled meanwhile, or answered differently before: the first answer holds.
        with contextlib.suppress(command_model.RefusedTransition):
            await store.write_point(
                _record, device_id, row, ok, protocol.result_summary(report), found
            )
        return True


# --------------------------------------------------------------------------- pushes


@dataclass(frozen=True)
class PushTarget:
    enrolment_id: str
    device_id: str
    token: str  # hex
    push_magic: str
    topic: str
    certificate_id: str


@dataclass(frozen=True)
class PushCertificate:
    id: str
    topic: str
    certificate_pem: str
    private_key_pem: str


def _push_targets(
    conn: sqlite3.Connection, deployment: Deployment, device_ids: Sequence[str]
) -> tuple[list[PushTarget], dict[str, PushCertificate]]:
    """Who can be pushed, with the certificate of each organisation (its effective one)."""
    targets: list[PushTarget] = []
    certificates: dict[str, PushCertificate] = {}
    by_organisation: dict[str, PushCertificate | None] = {}
    for row in units.push_targets(conn, list(device_ids)):
        organisation_id = row["organisation_id"]
        if organisation_id not in by_organisation:
            settings = effective_settings_unit(conn, deployment, organisation_id)[PROTOCOL]
            certificate_id = settings.get("apns_certificate")
            stored = (
                certificate_usable_by(conn, certificate_id, organisation_id, "apns")
                if certificate_id
                else None
            )
            by_organisation[organisation_id] = (
                PushCertificate(
                    stored["id"],
                    stored["topic"],
                    stored["certificate_pem"],
                    stored["private_key_pem"],
                )
                if stored is not None
                else None
            )
        certificate = by_organisation[organisation_id]
        if certificate is None or certificate.topic != row["topic"]:
            continue  # no certificate, or one the device does not listen to
        certificates[certificate.id] = certificate
        targets.append(
            PushTarget(
                row["id"],
                row["device_id"],
                row["push_token"],
                row["push_magic"],
                row["topic"],
                certificate.id,
            )
        )
    return targets, certificates


async def push_targets(
    mdm_store: Store, deployment: Deployment, device_ids: Sequence[str]
) -> tuple[list[PushTarget], dict[str, PushCertificate]]:
    return await mdm_store.read(_push_targets, deployment, device_ids)


def _mark_token_bad(conn: sqlite3.Connection, target: PushTarget, reason: str, at: str) -> None:
    if units.mark_token_bad(conn, target.enrolment_id, target.token, reason, at):
        enrolment = units.enrolment_by_id(conn, target.enrolment_id)
        assert enrolment is not None
        insert_event(
            conn,
            audit_event(
                None,
                "apple_mdm.push_token_refused",
                organisation_id=enrolment["organisation_id"],
                target_type="device",
                target_id=target.device_id,
                details={"reason": reason},
                actor="apns",
            ),
        )


async def mark_token_bad(store: Store, target: PushTarget, reason: str) -> None:
    await store.write(_mark_token_bad, target, reason, now())


async def record_pushes(store: Store, enrolment_ids: Sequence[str]) -> None:
    await store.write(units.record_pushes, list(enrolment_ids), now())


def _scheduled(
    conn: sqlite3.Connection, deployment: Deployment, at: str, cutoff: Callable[[int], str]
) -> list[str]:
    due: list[str] = []
    for organisation_id in units.organisations_with_enrolments(conn):
        settings = effective_settings_unit(conn, deployment, organisation_id)[PROTOCOL]
        if settings.get("scheduled_notifications"):
            due += units.scheduled_targets(
                conn, organisation_id, cutoff(int(settings["notification_interval"]))
            )
    return due


async def scheduled_devices(
    store: Store, deployment: Deployment, cutoff: Callable[[int], str]
) -> list[str]:
    """Devices whose organisation asks for scheduled notifications and whose interval
    since the last push has passed (``cutoff(minutes)`` gives the time before which)."""
    return await store.read(_scheduled, deployment, now(), cutoff)


# --------------------------------------------------------------------------- views


def _enrolment_view(
    conn: sqlite3.Connection, principal: Principal, organisation_id: str, device_id: str
) -> dict[str, Any]:
    device = inventory.inventory_device_in(conn, organisation_id, device_id)
    if device is None:
        raise NotFound("no such device")
    if principal.kind is AccountKind.USER and device["owner_id"] != principal.account_id:
        raise NotFound("no such device")
    enrolment = units.enrolment_of_device(conn, device_id)
    if enrolment is None:
        return {"device_id": device_id, "enrolment": None}
    users = units.user_channels_of(conn, enrolment["id"])
    token_state = "none"
    if enrolment["push_token"] is not None:
        token_state = "refused" if enrolment["token_bad_at"] else "good"
    return {
        "device_id": device_id,
        "enrolment": {
            "enrolment_id": enrolment["id"],
            "user_enrolment": bool(enrolment["user_enrolment"]),
            "state": enrolment["state"],
            "topic": enrolment["topic"],
            "push_token_state": token_state,
            "push_token_refused_reason": enrolment["token_bad_reason"],
            "awaiting_configuration": bool(enrolment["awaiting_configuration"]),
            "has_unlock_token": enrolment["unlock_token"] is not None,
            "has_bootstrap_token": enrolment["bootstrap_token"] is not None,
            "last_push_at": enrolment["last_push_at"],
            "enrolled_at": device["enrolled_at"],
            "user_channels": [
                {"user_id": u["user_id"], "short_name": u["user_short_name"], "state": u["state"]}
                for u in users
            ],
        },
    }


async def enrolment_of(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> dict[str, Any]:
    """A device's Apple MDM enrolment as the API shows it (never its tokens)."""
    org = await visible_organisation(store, principal, organisation)
    return await store.read(_enrolment_view, principal, org["id"], device_id)
