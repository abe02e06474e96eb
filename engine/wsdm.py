"""WSDM as domain operations: enrolment, check-in, command results, unenrolment.

Every operation that changes something does it in ONE write unit, with its audit event:
an enrolment redeems the installation code and creates or binds the device together (a
refused enrolment leaves the code unused); a check-in stores the report, records results,
hands out the pending commands (marking them sent) and reads the configuration in one
snapshot.

Idempotency, because devices retry after a lost answer:

* a check-in carries a ``checkin_id``; the same id again is a replay: the report is not
  stored twice and the answer holds the same commands (sent ones are handed out again until
  answered; the app executes a command id once);
* a result repeated with the same outcome changes nothing (``engine.commands``), a
  contradicting one is refused for that command only;
* a location is kept once per device and moment;
* an enrolment may carry an ``enrolment_id`` chosen by the device: the same id again with
  the same code or login, within :data:`ENROLMENT_REPLAY` and before the device's first
  check-in, is a replay: the same device gets a fresh token (the one the lost answer held
  stops working), the code is not redeemed again and no second device is made.

Device tokens are 256-bit random secrets kept as SHA-256, like the API's bearer tokens.
The push identity is the device's own XMPP account ``<device id>@<xmpp domain>``, created on
the XMPP server at enrolment through :class:`PushAccounts` (the XMPP notifier), or at a
check-in that says the device has none; it is recorded (``push_jid``) in the same write,
so the scheduler pushes the device and unenrolment deletes the account. The service only
ever knows the password while handing it to the device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import outcome

from .audit import audit_event
from .auth import authenticate, login, logout
from .commands import (
    RefusedTransition,
    State,
    mark_sent_unit,
    public as public_command,
    record_result_unit,
)
from .devices import check_room
from .errors import NotFound, Throttled, Unauthenticated
from .ids import new_id
from .installation_codes import InstallationCodeRefused, Purpose, normalise_code, redeem_unit
from .organisations import visible_organisation
from .principals import AccountKind, Principal, owner_scope
from .protocols import wsdm as protocol
from .protocols.wsdm import CheckIn, DeviceFacts, Enrolment, OwnerLogin, ProtocolError, Result
from .service_settings import Deployment, effective_settings_unit
from .store import Store, devices as inventory, wsdm as units
from .store.audit import insert_event
from .store.commands import command_by_id, commands_of_device
from .store.devices import code_by_text
from .store.organisations import organisation_by_id
from .store.rows import Row
from .store.settings import SYSTEM, settings_of
from .timestamps import format_time, now, parse_time

log = logging.getLogger(__name__)

PROTOCOL = "wsdm"
#: Command kinds whose result may carry a location (kept in ``wsdm_locations`` too).
LOCATING = frozenset({"locate", "track"})
#: How long after an enrolment its ``enrolment_id`` makes a retry a replay: long enough for
#: an app to retry over a bad network, short enough that a spent code soon is just spent.
ENROLMENT_REPLAY = timedelta(minutes=10)


class PushAccounts(Protocol):
    """Creates and removes device accounts on the XMPP server (the XMPP notifier)."""

    @property
    def domain(self) -> str: ...

    async def create_account(self, jid: str, password: str) -> None:
        """Create the account, or set its password if it exists; raises if the server
        cannot be reached or refuses."""
        ...

    async def delete_account(self, jid: str) -> None: ...


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def push_jid(device_id: str, domain: str) -> str:
    return f"{device_id}@{domain}"


# --------------------------------------------------------------------------- authentication


@dataclass(frozen=True)
class DeviceIdentity:
    """A device that showed a valid token (``token_hash``: the SHA-256 it showed)."""

    device_id: str
    organisation_id: str
    organisation_code: str
    push_jid: str | None
    token_hash: str


#: Recently authenticated tokens: a device checks in every few minutes at most, and every
#: write unit checks the token and the device again, so a token revoked or replaced since
#: it was remembered is still refused (and then forgotten). Saves a read per request.
_IDENTITIES: dict[str, tuple[float, DeviceIdentity]] = {}
_IDENTITY_SECONDS = 60.0
_MAX_IDENTITIES = 100_000


async def authenticate_device(
    store: Store, authorization: str | None, push: PushAccounts | None = None
) -> DeviceIdentity:
    """The device whose token is in ``Authorization: Bearer <token>``, if it may connect.

    A device told it is no longer enrolled (removed by the service) also loses its XMPP
    account: it will not log in again.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ProtocolError(
            "unauthenticated", "send the device token: Authorization: Bearer <token>", 401
        )
    hashed = token_hash(token.strip())
    remembered = _IDENTITIES.get(hashed)
    if remembered is not None and remembered[0] > time.monotonic():
        return remembered[1]
    row = await store.lookup(units.device_by_token, hashed)
    if row is None:
        raise ProtocolError("unauthenticated", "unknown device token", 401)
    identity = DeviceIdentity(
        row["device_id"], row["organisation_id"], row["organisation_code"], row["push_jid"], hashed
    )
    try:
        _require_connectable(row)
    except ProtocolError as exc:
        if exc.code == "unenrolled":
            await _delete_push_account(push, identity.push_jid)
        raise
    if len(_IDENTITIES) >= _MAX_IDENTITIES:
        _IDENTITIES.clear()
    _IDENTITIES[hashed] = (time.monotonic() + _IDENTITY_SECONDS, identity)
    return identity


