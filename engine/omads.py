"""OMA DS: who may synchronise, and one SyncML session per device on the PIM store.

A sync client is identified by its SyncML device id (the SyncHdr Source LocURI: an IMEI, a
serial number or the client's own id), which must be the IMEI, serial number or UDID of a
device in the inventory, able to connect (:func:`engine.devices.may_connect`), whose owner
is an active user account that authenticates with the account's own password. The user
name may be the login id alone or qualified with the organisation code (``code/login``,
``code\\login``, ``login@code``).

Authentication follows SyncML: Basic is checked against the account's password hash;
after a Basic success the service keeps ``B64(MD5(user:password))`` so that the next
sessions can use MD5 with a fresh nonce per session (the nonce is handed out in
``NextNonce`` and replaced at every attempt, so a digest is never accepted twice). Failures
count against the same lock-out as every sign-in.

The organisation's features switch each kind of data on or off (``contacts_sync``,
``calendar_sync``, ``tasks_sync``, ``notes_sync``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import trio

from .auth import claim_sign_in_attempt, qualified_logins, sign_in_name
from .devices import may_connect
from .passwords import verify_password
from .pim import DEFAULT_POLICY, FEATURES, CollectionSync, PimChanges, collection_unit
from .principals import AccountKind
from .protocols import omads as ds
from .protocols.syncml import Message, SyncHdr, encode_message, header_only_answer
from .service_settings import Deployment, effective_settings_of
from .store import Store, pim as db
from .store.devices import update_device
from .store.sign_in import clear_attempts
from .timestamps import now

#: The URIs clients use for each kind of data (the last path segment, case-insensitive).
DATASTORE_KINDS = {
    "addressbook": "contacts",
    "contacts": "contacts",
    "contact": "contacts",
    "card": "contacts",
    "calendar": "calendar",
    "events": "calendar",
    "event": "calendar",
    "cal": "calendar",
    "todo": "tasks",
    "tasks": "tasks",
    "task": "tasks",
    "memo": "notes",
    "notes": "notes",
    "note": "notes",
}


def kind_of_uri(uri: str) -> str | None:
    name = uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()
    return DATASTORE_KINDS.get(name)


@dataclass
class Peer:
    """An authenticated sync client: the inventory device and its owner."""

    device_id: str
    organisation_id: str
    account_id: str
    features: dict[str, bool]
    devinf: dict[str, Any] = field(default_factory=dict)
    #: How conflicts are resolved (Configuration → Services → OMA DS).
    policy: str = DEFAULT_POLICY


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class OmadsBackend:
    """What a :class:`~engine.protocols.omads.DsSession` asks of the service."""

    def __init__(
        self,
        store: Store,
        deployment: Deployment | None = None,
        changes: PimChanges | None = None,
    ) -> None:
        self.store = store
        self.deployment = deployment
        self.changes = changes
        self.runs: list[CollectionSync] = []

    # ------------------------------------------------------------------ authentication

    async def authenticate(self, credentials: ds.Credentials) -> ds.Authentication:
        rows = await self.store.read(db.devices_with_sync_id, credentials.sync_id)
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
            if credentials.username
            in qualified_logins(row["organisation_code"], row["owner_login"])
        ]
        device = named[0] if len(named) == 1 else None
        credential = await self.store.read(db.credential_of, device["owner_id"]) if device else None
        if credential is not None and credential["updated_at"] < device["owner_updated_at"]:
            # The account changed since (its password, perhaps): the MD5 digest may be stale,
            # so the owner authenticates with Basic again.
            credential = None
        if credentials.kind is None:
            return await self._challenge(device, credential, ds.MISSING_CREDENTIALS)
        if device is None:
            # No such device of this user: the same work and answer as a wrong password.
            await trio.to_thread.run_sync(verify_password, credentials.data or "", None)
            return ds.Authentication(ds.INVALID_CREDENTIALS, challenge=(ds.AUTH_BASIC, None))
        name = sign_in_name(device["organisation_code"], device["owner_login"])
        wait = await self.store.write(claim_sign_in_attempt, name)
        if wait is not None:
            return ds.Authentication(ds.INVALID_CREDENTIALS, challenge=(ds.AUTH_BASIC, None))
        if credentials.kind == ds.AUTH_BASIC:
            password = _basic_password(credentials.data or "")
            ok = await trio.to_thread.run_sync(
                verify_password, password or "", device["owner_password_hash"]
            )
            digest = _md5_b64(f"{credentials.username}:{password}".encode()) if ok else None
        elif credentials.kind == ds.AUTH_MD5 and credential is not None:
            # The nonce is checked and replaced in one write: two sessions of the device
            # (named ``IMEI:x`` and ``x``: two actors) never both accept it.
            nonce = _new_nonce()
            checked = await self.store.write(
                _md5_checked, name, device, credential, credentials, nonce
            )
            if checked is None:
                return ds.Authentication(ds.INVALID_CREDENTIALS, challenge=(ds.AUTH_MD5, nonce))
            return await self._accepted(device, checked, nonce)
        else:
            ok, digest = False, None
        if not ok:
            return await self._challenge(device, credential, ds.INVALID_CREDENTIALS)
        nonce = _new_nonce()
        peer_row = await self.store.write(
            _authenticated, name, device, credentials.username, digest, nonce
        )
        return await self._accepted(device, peer_row, nonce)

    async def _accepted(
        self, device: dict[str, Any], peer_row: dict[str, Any], nonce: str
    ) -> ds.Authentication:
        """A new session of the authenticated device: its peer, and the next nonce."""
        self.runs.clear()
        features = json.loads(device["organisation_features"] or "{}")
        policy = DEFAULT_POLICY
        if self.deployment is not None:
            settings = await effective_settings_of(
                self.store, self.deployment, device["organisation_id"]
            )
            policy = str(settings.get("oma_ds", {}).get("conflict_policy") or DEFAULT_POLICY)
        peer = Peer(
            device["id"],
            device["organisation_id"],
            device["owner_id"],
            {kind: bool(features.get(feature, True)) for kind, feature in FEATURES.items()},
            json.loads(peer_row["devinf"] or "{}"),
            policy,
        )
        return ds.Authentication(
            ds.AUTHENTICATION_ACCEPTED,
            peer,
            challenge=(ds.AUTH_MD5, nonce),
            devinf_known=bool(peer.devinf),
        )

    async def _challenge(
        self, device: dict[str, Any] | None, credential: dict[str, Any] | None, status: int
    ) -> ds.Authentication:
        """How the client should try next: MD5 with a fresh nonce when the service has the
        owner's digest, else Basic."""
        if device is None or credential is None:
            return ds.Authentication(status, challenge=(ds.AUTH_BASIC, None))
        nonce = _new_nonce()
        await self.store.write(_put_nonce, device, nonce)
        return ds.Authentication(status, challenge=(ds.AUTH_MD5, nonce))

    # ------------------------------------------------------------------ datastores

    async def open_datastore(
        self, peer: object, server_uri: str, client_uri: str
    ) -> ds.DatastoreRun | int:
        assert isinstance(peer, Peer)
        kind = kind_of_uri(server_uri)
        if kind is None:
            return ds.NOT_FOUND
        if not peer.features.get(kind, True):
            return ds.FORBIDDEN
        found = await self.store.read(_collection_and_state, peer, kind)
        if found is None:
            await self.store.write(collection_unit, peer.organisation_id, peer.account_id, kind)
            found = await self.store.read(_collection_and_state, peer, kind)
            assert found is not None
        collection, state = found
        stores = peer.devinf.get("datastores", {})
        run = CollectionSync(
            store=self.store,
            organisation_id=peer.organisation_id,
            device_id=peer.device_id,
            collection_id=collection["id"],
            kind=kind,
            datastore=client_uri,
            state=ds.DatastoreState(
                client_anchor=state["client_anchor"] if state else None,
                server_anchor=state["server_anchor"] if state else None,
                refresh_requested=bool(state and state["refresh_requested"]),
            ),
            seen_version=state["seen_version"] if state else 0,
            policy=peer.policy,
            accepts=list(stores.get(client_uri, [])),
            changes=self.changes,
        )
        self.runs.append(run)
        return run

    async def save_devinf(self, peer: object, devinf: dict[str, object]) -> None:
        assert isinstance(peer, Peer)
        peer.devinf = devinf
        stores = devinf.get("datastores", {})
        for run in self.runs:  # a DevInf answered in package 3 reaches the open datastores
            if isinstance(stores, dict):
                run.accepts[:] = stores.get(run.datastore, [])
        await self.store.write(_put_devinf, peer, devinf)


