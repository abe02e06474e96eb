"""Exchange ActiveSync: who may connect, the organisation's device policy, and one session
per device answering the commands of MS-ASCMD on the shared PIM store.

Who: HTTP Basic with the device owner's own password; the user name is the login id
qualified with the organisation code (``code\\login``, ``code/login`` or ``login@code``).
The DeviceId must name an inventory device of that user (seen before over ActiveSync, or
whose UDID, IMEI or serial number it is) that may connect (:func:`engine.devices.
may_connect`). An unknown DeviceId is refused (403) unless Configuration → Services →
Exchange ActiveSync lets devices enrol at first contact (``enrol_at_first_contact``, off by
default): then the device is created in the inventory, owned by the user, within the
organisation's licences. The same settings bound the Ping heartbeat.

Policy: MS-ASPROV's two phases hand out a temporary and then a final policy key; every
other command must carry the final key of the organisation's current policy revision, else
it is answered 142 (no key), 144 (unknown key) or 143 (the policy changed) — or HTTP 449 for
protocol 12.1. A queued wipe turns every command into 140 (or 449) until the device has
fetched it with Provision; its acknowledgement is the command's result.

Items (``engine.activesync_items``): each PIM kind the organisation enables is one default
folder (Contacts, Calendar, Tasks, Notes) backed by the owner's default collection in the
PIM store; folders the owner makes, and MoveItems between them, are
``engine.activesync_folders``.
There is no mail transport yet: Sent Items holds what the owner's devices send with
SendMail; Inbox, Drafts, Deleted Items and Outbox exist and stay empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from email import message_from_string
from typing import Any

import trio

from . import activesync_certs, activesync_mail, activesync_search
from .activesync_delivery import send_unit
from .activesync_folders import (
    OK as FOLDER_OK,
    folder_change_unit,
    folder_response,
    move_response,
    move_unit,
    read_moves,
    read_request,
)
from .activesync_items import (
    Folder,
    SyncWork,
    estimate_unit,
    fetch_unit,
    folder_sync_unit,
    held_folders,
    hierarchy,
    ping_unit,
    repeatable,
    sync_unit,
    sync_watch_unit,
    without_wait,
)
from .actors import Reply
from .audit import audit_event
from .auth import claim_sign_in_attempt, login_readings, sign_in_name
from .commands import RefusedTransition, State, mark_sent_unit, record_result_unit
from .devices import LicenceLimit, check_room, may_connect
from .errors import Invalid
from .ids import new_id
from .passwords import verify_password
from .pim import DEFAULT_POLICY, FEATURES
from .pki import CertificateAuthority
from .principals import AccountKind
from .protocols import activesync as eas, activesync_filter, eas_bodies, eas_pim
from .protocols.activesync import EasError, EasQuery, child_text, el, integer
from .protocols.activesync_tables import (
    AIRSYNC,
    COMPOSE_MAIL,
    FIND,
    FOLDER_HIERARCHY,
    GET_ITEM_ESTIMATE,
    ITEM_OPERATIONS,
    MEETING_RESPONSE,
    MOVE,
    PING,
    PROVISION,
    RESOLVE_RECIPIENTS,
    SEARCH,
    SETTINGS,
    VALIDATE_CERT,
)
from .protocols.wbxml import Element
from .service_settings import Deployment, effective_settings_unit
from .store import Store, activesync as db
from .store.accounts import account_by_login
from .store.audit import insert_event
from .store.devices import insert_device, update_device
from .store.organisations import organisation_by_code
from .store.sign_in import clear_attempts
from .timestamps import now

log = logging.getLogger(__name__)
PROTOCOL = "eas"

# --------------------------------------------------------------------------- settings

#: The organisation's ActiveSync settings besides the policy, and their defaults. (Where to
#: connect, the heartbeat bounds and enrolment at first contact are in Configuration →
#: Services, service ``eas``.)
DEFAULT_SETTINGS: dict[str, Any] = {
    "require_provisioning": True,
    "max_ping_folders": 300,
}
_POLICY_NAMES = {name: default for _, name, default in eas.PROVISION_DOC}
_INTEGER_POLICIES = {
    name for name, default in _POLICY_NAMES.items() if default is None or type(default) is int
}


@dataclass(frozen=True)
class EasSettings:
    """The organisation's ActiveSync settings and policy, with the policy's revision."""

    values: dict[str, Any]
    revision: int

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def policy(self) -> dict[str, Any]:
        return {name: self.values[name] for name in _POLICY_NAMES}


def settings_from_row(
    row: dict[str, Any] | None, service: dict[str, Any] | None = None
) -> EasSettings:
    """The stored settings over the defaults; with ``service`` (the effective Configuration →
    Services values of ``eas``) also the heartbeat bounds and enrolment at first contact."""
    stored = json.loads(row["settings"]) if row else {}
    values = {**DEFAULT_SETTINGS, **_POLICY_NAMES, **stored}
    if service is not None:
        values |= {
            "min_heartbeat": service["ping_min_heartbeat"],
            "max_heartbeat": max(service["ping_min_heartbeat"], service["ping_max_heartbeat"]),
            "allow_new_devices": service["enrol_at_first_contact"],
        }
    return EasSettings(values, row["revision"] if row else 0)


def check_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate a change of settings (the REST API and the portal send these)."""
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "require_provisioning" or (
            name in _POLICY_NAMES and name not in _INTEGER_POLICIES
        ):
            if not isinstance(value, bool):
                raise Invalid(f"{name} must be true or false", field=name)
        elif name in _INTEGER_POLICIES or name in DEFAULT_SETTINGS:
            if value is None and _POLICY_NAMES.get(name, 0) is None:
                pass
            elif type(value) is not int or not -1 <= value <= 100_000_000:
                raise Invalid(f"{name} must be a whole number", field=name)
        else:
            raise Invalid(f"unknown ActiveSync setting {name}", field=name)
        checked[name] = value
    return checked


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class EasCall:
    """One POST of a device: its request line, Basic credentials and decoded body."""

    query: EasQuery
    username: str
    password: str
    body: Element | None
    source: str | None = None
    #: A message sent as ``message/rfc822`` (SendMail of protocol 12.1), not WBXML.
    raw: bytes | None = None