def forget_device(device: DeviceIdentity) -> None:
    """The device was refused or left: its token must be read again next time."""
    _IDENTITIES.pop(device.token_hash, None)


def _require_connectable(row: Row) -> None:
    """The checks of ``engine.devices.may_connect``, with WSDM's words for each refusal."""
    if row["unenrolled_at"] is not None or row["state"] == inventory.REMOVED:
        raise ProtocolError("unenrolled", "this device is no longer enrolled", 410)
    if row["state"] not in inventory.ACTIVE_STATES or not row["organisation_active"]:
        raise ProtocolError("device_inactive", "this device may not connect now", 403)


# --------------------------------------------------------------------------- enrolment


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    organisation_id: str
    organisation_code: str
    configuration: dict[str, Any]


@dataclass(frozen=True)
class _Attempt:
    """One enrolment request, as its write unit needs it."""

    facts: DeviceFacts
    token_hash: str
    domain: str | None  # the XMPP domain, if push is on
    deployment: Deployment
    enrolment_id: str | None  # SHA-256 of the device's enrolment_id
    at: str
    source: str | None


async def enrol(
    store: Store,
    deployment: Deployment,
    push: PushAccounts | None,
    message: Enrolment,
    *,
    source: str | None = None,
) -> dict[str, Any]:
    """Enrol with an installation code, or with the owner's login where the organisation
    allows it: the answer carries the device token (shown once), the push identity and the
    configuration. A replay (same ``enrolment_id``, see the module's docstring) answers for
    the device the first attempt enrolled."""
    token = secrets.token_urlsafe(32)
    attempt = _Attempt(
        facts=message.device,
        token_hash=token_hash(token),
        domain=push.domain if push is not None else None,
        deployment=deployment,
        enrolment_id=token_hash(message.enrolment_id) if message.enrolment_id else None,
        at=now(),
        source=source,
    )
    if message.owner is not None:
        account_id, organisation_id = await _owner_of(store, message.owner, source)
        enrolled = await store.write(_enrol_owner, account_id, organisation_id, attempt)
    else:
        text = normalise_code(message.code or "")
        if text is None:
            raise ProtocolError("code_refused", "unknown installation code", 403, reason="unknown")
        try:
            enrolled = await store.write(_enrol, text, attempt)
        except InstallationCodeRefused as exc:
            raise ProtocolError("code_refused", str(exc), 403, reason=exc.reason) from None
    return {
        "device_id": enrolled.device_id,
        "device_token": token,
        "push": await _new_push_identity(push, enrolled.device_id),
        "configuration": enrolled.configuration,
    }


