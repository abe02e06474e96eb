"""Windows enrolment (MS-MDE2): who may enrol, which device it becomes, what it is told.

The three services answer SOAP bytes with SOAP bytes (``engine/protocols/windows_enrolment``
does the XML); this module decides:

* **Who.** The device owner signs in with ``login@organisation`` (the organisation's code,
  as Windows asks for an e-mail address; ``organisation\\login`` is accepted too) and their
  password (*OnPremise*), or through the service's sign-in page, which hands Windows a
  one-time token (*Federated*). Only active user accounts (device owners) of active
  organisations enrol; failed attempts count towards the same lock-out as every sign-in.
* **Which device.** The same hardware (the ``DeviceID``/``HWDevID`` Windows sends) of the
  same owner is enrolled again as the same device; otherwise a Windows device a manager
  entered for the owner and never enrolled is bound; otherwise a new device is created,
  within the organisation's licences and the per-owner limit.
* **In one write.** The device row, its enrolment (certificate thumbprint), the used-up
  sign-in token and the audit event commit together. The
  certificate is signed before that write (RSA signing must not hold up the store's
  writer) for the device the write then re-checks it is for.
* **What it is told.** The service CA in the root store, the client certificate (subject
  ``CN=<device id>``), the OMA DM URL and poll interval from the organisation's effective
  ``oma_dm`` settings, automatic renewal (ROBO) before expiry.
* **Renewal** (``RequestType`` Renew): the PKCS#7 must be signed with the device's current
  certificate from the service CA (and a TLS client certificate, when present, must be that
  same certificate); the new certificate replaces it.
* **Unenrolment** is a state of the enrolment: a manager asks for it
  (:func:`request_unenrolment`); the OMA DM session delivers it (DMClient ``Unenroll``) and,
  like a device that unenrols itself (Alert 1226), reports it with :func:`record_unenrolled`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from .audit import audit_event
from .auth import claim_sign_in_attempt, login_readings, sign_in_name
from .devices import check_room, may_connect
from .errors import AlreadyExists, NotFound
from .ids import new_id
from .omadm_credentials import ServerSecrets
from .organisations import changeable_organisation
from .passwords import verify_password
from .pki import CertificateAuthority
from .principals import AccountKind, Principal, Right
from .protocols import windows_enrolment as wire
from .protocols.pkcs10 import (
    CertificateRequest,
    RequestError,
    open_signed_data,
    parse_certificate_request as parse_pkcs10,
)
from .service_settings import Deployment, effective_settings_unit
from .store import Store, devices as inventory, windows_enrolment as enrolments
from .store.accounts import account_by_id, account_by_login
from .store.audit import insert_event
from .store.organisations import organisation_by_code, organisation_by_id
from .store.rows import Row
from .store.sign_in import clear_attempts
from .timestamps import format_time, now

#: PROVIDER-ID of the w7 APPLICATION and the DMClient provider node the OMA DM server
#: addresses (``./Vendor/MSFT/DMClient/Provider/<PROVIDER_ID>/...``).
PROVIDER_ID = "EMM"
PLATFORM, PROTOCOL = "windows", "oma_dm"
CERTIFICATE_VALIDITY = timedelta(days=365)
#: ROBO renewal starts this long before expiry (CertificateStore CSP ``RenewPeriod``).
RENEWAL_PERIOD = timedelta(days=42)
RENEWAL_RETRY_DAYS = 4
MINIMAL_KEY_LENGTH = 2048
TOKEN_LIFETIME = timedelta(minutes=15)
#: XCEP policy id: any stable identifier (MS-XCEP ``policyID``).
POLICY_ID = "5f7c2b9e-3a41-4d8e-9c61-0b5d2e7a4f13"

#: MS-MDE2 versions whose messages this service speaks; a client's own is answered in kind.
_ENROLMENT_VERSIONS = ("3.0", "4.0", "5.0")
_SUPPORTED_POLICIES = (wire.AuthPolicy.ON_PREMISE, wire.AuthPolicy.FEDERATED)


@dataclass(frozen=True)
class Answer:
    """A SOAP answer: HTTP status and body (faults are 500, as SOAP 1.2 over HTTP says for
    ``s:Receiver``)."""

    status: int
    body: bytes


@dataclass(frozen=True)
class _Owner:
    account: Row
    organisation: Row
    token_hash: str | None
    auth_policy: wire.AuthPolicy


def thumbprint(certificate: x509.Certificate) -> str:
    """The SHA-1 thumbprint Windows names certificates by (upper-case hex): a name, not a
    security check (the certificate itself is verified against the CA)."""
    return certificate.fingerprint(hashes.SHA1()).hex().upper()


def split_user_name(name: str) -> tuple[str, str] | None:
    """``login@organisation`` or ``organisation\\login`` → (organisation code, login)."""
    readings = login_readings(name)
    return (readings[0][0].lower(), readings[0][1]) if readings else None


def service_urls(discovery_url: str) -> dict[str, str]:
    """The policy, enrolment and sign-in services sit beside the discovery service, on the
    same host (MS-MDE2 wants policy and enrolment services on one host)."""
    base = discovery_url.rsplit("/", 1)[0] if discovery_url.endswith(".svc") else discovery_url
    base = base.rstrip("/")
    return {
        "policy": f"{base}/Policy.svc",
        "enrolment": f"{base}/Enrollment.svc",
        "sign_in": f"{base}/Login",
    }


class WindowsEnrolment:
    """The enrolment services of one running service (store, deployment, CA)."""

    def __init__(self, store: Store, deployment: Deployment, ca: CertificateAuthority) -> None:
        self.store = store
        self.deployment = deployment
        self.ca = ca

    # ------------------------------------------------------------------- the three services

    async def discover(self, body: bytes) -> Answer:
        return await self._answer(body, self._discover, action=wire.ACTION_FAULT)

    async def get_policies(self, body: bytes, *, source: str | None = None) -> Answer:
        async def handle(envelope: wire.Envelope) -> bytes:
            wire.parse_get_policies(envelope)
            await self._owner(envelope.credentials, source)
            return wire.get_policies_response(
                envelope.message_id,
                policy_id=POLICY_ID,
                name="EMM Windows device",
                minimal_key_length=MINIMAL_KEY_LENGTH,
                validity=CERTIFICATE_VALIDITY,
                renewal=RENEWAL_PERIOD,
            )

        return await self._answer(body, handle, action=wire.ACTION_FAULT)

    async def enrol(
        self,
        body: bytes,
        *,
        client_certificate: x509.Certificate | None = None,
        source: str | None = None,
    ) -> Answer:
        async def handle(envelope: wire.Envelope) -> bytes:
            request = wire.parse_token_request(envelope)
            if request.renewal:
                document = await self._renew(request, client_certificate, source)
            else:
                document = await self._issue(request, envelope.credentials, source)
            return wire.token_response(envelope.message_id, document)

        return await self._answer(body, handle, action=wire.ACTION_RSTRC)

    async def _answer(
        self, body: bytes, handle: Callable[[wire.Envelope], Awaitable[bytes]], *, action: str
    ) -> Answer:
        message_id = None
        try:
            envelope = wire.parse_envelope(body)
            message_id = envelope.message_id
            return Answer(200, await handle(envelope))
        except wire.Fault as fault:
            return Answer(500, wire.fault_response(message_id, fault, action=action))

    # ------------------------------------------------------------------- discovery

    async def _discover(self, envelope: wire.Envelope) -> bytes:
        request = wire.parse_discover(envelope)
        split = split_user_name(request.email_address)
        organisation = await self.store.read(organisation_by_code, split[0]) if split else None
        # An unknown organisation gets the system-wide answer: discovery tells nobody which
        # organisations exist; the sign-in that follows refuses what it must.
        settings = await self.store.read(
            effective_settings_unit,
            self.deployment,
            organisation["id"] if organisation and organisation["active"] else None,
        )
        edm = settings["microsoft_edm"]
        urls = service_urls(str(edm["service_url"]))
        offered = set(request.auth_policies) or {wire.AuthPolicy.ON_PREMISE.value}
        chosen = wire.AuthPolicy(str(edm.get("auth_policy", wire.AuthPolicy.ON_PREMISE)))
        if chosen.value not in offered:
            others = [p for p in _SUPPORTED_POLICIES if p.value in offered]
            if not others:
                raise wire.Fault(
                    wire.Subcode.AUTHORIZATION,
                    "this service supports the OnPremise and Federated auth policies only",
                    error_type=wire.ErrorType.NOT_SUPPORTED,
                )
            chosen = others[0]
        return wire.discover_response(
            envelope.message_id,
            auth_policy=chosen,
            policy_service_url=urls["policy"],
            enrolment_service_url=urls["enrolment"],
            authentication_service_url=urls["sign_in"],
            enrolment_version=(
                request.request_version
                if request.request_version in _ENROLMENT_VERSIONS
                else _ENROLMENT_VERSIONS[-1]
            ),
        )

    # ------------------------------------------------------------------- who is asking

    async def _owner(self, credentials: wire.Credentials, source: str | None) -> _Owner:
        if credentials.token is not None:
            return await self._token_owner(credentials)
        if credentials.username is None or credentials.password is None:
            raise wire.Fault(wire.Subcode.INVALID_SECURITY, "no credentials in the header")
        return await self.owner_by_password(credentials.username, credentials.password, source)

    async def owner_by_password(self, username: str, password: str, source: str | None) -> _Owner:
        """Check a device owner's sign-in, counting failures like every sign-in does."""
        refused = wire.Fault(wire.Subcode.AUTHENTICATION, "wrong user name or password")
        split = split_user_name(username)
        if split is None:
            raise refused
        code, login = split
        name = sign_in_name(code, login)
        wait = await self.store.write(claim_sign_in_attempt, name)
        if wait is not None:
            raise wire.Fault(
                wire.Subcode.AUTHENTICATION, f"too many failed sign-ins; retry in {wait} s"
            )
        organisation = await self.store.read(organisation_by_code, code)
        account = None
        if organisation is not None and organisation["active"]:
            account = await self.store.read(account_by_login, organisation["id"], login)
        ok = await trio.to_thread.run_sync(
            verify_password, password, account["password_hash"] if account else None
        )
        if account is None or organisation is None or not ok or not account["active"]:
            if account is not None:
                failed = audit_event(
                    None,
                    "account.login_failed",
                    organisation_id=account["organisation_id"],
                    target_type="account",
                    target_id=account["id"],
                    actor=account["login"],
                    source=source,
                    details={"via": "windows_enrolment"},
                )
                await self.store.write(insert_event, failed)
            raise refused
        # A good password ends the count (GetPolicies alone must not add up to a lock-out).
        await self.store.write(clear_attempts, name)
        owner = _Owner(account, organisation, None, wire.AuthPolicy.ON_PREMISE)
        _check_owner(owner)
        return owner

    async def _token_owner(self, credentials: wire.Credentials) -> _Owner:
        if credentials.token_type != wire.USER_TOKEN:
            raise wire.Fault(wire.Subcode.INVALID_SECURITY, "unsupported security token")
        token_hash = _token_hash(credentials.token or b"")
        row = await self.store.read(enrolments.token_by_hash, token_hash, now())
        if row is None or not row["account_active"] or not row["organisation_active"]:
            raise wire.Fault(wire.Subcode.AUTHENTICATION, "the sign-in token is not valid")
        account = await self.store.read(account_by_id, row["account_id"])
        organisation = await self.store.read(organisation_by_id, row["organisation_id"])
        assert account is not None and organisation is not None
        owner = _Owner(account, organisation, token_hash, wire.AuthPolicy.FEDERATED)
        _check_owner(owner)
        return owner

    async def federated_sign_in(self, username: str, password: str, source: str | None) -> str:
        """The sign-in page's check: a one-time token for the enrolment that follows."""
        owner = await self.owner_by_password(username, password, source)
        token = secrets.token_urlsafe(32)
        moment = datetime.now(UTC)
        row = {
            "token_hash": _token_hash(token.encode("ascii")),
            "account_id": owner.account["id"],
            "organisation_id": owner.organisation["id"],
            "created_at": format_time(moment),
            "expires_at": format_time(moment + TOKEN_LIFETIME),
        }
        event = audit_event(
            None,
            "account.login",
            organisation_id=owner.organisation["id"],
            target_type="account",
            target_id=owner.account["id"],
            actor=owner.account["login"],
            source=source,
            details={"via": "windows_enrolment"},
        )
        await self.store.write(_signed_in, row, event)
        return token

    # ------------------------------------------------------------------- enrolment

    async def _issue(
        self, request: wire.TokenRequest, credentials: wire.Credentials, source: str | None
    ) -> bytes:
        owner = await self._owner(credentials, source)
        csr = _certificate_request(request)
        hardware_id = request.first("HWDevID") or request.first("DeviceID")
        facts = _device_facts(request)
        org_id, account_id = owner.organisation["id"], owner.account["id"]
        for _attempt in range(3):
            plan = await self.store.read(_plan, org_id, account_id, hardware_id)
            certificate = await self._sign(plan.device_id, csr)
            enrolment = _enrolment_row(owner, plan.device_id, hardware_id, request, certificate)
            event = audit_event(
                None,
                "device.enrolled",
                organisation_id=org_id,
                target_type="device",
                target_id=plan.device_id,
                actor=owner.account["login"],
                source=source,
                details={
                    "protocol": PROTOCOL,
                    "auth_policy": owner.auth_policy.value,
                    "how": plan.how,
                    "hardware_id": hardware_id,
                    "certificate": enrolment["certificate_thumbprint"],
                },
            )
            try:
                device = await self.store.write(
                    _enrol, plan, owner, hardware_id, facts, enrolment, event
                )
            except _PlanChanged:
                continue
            except AlreadyExists as exc:  # LicenceLimit
                per_user = "per user" in str(exc)
                raise wire.Fault(
                    wire.Subcode.AUTHORIZATION,
                    str(exc),
                    error_type=(
                        wire.ErrorType.DEVICE_CAP_REACHED
                        if per_user
                        else wire.ErrorType.USER_LICENSE
                    ),
                ) from None
            except _Refused as refused:
                raise refused.fault from None
            return await self._document(device, enrolment, certificate, renewal=False)
        raise wire.Fault(wire.Subcode.ENROLLMENT_SERVER, "the inventory kept changing; retry")

    async def _sign(self, device_id: str, request: CertificateRequest) -> x509.Certificate:
        """The client certificate for the key the request proved; its subject is the
        device id (never the request's subject), in a worker thread (RSA signing)."""

        def sign() -> x509.Certificate:
            certificate, _ = self.ca.issue_client_certificate(
                device_id,
                public_key=request.public_key,  # type: ignore[arg-type]
                valid_days=CERTIFICATE_VALIDITY.days,
            )
            return certificate

        return await trio.to_thread.run_sync(sign)

    async def _document(
        self, device: Row, enrolment: Row, certificate: x509.Certificate, *, renewal: bool
    ) -> bytes:
        settings = await self.store.read(
            effective_settings_unit, self.deployment, device["organisation_id"]
        )
        organisation = await self.store.read(organisation_by_id, device["organisation_id"])
        assert organisation is not None
        oma_dm = settings["oma_dm"]
        der = serialization.Encoding.DER
        return wire.provisioning_document(
            wire.Provisioning(
                root_der=self.ca.certificate.public_bytes(der),
                client_der=certificate.public_bytes(der),
                root_thumbprint=thumbprint(self.ca.certificate),
                client_thumbprint=thumbprint(certificate),
                client_subject=certificate.subject.rfc4514_string(),
                provider_id=PROVIDER_ID,
                server_name=organisation["short_name"] or PROVIDER_ID,
                management_url=str(oma_dm["service_url"]),
                device_id=device["id"],
                device_name=device["name"],
                poll_minutes=int(oma_dm["connection_interval"]),
                store="System" if enrolment["enrolment_type"] == "Device" else "User",
                renew_period_days=RENEWAL_PERIOD.days,
                renew_retry_days=RENEWAL_RETRY_DAYS,
                client_secret=enrolment["client_secret"],
                # The APPSRV secret is the server's password on this device, the one
                # every OMA DM device has (engine.omadm_credentials), not a second one.
                server_secret=ServerSecrets.of(self.ca).password(device["id"]),
                client_nonce=enrolment["client_nonce"],
                renewal=renewal,
            )
        )

    # ------------------------------------------------------------------- renewal

    async def _renew(
        self,
        request: wire.TokenRequest,
        client_certificate: x509.Certificate | None,
        source: str | None,
    ) -> bytes:
        if not request.wrapped:
            raise wire.Fault(wire.Subcode.MESSAGE_FORMAT, "a renewal carries a PKCS#7 request")
        try:
            signed = open_signed_data(request.request)
        except RequestError as exc:
            raise wire.Fault(wire.Subcode.CERTIFICATE_REQUEST, str(exc)) from None
        old = signed.signer
        not_ours = wire.Fault(
            wire.Subcode.AUTHENTICATION,
            "the renewal is not signed with a current certificate of this service",
            error_type=wire.ErrorType.NOT_ELIGIBLE_TO_RENEW,
        )
        if not self.ca.is_issued_by(old, purpose=ExtendedKeyUsageOID.CLIENT_AUTH):
            raise not_ours
        if client_certificate is not None and thumbprint(client_certificate) != thumbprint(old):
            raise not_ours
        _check_key(signed.request)
        enrolment = await self.store.read(enrolments.enrolment_by_thumbprint, thumbprint(old))
        if enrolment is None or enrolment["state"] == enrolments.UNENROLLED:
            raise not_ours
        device_id = enrolment["device_id"]
        certificate = await self._sign(device_id, signed.request)
        event = audit_event(
            None,
            "device.certificate_renewed",
            organisation_id=enrolment["organisation_id"],
            target_type="device",
            target_id=device_id,
            actor="device",
            source=source,
            details={"old": thumbprint(old), "new": thumbprint(certificate)},
        )
        try:
            device, enrolment = await self.store.write(
                _renew_unit, device_id, thumbprint(old), certificate, event
            )
        except _Refused:
            raise not_ours from None
        return await self._document(device, enrolment, certificate, renewal=True)

    # ------------------------------------------------------------------- for OMA DM

    async def device_of_certificate(self, certificate: x509.Certificate) -> Row | None:
        """The enrolled device a TLS client certificate identifies, if it may connect."""
        if not self.ca.is_issued_by(certificate, purpose=ExtendedKeyUsageOID.CLIENT_AUTH):
            return None
        return await self.store.read(_device_of_thumbprint, thumbprint(certificate))