@dataclass(frozen=True)
class EasReply:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Parked:
    """A Ping (or a Sync with Wait) the session holds open: the route waits on ``slot`` for
    an :class:`EasReply`, or for :data:`RESUME`, upon which it sends ``resume`` (the same
    Sync without its Wait) to the session, which then answers with the changes."""

    slot: Reply
    heartbeat: int
    resume: EasCall | None = None


#: What a parked Sync's slot gets when a watched folder changed: run the Sync now.
RESUME = EasReply(0)
#: A Sync that waited without anything changing: an empty response (MS-ASCMD 2.2.1.21).
NOTHING_CHANGED = EasReply(200)


def wbxml_reply(root: Element) -> EasReply:
    return EasReply(200, eas.encode(root), (("Content-Type", eas.CONTENT_TYPE),))


#: The root element of each command, where a command-level Status goes.
COMMAND_ROOTS = {
    "Sync": (AIRSYNC, "Sync"),
    "FolderSync": (FOLDER_HIERARCHY, "FolderSync"),
    "FolderCreate": (FOLDER_HIERARCHY, "FolderCreate"),
    "FolderDelete": (FOLDER_HIERARCHY, "FolderDelete"),
    "FolderUpdate": (FOLDER_HIERARCHY, "FolderUpdate"),
    "GetItemEstimate": (GET_ITEM_ESTIMATE, "GetItemEstimate"),
    "Ping": (PING, "Ping"),
    "Provision": (PROVISION, "Provision"),
    "Settings": (SETTINGS, "Settings"),
    "ItemOperations": (ITEM_OPERATIONS, "ItemOperations"),
    "MoveItems": (MOVE, "MoveItems"),
    "SendMail": (COMPOSE_MAIL, "SendMail"),
    "SmartReply": (COMPOSE_MAIL, "SmartReply"),
    "SmartForward": (COMPOSE_MAIL, "SmartForward"),
    "MeetingResponse": (MEETING_RESPONSE, "MeetingResponse"),
    "Search": (SEARCH, "Search"),
    "Find": (FIND, "Find"),
    "ResolveRecipients": (RESOLVE_RECIPIENTS, "ResolveRecipients"),
    "ValidateCert": (VALIDATE_CERT, "ValidateCert"),
}
#: What the service implements of :data:`eas.COMMANDS`; the others are answered 501.
IMPLEMENTED = tuple(COMMAND_ROOTS)


def answer(query: EasQuery, outcome: activesync_mail.Answer) -> EasReply:
    """The reply of a handler's outcome: a document, a command status, or empty."""
    if outcome is None:
        return EasReply(200)
    if isinstance(outcome, int):
        return status_reply(query, outcome)
    return wbxml_reply(outcome)


def status_reply(query: EasQuery, status: int) -> EasReply:
    """A command answered with only a Status: 449 instead for a provisioning status on 12.1."""
    if (
        status
        in (
            eas.REMOTE_WIPE_REQUESTED,
            eas.DEVICE_NOT_PROVISIONED,
            eas.POLICY_REFRESH,
            eas.INVALID_POLICY_KEY,
        )
        and query.before_14
    ):
        return EasReply(eas.HTTP_NEEDS_PROVISIONING)
    ns, tag = COMMAND_ROOTS.get(query.command, (AIRSYNC, "Sync"))
    return wbxml_reply(el(ns, tag, el(ns, "Status", str(status))))


# --------------------------------------------------------------------------- who is calling


def _account_unit(conn: sqlite3.Connection, user: str) -> dict[str, Any] | None:
    for code, login in login_readings(user):
        organisation = organisation_by_code(conn, code)
        if organisation is None:
            continue
        account = account_by_login(conn, organisation["id"], login)
        if account is not None:
            return {
                **account,
                "organisation_code": code,
                "organisation_active": organisation["active"],
                "organisation_features": organisation["features"],
            }
    return None


@dataclass
class Caller:
    """The authenticated owner and device of a session (refreshed on every request)."""

    account: dict[str, Any]
    device: dict[str, Any]
    eas: dict[str, Any]
    settings: EasSettings
    wipe: dict[str, Any] | None
    features: dict[str, bool]


UNAUTHORISED = EasReply(401, b"", (("WWW-Authenticate", 'Basic realm="ActiveSync"'),))
FORBIDDEN = EasReply(403)


def _platform(device_type: str) -> str:
    lowered = device_type.lower()
    if lowered.startswith(("iphone", "ipod")):
        return "ios"
    if lowered.startswith("ipad"):
        return "ipados"
    if "android" in lowered or lowered.startswith(("samsung", "sm-")):
        return "android"
    if lowered.startswith(("windows", "wp", "outlook")):
        return "windows"
    return "other"