async def _owner_of(store: Store, owner: OwnerLogin, source: str | None) -> tuple[str, str]:
    """The device owner's account and organisation, after the same sign-in checks as the
    portals (throttling, audit); the session this opens is closed at once."""
    refused = ProtocolError("login_refused", "wrong organisation, login id or password", 403)
    try:
        issued = await login(
            store,
            organisation_code=owner.organisation,
            login_id=owner.login,
            password=owner.password,
            source=source,
            label="wsdm enrolment",
            lifetime=timedelta(minutes=1),
        )
    except Throttled as exc:
        raise ProtocolError("login_refused", str(exc), 429, retry_after=exc.retry_after) from None
    except Unauthenticated:
        raise refused from None
    principal = await authenticate(store, issued.token, source=source)
    await logout(store, principal)
    if principal.kind is not AccountKind.USER or principal.organisation_id is None:
        raise ProtocolError("login_refused", "only device owners enrol devices", 403)
    if issued.password_change_required:
        raise ProtocolError("login_refused", "change your one-time password first", 403)
    return principal.account_id, principal.organisation_id


async def _new_push_identity(push: PushAccounts | None, device_id: str) -> dict[str, str] | None:
    """Create the device's XMPP account with a fresh password; None if push is off or the
    XMPP server cannot be reached now (the device asks again at a check-in)."""
    if push is None:
        return None
    jid = push_jid(device_id, push.domain)
    password = secrets.token_urlsafe(24)
    try:
        await push.create_account(jid, password)
    except Exception as exc:
        log.warning("could not create the XMPP account of %s: %r", device_id, exc)
        return None
    return {"jid": jid, "password": password}


def _reported(facts: DeviceFacts) -> dict[str, str]:
    """What the enrolling device said that the inventory keeps."""
    return {
        name: value
        for name, value in (
            ("model", facts.model),
            ("os_version", facts.os_version),
            ("serial_number", facts.serial_number),
            ("imei", facts.imei),
        )
        if value is not None
    }


def _enrol(conn: sqlite3.Connection, text: str, attempt: _Attempt) -> Enrolled:
    code = code_by_text(conn, text) if attempt.enrolment_id is not None else None
    if code is not None and code["revoked_at"] is None:  # a revoked code replays nothing
        again = _replayed(conn, code["organisation_id"], {"code": code["id"]}, attempt)
        if again is not None:
            return again
    grant = redeem_unit(conn, text, attempt.at, attempt.source)
    facts, at = attempt.facts, attempt.at
    if grant.purpose in (Purpose.ENROL_DEVICE, Purpose.BIND_DEVICE):
        assert grant.device_id is not None
        device = inventory.device_by_id(conn, grant.device_id)
        assert device is not None  # checked by the redemption
        if device["protocol"] != PROTOCOL:
            raise InstallationCodeRefused(
                f"this code enrols a {device['protocol']} device, not a WSDM one", "wrong_protocol"
            )
        device_id = device["id"]
        values = _reported(facts) | {"state": "enrolled", "enrolled_at": at, "last_seen_at": at}
        inventory.update_device(conn, device_id, values | {"updated_at": at})
    elif grant.purpose == Purpose.NEW_DEVICE_FOR_ACCOUNT:
        assert grant.account_id is not None
        device_id = _new_owned_device(conn, grant.organisation_id, grant.account_id, facts, at)
    else:
        raise InstallationCodeRefused(
            "this code creates an account; enrol with a device code", "unsupported_purpose"
        )
    details = {"code": grant.code_id, "purpose": grant.purpose}
    return _bind(conn, device_id, grant.organisation_id, grant.organisation_code, details, attempt)


def _enrol_owner(
    conn: sqlite3.Connection, account_id: str, organisation_id: str, attempt: _Attempt
) -> Enrolled:
    settings = effective_settings_unit(conn, attempt.deployment, organisation_id)
    if not settings["wsdm"]["login_enrolment"]:
        raise ProtocolError(
            "login_refused", "this organisation enrols devices with installation codes only", 403
        )
    details = {"account": account_id, "by": "login"}
    again = _replayed(conn, organisation_id, details, attempt)
    if again is not None:
        return again
    organisation = organisation_by_id(conn, organisation_id)
    assert organisation is not None
    device_id = _new_owned_device(conn, organisation_id, account_id, attempt.facts, attempt.at)
    return _bind(conn, device_id, organisation_id, organisation["code"], details, attempt)