# --------------------------------------------------------------------------- checks


def _check_owner(owner: _Owner) -> None:
    account, organisation = owner.account, owner.organisation
    if account["kind"] != AccountKind.USER:
        raise wire.Fault(
            wire.Subcode.AUTHORIZATION, "only device owners (user accounts) enrol devices"
        )
    if account["must_change_password"]:
        raise wire.Fault(
            wire.Subcode.AUTHORIZATION,
            "change the one-time password in the self-service portal first",
        )
    expires = organisation["subscription_expires"]
    if expires and expires < now():
        raise wire.Fault(
            wire.Subcode.AUTHORIZATION,
            "the organisation's subscription has expired",
            error_type=wire.ErrorType.USER_LICENSE,
        )


def _check_key(request: CertificateRequest) -> None:
    key = request.public_key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MINIMAL_KEY_LENGTH:
        raise wire.Fault(
            wire.Subcode.CERTIFICATE_REQUEST,
            f"RSA keys need at least {MINIMAL_KEY_LENGTH} bits (the enrolment policy)",
        )


def _certificate_request(request: wire.TokenRequest) -> CertificateRequest:
    try:
        csr = (
            open_signed_data(request.request).request
            if request.wrapped
            else parse_pkcs10(request.request)
        )
    except RequestError as exc:
        raise wire.Fault(wire.Subcode.CERTIFICATE_REQUEST, str(exc)) from None
    _check_key(csr)
    return csr