def _caller_unit(
    conn: sqlite3.Connection,
    deployment: Deployment,
    account_id: str,
    password_hash: str,
    query: EasQuery,
) -> dict[str, Any]:
    """The request's device with its ActiveSync row, settings and pending wipe; an unknown
    device is created when the organisation lets devices enrol at first contact. A refusal
    (``{"refused": 401 or 403}``) writes nothing."""
    account = db.account_with_organisation(conn, account_id)
    if account is None or not _usable(account) or account["password_hash"] != password_hash:
        return {"refused": 401}  # deactivated, or the password changed, since it was checked
    device = db.device_for_eas_id(conn, account_id, query.device_id)
    service = effective_settings_unit(conn, deployment, account["organisation_id"])[PROTOCOL]
    settings = settings_from_row(db.settings_of(conn, account["organisation_id"]), service)
    at = now()
    if device is None:
        if not settings["allow_new_devices"]:
            return {"refused": 403}  # unknown device
        try:
            check_room(conn, account["organisation_id"], account_id, new_licence=True)
        except LicenceLimit:
            return {"refused": 403}  # no licence left
        device_id = new_id()
        insert_device(
            conn,
            {
                "id": device_id,
                "organisation_id": account["organisation_id"],
                "owner_id": account_id,
                "name": query.device_type,
                "platform": _platform(query.device_type),
                "protocol": PROTOCOL,
                "state": "enrolled",
                "udid": query.device_id,
                "enrolled_at": at,
                "created_at": at,
                "updated_at": at,
            },
        )
        insert_event(
            conn,
            audit_event(
                None,
                "device.enrolled",
                organisation_id=account["organisation_id"],
                target_type="device",
                target_id=device_id,
                details={"protocol": PROTOCOL, "device_type": query.device_type},
                actor=account["login"],
            ),
        )
        device = db.device_for_eas_id(conn, account_id, query.device_id)
        assert device is not None
    if not may_connect(device, {"active": device["organisation_active"]}):
        return {"refused": 403}
    row = db.eas_device(conn, device["id"])
    wipe = db.pending_wipe(conn, device["id"])
    if row is not None and row["wiped_at"] and wipe is None:
        return {"refused": 403}  # wiped: out until a manager lets the device in again
    if row is None:
        row = {
            "device_id": device["id"],
            "organisation_id": device["organisation_id"],
            "account_id": account_id,
            "eas_device_id": query.device_id,
            "device_type": query.device_type,
            "protocol_version": query.version,
            "created_at": at,
            "updated_at": at,
        }
        db.insert_eas_device(conn, row)
        row = db.eas_device(conn, device["id"])
    for command in db.undeliverable_commands(conn, device["id"]):
        # Lock, locate, messages, applications: MS-ASPROV knows only wipes. The manager sees
        # at once that this device cannot take them, rather than a command queued forever.
        mark_sent_unit(conn, command["id"])
        record_result_unit(
            conn,
            command["id"],
            State.FAILED,
            json.dumps({"error": f"Exchange ActiveSync cannot carry out {command['kind']}"}),
        )
    changes = {"last_seen_at": at, "last_command": query.command}
    if row["protocol_version"] != query.version:
        changes["protocol_version"] = query.version
    db.update_eas_device(conn, device["id"], changes)
    update_device(conn, device["id"], {"last_seen_at": at})
    return {
        "account": account,
        "device": device,
        "eas": {**row, **changes},
        "settings": settings,
        "wipe": wipe,
    }


def _usable(account: dict[str, Any]) -> bool:
    return (
        bool(account["active"])
        and bool(account["organisation_active"])
        and account["kind"] == AccountKind.USER
    )


#: How long verified credentials are trusted without running the password hash again, and
#: how many sets of credentials are remembered.
CREDENTIALS_TRUSTED_FOR = 600.0
MAX_TRUSTED = 100_000


class Backend:
    """What the device sessions share: the store, the Ping board and the conflict policy."""

    def __init__(
        self,
        store: Store,
        deployment: Deployment,
        board: Any,
        policy: str = DEFAULT_POLICY,
        authority: CertificateAuthority | None = None,
    ) -> None:
        self.store = store
        self.deployment = deployment
        self.board = board
        self.policy = policy
        #: The service's CA: a trust anchor of ValidateCert.
        self.authority = authority
        #: Credentials verified lately: digest of (user, password) -> account id, its
        #: password hash then, when. Devices send Basic with every request; running the
        #: password hash each time would cost more than the request.
        self.trusted: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()

    @staticmethod
    def _digest(username: str, password: str) -> bytes:
        return hashlib.sha256(f"{username}\x00{password}".encode()).digest()

    async def verify(self, username: str, password: str) -> tuple[str, str] | None:
        """The account id and password hash these credentials open (None: refused). A
        change of password shows as a different hash on the next request's account row."""
        digest = self._digest(username, password)
        found = self.trusted.get(digest)
        if found is not None and time.monotonic() - found[2] < CREDENTIALS_TRUSTED_FOR:
            self.trusted.move_to_end(digest)
            return found[0], found[1]
        account = await sign_in(self.store, username, password)
        if account is None:
            self.trusted.pop(digest, None)
            return None
        self.trusted[digest] = (account["id"], account["password_hash"], time.monotonic())
        while len(self.trusted) > MAX_TRUSTED:
            self.trusted.popitem(last=False)
        return account["id"], account["password_hash"]

    def forget(self, username: str, password: str) -> None:
        self.trusted.pop(self._digest(username, password), None)


async def sign_in(store: Store, username: str, password: str) -> dict[str, Any] | None:
    """The user account these Basic credentials open, or None. Every attempt counts against
    the same lock-out as a sign-in to the portal."""
    account = await store.read(_account_unit, username)
    name = sign_in_name(
        account["organisation_code"] if account else None,
        account["login"] if account else username,
    )
    wait = await store.write(claim_sign_in_attempt, name)
    if wait is not None:
        return None
    ok = await trio.to_thread.run_sync(
        verify_password, password, account["password_hash"] if account else None
    )
    if account is None or not ok or not _usable(account):
        return None
    await store.write(clear_attempts, name)
    return account


# --------------------------------------------------------------------------- the session