def _replayed(
    conn: sqlite3.Connection, organisation_id: str, made_with: dict[str, Any], attempt: _Attempt
) -> Enrolled | None:
    """The enrolment this attempt repeats (same ``enrolment_id``, same code or login, recent,
    the device not yet checked in), given the attempt's token; None if it repeats none."""
    if attempt.enrolment_id is None:
        return None
    since = format_time(parse_time(attempt.at) - ENROLMENT_REPLAY)
    row = units.enrolment_to_replay(conn, organisation_id, attempt.enrolment_id, since)
    if row is None:
        return None
    enrolled_with = json.loads(row["enrolled_with"])
    if any(enrolled_with.get(name) != value for name, value in made_with.items()):
        return None
    device_id = row["device_id"]
    device = inventory.device_by_id(conn, device_id)
    organisation = organisation_by_id(conn, organisation_id)
    if (
        device is None
        or organisation is None
        or device["state"] != "enrolled"
        or not organisation["active"]
    ):
        return None
    units.replace_token(conn, device_id, attempt.token_hash)
    if attempt.domain is not None:
        units.set_push_jid(conn, device_id, push_jid(device_id, attempt.domain))
    insert_event(
        conn,
        audit_event(
            None,
            "device.enrolment_repeated",
            organisation_id=organisation_id,
            target_type="device",
            target_id=device_id,
            details={"protocol": PROTOCOL, **made_with},
            actor="enrolment",
            source=attempt.source,
        ),
    )
    return Enrolled(
        device_id,
        organisation_id,
        organisation["code"],
        _configuration(conn, attempt.deployment, organisation_id, organisation["code"]),
    )


def _new_owned_device(
    conn: sqlite3.Connection, organisation_id: str, account_id: str, facts: DeviceFacts, at: str
) -> str:
    """A new enrolled device of this owner, within the organisation's licences."""
    check_room(conn, organisation_id, account_id, new_licence=True)
    device_id = new_id()
    inventory.insert_device(
        conn,
        {
            "id": device_id,
            "organisation_id": organisation_id,
            "owner_id": account_id,
            "name": facts.name or facts.model or "WSDM device",
            "platform": facts.platform,
            "protocol": PROTOCOL,
            "state": "enrolled",
            **_reported(facts),
            "enrolled_at": at,
            "last_seen_at": at,
            "created_at": at,
            "updated_at": at,
        },
    )
    return device_id


def _bind(
    conn: sqlite3.Connection,
    device_id: str,
    organisation_id: str,
    organisation_code: str,
    details: dict[str, Any],
    attempt: _Attempt,
) -> Enrolled:
    """The device's WSDM side with its new token (and what a replay is known by), and the
    enrolment's audit event."""
    units.put_enrolment(
        conn,
        {
            "device_id": device_id,
            "organisation_id": organisation_id,
            "token_hash": attempt.token_hash,
            "push_jid": push_jid(device_id, attempt.domain) if attempt.domain else None,
            "enrolled_at": attempt.at,
            "enrolment_id": attempt.enrolment_id,
            "enrolled_with": json.dumps(details, sort_keys=True),
        },
    )
    event = audit_event(
        None,
        "device.enrolled",
        organisation_id=organisation_id,
        target_type="device",
        target_id=device_id,
        details={"protocol": PROTOCOL, **details},
        actor="enrolment",
        source=attempt.source,
    )
    insert_event(conn, event)
    return Enrolled(
        device_id,
        organisation_id,
        organisation_code,
        _configuration(conn, attempt.deployment, organisation_id, organisation_code),
    )


#: Configurations by (deployment, organisation, settings documents): every check-in needs
#: one, and working it out from the settings documents is most of a check-in's store time.
_CONFIGURATIONS: dict[tuple[Any, ...], dict[str, Any]] = {}
_MAX_CONFIGURATIONS = 4096