def _token_hash(token: bytes) -> str:
    return hashlib.sha256(token.strip()).hexdigest()


def _device_facts(request: wire.TokenRequest) -> dict[str, Any]:
    """What Windows said of itself in ``AdditionalContext`` (MS-MDE2 2.2.8)."""
    return {
        "name": (request.first("DeviceName") or "Windows device")[:200],
        "os_version": request.first("OSVersion"),
        "imei": request.first("IMEI"),
        "enrolment": {
            "device_type": request.first("DeviceType"),
            "os_edition": request.first("OSEdition"),
            "application_version": request.first("ApplicationVersion"),
            "mac_addresses": list(request.context.get("MAC", ())),
            "imeis": list(request.context.get("IMEI", ())),
            "enrolment_type": request.first("EnrollmentType"),
        },
    }


def _enrolment_row(
    owner: _Owner,
    device_id: str,
    hardware_id: str | None,
    request: wire.TokenRequest,
    certificate: x509.Certificate,
) -> dict[str, Any]:
    at = now()
    return {
        "device_id": device_id,
        "organisation_id": owner.organisation["id"],
        "owner_id": owner.account["id"],
        "hardware_id": hardware_id,
        "enrolment_type": "Device" if request.first("EnrollmentType") == "Device" else "Full",
        "auth_policy": owner.auth_policy.value,
        "certificate_thumbprint": thumbprint(certificate),
        "certificate_serial": format(certificate.serial_number, "x"),
        "certificate_not_after": format_time(certificate.not_valid_after_utc),
        "client_secret": secrets.token_urlsafe(24),
        "server_secret": secrets.token_urlsafe(24),
        "client_nonce": secrets.token_urlsafe(16),
        "state": enrolments.ENROLLED,
        "enrolled_at": at,
        "updated_at": at,
    }