class EasSessionLogic:
    """The SessionLogic of one device: the last Sync request (an empty Sync repeats it) and
    the dispatch of commands; its parked Ping lives on the board under the session's key."""

    def __init__(self, backend: Backend, key: str) -> None:
        self.backend = backend
        self.key = key
        self.last_sync: Element | None = None
        #: Per folder, the SyncKey of the last Sync and its answer: a device that lost the
        #: answer sends the same key again and gets the same answer (the items it lacks as
        #: Add, its own Adds with the ServerIds already given). Dropped when it pings; the
        #: store then answers the same key again (the Adds by their remembered ClientIds).
        self.last_answers: dict[str, tuple[str, Element]] = {}
        #: Per folder, the body preferences of the device's last Sync that gave Options.
        self.bodies: dict[str, eas_bodies.BodyPreferences | None] = {}

    async def close(self) -> None:
        """A parked Ping is answered as expired: the device simply pings again."""
        self.backend.board.release_key(self.key)

    async def handle(self, call: EasCall) -> EasReply | Parked:
        caller = await self._authenticate(call)
        if isinstance(caller, EasReply):
            return caller  # nobody but the device itself may end its parked Ping
        self.backend.board.release_key(self.key)  # a new request of the device ends it
        query = call.query
        refusal = self._policy_refusal(query, caller)
        if refusal is not None:
            return status_reply(query, refusal)
        try:
            handler = getattr(self, f"_cmd_{query.command}")
        except AttributeError:
            return EasReply(501)
        try:
            return await handler(call, caller)
        except EasError as exc:
            if query.command == "Sync":
                return status_reply(query, 4)  # Sync: protocol error
            if query.command == "FolderSync":
                return status_reply(query, 10)
            if query.command == "Ping":
                return status_reply(query, 4)
            return status_reply(query, exc.status)

    async def _authenticate(self, call: EasCall) -> Caller | EasReply:
        store = self.backend.store
        verified = await self.backend.verify(call.username, call.password)
        if verified is None:
            return UNAUTHORISED
        account_id, password_hash = verified
        found = await store.write(
            _caller_unit, self.backend.deployment, account_id, password_hash, call.query
        )
        if found.get("refused") == 401:
            self.backend.forget(call.username, call.password)
            return UNAUTHORISED
        if "refused" in found:
            return FORBIDDEN
        account = found["account"]
        device = found["device"]
        features = json.loads(account["organisation_features"] or "{}")
        return Caller(
            account,
            device,
            found["eas"],
            found["settings"],
            found["wipe"],
            {name: bool(features.get(name, True)) for name in FEATURES.values()},
        )

    @staticmethod
    def _policy_refusal(query: EasQuery, caller: Caller) -> int | None:
        if query.command == "Provision":
            return None
        if caller.wipe is not None:
            return eas.REMOTE_WIPE_REQUESTED
        if not caller.settings["require_provisioning"]:
            return None
        key = (query.policy_key or "").strip()
        if not key or key == "0":
            return eas.DEVICE_NOT_PROVISIONED
        if key != caller.eas["policy_key"]:
            return eas.INVALID_POLICY_KEY
        if caller.eas["policy_revision"] != caller.settings.revision:
            return eas.POLICY_REFRESH
        return None

    # ------------------------------------------------------------------ Provision

    async def _cmd_Provision(self, call: EasCall, caller: Caller) -> EasReply:
        store = self.backend.store
        root = eas.expect_root(_body(call), PROVISION, "Provision")
        out: list[Element] = [el(PROVISION, "Status", "1")]
        info = root.find("DeviceInformation")
        if info is not None:
            await store.write(_store_device_information, caller.device["id"], info)
            out.append(el(SETTINGS, "DeviceInformation", el(SETTINGS, "Status", "1")))
        for ack_tag in ("RemoteWipe", "AccountOnlyRemoteWipe"):
            ack = root.find(ack_tag)
            if ack is not None:
                await self._wipe_acknowledged(caller, ack)
                return wbxml_reply(el(PROVISION, "Provision", *out))
        wipe = caller.wipe
        if wipe is not None:
            account_only = wipe["kind"] == "enterprise_wipe"
            if account_only and call.query.version != "16.1":
                await _fail_command(store, wipe, "account-only wipe needs protocol 16.1")
            else:
                await _mark_wipe_sent(store, caller, wipe)
                out.append(el(PROVISION, "AccountOnlyRemoteWipe" if account_only else "RemoteWipe"))
                return wbxml_reply(el(PROVISION, "Provision", *out))
        policies = root.find("Policies")
        policy = policies.find("Policy") if policies is not None else None
        if policy is None:
            raise EasError("Provision without Policies", eas.INVALID_XML)
        policy_type = child_text(policy, "PolicyType", "")
        if policy_type != eas.POLICY_TYPE:
            answer = el(
                PROVISION,
                "Policy",
                el(PROVISION, "PolicyType", policy_type),
                el(PROVISION, "Status", "3"),
            )
            return wbxml_reply(el(PROVISION, "Provision", *out, el(PROVISION, "Policies", answer)))
        key = child_text(policy, "PolicyKey")
        if key is None:  # phase one: the policy and a temporary key
            temporary = _policy_key()
            await store.write(_update_eas, caller.device["id"], {"pending_policy_key": temporary})
            answer = el(
                PROVISION,
                "Policy",
                el(PROVISION, "PolicyType", eas.POLICY_TYPE),
                el(PROVISION, "Status", "1"),
                el(PROVISION, "PolicyKey", temporary),
                el(PROVISION, "Data", eas.provision_doc(caller.settings.policy)),
            )
        elif key != caller.eas["pending_policy_key"]:
            answer = el(
                PROVISION,
                "Policy",
                el(PROVISION, "PolicyType", eas.POLICY_TYPE),
                el(PROVISION, "Status", "5"),
            )
        elif child_text(policy, "Status", "1") not in ("1", "2"):
            return status_reply(call.query, 139)  # DeviceNotFullyProvisionable
        else:  # phase two: the device applied the policy
            final = _policy_key()
            await store.write(_provisioned, caller, final, caller.settings.revision)
            answer = el(
                PROVISION,
                "Policy",
                el(PROVISION, "PolicyType", eas.POLICY_TYPE),
                el(PROVISION, "Status", "1"),
                el(PROVISION, "PolicyKey", final),
            )
        return wbxml_reply(el(PROVISION, "Provision", *out, el(PROVISION, "Policies", answer)))

    async def _wipe_acknowledged(self, caller: Caller, ack: Element) -> None:
        wipe = caller.wipe
        if wipe is None:
            wipe_id = caller.eas["wipe_command_id"]
            if wipe_id is None:
                return
            wipe = {"id": wipe_id}
        status = child_text(ack, "Status", "1")
        await self.backend.store.write(_wipe_result, caller, wipe["id"], status == "1", status)

    # ------------------------------------------------------------------ FolderSync

    async def _cmd_FolderSync(self, call: EasCall, caller: Caller) -> EasReply:
        root = eas.expect_root(_body(call), FOLDER_HIERARCHY, "FolderSync")
        key = child_text(root, "SyncKey")
        if key is None:
            raise EasError("FolderSync without SyncKey", eas.INVALID_XML)
        result = await self.backend.store.write(folder_sync_unit, caller, key)
        if result is None:
            return status_reply(call.query, 9)
        count = len(result.added) + len(result.updated) + len(result.deleted)
        changes = [el(FOLDER_HIERARCHY, "Count", str(count))]
        changes += [
            el(FOLDER_HIERARCHY, "Delete", el(FOLDER_HIERARCHY, "ServerId", sid))
            for sid in result.deleted
        ]
        changes += [
            el(
                FOLDER_HIERARCHY,
                tag,
                el(FOLDER_HIERARCHY, "ServerId", folder.server_id),
                el(FOLDER_HIERARCHY, "ParentId", folder.parent_id),
                el(FOLDER_HIERARCHY, "DisplayName", folder.name),
                el(FOLDER_HIERARCHY, "Type", str(folder.type)),
            )
            for tag, folders in (("Update", result.updated), ("Add", result.added))
            for folder in folders
        ]
        return wbxml_reply(
            el(
                FOLDER_HIERARCHY,
                "FolderSync",
                el(FOLDER_HIERARCHY, "Status", "1"),
                el(FOLDER_HIERARCHY, "SyncKey", str(result.sync_key)),
                el(FOLDER_HIERARCHY, "Changes", *changes),
            )
        )

    async def _folder_change(self, call: EasCall, caller: Caller) -> EasReply:
        """FolderCreate, FolderUpdate, FolderDelete (``engine.activesync_folders``)."""
        command = call.query.command
        request = read_request(call.body, command)
        if request is None:
            return wbxml_reply(el(FOLDER_HIERARCHY, command, el(FOLDER_HIERARCHY, "Status", "10")))
        outcome = await self.backend.store.write(folder_change_unit, caller, request)
        for collection_id in outcome.changed:
            self.backend.board.changed(collection_id, exclude=caller.device["id"])
        if outcome.status == FOLDER_OK:
            self.backend.board.hierarchy_changed(caller.account["id"], exclude=caller.device["id"])
        return wbxml_reply(folder_response(command, outcome))

    async def _cmd_FolderCreate(self, call: EasCall, caller: Caller) -> EasReply:
        return await self._folder_change(call, caller)

    async def _cmd_FolderDelete(self, call: EasCall, caller: Caller) -> EasReply:
        return await self._folder_change(call, caller)

    async def _cmd_FolderUpdate(self, call: EasCall, caller: Caller) -> EasReply:
        return await self._folder_change(call, caller)

    async def _folders(self, caller: Caller) -> dict[str, Folder]:
        """The owner's folder hierarchy by ServerId."""
        folders = await self.backend.store.read(hierarchy, caller.account["id"], caller.features)
        return {folder.server_id: folder for folder in folders}

    # ------------------------------------------------------------------ Sync

    async def _cmd_Sync(self, call: EasCall, caller: Caller) -> EasReply | Parked:
        root = call.body
        if root is None:
            if self.last_sync is None:
                return status_reply(call.query, 13)
            root = self.last_sync
        eas.expect_root(root, AIRSYNC, "Sync")
        collections = root.find("Collections")
        if collections is None:
            if self.last_sync is None:
                return status_reply(call.query, 13)
            collections = self.last_sync.find("Collections")
            assert collections is not None
        default_window = integer(child_text(root, "WindowSize"), "WindowSize", 1, 512) or 100
        requested = [c for c in collections.elements() if c.tag == "Collection"]
        if root.find("Partial") is not None and self.last_sync is not None:
            # A partial Sync names what changed; the rest of the last request still holds.
            named = {child_text(c, "CollectionId") for c in requested}
            cached = self.last_sync.find("Collections")
            requested += [
                c
                for c in (cached.elements() if cached is not None else [])
                if child_text(c, "CollectionId") not in named
            ]
        wait = self._sync_wait(root, caller.settings)
        if isinstance(wait, EasReply):
            return wait
        if wait is not None and call.body is not None:
            parked = await self._park_sync(call, caller, root, requested, wait)
            if parked is not None:
                return parked
        answers = [
            await self._sync_collection(caller, collection, default_window)
            for collection in requested
        ]
        self.last_sync = repeatable(root, requested, answers)
        return wbxml_reply(el(AIRSYNC, "Sync", el(AIRSYNC, "Collections", *answers)))

    @staticmethod
    def _sync_wait(root: Element, settings: EasSettings) -> int | EasReply | None:
        """The seconds a Sync may wait for changes (Wait in minutes, or HeartbeatInterval),
        or status 14 with the bound when out of the organisation's bounds."""
        minutes = child_text(root, "Wait")
        seconds = child_text(root, "HeartbeatInterval")
        if minutes is None and seconds is None:
            return None
        if minutes is not None and seconds is not None:
            raise EasError("Sync with both Wait and HeartbeatInterval", eas.INVALID_XML)
        low, high = settings["min_heartbeat"], settings["max_heartbeat"]
        value = integer(minutes or seconds, "Wait", 0, 10_000_000) or 0
        wait = value * 60 if minutes is not None else value
        if low <= wait <= high:
            return wait
        limit = max(low, min(wait, high))
        limit_text = str(-(-limit // 60)) if minutes is not None else str(limit)
        return wbxml_reply(
            el(AIRSYNC, "Sync", el(AIRSYNC, "Status", "14"), el(AIRSYNC, "Limit", limit_text))
        )

    async def _park_sync(
        self, call: EasCall, caller: Caller, root: Element, requested: list[Element], wait: int
    ) -> Parked | None:
        """Park a Sync that brings no changes and would get none; None: run it now."""
        if any(c.find("Commands") is not None for c in requested):
            return None
        folders = [
            (child_text(c, "CollectionId", "") or "", child_text(c, "SyncKey", "0") or "0")
            for c in requested
        ]
        watched = await self.backend.store.write(sync_watch_unit, caller, folders)
        if watched is None:
            return None
        slot = Reply()
        self.backend.board.park(
            self.key,
            caller.device["id"],
            caller.account["id"],
            watched,
            wait,
            slot,
            call.query.before_14,
            sync=True,
        )
        resume = EasCall(call.query, call.username, call.password, without_wait(root), call.source)
        return Parked(slot, wait, resume)

    async def _sync_collection(
        self, caller: Caller, collection: Element, default_window: int
    ) -> Element:
        key = child_text(collection, "SyncKey")
        folder = child_text(collection, "CollectionId")
        if key is None or folder is None:
            raise EasError("a Sync Collection needs SyncKey and CollectionId", eas.INVALID_XML)
        found = (await self._folders(caller)).get(folder)
        head = [el(AIRSYNC, "SyncKey", key), el(AIRSYNC, "CollectionId", folder)]
        if found is None:
            # A folder deleted since the device's FolderSync: 12, sync the hierarchy.
            status = "12" if folder in held_folders(caller.eas) else "8"
            return el(AIRSYNC, "Collection", *head, el(AIRSYNC, "Status", status))
        filter_type = _filter_type(collection.find("Options"))
        if filter_type is not None and not activesync_filter.accepts(found.kind or "", filter_type):
            return el(AIRSYNC, "Collection", *head, el(AIRSYNC, "Status", "4"))
        repeated = self.last_answers.get(folder)
        if repeated is not None and repeated[0] == key and key != "0":
            return repeated[1]
        window = integer(child_text(collection, "WindowSize"), "WindowSize", 1, 512)
        get_changes = child_text(collection, "GetChanges")
        commands = collection.find("Commands")
        work = SyncWork(
            caller=caller,
            folder=folder,
            kind=found.kind,
            key=key,
            window=window or default_window,
            get_changes=get_changes != "0",
            commands=commands.elements() if commands is not None else [],
            policy=self.backend.policy,
            store=self.backend.store,
            collection_id=None if found.default else found.server_id,
            filter_type=filter_type,
            bodies=self._bodies(caller, folder, collection, found.kind),
            deletes_as_moves=child_text(collection, "DeletesAsMoves", "1") != "0",
        )
        result = await self.backend.store.write(sync_unit, work)
        if result.changed_collection is not None:
            self.backend.board.changed(result.changed_collection, exclude=caller.device["id"])
        for collection_id in dict.fromkeys(result.also_changed):
            self.backend.board.changed(collection_id)
        body = [
            el(AIRSYNC, "SyncKey", result.sync_key),
            el(AIRSYNC, "CollectionId", folder),
            el(AIRSYNC, "Status", str(result.status)),
        ]
        if result.more:
            body.append(el(AIRSYNC, "MoreAvailable"))
        if result.commands:
            body.append(el(AIRSYNC, "Commands", *result.commands))
        if result.responses:
            body.append(el(AIRSYNC, "Responses", *result.responses))
        answer = el(AIRSYNC, "Collection", *body)
        if result.status == 1:
            self.last_answers[folder] = (key, answer)
        return answer

    def _bodies(
        self, caller: Caller, folder: str, collection: Element, kind: str | None
    ) -> eas_bodies.BodyPreferences | None:
        """The collection's body preferences, or those its folder was last given."""
        if collection.find("Options") is None:
            return self.bodies.get(folder)
        found = eas_bodies.preferences_of(
            collection,
            caller.eas["protocol_version"],
            eas_pim.CLASSES.get(kind or ""),
        )
        self.bodies[folder] = found
        return found

    # ------------------------------------------------------------------ GetItemEstimate

    async def _cmd_GetItemEstimate(self, call: EasCall, caller: Caller) -> EasReply:
        root = eas.expect_root(_body(call), GET_ITEM_ESTIMATE, "GetItemEstimate")
        collections = root.find("Collections")
        if collections is None:
            raise EasError("GetItemEstimate without Collections", eas.INVALID_XML)
        known = await self._folders(caller)
        responses: list[Element] = []
        for collection in collections.elements():
            folder = child_text(collection, "CollectionId", "") or ""
            key = child_text(collection, "SyncKey", None)
            if key is None:  # 12.1 has the SyncKey in the AirSync namespace, same tag
                key = next((c.text for c in collection.elements() if c.tag == "SyncKey"), None)
            # FilterType: in Options from 14.0 on, in the Collection itself in 12.1.
            options = collection.find("Options")
            filter_type = _filter_type(options if options is not None else collection)
            if folder not in known:
                status, estimate = "2", None
            else:
                status, estimate = await self.backend.store.read(
                    estimate_unit, caller, folder, key, filter_type
                )
            children = [el(GET_ITEM_ESTIMATE, "CollectionId", folder)]
            if estimate is not None:
                children.append(el(GET_ITEM_ESTIMATE, "Estimate", str(estimate)))
            responses.append(
                el(
                    GET_ITEM_ESTIMATE,
                    "Response",
                    el(GET_ITEM_ESTIMATE, "Status", status),
                    el(GET_ITEM_ESTIMATE, "Collection", *children),
                )
            )
        return wbxml_reply(el(GET_ITEM_ESTIMATE, "GetItemEstimate", *responses))

    # ------------------------------------------------------------------ Ping

    async def _cmd_Ping(self, call: EasCall, caller: Caller) -> EasReply | Parked:
        settings = caller.settings
        root = call.body
        heartbeat = caller.eas["heartbeat"]
        folders: list[str] = json.loads(caller.eas["ping_folders"] or "[]")
        if root is not None:
            eas.expect_root(root, PING, "Ping")
            given = child_text(root, "HeartbeatInterval")
            if given is not None:
                heartbeat = integer(given, "HeartbeatInterval", 0, 10_000_000)
            listed = root.find("Folders")
            if listed is not None:
                folders = [child_text(f, "Id", "") or "" for f in listed.elements()]
        if heartbeat is None or not folders:
            return wbxml_reply(el(PING, "Ping", el(PING, "Status", "3")))
        if not settings["min_heartbeat"] <= heartbeat <= settings["max_heartbeat"]:
            bound = max(settings["min_heartbeat"], min(heartbeat, settings["max_heartbeat"]))
            return wbxml_reply(
                el(PING, "Ping", el(PING, "Status", "5"), el(PING, "HeartbeatInterval", str(bound)))
            )
        if len(folders) > settings["max_ping_folders"]:
            return wbxml_reply(
                el(
                    PING,
                    "Ping",
                    el(PING, "Status", "6"),
                    el(PING, "MaxFolders", str(settings["max_ping_folders"])),
                )
            )
        known = await self._folders(caller)
        if any(f not in known for f in folders):
            return wbxml_reply(el(PING, "Ping", el(PING, "Status", "7")))
        self.last_answers.clear()  # a pinging device has its answers: keep parked ones small
        watched, changed = await self.backend.store.write(ping_unit, caller, heartbeat, folders)
        if changed:
            return ping_changes(changed)
        slot = Reply()
        self.backend.board.park(
            self.key,
            caller.device["id"],
            caller.account["id"],
            watched,
            heartbeat,
            slot,
            call.query.before_14,
        )
        return Parked(slot, heartbeat)

    # ------------------------------------------------------------------ Settings

    async def _cmd_Settings(self, call: EasCall, caller: Caller) -> EasReply:
        root = eas.expect_root(_body(call), SETTINGS, "Settings")
        out: list[Element] = [el(SETTINGS, "Status", "1")]
        for part in root.elements():
            if part.tag == "DeviceInformation":
                info = part.find("Set")
                if info is not None:
                    await self.backend.store.write(
                        _store_device_information, caller.device["id"], info
                    )
                out.append(el(SETTINGS, "DeviceInformation", el(SETTINGS, "Status", "1")))
            elif part.tag == "Oof":
                if part.find("Get") is not None:
                    out.append(
                        el(
                            SETTINGS,
                            "Oof",
                            el(SETTINGS, "Status", "1"),
                            el(SETTINGS, "Get", el(SETTINGS, "OofState", "0")),
                        )
                    )
                else:  # no mail backend: out-of-office replies cannot be sent
                    out.append(el(SETTINGS, "Oof", el(SETTINGS, "Status", "2")))
            elif part.tag == "UserInformation":
                address = caller.account.get("email") or ""
                get = el(SETTINGS, "Get")
                if address:
                    get.children.append(
                        el(SETTINGS, "EmailAddresses", el(SETTINGS, "SmtpAddress", address))
                    )
                out.append(el(SETTINGS, "UserInformation", el(SETTINGS, "Status", "1"), get))
            elif part.tag == "DevicePassword":
                out.append(el(SETTINGS, "DevicePassword", el(SETTINGS, "Status", "1")))
        return wbxml_reply(el(SETTINGS, "Settings", *out))

    # ------------------------------------------------------------------ ItemOperations

    async def _cmd_ItemOperations(self, call: EasCall, caller: Caller) -> EasReply:
        root = eas.expect_root(_body(call), ITEM_OPERATIONS, "ItemOperations")
        responses: list[Element] = []
        for fetch in root.elements():
            if fetch.tag != "Fetch":
                responses.append(el(ITEM_OPERATIONS, fetch.tag, el(ITEM_OPERATIONS, "Status", "2")))
                continue
            if activesync_mail.long_id_of(fetch) is not None:  # an item a Search found
                responses.append(
                    await activesync_mail.fetch_long_id(self.backend, call, caller, fetch)
                )
                continue
            folder = child_text(fetch, "CollectionId", "") or ""
            server_id = child_text(fetch, "ServerId", "") or ""
            found = await self.backend.store.read(fetch_unit, caller, folder, server_id)
            bodies = eas_bodies.preferences_of(fetch, call.query.version)
            try:
                data = eas_pim.application_data(*found, bodies) if found is not None else None
            except eas_pim.UNREADABLE:
                data = None  # an item that cannot be shown is not found, as Sync leaves it out
            if found is None or data is None:
                responses.append(
                    el(
                        ITEM_OPERATIONS,
                        "Fetch",
                        el(ITEM_OPERATIONS, "Status", "6"),
                        el(AIRSYNC, "CollectionId", folder),
                        el(AIRSYNC, "ServerId", server_id),
                    )
                )
                continue
            kind = found[0]
            responses.append(
                el(
                    ITEM_OPERATIONS,
                    "Fetch",
                    el(ITEM_OPERATIONS, "Status", "1"),
                    el(AIRSYNC, "CollectionId", folder),
                    el(AIRSYNC, "ServerId", server_id),
                    el(AIRSYNC, "Class", eas_pim.CLASSES[kind]),
                    Element("Properties", ITEM_OPERATIONS, data.children),
                )
            )
        return wbxml_reply(
            el(
                ITEM_OPERATIONS,
                "ItemOperations",
                el(ITEM_OPERATIONS, "Status", "1"),
                el(ITEM_OPERATIONS, "Response", *responses),
            )
        )

    # ------------------------------------------------------------------ MoveItems

    async def _cmd_MoveItems(self, call: EasCall, caller: Caller) -> EasReply:
        root = eas.expect_root(_body(call), MOVE, "MoveItems")
        outcomes, changed = await self.backend.store.write(move_unit, caller, read_moves(root))
        for collection_id in changed:
            self.backend.board.changed(collection_id, exclude=caller.device["id"])
        return wbxml_reply(move_response(outcomes))

    # ------------------------------------------------------------------ SendMail

    async def _cmd_SendMail(self, call: EasCall, caller: Caller) -> EasReply:
        """The message is kept in Sent Items when asked and delivered to the Inbox of its
        recipients of the sender's organisation (there is no mail transport yet: nobody
        else gets it); an empty answer says it was accepted."""
        if call.raw is not None:
            mime, save = call.raw, call.query.parameters.get("SaveInSent", "").upper() == "T"
        else:
            root = eas.expect_root(_body(call), COMPOSE_MAIL, "SendMail")
            found = eas.require(root, "Mime")
            mime = b"".join(
                c if isinstance(c, bytes) else c.encode()
                for c in found.children
                if isinstance(c, bytes | str)
            )
            save = root.find("SaveInSentItems") is not None
        text = mime.decode("utf-8", "replace")
        message = message_from_string(text)
        if not any(message.get(h) for h in ("To", "Cc", "Bcc")):
            return status_reply(call.query, 119)  # MessageHasNoRecipient
        for collection_id in await self.backend.store.write(send_unit, caller, text, save):
            self.backend.board.changed(collection_id)
        return EasReply(200)

    # ------------------------------------------------------------------ mail and look-ups

    async def _cmd_SmartReply(self, call: EasCall, caller: Caller) -> EasReply:
        outcome = await activesync_mail.smart_mail(self.backend, call, caller, forward=False)
        return answer(call.query, outcome)

    async def _cmd_SmartForward(self, call: EasCall, caller: Caller) -> EasReply:
        outcome = await activesync_mail.smart_mail(self.backend, call, caller, forward=True)
        return answer(call.query, outcome)

    async def _cmd_MeetingResponse(self, call: EasCall, caller: Caller) -> EasReply:
        return answer(
            call.query, await activesync_mail.meeting_response(self.backend, call, caller)
        )

    async def _cmd_Search(self, call: EasCall, caller: Caller) -> EasReply:
        return answer(call.query, await activesync_search.search(self.backend, call, caller))

    async def _cmd_Find(self, call: EasCall, caller: Caller) -> EasReply:
        return answer(call.query, await activesync_search.find(self.backend, call, caller))

    async def _cmd_ResolveRecipients(self, call: EasCall, caller: Caller) -> EasReply:
        outcome = await activesync_search.resolve_recipients(self.backend, call, caller)
        return answer(call.query, outcome)

    async def _cmd_ValidateCert(self, call: EasCall, caller: Caller) -> EasReply:
        outcome = await activesync_certs.validate_cert(self.backend, call, caller)
        return answer(call.query, outcome)


def ping_changes(folders: list[str]) -> EasReply:
    return wbxml_reply(
        el(
            PING,
            "Ping",
            el(PING, "Status", "2"),
            el(PING, "Folders", *(el(PING, "Folder", f) for f in folders)),
        )
    )


def _filter_type(parent: Element | None) -> int | None:
    """The FilterType under ``parent`` (None: not given)."""
    text = child_text(parent, "FilterType") if parent is not None else None
    return integer(text, "FilterType", 0, 9) if text is not None else None


def _body(call: EasCall) -> Element:
    if call.body is None:
        raise EasError(f"{call.query.command} needs a body", eas.INVALID_XML)
    return call.body


def _policy_key() -> str:
    return str(secrets.randbelow(2**31 - 2) + 1)


# --------------------------------------------------------------------------- units: policy


def _update_eas(conn: sqlite3.Connection, device_id: str, values: dict[str, Any]) -> None:
    db.update_eas_device(conn, device_id, {**values, "updated_at": now()})


def _provisioned(conn: sqlite3.Connection, caller: Caller, key: str, revision: int) -> None:
    at = now()
    db.update_eas_device(
        conn,
        caller.device["id"],
        {
            "policy_key": key,
            "pending_policy_key": None,
            "policy_revision": revision,
            "provisioned_at": at,
            "updated_at": at,
        },
    )
    update_device(conn, caller.device["id"], {"compliant": 1, "updated_at": at})


_INFORMATION = (
    "Model",
    "IMEI",
    "FriendlyName",
    "OS",
    "OSLanguage",
    "PhoneNumber",
    "UserAgent",
    "EnableOutboundSMS",
    "MobileOperator",
)


def _store_device_information(conn: sqlite3.Connection, device_id: str, info: Element) -> None:
    """Settings DeviceInformation (or its Set) into the ActiveSync row and the inventory."""
    source = info.find("Set") or info
    values = {
        tag: (child_text(source, tag) or "")[:200]
        for tag in _INFORMATION
        if source.find(tag) is not None
    }
    at = now()
    db.update_eas_device(
        conn, device_id, {"device_information": json.dumps(values), "updated_at": at}
    )
    inventory: dict[str, Any] = {"updated_at": at}
    if values.get("Model"):
        inventory["model"] = values["Model"]
    if values.get("OS"):
        inventory["os_version"] = values["OS"]
    if values.get("PhoneNumber"):
        inventory["phone_number"] = values["PhoneNumber"]
    if values.get("IMEI"):
        inventory["imei"] = values["IMEI"]
    update_device(conn, device_id, inventory)


async def _mark_wipe_sent(store: Store, caller: Caller, wipe: dict[str, Any]) -> None:
    await store.write(_wipe_sent, caller, wipe)


def _wipe_sent(conn: sqlite3.Connection, caller: Caller, wipe: dict[str, Any]) -> None:
    if wipe["state"] == "queued":
        mark_sent_unit(conn, wipe["id"])
    at = now()
    db.update_eas_device(
        conn,
        caller.device["id"],
        {
            "wipe_command_id": wipe["id"],
            "wipe_kind": wipe["kind"],
            "wipe_sent_at": at,
            "updated_at": at,
        },
    )


def _wipe_result(
    conn: sqlite3.Connection, caller: Caller, command_id: str, ok: bool, status: str
) -> None:
    # Cancelled meanwhile, or answered before (the device repeats itself): nothing to move.
    with contextlib.suppress(RefusedTransition):
        record_result_unit(
            conn,
            command_id,
            State.ACKNOWLEDGED if ok else State.FAILED,
            json.dumps({"status": status}, sort_keys=True),
        )
    if ok:
        at = now()
        db.update_eas_device(
            conn, caller.device["id"], {"wiped_at": at, "policy_key": None, "updated_at": at}
        )


async def _fail_command(store: Store, command: dict[str, Any], reason: str) -> None:
    def unit(conn: sqlite3.Connection) -> None:
        if command["state"] == "queued":
            mark_sent_unit(conn, command["id"])
        record_result_unit(
            conn, command["id"], State.FAILED, json.dumps({"error": reason}, sort_keys=True)
        )

    await store.write(unit)