def _configuration(
    conn: sqlite3.Connection, deployment: Deployment, organisation_id: str, organisation_code: str
) -> dict[str, Any]:
    """What the organisation's devices are told; kept while its settings documents (the
    system's and the organisation's, read in this same snapshot) stay the same."""
    system, own = settings_of(conn, SYSTEM), settings_of(conn, organisation_id)
    key = (
        deployment,
        organisation_id,
        organisation_code,
        system["settings"] if system else None,
        own["settings"] if own else None,
    )
    found = _CONFIGURATIONS.get(key)
    if found is None:
        settings = effective_settings_unit(conn, deployment, organisation_id)
        found = protocol.configuration(
            organisation_id=organisation_id,
            organisation_code=organisation_code,
            service_url=str(settings["wsdm"]["service_url"]),
            connection_interval_minutes=int(settings["wsdm"]["connection_interval"]),  # type: ignore[arg-type]
            xmpp_server=settings["xmpp"]["service_url"],  # type: ignore[arg-type]
        )
        if len(_CONFIGURATIONS) >= _MAX_CONFIGURATIONS:
            _CONFIGURATIONS.clear()
        _CONFIGURATIONS[key] = found
    return found


# --------------------------------------------------------------------------- check-in


async def check_in(
    store: Store,
    deployment: Deployment,
    push: PushAccounts | None,
    device: DeviceIdentity,
    message: CheckIn,
) -> dict[str, Any]:
    """Store the device's report and results; answer with its commands, the configuration
    when it changed, and a push identity when the device has none yet (recorded in the
    check-in's write, its account made right after)."""
    domain = push.domain if push is not None and not message.has_push_identity else None
    answer = await store.write(_check_in, device, message, now(), deployment, domain)
    if push is not None and domain is not None:
        forget_device(device)  # remembered without its push identity
        identity = await _new_push_identity(push, device.device_id)
        if identity is not None:
            answer["push"] = identity
    return answer


def _check_in(
    conn: sqlite3.Connection,
    device: DeviceIdentity,
    message: CheckIn,
    at: str,
    deployment: Deployment,
    push_domain: str | None,
) -> dict[str, Any]:
    row = _connectable(conn, device)
    device_id = device.device_id
    if push_domain is not None:
        units.set_push_jid(conn, device_id, push_jid(device_id, push_domain))
    organisation_id = row["organisation_id"]
    configuration = _configuration(conn, deployment, organisation_id, row["organisation_code"])
    replay = row["last_checkin_id"] == message.checkin_id
    if not replay:
        report = message.inventory
        values: dict[str, Any] = {
            name: report[name]
            for name in ("model", "os_version", "serial_number", "imei")
            if name in report
        }
        if "rooted" in report:
            values["compliant"] = 0 if report["rooted"] else 1
        values |= {
            "inventory": json.dumps(report, sort_keys=True),
            "last_seen_at": at,
            "updated_at": at,
        }
        units.store_device_report(conn, device_id, values)
        _store_locations(conn, organisation_id, device_id, message.locations, at)
        units.record_check_in(conn, device_id, message.checkin_id, at, configuration["hash"])
    outcomes = _apply_results(conn, device_id, message.results)
    answer: dict[str, Any] = {
        "checkin_id": message.checkin_id,
        "commands": _hand_out_commands(conn, device_id),
        "results": outcomes,
    }
    if message.configuration_hash != configuration["hash"]:
        answer["configuration"] = configuration
    return answer


def _connectable(conn: sqlite3.Connection, identity: DeviceIdentity) -> Row:
    """The device again inside the write: its token may have been replaced, or the device
    removed, since the token was read."""
    row = units.device_by_token(conn, identity.token_hash)
    if row is None or row["device_id"] != identity.device_id:
        raise ProtocolError("unauthenticated", "unknown device token", 401)
    _require_connectable(row)
    return row