# --------------------------------------------------------------------------- units


class _PlanChanged(Exception):
    """The inventory changed between choosing the device and writing: choose again."""


class _Refused(Exception):
    def __init__(self, fault: wire.Fault) -> None:
        super().__init__(fault.reason)
        self.fault = fault


@dataclass(frozen=True)
class _Plan:
    how: str  # reenrol | bind | new
    device_id: str


def _plan(conn: sqlite3.Connection, org_id: str, account_id: str, hardware_id: str | None) -> _Plan:
    if hardware_id:
        earlier = enrolments.enrolment_by_hardware(conn, org_id, hardware_id)
        if earlier is not None and earlier["owner_id"] == account_id:
            return _Plan("reenrol", earlier["device_id"])
    waiting = enrolments.waiting_windows_device(conn, org_id, account_id)
    if waiting is not None:
        return _Plan("bind", waiting["id"])
    return _Plan("new", new_id())


def _enrol(
    conn: sqlite3.Connection,
    plan: _Plan,
    owner: _Owner,
    hardware_id: str | None,
    facts: dict[str, Any],
    enrolment: dict[str, Any],
    event: dict[str, Any],
) -> Row:
    org_id, account_id = owner.organisation["id"], owner.account["id"]
    if plan.how != "new" and _plan(conn, org_id, account_id, hardware_id) != plan:
        raise _PlanChanged
    organisation = organisation_by_id(conn, org_id)
    account = account_by_id(conn, account_id)
    if not (organisation and organisation["active"] and account and account["active"]):
        raise _Refused(wire.Fault(wire.Subcode.AUTHENTICATION, "the account is not active"))
    if owner.token_hash is not None and not enrolments.use_token(conn, owner.token_hash, now()):
        raise _Refused(wire.Fault(wire.Subcode.AUTHENTICATION, "the sign-in token was used"))
    at = now()
    values = {
        "name": facts["name"],
        "os_version": facts["os_version"],
        "state": "enrolled",
        "enrolled_at": at,
        "last_seen_at": at,
        "updated_at": at,
    }
    if facts["imei"]:
        values["imei"] = facts["imei"]
    if plan.how == "new":
        check_room(conn, org_id, account_id, new_licence=True)
        inventory.insert_device(
            conn,
            {
                "id": plan.device_id,
                "organisation_id": org_id,
                "owner_id": account_id,
                "platform": PLATFORM,
                "protocol": PROTOCOL,
                "created_at": at,
                "inventory": json.dumps({"enrolment": facts["enrolment"]}),
                **values,
            },
        )
    else:
        device = inventory.device_by_id(conn, plan.device_id)
        assert device is not None
        if not may_connect(device, organisation):
            raise _Refused(
                wire.Fault(wire.Subcode.AUTHORIZATION, "this device may not connect (inactive)")
            )
        stored = json.loads(device["inventory"] or "{}")
        values["inventory"] = json.dumps(stored | {"enrolment": facts["enrolment"]})
        inventory.update_device(conn, plan.device_id, values)
    enrolments.put_enrolment(conn, enrolment)
    insert_event(conn, event)
    device = inventory.device_by_id(conn, plan.device_id)
    assert device is not None
    return device


