"""OMA DM: who may open a management session, what the service sends, what it keeps.

Two kinds of OMA DM devices meet here:

* **Windows** devices enrolled through Microsoft's enrolment services. The TLS client
  certificate the enrolment issued is their identity (MS-MDM); the route finds the device
  by it (:meth:`engine.windows_enrolment.WindowsEnrolment.device_of_certificate`) and the
  session starts authenticated.
* **Plain OMA DM** clients (phones): the SyncHdr Source (``IMEI:...`` or a serial number)
  must be the IMEI, serial number or UDID of an ``oma_dm`` device of the inventory that may
  connect, and its owner authenticates with the account's own password, Basic first; the
  service then keeps ``B64(MD5(user:password))`` so that later sessions use MD5 or HMAC with
  a fresh nonce each time (the nonce is replaced at every attempt, in the same write that
  checks it, so a digest is never accepted twice). Failures count towards the same
  lock-out as every sign-in.

Each session (:class:`OmadmBackend`) first reads the inventory nodes of the device's
platform (:mod:`engine.protocols.omadm_nodes`), then, once the device has answered, sends
its queued commands (marked sent) and, for Windows, a requested unenrolment; the results
update the management tree snapshot (:mod:`engine.store.omadm`), the inventory and the
commands' states (:func:`engine.commands.record_result`).

The server authenticates itself to plain OMA DM clients with its own credentials on each
device (:mod:`engine.omadm_credentials`: a password derived per device, and the server nonce
the device last gave). The first authenticated session of such a device provisions them:
an ``Atomic`` of ``Add`` commands creates the service's DM account (``./DMAcc/EMM``, with
``AppAuth`` entries ``SRVCRED`` and ``CLCRED``; :mod:`engine.protocols.omadm_dmacc`), or, the
account existing (418), its ``SRVCRED`` entry alone; once the device acknowledged it (or
took the server's credentials: 212), ``bootstrapped_at`` and the server nonce are kept, and
every later session is signed (MD5 ``Cred`` or ``x-syncml-hmac``) with the nonce each
``NextNonce`` of the device replaces. A device that answers a signed message without
checking it (a plain 200, no nonce: reset, or set up by hand) is provisioned again.

Wake-ups: no push channel reaches these devices from here (Windows' push goes through WNS,
plain OMA DM through an SMS/WAP-push gateway), so a queued command is recorded as a pending
alert (shown in the portal) together with, for a bootstrapped plain OMA DM device, the
package 0 notification a gateway would carry, keyed with the server's credentials; the
device picks its commands up at its next scheduled session.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hmac
import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .audit import audit_event
from .auth import claim_sign_in_attempt, qualified_logins, sign_in_name
from .commands import State, mark_sent_unit, public, record_result_unit
from .devices import may_connect
from .errors import Invalid, NotFound
from .ids import new_id
from .omadm_credentials import SERVER_ID, ServerSecrets
from .organisations import visible_organisation
from .passwords import verify_password
from .principals import AccountKind, Principal, Right, owner_scope, require_kind, require_right
from .protocols import omadm as dm, omadm_dmacc as dmacc
from .protocols.omadm_nodes import WINDOWS_UNENROL, Action, profile_of
from .protocols.syncml import (
    Add,
    Atomic,
    Command,
    Delete,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    SyncHdr,
    Target,
    encode_message,
    header_only_answer,
)
from .store import Store, devices as inventory, omadm as db
from .store.audit import insert_event
from .store.commands import commands_of_device
from .store.rows import Row
from .store.sign_in import attempts_of, clear_attempts
from .store.windows_enrolment import UNENROLMENT_REQUESTED, enrolment_of
from .timestamps import now
from .wakeups import Waiting, Wakeups
from .windows_enrolment import PROVIDER_ID, record_unenrolled

PROTOCOL = "oma_dm"
INVENTORY = "inventory"
UNENROL = "unenrol"
#: Operations that provision the server's credentials: the whole DM account, or only its
#: SRVCRED entry when the account exists already.
BOOTSTRAP = "bootstrap"
SERVER_CREDENTIALS = "server-credentials"
_COMMAND = "command:"
_SETTING = "setting:"
#: Meta Format values a setting may have (OMA DM TND 1.2).
FORMATS = ("chr", "int", "bool", "b64", "xml", "float", "date", "time", "null")
MAX_SETTING_VALUE = 256 * 1024


@dataclass
class Peer:
    """The device of an authenticated session, and what this session has done so far."""

    device_id: str
    organisation_id: str
    platform: str
    windows: bool = False
    provider_id: str = PROVIDER_ID
    mode: str | None = None
    #: Windows' Alert 1224: "user" when the enrolled user is signed in (only then may
    #: ``./User/...`` nodes be set), "others" or "none".
    login_status: str | None = None
    step: int = 0
    unenrolled: bool = False  # the device said it unenrolled: the session just ends
    #: Per operation key: node values the server writes (kept once acknowledged).
    writes: dict[str, list[tuple[str, str | None, str | None, str | None]]] = field(
        default_factory=dict
    )
    deletes: dict[str, list[str]] = field(default_factory=dict)
    #: Operations that unenrol the device (DMClient ``Unenroll``) once acknowledged.
    unenrolling: set[str] = field(default_factory=set)
    #: Nodes a generic alert named, kept with the next package's write.
    reported: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    #: Plain OMA DM: the user name the client authenticated with, the server address it
    #: called, whether its DM account may still lack the server's credentials, the server
    #: nonce a bootstrap under way gives it, and DM state not kept yet (the client's
    #: NextNonce for the server, its acceptance of the server's credentials).
    username: str | None = None
    server_uri: str = ""
    needs_bootstrap: bool = False
    bootstrap_nonce: str | None = None
    #: The provisioning operation to send next, and those sent in this session.
    provision: str | None = None
    provisioned: set[str] = field(default_factory=set)
    #: The client said how it took the server's credentials in this session.
    judged: bool = False
    #: The server's credentials this session signs with (shared with the session).
    credential: dm.ServerCredential | None = None
    keep: dict[str, Any] = field(default_factory=dict)


def windows_peer(device: dict[str, Any], mode: str | None = None) -> Peer:
    return Peer(device["id"], device["organisation_id"], "windows", windows=True, mode=mode)


def _new_nonce() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode()


class OmadmBackend:
    """What a :class:`~engine.protocols.omadm.DmSession` asks of the service."""

    def __init__(self, store: Store, server: ServerSecrets | None = None) -> None:
        self.store = store
        self.server = server

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, credentials: dm.Credentials) -> dm.Authentication:
        if credentials.kind in (dm.AUTH_MD5, dm.AUTH_HMAC):
            # Cheap to check: the device, the digest, the nonce and its replacement, the
            # lock-out, all in one write (a nonce is never accepted twice).
            outcome = await self.store.write(_check_digest, credentials, _new_nonce())
            if outcome.device is None:
                return dm.Authentication(outcome.status, challenge=(dm.AUTH_BASIC, None))
            if outcome.status != dm.AUTHENTICATION_ACCEPTED:
                return dm.Authentication(outcome.status, challenge=outcome.challenge)
            return self._accepted(outcome.device, outcome.peer, credentials, outcome.challenge)
        rows = await self.store.lookup(db.oma_dm_devices_with_id, credentials.device_id)
        device = _device_of(rows, credentials.username)
        if device is None:
            if credentials.kind == dm.AUTH_BASIC:  # the same work as a wrong password
                await trio.to_thread.run_sync(verify_password, credentials.data or "", None)
            status = dm.MISSING_CREDENTIALS if credentials.kind is None else dm.INVALID_CREDENTIALS
            return dm.Authentication(status, challenge=(dm.AUTH_BASIC, None))
        name = sign_in_name(device["organisation_code"], device["owner_login"])
        if credentials.kind != dm.AUTH_BASIC or credentials.username not in qualified_logins(
            device["organisation_code"], device["owner_login"]
        ):
            code = dm.MISSING_CREDENTIALS if credentials.kind is None else dm.INVALID_CREDENTIALS
            return await self._refuse(device, code)
        wait = await self.store.write(claim_sign_in_attempt, name)
        password = dm.basic_password(credentials.data or "")
        ok = wait is None and await trio.to_thread.run_sync(
            verify_password, password or "", device["owner_password_hash"]
        )
        if not ok:
            return await self._refuse(device, dm.INVALID_CREDENTIALS)
        nonce = _new_nonce()
        digest = dm.user_digest(credentials.username or "", password or "")
        found = await self.store.write(
            _basic_accepted, name, device, credentials.username, digest, nonce
        )
        return self._accepted(device, found, credentials, (dm.AUTH_MD5, nonce))

    def _accepted(
        self,
        device: Row,
        found: Row | None,
        credentials: dm.Credentials,
        challenge: tuple[str, str | None] | None,
    ) -> dm.Authentication:
        """A plain OMA DM client in: its session is signed with the server's credentials
        once its DM account has them; until then its first package provisions them."""
        peer = _peer(device)
        peer.username = credentials.username
        peer.server_uri = credentials.server_uri
        server = None
        if self.server is not None:
            # Without a server nonce the session goes unsigned; a client that holds the
            # server's credentials anyway (a bootstrap whose answer was lost) challenges
            # the server with its nonce, and the derived password does the rest.
            server = self.server.credential(device["id"], found["server_nonce"] if found else None)
            peer.credential = server
            peer.needs_bootstrap = not (found and found["bootstrapped_at"])
            peer.provision = BOOTSTRAP if peer.needs_bootstrap else None
        return dm.Authentication(dm.AUTHENTICATION_ACCEPTED, peer, challenge, server)

    async def _refuse(self, device: dict[str, Any], status: int) -> dm.Authentication:
        """How to try next: MD5 with a fresh nonce once the digest is known, else Basic."""
        nonce = _new_nonce()
        known = await self.store.write(_put_nonce, device, nonce)
        return dm.Authentication(
            status, challenge=(dm.AUTH_MD5, nonce) if known else (dm.AUTH_BASIC, None)
        )

    async def server_judged(self, peer: object, status: int, nonce: str | None) -> None:
        """The client's word on the server's credentials: its next server nonce, and (212)
        that its DM account holds them, so the device counts as bootstrapped. A device whose
        first word on a signed message is a plain 2xx without a nonce did not check them:
        its DM account lacks them (reset, or set up by hand), so they are provisioned again,
        in this session, and no package 0 is made for it meanwhile. Kept with the package's
        write (:meth:`exchange`), or by :meth:`keep` if none follows."""
        assert isinstance(peer, Peer)
        first, peer.judged = not peer.judged, True
        if nonce is not None:
            peer.keep["server_nonce"] = nonce
        if status == dm.AUTHENTICATION_ACCEPTED and peer.needs_bootstrap:
            peer.needs_bootstrap = False
            peer.provision = None
            peer.keep["bootstrapped_at"] = now()
        elif first and 200 <= status < 300 and status != dm.AUTHENTICATION_ACCEPTED and not nonce:
            if not peer.needs_bootstrap:
                peer.needs_bootstrap = True
                peer.keep["bootstrapped_at"] = None
            if BOOTSTRAP not in peer.provisioned:
                peer.provision = BOOTSTRAP

    async def keep(self, peer: object) -> None:
        """What :meth:`server_judged` left for a write when no package write took it."""
        if isinstance(peer, Peer) and peer.keep:
            values, peer.keep = peer.keep, {}
            await self.store.write(_put_peer, peer, values)

    # ------------------------------------------------------------------ the client's words

    async def alerted(self, peer: object, alert: dm.ClientAlert) -> int:
        assert isinstance(peer, Peer)
        if alert.type == dm.UNENROL_ALERT_TYPE:
            if peer.windows:
                await record_unenrolled(self.store, peer.device_id, by_device=True)
                peer.unenrolled = True
            return dm.OK
        if alert.code == dm.CLIENT_EVENT:
            peer.login_status = (alert.data or "").strip().lower()[:64]
            await self.store.write(_put_peer, peer, {"login_status": peer.login_status})
            return dm.OK
        if alert.source:  # a generic alert about a node (e.g. LAWMO's operation result)
            if len(peer.reported) >= dm.MAX_HELD_VALUES:  # held until the package ends
                return dm.DEVICE_FULL
            peer.reported.append((alert.source, alert.data, alert.format, alert.type))
        return dm.OK

    # ------------------------------------------------------------------ one server package

    async def exchange(
        self,
        peer: object,
        session_alert: int,
        reported: list[dm.NodeValue],
        outcomes: list[dm.OperationOutcome],
        more: bool,
    ) -> list[dm.Operation]:
        """Keep what the device said and answered, and take what goes next, in one write.

        Package 2 reads the inventory; package 4 carries the queued commands and settings
        (the device is known by then); later packages only what was queued meanwhile.
        """
        assert isinstance(peer, Peer)
        changes = _Changes(
            step=peer.step + 1 if more else 0,
            windows=peer.windows,
            user_present=not peer.windows or peer.login_status == "user",
        )
        changes.nodes += [(v.uri, v.data, v.format, v.type) for v in reported]
        changes.nodes += peer.reported
        peer.reported = []
        unenrolled = False
        for outcome in outcomes:
            if outcome.key in (BOOTSTRAP, SERVER_CREDENTIALS):
                _provisioning_answered(peer, outcome)
                continue
            changes.nodes += [(v.uri, v.data, v.format, v.type) for v in outcome.results if v.uri]
            if outcome.ok:
                changes.writes += peer.writes.pop(outcome.key, [])
                changes.deletes += peer.deletes.pop(outcome.key, [])
                unenrolled |= peer.windows and outcome.key in peer.unenrolling
            if outcome.key.startswith(_SETTING):
                status = outcome.outcomes[0].status if outcome.outcomes else dm.COMMAND_FAILED
                changes.settings.append((outcome.key[len(_SETTING) :], outcome.ok, status))
            elif outcome.key.startswith(_COMMAND):
                changes.results.append((outcome.key[len(_COMMAND) :], outcome.ok, _result(outcome)))
        changes.found = _inventory_of(peer, changes.nodes)
        changes.peer, peer.keep = peer.keep, {}
        if more:
            peer.step += 1
        if more and peer.unenrolled:
            changes.step = 0
        work = await self.store.write(_exchange, peer, changes)
        if unenrolled:
            await record_unenrolled(self.store, peer.device_id, by_device=False)
            peer.unenrolled = True
        if not more or peer.unenrolled:
            return []
        profile = profile_of(peer.platform)
        operations: list[dm.Operation] = []
        if peer.provision is not None and self.server is not None:
            operations.append(self._provision(peer, peer.provision, self.server))
        if peer.step == 1:
            inventory_read = dm.Operation(INVENTORY, [_get(uri) for uri in profile.inventory])
            return [inventory_read, *operations]
        if work.unenrol:
            operations.append(self._operation(peer, UNENROL, (WINDOWS_UNENROL,), {}))
        for setting in work.settings:
            action = Action(
                "Replace", setting["uri"], setting["value"], setting["format"], setting["type"]
            )
            operations.append(self._operation(peer, _SETTING + setting["id"], (action,), {}))
        for command in work.commands:
            key = _COMMAND + command["id"]
            if command["kind"] == "request_inventory":
                operations.append(dm.Operation(key, [_get(uri) for uri in profile.inventory]))
            else:
                actions = profile.commands[command["kind"]]
                operations.append(self._operation(peer, key, actions, command["parameters"]))
        return operations

    def _provision(self, peer: Peer, kind: str, server: ServerSecrets) -> dm.Operation:
        """The service's DM account (or, ``SERVER_CREDENTIALS``, only its SRVCRED entry)
        with the server's credentials and a first server nonce (kept once the device
        acknowledged it; nothing of it goes into the tree snapshot). Once per session each."""
        peer.provision = None
        peer.provisioned.add(kind)
        peer.bootstrap_nonce = _new_nonce()
        account = dmacc.Provisioned(
            account=SERVER_ID,
            server_id=SERVER_ID,
            name=SERVER_ID,
            address=peer.server_uri,
            server_password=server.password(peer.device_id),
            server_nonce=peer.bootstrap_nonce,
            client_name=peer.username or "",
        )
        if kind == SERVER_CREDENTIALS:
            return dm.Operation(kind, [dmacc.server_credentials(account)])
        return dm.Operation(kind, [dmacc.bootstrap(account)])

    def _operation(
        self, peer: Peer, key: str, actions: Sequence[Action], parameters: dict[str, Any]
    ) -> dm.Operation:
        values = {"provider": peer.provider_id, **{k: str(v) for k, v in parameters.items()}}
        commands: list[Command] = []
        for action in actions:
            uri = action.uri.format_map(values)
            data = action.data.format_map(values) if action.data is not None else None
            commands.append(_command(action, uri, data))
            if uri.endswith("/Unenroll"):
                peer.unenrolling.add(key)
            if action.verb in ("Replace", "Add"):
                peer.writes.setdefault(key, []).append((uri, data, action.format, action.type))
            elif action.verb == "Delete":
                peer.deletes.setdefault(key, []).append(uri)
        if len(commands) > 1:
            commands = [Atomic(cmd_id="", commands=commands)]
        return dm.Operation(key, commands)


Node = tuple[str, str | None, str | None, str | None]


def _provisioning_answered(peer: Peer, outcome: dm.OperationOutcome) -> None:
    """The device's answer to a provisioning operation: bootstrapped with the nonce it was
    given (it ran the commands after the header it may have named another nonce in, so this
    one is its latest; the rest of the session is signed with it), or, its account existing
    already (418 for the account's node) and the server's credentials not taken otherwise
    (212), its SRVCRED entry alone next."""
    statuses = [(o.name, o.uris, o.status) for o in outcome.outcomes]
    if outcome.key == BOOTSTRAP:
        done = outcome.ok
        root = dmacc.account_uri(SERVER_ID)
        exists = any(s == dmacc.ALREADY_EXISTS and root in uris for _, uris, s in statuses)
        again = SERVER_CREDENTIALS not in peer.provisioned
        if not done and exists and peer.needs_bootstrap and again:
            peer.provision = SERVER_CREDENTIALS
    else:
        done = dmacc.provisioned(SERVER_ID, statuses)
    if done and peer.bootstrap_nonce is not None:
        peer.keep["server_nonce"] = peer.bootstrap_nonce
        peer.keep["bootstrapped_at"] = now()
        peer.needs_bootstrap = False
        if peer.credential is not None:
            peer.credential.nonce = peer.bootstrap_nonce


@dataclass
class _Changes:
    """What one server package keeps (and, with ``step``, which work it takes next)."""

    step: int  # 0: take no work
    windows: bool
    user_present: bool = True
    nodes: list[Node] = field(default_factory=list)
    writes: list[Node] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)
    settings: list[tuple[str, bool, int]] = field(default_factory=list)
    results: list[tuple[str, bool, dict[str, Any]]] = field(default_factory=list)
    #: DM state of the device: its server nonce, when it was bootstrapped.
    peer: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Work:
    unenrol: bool = False
    settings: list[Row] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)


def _result(outcome: dm.OperationOutcome) -> dict[str, Any]:
    """A command's result as the API shows it: each Status, and the values read."""
    result: dict[str, Any] = {
        "statuses": [
            {"command": o.name, "uris": o.uris, "status": o.status} for o in outcome.outcomes
        ]
    }
    if outcome.results:
        result["results"] = {v.uri: v.data for v in outcome.results[:200]}
    return result


def _peer(device: dict[str, Any]) -> Peer:
    return Peer(device["id"], device["organisation_id"], device["platform"])


def _get(uri: str) -> Get:
    return Get(cmd_id="", items=[Item(target=Target(uri))])


def _command(action: Action, uri: str, data: str | None) -> Command:
    meta = Meta(format=action.format, type=action.type) if action.format or action.type else None
    item = Item(target=Target(uri), meta=meta, data=data)
    if action.verb == "Exec":
        return Exec(cmd_id="", item=item)
    if action.verb == "Get":
        return _get(uri)
    if action.verb == "Delete":
        return Delete(cmd_id="", items=[Item(target=Target(uri))])
    cls = Add if action.verb == "Add" else Replace
    return cls(cmd_id="", items=[item])


def _inventory_of(
    peer: Peer, nodes: list[tuple[str, str | None, str | None, str | None]]
) -> dict[str, Any]:
    """Inventory fields and device columns the nodes fill, per the platform's profile."""
    profile = profile_of(peer.platform)
    fields = {**profile.inventory}
    for uri in (
        "./DevInfo/DevId",
        "./DevInfo/Man",
        "./DevInfo/Mod",
        "./DevInfo/DmV",
        "./DevInfo/Lang",
    ):
        fields.setdefault(uri, uri.rsplit("/", 1)[-1].lower())
    found = {uri: value for uri, value, _, _ in nodes if value is not None}
    facts = {fields[uri]: found[uri] for uri in fields if uri in found}
    columns = {
        column: found[uri][:200] for column, uri in profile.columns.items() if found.get(uri)
    }
    return {"facts": facts, "columns": columns} if facts or columns else {}


# --------------------------------------------------------------------------- units


def _put_nonce(conn: sqlite3.Connection, device: dict[str, Any], nonce: str) -> bool:
    """A fresh nonce for the device; whether the service knows its digest (MD5 possible)."""
    db.put_peer(
        conn,
        {
            "device_id": device["id"],
            "organisation_id": device["organisation_id"],
            "nonce": nonce,
            "updated_at": now(),
        },
    )
    found = db.peer(conn, device["id"])
    return bool(found and found["digest"])


@dataclass(frozen=True)
class _DigestOutcome:
    status: int
    device: Row | None = None
    challenge: tuple[str, str | None] | None = None
    peer: Row | None = None  # the device's DM state as it was


def _device_of(rows: list[Row], username: str | None) -> Row | None:
    """The one device of these that may connect, named by its owner's user name."""
    usable = [
        row
        for row in rows
        if row["owner_id"] is not None
        and row["owner_active"]
        and row["owner_kind"] == AccountKind.USER
        and may_connect(row, {"active": row["organisation_active"]})
    ]
    named = [
        row
        for row in usable
        if username in qualified_logins(row["organisation_code"], row["owner_login"])
    ]
    if len(named) == 1:
        return named[0]
    return usable[0] if len(usable) == 1 and username is None else None


def _check_digest(
    conn: sqlite3.Connection, credentials: dm.Credentials, nonce: str
) -> _DigestOutcome:
    """MD5 or HMAC against the stored digest and nonce. The nonce is replaced whatever the
    outcome (one use only); a failure counts towards the owner's lock-out, and a locked
    name is refused before anything is checked. Without a stored digest the client is told
    to use Basic."""
    device = _device_of(
        db.oma_dm_devices_with_id(conn, credentials.device_id), credentials.username
    )
    if device is None:
        return _DigestOutcome(dm.INVALID_CREDENTIALS)
    kind = dm.AUTH_HMAC if credentials.kind == dm.AUTH_HMAC else dm.AUTH_MD5
    name = sign_in_name(device["organisation_code"], device["owner_login"])
    found = db.peer(conn, device["id"])
    if found is None or not found["digest"]:
        _put_nonce(conn, device, nonce)
        return _DigestOutcome(dm.INVALID_CREDENTIALS, device, (dm.AUTH_BASIC, None))
    attempts = attempts_of(conn, name)
    locked = bool(attempts and attempts["locked_until"] and attempts["locked_until"] > now())
    ok = (
        not locked
        and bool(found["nonce"])
        and credentials.username == found["username"]
        and hmac.compare_digest(_expected(found, credentials), credentials.data or "")
    )
    at = now()
    values: dict[str, Any] = {"nonce": nonce, "updated_at": at}
    db.put_peer(
        conn, {"device_id": device["id"], "organisation_id": device["organisation_id"], **values}
    )
    if not ok:
        if not locked:
            claim_sign_in_attempt(conn, name)  # counted as a failure
        return _DigestOutcome(dm.INVALID_CREDENTIALS, device, (kind, nonce))
    if attempts is not None:
        clear_attempts(conn, name)
    inventory.update_device(conn, device["id"], {"last_seen_at": at})
    return _DigestOutcome(dm.AUTHENTICATION_ACCEPTED, device, (kind, nonce), found)


def _expected(found: Row, credentials: dm.Credentials) -> str:
    if credentials.kind == dm.AUTH_HMAC:
        return dm.hmac_mac(found["digest"], found["nonce"], credentials.body)
    return dm.md5_credential(found["digest"], found["nonce"])


def _basic_accepted(
    conn: sqlite3.Connection,
    name: str,
    device: dict[str, Any],
    username: str,
    digest: str,
    nonce: str,
) -> Row | None:
    at = now()
    clear_attempts(conn, name)
    db.put_peer(
        conn,
        {
            "device_id": device["id"],
            "organisation_id": device["organisation_id"],
            "username": username,
            "digest": digest,
            "nonce": nonce,
            "updated_at": at,
        },
    )
    inventory.update_device(conn, device["id"], {"last_seen_at": at})
    return db.peer(conn, device["id"])


def _put_peer(conn: sqlite3.Connection, peer: Peer, values: dict[str, Any]) -> None:
    db.put_peer(
        conn,
        {
            "device_id": peer.device_id,
            "organisation_id": peer.organisation_id,
            **values,
            "updated_at": now(),
        },
    )


def _session_started(conn: sqlite3.Connection, peer: Peer) -> None:
    at = now()
    found = db.peer(conn, peer.device_id)
    _put_peer(
        conn,
        peer,
        {
            "sessions": (found["sessions"] if found else 0) + 1,
            "last_session_at": at,
            "pending_alert_at": None,
            "notification": None,
        },
    )
    values: dict[str, Any] = {"last_seen_at": at}
    device = inventory.device_by_id(conn, peer.device_id)
    if device is not None and device["state"] == "created" and not peer.windows:
        values |= {"state": "enrolled", "enrolled_at": at}
    inventory.update_device(conn, peer.device_id, values)


def _record(
    conn: sqlite3.Connection,
    peer: Peer,
    nodes: list[tuple[str, str | None, str | None, str | None]],
    deletes: list[str],
    found: dict[str, Any],
    writes: list[tuple[str, str | None, str | None, str | None]] | None = None,
) -> None:
    """Node values into the tree snapshot, facts into the inventory, in one unit."""
    at = now()
    db.put_nodes(conn, peer.device_id, peer.organisation_id, nodes, "device", at)
    if writes:
        db.put_nodes(conn, peer.device_id, peer.organisation_id, writes, "server", at)
    if deletes:
        db.delete_nodes(conn, peer.device_id, deletes)
    if not found:
        return
    device = inventory.device_by_id(conn, peer.device_id)
    if device is None:
        return
    stored = json.loads(device["inventory"] or "{}")
    facts = {**stored.get("oma_dm", {}), **found.get("facts", {})}
    values: dict[str, Any] = {"inventory": json.dumps(stored | {"oma_dm": facts}), "updated_at": at}
    values |= found.get("columns", {})
    inventory.update_device(conn, peer.device_id, values)


def _exchange(conn: sqlite3.Connection, peer: Peer, changes: _Changes) -> _Work:
    """One server package's write: the session's start, node values into the tree and the
    inventory, the devices' answers to settings and commands; then (``step`` 2 and later)
    the queued work, marked sent."""
    if changes.step == 1:
        _session_started(conn, peer)
    if changes.peer:
        _put_peer(conn, peer, changes.peer)
    if changes.nodes or changes.writes or changes.deletes:
        _record(conn, peer, changes.nodes, changes.deletes, changes.found, changes.writes)
    for setting_id, ok, status in changes.settings:
        _setting_done(conn, setting_id, ok, status)
    for command_id, ok, result in changes.results:
        _answer_command(conn, command_id, ok, result)
    work = _Work()
    if changes.step < 2:
        return work
    if changes.windows and changes.step == 2:
        enrolment = enrolment_of(conn, peer.device_id)
        work.unenrol = enrolment is not None and enrolment["state"] == UNENROLMENT_REQUESTED
    # The first command package of a session also repeats what an earlier session sent
    # without getting an answer (a session cut short): lock, wipe and settings are safe to
    # give twice, and a lost answer must not leave them "sent" for ever.
    again = changes.step == 2
    work.settings = _take_settings(conn, peer.device_id, changes.user_present, again)
    profile = profile_of(peer.platform)
    states = [State.QUEUED.value, *([State.SENT.value] if again else [])]
    for row in commands_of_device(conn, peer.device_id, states):
        mark_sent_unit(conn, row["id"])
        if row["kind"] == "request_inventory" or row["kind"] in profile.commands:
            work.commands.append(public(row, for_device=True))
        else:
            error = f"{row['kind']} is not available over OMA DM on {peer.platform}"
            _answer_command(conn, row["id"], False, {"error": error})
    return work


def _answer_command(
    conn: sqlite3.Connection, command_id: str, ok: bool, result: dict[str, Any]
) -> None:
    """The device's answer to a command (a command cancelled meanwhile keeps its state)."""
    target = State.ACKNOWLEDGED if ok else State.FAILED
    with contextlib.suppress(Invalid, NotFound):
        record_result_unit(conn, command_id, target, json.dumps(result, sort_keys=True))


def _take_settings(
    conn: sqlite3.Connection, device_id: str, user_present: bool, again: bool
) -> list[dict[str, Any]]:
    """The device's queued settings (``again``: and those sent without an answer), marked
    sent in the same unit. Settings of the user's
    part of the tree (``./User/...``) wait while the enrolled user is not signed in
    (Windows applies them to whoever is)."""
    rows = [
        row
        for row in db.settings_of(conn, device_id, ("queued", "sent") if again else ("queued",))
        if user_present or not row["uri"].lower().startswith("./user/")
    ]
    at = now()
    for row in rows:
        db.update_setting(conn, row["id"], {"state": "sent", "updated_at": at})
    return rows


def _setting_done(conn: sqlite3.Connection, setting_id: str, ok: bool, status: int) -> None:
    db.update_setting(
        conn,
        setting_id,
        {"state": "applied" if ok else "failed", "status": status, "updated_at": now()},
    )


# --------------------------------------------------------------------------- settings


def _check_uri(uri: str) -> None:
    """An absolute node path of the tree (``./...``), without empty or parent segments."""
    segments = uri.split("/")
    if (
        not uri.startswith("./")
        or len(uri) > 1024
        or not uri.isprintable()
        or any(part in ("", ".", "..") for part in segments[1:])
    ):
        raise Invalid("uri must be an absolute node path such as ./Vendor/MSFT/...", field="uri")


async def queue_setting(
    store: Store,
    principal: Principal,
    organisation: str,
    device_id: str,
    values: dict[str, Any],
    *,
    wakeups: Wakeups | None = None,
) -> dict[str, Any]:
    """A node value (a setting, a Windows Policy CSP value) for the device's next OMA DM
    session; it writes what lies in the tree, so it needs the configuration right."""
    org = await visible_organisation(store, principal, organisation)
    require_kind(principal, AccountKind.MANAGER, AccountKind.VENDOR, AccountKind.SUPERVISOR)
    require_right(principal, Right.CONFIGURATION)
    uri, value = str(values["uri"]), str(values["value"])
    _check_uri(uri)
    fmt = str(values.get("format") or "chr")
    if fmt not in FORMATS:
        raise Invalid(f"format must be one of {', '.join(FORMATS)}", field="format")
    if len(value.encode()) > MAX_SETTING_VALUE:
        raise Invalid(f"value is longer than {MAX_SETTING_VALUE} bytes", field="value")
    at = now()
    setting = {
        "id": new_id(),
        "organisation_id": org["id"],
        "device_id": device_id,
        "uri": uri,
        "value": value,
        "format": fmt,
        "type": values.get("type"),
        "state": "queued",
        "status": None,
        "created_by": principal.account_id,
        "created_at": at,
        "updated_at": at,
    }
    event = audit_event(
        principal,
        "omadm.setting_queued",
        organisation_id=org["id"],
        target_type="device",
        target_id=device_id,
        details={"uri": uri, "format": fmt, "setting": setting["id"]},
    )
    protocol = await store.write(_queue_setting, setting, event)
    if wakeups is not None:
        wakeups.wake([Waiting(org["id"], device_id, protocol)])
    return _public_setting(setting)


def _queue_setting(conn: sqlite3.Connection, setting: dict[str, Any], event: dict[str, Any]) -> str:
    device = inventory.inventory_device_in(conn, setting["organisation_id"], setting["device_id"])
    if device is None:
        raise NotFound("no such device")
    db.insert_setting(conn, setting)
    insert_event(conn, event)
    return str(device["protocol"])


async def device_settings(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> list[dict[str, Any]]:
    """The settings queued for a device and how the device answered them."""
    org = await visible_organisation(store, principal, organisation)
    require_kind(principal, AccountKind.MANAGER, AccountKind.VENDOR, AccountKind.SUPERVISOR)
    rows = await store.read(_settings, org["id"], device_id)
    if rows is None:
        raise NotFound("no such device")
    return [_public_setting(row) for row in rows]


def _settings(conn: sqlite3.Connection, organisation_id: str, device_id: str) -> list[Row] | None:
    if inventory.inventory_device_in(conn, organisation_id, device_id) is None:
        return None
    return db.settings_of(conn, device_id)


def _public_setting(row: dict[str, Any]) -> dict[str, Any]:
    return {
        name: row[name]
        for name in (
            "id",
            "device_id",
            "uri",
            "value",
            "format",
            "type",
            "state",
            "status",
            "created_at",
            "updated_at",
        )
    }


# --------------------------------------------------------------------------- wake-ups


async def record_wakeups(
    store: Store, waiting: Sequence[Waiting], server: ServerSecrets | None = None
) -> None:
    """Commands wait for these devices: record a pending alert and, for a plain OMA DM
    device whose DM account holds the server's credentials, the package 0 notification an
    SMS/WAP-push gateway would carry (OMA DM Notification Initiated Session 1.2): its digest
    is ``H(B64(H(server-id:server-password)):server-nonce:B64(H(trigger)))``, keyed as the
    device checks it (its ``SRVCRED``: the server's password on it and the server nonce it
    last gave). A device not bootstrapped yet gets no notification: it could not check one.
    Windows takes no package 0 (its push goes through WNS)."""
    ours = [w for w in waiting if w.protocol == PROTOCOL]
    if ours:
        await store.write(_record_wakeups, ours, server)


def _record_wakeups(
    conn: sqlite3.Connection, waiting: list[Waiting], server: ServerSecrets | None
) -> None:
    at = now()
    for wake in waiting:
        device = inventory.device_by_id(conn, wake.device_id)
        if device is None:
            continue
        found = db.peer(conn, wake.device_id)
        package = None
        if (
            server is not None
            and device["platform"] != "windows"
            and found is not None
            and found["bootstrapped_at"]
            and found["server_nonce"]
        ):
            session = int.from_bytes(secrets.token_bytes(2), "big")
            digest = server.digest(wake.device_id)
            notification = dm.notification(SERVER_ID, digest, found["server_nonce"], session)
            package = base64.b64encode(notification).decode()
        db.put_peer(
            conn,
            {
                "device_id": wake.device_id,
                "organisation_id": wake.organisation_id,
                "pending_alert_at": at,
                "notification": package,
                "updated_at": at,
            },
        )


# --------------------------------------------------------------------------- the tree, read


async def device_tree(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> dict[str, Any]:
    """The management tree snapshot of a device and its DM state (owners: their own)."""
    org = await visible_organisation(store, principal, organisation)
    owner = owner_scope(principal)
    found = await store.read(_tree, org["id"], device_id, owner)
    if found is None:
        raise NotFound("no such device")
    return found


def _tree(
    conn: sqlite3.Connection, organisation_id: str, device_id: str, owner: str | None
) -> dict[str, Any] | None:
    device = inventory.inventory_device_in(conn, organisation_id, device_id)
    if device is None or (owner is not None and device["owner_id"] != owner):
        return None
    peer = db.peer(conn, device_id)
    return {
        "device_id": device_id,
        "sessions": peer["sessions"] if peer else 0,
        "last_session_at": peer["last_session_at"] if peer else None,
        "pending_alert_at": peer["pending_alert_at"] if peer else None,
        "login_status": peer["login_status"] if peer else None,
        "bootstrapped_at": peer["bootstrapped_at"] if peer else None,
        "nodes": db.nodes_of(conn, device_id),
    }


# --------------------------------------------------------------------------- device sessions


@dataclass(frozen=True)
class DmRequest:
    """One HTTP request of a DM client, parsed. ``device``: the Windows device its TLS
    client certificate identifies (None for plain OMA DM); ``token`` from the RespURI."""

    message: Message
    body: bytes
    wbxml: bool
    token: str | None
    base_url: str
    hmac: dm.HmacHeader | None = None
    device: dict[str, Any] | None = None
    mode: str | None = None


@dataclass(frozen=True)
class DmResponse:
    body: bytes
    wbxml: bool
    #: The server's ``x-syncml-hmac`` header, when the client authenticates with HMAC.
    hmac: str | None = None


def error_message(header: SyncHdr, code: int) -> Message:
    """A reply that only answers the header (an unknown or finished session)."""
    return header_only_answer(header, code, dm.VER_PROTO)


async def known_dm_id(store: Store, dm_id: str) -> bool:
    """Whether a plain OMA DM device of the inventory has this DevId: for any other, the
    route answers without activating a session actor (:func:`refuse_unknown`)."""
    return bool(await store.lookup(db.oma_dm_devices_with_id, dm_id))


async def refuse_unknown(store: Store, request: DmRequest) -> DmResponse:
    """The answer to a plain OMA DM client whose DevId is no inventory device's: a session
    logic of its own, used once and forgotten, gives exactly what an actor's would (the same
    challenge, the same work for a password), and no actor is kept for it."""
    # At a RespURI it gave, such a client gets the same refusal again (not 404: the
    # session a known device's actor would keep there refuses it the same way).
    return await OmadmSessionLogic(store).handle(dataclasses.replace(request, token=None))


class OmadmSessionLogic:
    """The SessionLogic of one DM client's DeviceSession actor.

    Plain OMA DM sessions continue at a RespURI with a secret token (nobody joins another's
    authenticated session by naming the same device id and session id); a new session that
    has not authenticated yet lives beside the current one. Windows sessions are known by
    the certificate on every request, so their SessionID is enough. A message repeated
    (the same SessionID and MsgID) gets the same answer again.
    """

    def __init__(self, store: Store, server: ServerSecrets | None = None) -> None:
        self.backend = OmadmBackend(store, server)
        self.sessions: dict[str, dm.DmSession] = {}
        self.last: tuple[str, str, str, DmResponse] | None = None

    async def handle(self, request: DmRequest) -> DmResponse:
        header = request.message.header
        if request.device is not None:
            key = "windows:" + header.session_id
            session = self.sessions.get(key)
            if self._repeated(key, header):
                return self.last[3]  # type: ignore[index]
            if session is None:
                session = dm.DmSession(
                    backend=self.backend,
                    session_id=header.session_id,
                    server_uri=header.target.loc_uri,
                    peer=windows_peer(request.device, request.mode),
                )
                self.sessions = {key: session}
        elif request.token is not None:
            found = self.sessions.get(request.token)
            if found is None or found.session_id != header.session_id:
                refusal = error_message(header, dm.NOT_FOUND)
                return self._answer("", header, refusal, request.wbxml, None)
            if self._repeated(request.token, header):
                return self.last[3]  # type: ignore[index]
            session, key = found, request.token
        else:
            key = secrets.token_urlsafe(18)
            session = dm.DmSession(
                backend=self.backend,
                session_id=header.session_id,
                server_uri=header.target.loc_uri,
                resp_uri=f"{request.base_url}?s={key}",
            )
            for other in [t for t, s in self.sessions.items() if not s.authenticated]:
                del self.sessions[other]
            self.sessions[key] = session
        was_authenticated = session.authenticated
        session.wbxml = request.wbxml
        reply = await session.receive(request.message, request.body, request.hmac)
        await self.backend.keep(session.peer)
        if session.authenticated and not was_authenticated:
            self.sessions = {key: session}
        if session.finished:
            self.sessions.pop(key, None)
        return self._answer(key, header, reply, request.wbxml, session.server)

    def _repeated(self, key: str, header: SyncHdr) -> bool:
        return self.last is not None and self.last[:3] == (key, header.session_id, header.msg_id)

    def _answer(
        self,
        key: str,
        header: SyncHdr,
        reply: Message,
        wbxml: bool,
        server: dm.ServerCredential | None,
    ) -> DmResponse:
        body = encode_message(reply, wbxml)
        mac = server.mac_header(body) if server is not None else None
        response = DmResponse(body, wbxml, mac)
        self.last = (key, header.session_id, header.msg_id, response)
        return response

    async def close(self) -> None:
        """Nothing to hand over: a session's effects are written as they happen."""