def _store_locations(
    conn: sqlite3.Connection,
    organisation_id: str,
    device_id: str,
    locations: Sequence[protocol.Location],
    at: str,
) -> None:
    units.insert_locations(
        conn,
        [
            {
                "id": new_id(),
                "organisation_id": organisation_id,
                "device_id": device_id,
                "command_id": location.command_id,
                "latitude": location.latitude,
                "longitude": location.longitude,
                "accuracy": location.accuracy,
                "recorded_at": location.recorded_at,
                "received_at": at,
            }
            for location in locations
        ],
    )


def _hand_out_commands(conn: sqlite3.Connection, device_id: str) -> list[dict[str, Any]]:
    """Queued and sent-but-unanswered commands, oldest first; queued ones become sent."""
    handed = []
    for row in commands_of_device(conn, device_id, [State.QUEUED.value, State.SENT.value]):
        if row["state"] == State.QUEUED:
            row = mark_sent_unit(conn, row["id"])
        handed.append(protocol.wsdm_command(public_command(row, for_device=True)))
    return handed


def _apply_results(
    conn: sqlite3.Connection, device_id: str, results: Sequence[Result]
) -> list[dict[str, str]]:
    """Record each result; per command: recorded, not_found, not_sent, cancelled, conflict.

    A command of another device (or another organisation) is ``not_found``, exactly like
    an id that does not exist.
    """
    outcomes = []
    for result in results:
        command = command_by_id(conn, result.command_id)
        if command is None or command["device_id"] != device_id:
            outcome = "not_found"
        elif command["state"] == State.QUEUED:
            outcome = "not_sent"
        elif command["state"] == State.CANCELLED:
            outcome = "cancelled"
        else:
            target = State.ACKNOWLEDGED if result.ok else State.FAILED
            stored = json.dumps(result.detail, sort_keys=True)
            try:
                record_result_unit(conn, command["id"], target, stored)
                outcome = "recorded"
            except RefusedTransition:
                outcome = "conflict"
            else:
                located = protocol.location_of_result(command["id"], result.detail)
                if result.ok and command["kind"] in LOCATING and located is not None:
                    _store_locations(conn, command["organisation_id"], device_id, [located], now())
        outcomes.append({"command_id": result.command_id, "outcome": outcome})
    return outcomes


async def report_results(
    store: Store, device: DeviceIdentity, results: Sequence[Result]
) -> dict[str, Any]:
    """Results on their own, sent as soon as commands are done."""
    outcomes = await store.write(_results_unit, device, list(results))
    return {"results": outcomes}


def _results_unit(
    conn: sqlite3.Connection, device: DeviceIdentity, results: list[Result]
) -> list[dict[str, str]]:
    _connectable(conn, device)
    return _apply_results(conn, device.device_id, results)


# --------------------------------------------------------------------------- unenrolment


async def unenrol(
    store: Store,
    push: PushAccounts | None,
    device: DeviceIdentity,
    reason: str | None,
    *,
    source: str | None = None,
) -> None:
    """The device leaves management: its token stops working, it can enrol again later
    with a new code, and its XMPP account goes."""
    jid = await store.write(_unenrol, device, reason, now(), source)
    forget_device(device)
    await _delete_push_account(push, jid)


async def _delete_push_account(push: PushAccounts | None, jid: str | None) -> None:
    if push is not None and jid is not None:
        try:
            await push.delete_account(jid)
        except Exception as exc:  # the account is useless without a device; log and go on
            log.warning("could not delete the XMPP account %s: %r", jid, exc)