def _signed_in(conn: sqlite3.Connection, token: dict[str, Any], event: dict[str, Any]) -> None:
    enrolments.insert_token(conn, token)
    insert_event(conn, event)


def _renew_unit(
    conn: sqlite3.Connection,
    device_id: str,
    old_thumbprint: str,
    certificate: x509.Certificate,
    event: dict[str, Any],
) -> tuple[Row, Row]:
    device = inventory.device_by_id(conn, device_id)
    organisation = organisation_by_id(conn, device["organisation_id"]) if device else None
    if device is None or organisation is None or not may_connect(device, organisation):
        raise _Refused(wire.Fault(wire.Subcode.AUTHORIZATION, "this device may not connect"))
    at = now()
    changed = enrolments.replace_certificate(
        conn,
        device_id,
        old_thumbprint,
        {
            "certificate_thumbprint": thumbprint(certificate),
            "certificate_serial": format(certificate.serial_number, "x"),
            "certificate_not_after": format_time(certificate.not_valid_after_utc),
            "renewed_at": at,
            "updated_at": at,
        },
    )
    if not changed:
        raise _Refused(wire.Fault(wire.Subcode.AUTHENTICATION, "not the current certificate"))
    inventory.update_device(conn, device_id, {"last_seen_at": at, "updated_at": at})
    insert_event(conn, event)
    enrolment = enrolments.enrolment_of(conn, device_id)
    assert enrolment is not None
    return device, enrolment