def _collection_and_state(
    conn: sqlite3.Connection, peer: Peer, kind: str
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    collection = db.collection_of(conn, peer.account_id, kind)
    if collection is None:
        return None
    return collection, db.sync_state(conn, peer.device_id, collection["id"])


def _basic_password(data: str) -> str | None:
    try:
        text = base64.b64decode(data, validate=True).decode()
    except ValueError:
        return None
    return text.partition(":")[2]


def _nonce_bytes(nonce: str) -> bytes:
    """The nonce as the digest uses it: the bytes that were sent base64-encoded."""
    try:
        return base64.b64decode(nonce, validate=True)
    except ValueError:
        return nonce.encode()


def _new_nonce() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode()


def _put_nonce(conn: sqlite3.Connection, device: dict[str, Any], nonce: str) -> None:
    db.put_peer(
        conn,
        {
            "device_id": device["id"],
            "organisation_id": device["organisation_id"],
            "nonce": nonce,
            "updated_at": now(),
        },
    )


def _authenticated(
    conn: sqlite3.Connection,
    name: str,
    device: dict[str, Any],
    username: str,
    digest: str | None,
    nonce: str,
) -> dict[str, Any]:
    at = now()
    clear_attempts(conn, name)
    _put_nonce(conn, device, nonce)
    if digest is not None:
        db.put_credential(
            conn,
            {
                "account_id": device["owner_id"],
                "organisation_id": device["organisation_id"],
                "username": username,
                "digest": digest,
                "updated_at": at,
            },
        )
    update_device(conn, device["id"], {"last_seen_at": at})
    found = db.peer(conn, device["id"])
    assert found is not None
    return found


def _md5_checked(
    conn: sqlite3.Connection,
    name: str,
    device: dict[str, Any],
    credential: dict[str, Any],
    credentials: ds.Credentials,
    nonce: str,
) -> dict[str, Any] | None:
    """The MD5 digest against the device's current nonce, which ``nonce`` replaces whatever
    the outcome (one use only); on success the session's start is written too."""
    found = db.peer(conn, device["id"])
    current = found["nonce"] if found else None
    expected = _md5_b64(f"{credential['digest']}:".encode() + _nonce_bytes(current or ""))
    ok = (
        current is not None
        and credential["username"] == credentials.username
        and hmac.compare_digest(expected, credentials.data or "")
    )
    if not ok:
        _put_nonce(conn, device, nonce)
        return None
    return _authenticated(conn, name, device, credentials.username or "", None, nonce)


def _put_devinf(conn: sqlite3.Connection, peer: Peer, devinf: dict[str, object]) -> None:
    db.put_peer(
        conn,
        {
            "device_id": peer.device_id,
            "organisation_id": peer.organisation_id,
            "devinf": json.dumps(devinf),
            "updated_at": now(),
        },
    )


# --------------------------------------------------------------------------- device sessions


@dataclass(frozen=True)
class DsRequest:
    """One HTTP request of a sync client, parsed: ``token`` from the RespURI (None for the
    first message of a session), ``base_url`` where the service's OMA DS route is."""

    message: Message
    wbxml: bool
    token: str | None
    base_url: str


@dataclass(frozen=True)
class DsResponse:
    body: bytes
    wbxml: bool


async def known_sync_id(store: Store, sync_id: str) -> bool:
    """Whether a device of the inventory has this SyncML device id: for any other, the
    route answers without activating a session actor (:func:`refuse_unknown`)."""
    return bool(await store.read(db.devices_with_sync_id, sync_id))


async def refuse_unknown(
    store: Store, deployment: Deployment | None, request: DsRequest
) -> DsResponse:
    """The answer to a client whose device id is no inventory device's: a session logic of
    its own, used once and forgotten, gives exactly what an actor's would (the same
    challenge, the same work for a password), and no actor is kept for it. (The RespURI
    differs: a fresh token each time, where a known device's refused session keeps its own.)"""
    # At a RespURI it gave, such a client gets the same refusal again (not 404: the
    # session a known device's actor would keep there refuses it the same way).
    return await OmadsSessionLogic(store, deployment).handle(
        dataclasses.replace(request, token=None)
    )


class OmadsSessionLogic:
    """The SessionLogic of one sync client's DeviceSession actor: its SyncML sessions by
    RespURI token, and the last answer (a client that repeats a message gets it again).

    A new session that has not authenticated yet lives beside the current one: nobody can
    break into another's session by naming the same device id, and a client that answers a
    challenge at the RespURI it was given finds its session there.
    """

    def __init__(
        self,
        store: Store,
        deployment: Deployment | None = None,
        changes: PimChanges | None = None,
    ) -> None:
        self.backend = OmadsBackend(store, deployment, changes)
        self.sessions: dict[str, ds.DsSession] = {}
        #: The last answer: (RespURI token, SessionID, MsgID, body). A repeat is answered
        #: only at the same token, so that no other session (one refused or still
        #: unauthenticated, opened by anyone naming this device) can read it.
        self.last: tuple[str, str, str, bytes] | None = None

    async def handle(self, request: DsRequest) -> DsResponse:
        header = request.message.header
        if request.token is not None:
            session = self.sessions.get(request.token)
            if session is None or session.session_id != header.session_id:
                return self._answer(header_only_answer(header, ds.NOT_FOUND), request.wbxml)
            if self.last is not None and self.last[:3] == (
                request.token,
                header.session_id,
                header.msg_id,
            ):
                return DsResponse(self.last[3], request.wbxml)
            token = request.token
        else:
            token = secrets.token_urlsafe(18)
            session = ds.DsSession(
                backend=self.backend,
                session_id=header.session_id,
                resp_uri=f"{request.base_url}?s={token}",
                server_uri=header.target.loc_uri,
            )
            # At most one session waiting for its credentials beside the current one.
            for other in [t for t, s in self.sessions.items() if not s.authenticated]:
                del self.sessions[other]
            self.sessions[token] = session
        was_authenticated = session.authenticated
        session.wbxml = request.wbxml
        reply = await session.receive(request.message)
        if session.authenticated and not was_authenticated:
            self.sessions = {token: session}
        return self._remember(token, header, reply, request.wbxml)

    def _remember(self, token: str, header: SyncHdr, reply: Message, wbxml: bool) -> DsResponse:
        response = self._answer(reply, wbxml)
        self.last = (token, header.session_id, header.msg_id, response.body)
        return response

    @staticmethod
    def _answer(reply: Message, wbxml: bool) -> DsResponse:
        return DsResponse(encode_message(reply, wbxml), wbxml)

    async def close(self) -> None:
        """Nothing to hand over: a session's effects are written as they happen."""