def _unenrol(
    conn: sqlite3.Connection,
    identity: DeviceIdentity,
    reason: str | None,
    at: str,
    source: str | None,
) -> str | None:
    """Unenrol; answers the device's push identity as stored (to delete its account)."""
    row = _connectable(conn, identity)
    device_id = identity.device_id
    units.mark_unenrolled(conn, device_id, at)
    device = inventory.device_by_id(conn, device_id)
    assert device is not None
    if device["state"] == "enrolled":
        inventory.update_device(conn, device_id, {"state": "created", "updated_at": at})
    insert_event(
        conn,
        audit_event(
            None,
            "device.unenrolled",
            organisation_id=row["organisation_id"],
            target_type="device",
            target_id=device_id,
            details={"protocol": PROTOCOL, "reason": reason},
            actor="device",
            source=source,
        ),
    )
    return row["push_jid"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- portal, API


async def device_status(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> dict[str, Any]:
    """A device's WSDM side for the device page: enrolment, check-ins, push, overdue."""
    org = await visible_organisation(store, principal, organisation)
    owner = owner_scope(principal)
    row = await store.read(_status, org["id"], device_id, owner)
    if row is None:
        raise NotFound("no such device")
    return row


def _status(
    conn: sqlite3.Connection, organisation_id: str, device_id: str, owner: str | None
) -> dict[str, Any] | None:
    device = inventory.inventory_device_in(conn, organisation_id, device_id)
    if device is None or (owner is not None and device["owner_id"] != owner):
        return None
    row = units.wsdm_device(conn, device_id)
    enrolled = row is not None and row["unenrolled_at"] is None
    return {
        "device_id": device_id,
        "enrolled": enrolled,
        "enrolled_at": row["enrolled_at"] if row else None,
        "unenrolled_at": row["unenrolled_at"] if row else None,
        "last_checkin_at": row["last_checkin_at"] if row else None,
        "checkins": row["checkins"] if row else 0,
        "overdue_since": row["overdue_since"] if row else None,
        "push_jid": row["push_jid"] if row else None,
        "inventory": json.loads(device["inventory"] or "{}"),
    }


async def device_locations(
    store: Store, principal: Principal, organisation: str, device_id: str, limit: int, offset: int
) -> dict[str, Any]:
    """The locations a device reported, newest first. A device owner sees their own
    device's only, and only those answering commands queued for them."""
    org = await visible_organisation(store, principal, organisation)
    owner = owner_scope(principal)
    rows, total = await store.read(_locations, org["id"], device_id, owner, limit, offset)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


def _locations(
    conn: sqlite3.Connection,
    organisation_id: str,
    device_id: str,
    owner: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Row], int]:
    device = inventory.inventory_device_in(conn, organisation_id, device_id)
    if device is None or (owner is not None and device["owner_id"] != owner):
        raise NotFound("no such device")
    return units.locations_of_device(conn, organisation_id, device_id, limit, offset, owner)


# --------------------------------------------------------------------------- device sessions


@dataclass(frozen=True)
class SessionRequest:
    """A device's request for its session: ``action`` is check_in, results or unenrol."""

    action: str
    device: DeviceIdentity
    message: Any
    source: str | None = None


class WsdmSession:
    """One device's WSDM session: its requests run one after another, so a retry that
    arrives while the first attempt is still being stored waits and then sees a replay.

    Refusals come back as values (``outcome.Error``), not raised: an exception would count
    as a crash of the session actor.
    """

    def __init__(self, store: Store, deployment: Deployment, push: PushAccounts | None) -> None:
        self.store = store
        self.deployment = deployment
        self.push = push

    async def handle(self, request: SessionRequest) -> outcome.Outcome[Any]:
        try:
            if request.action == "check_in":
                value: Any = await check_in(
                    self.store, self.deployment, self.push, request.device, request.message
                )
            elif request.action == "results":
                value = await report_results(self.store, request.device, request.message.results)
            elif request.action == "unenrol":
                value = await unenrol(
                    self.store,
                    self.push,
                    request.device,
                    request.message.reason,
                    source=request.source,
                )
            else:
                raise ValueError(f"unknown WSDM session action {request.action!r}")
        except ProtocolError as exc:
            forget_device(request.device)
            if exc.code == "unenrolled":
                # Removed by the service: the device learns it now; its push account goes
                # (as stored: the identity this node remembers may predate it).
                stored = await self.store.read(units.wsdm_device, request.device.device_id)
                await _delete_push_account(self.push, stored["push_jid"] if stored else None)
            return outcome.Error(exc)
        return outcome.Value(value)

    async def close(self) -> None:
        """Nothing to hand off: everything a session learns is stored as it happens."""