def _device_of_thumbprint(conn: sqlite3.Connection, print_: str) -> Row | None:
    enrolment = enrolments.enrolment_by_thumbprint(conn, print_)
    if enrolment is None or enrolment["state"] == enrolments.UNENROLLED:
        return None
    device = inventory.device_by_id(conn, enrolment["device_id"])
    organisation = organisation_by_id(conn, enrolment["organisation_id"])
    if device is None or organisation is None or not may_connect(device, organisation):
        return None
    return device


# --------------------------------------------------------------------------- unenrolment


async def request_unenrolment(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> dict[str, Any]:
    """A manager asks for a Windows device to be unenrolled; its next OMA DM session
    delivers DMClient ``Unenroll`` and reports back with :func:`record_unenrolled`."""
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    event = audit_event(
        principal,
        "device.unenrolment_requested",
        organisation_id=org["id"],
        target_type="device",
        target_id=device_id,
    )
    return await store.write(_request_unenrolment, org["id"], device_id, principal, event)


def _request_unenrolment(
    conn: sqlite3.Connection,
    org_id: str,
    device_id: str,
    principal: Principal,
    event: dict[str, Any],
) -> Row:
    enrolment = enrolments.enrolment_of(conn, device_id)
    device = inventory.inventory_device_in(conn, org_id, device_id)
    if device is None or enrolment is None or enrolment["state"] == enrolments.UNENROLLED:
        raise NotFound("no such enrolled Windows device")
    if enrolment["state"] == enrolments.ENROLLED:
        at = now()
        enrolments.update_enrolment(
            conn,
            device_id,
            {
                "state": enrolments.UNENROLMENT_REQUESTED,
                "unenrolment_requested_at": at,
                "unenrolment_requested_by": principal.account_id,
                "updated_at": at,
            },
        )
        insert_event(conn, event)
    result = enrolments.enrolment_of(conn, device_id)
    assert result is not None
    return result


async def unenrolment_requested(store: Store, device_id: str) -> bool:
    """Whether the device's next OMA DM session should tell it to unenrol."""
    enrolment = await store.read(enrolments.enrolment_of, device_id)
    return enrolment is not None and enrolment["state"] == enrolments.UNENROLMENT_REQUESTED


async def record_unenrolled(store: Store, device_id: str, *, by_device: bool) -> bool:
    """The device is no longer enrolled (it said so, or acknowledged ``Unenroll``): its
    certificate stops identifying it and the device waits for a new enrolment.
    False if it was not enrolled (a repeated report changes nothing)."""
    return await store.write(_record_unenrolled, device_id, by_device)


def _record_unenrolled(conn: sqlite3.Connection, device_id: str, by_device: bool) -> bool:
    enrolment = enrolments.enrolment_of(conn, device_id)
    if enrolment is None or enrolment["state"] == enrolments.UNENROLLED:
        return False
    at = now()
    enrolments.update_enrolment(
        conn, device_id, {"state": enrolments.UNENROLLED, "unenrolled_at": at, "updated_at": at}
    )
    device = inventory.device_by_id(conn, device_id)
    if device is not None and device["state"] == "enrolled":
        inventory.update_device(conn, device_id, {"state": "created", "updated_at": at})
    insert_event(
        conn,
        audit_event(
            None,
            "device.unenrolled",
            organisation_id=enrolment["organisation_id"],
            target_type="device",
            target_id=device_id,
            actor="device" if by_device else "service",
            details={"by": "device" if by_device else "server"},
        ),
    )
    return True
