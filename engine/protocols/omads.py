"""The OMA DS 1.2 server side of one SyncML session, sans-IO.

A :class:`DsSession` receives parsed SyncML messages (:mod:`engine.protocols.syncml`) and
answers each with one message. It holds what spans the HTTP round trips of one session:
who authenticated, which datastores were alerted and in which mode, the package being
received, the server's outgoing package still to send (``MaxMsgSize`` cuts it into
messages), and large objects half received or half sent. Everything it needs of the rest of
the system goes through :class:`DsBackend` and :class:`DatastoreRun`, declared here.

The packages of a session (SyncML DS Protocol 1.2, section 5):

1. client: credentials, DevInf (Put/Get), one Alert per datastore with its anchors;
2. server: Status for each, Results (DevInf), one Alert per datastore (mode and its own
   anchors): 508 *refresh required* when the client's Last anchor is not the one the server
   stored, and the server's Alert then asks for a slow sync (201);
3. client: one Sync per datastore with its changes (several messages without ``Final``;
   the server answers each with Statuses and Alert 222 *next message*);
4. server: Statuses of the client's changes and one Sync per datastore with the server's
   changes (several messages when ``MaxMsgSize`` requires; the client asks for each next one
   with Alert 222); an item larger than what fits is sent in chunks (``MoreData``, ``Size``,
   the client acknowledges each chunk with 213);
5. client: Statuses and ``Map`` (its ids for the items the server added);
6. server: Statuses. Only now is the sync committed for the datastore (anchors, the change
   number seen): a session cut short leaves the anchors as they were, so the next sync
   repeats what was lost.

Every command of the client gets a Status with the right MsgRef/CmdRef, whatever else is
wrong with the message.
"""

from __future__ import annotations

import base64
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from .syncml import (
    AUTH_BASIC as AUTH_BASIC,
    AUTH_MD5 as AUTH_MD5,
    AUTHENTICATION_ACCEPTED as AUTHENTICATION_ACCEPTED,
    BAD_REQUEST as BAD_REQUEST,
    CHUNK_ACCEPTED as CHUNK_ACCEPTED,
    COMMAND_FAILED as COMMAND_FAILED,
    COMMAND_NOT_ALLOWED as COMMAND_NOT_ALLOWED,
    FORBIDDEN as FORBIDDEN,
    INCOMPLETE_COMMAND as INCOMPLETE_COMMAND,
    INVALID_CREDENTIALS as INVALID_CREDENTIALS,
    MISSING_CREDENTIALS as MISSING_CREDENTIALS,
    NOT_FOUND as NOT_FOUND,
    OK as OK,
    OPTIONAL_FEATURE_NOT_SUPPORTED as OPTIONAL_FEATURE_NOT_SUPPORTED,
    REQUEST_ENTITY_TOO_LARGE as REQUEST_ENTITY_TOO_LARGE,
    SIZE_MISMATCH as SIZE_MISMATCH,
    Add,
    Alert,
    Anchor,
    BadCommand,
    Chal,
    Command,
    Delete,
    Get,
    Item,
    Map,
    Message,
    Meta,
    Put,
    Replace,
    Results,
    Source,
    Status,
    Sync,
    SyncHdr,
    Target,
    encode_message,
)
from .wbxml import Element
from .wbxml_tables import DEVINF_NS, METINF_NS

# -- vocabulary -----------------------------------------------------------------------------

#: Sync modes by Alert code (SyncML DS Protocol 1.2, 10.1); 206-210 are the server-alerted
#: variants of 200-205 and mean the same once the client alerts them back.
MODES = {
    200: "two-way",
    201: "slow",
    202: "one-way-from-client",
    203: "refresh-from-client",
    204: "one-way-from-server",
    205: "refresh-from-server",
}
_SERVER_ALERTED = {206: 200, 207: 202, 208: 203, 209: 204, 210: 205}
MODE_CODES = {name: code for code, name in MODES.items()}
NEXT_MESSAGE = 222

ITEM_ADDED = 201
CONFLICT_CLIENT_WON = 208
CONFLICT_DUPLICATED = 209
ITEM_NOT_DELETED = 211
CONFLICT_SERVER_WON = 419
REFRESH_REQUIRED = 508

DEVINF_URI = "./devinf12"
DEVINF_TYPE_XML = "application/vnd.syncml-devinf+xml"
DEVINF_TYPE_WBXML = "application/vnd.syncml-devinf+wbxml"

#: The largest message the service accepts; a client that accepts less gets the same limit
#: back, so that both directions of a session cut objects the same way.
SERVER_MAX_MSG_SIZE = 1024 * 1024
SERVER_MAX_OBJ_SIZE = 8 * 1024 * 1024
#: Room kept free in every message for what closes it (SyncBody, Final, SyncML).
_CLOSING_ROOM = 64
#: A chunk of a large object is not made smaller than this.
_MIN_CHUNK = 256


# -- what the session needs of the system ----------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What the SyncHdr said about who is calling."""

    sync_id: str  # the client's device id (SyncHdr Source LocURI)
    kind: str | None  # AUTH_BASIC, AUTH_MD5, or None without Cred
    data: str | None
    username: str | None  # Source LocName (MD5 carries no user name of its own)


@dataclass(frozen=True)
class Authentication:
    """The outcome of :meth:`DsBackend.authenticate`.

    ``peer`` is the backend's handle of the device and its owner when ``status`` is 212;
    ``challenge`` (type and nonce) tells the client how to authenticate next time (after
    212) or now (after 401/407).
    """

    status: int
    peer: object | None = None
    challenge: tuple[str, str | None] | None = None
    #: The service has the device's DevInf from an earlier session (else it asks with Get).
    devinf_known: bool = False


@dataclass(frozen=True)
class DatastoreState:
    """What the service remembers of a datastore of this device."""

    client_anchor: str | None
    server_anchor: str | None
    refresh_requested: bool


@dataclass(frozen=True)
class ClientChange:
    """One Add, Replace or Delete of the client: ``luid`` is the client's id of the item."""

    command: str
    luid: str
    data: str | None
    content_type: str | None


@dataclass(frozen=True)
class ChangeOutcome:
    status: int
    server_id: str | None = None


@dataclass(frozen=True)
class ServerChange:
    """One change of the server for the device: Add (``server_id``), Replace or Delete
    (``luid``, the device's id of the item)."""

    command: str
    server_id: str
    luid: str | None
    data: str | None
    content_type: str | None


class DatastoreRun(Protocol):
    """One datastore in one session: applies the client's changes, says the server's."""

    state: DatastoreState

    async def begin(self, mode: str) -> None:
        """The mode is settled (after any 508): prepare (a refresh forgets the id map...)."""

    async def apply(self, changes: list[ClientChange]) -> list[ChangeOutcome]:
        """Apply the client's changes, one outcome each, in one write."""

    async def outgoing(self) -> list[ServerChange]:
        """The server's changes for the device (after the client's package is complete)."""

    async def map(self, pairs: list[tuple[str, str]]) -> int:
        """Record the client's ids (``(server_id, luid)``); the Status code of the Map."""

    async def finish(self, client_anchor: str, server_anchor: str) -> None:
        """The session completed: commit anchors, change number, mode, time."""


class DsBackend(Protocol):
    async def authenticate(self, credentials: Credentials) -> Authentication: ...

    async def open_datastore(
        self, peer: object, server_uri: str, client_uri: str
    ) -> DatastoreRun | int:
        """The datastore the client names, or a Status code: 404 unknown, 403 switched off."""

    async def save_devinf(self, peer: object, devinf: dict[str, object]) -> None: ...


# -- DevInf ---------------------------------------------------------------------------------


def _leaf(tag: str, text: str) -> Element:
    return Element(tag, DEVINF_NS, [text])


def _datastore_devinf(uri: str, rx: list[tuple[str, str]], tx: list[tuple[str, str]]) -> Element:
    children: list[Element | str | bytes] = [
        _leaf("SourceRef", uri),
        _leaf("DisplayName", uri),
        _leaf("MaxGUIDSize", "32"),
    ]
    for index, (ct, ver) in enumerate(rx):
        tag = "Rx-Pref" if index == 0 else "Rx"
        children.append(Element(tag, DEVINF_NS, [_leaf("CTType", ct), _leaf("VerCT", ver)]))
    for index, (ct, ver) in enumerate(tx):
        tag = "Tx-Pref" if index == 0 else "Tx"
        children.append(Element(tag, DEVINF_NS, [_leaf("CTType", ct), _leaf("VerCT", ver)]))
    caps = [_leaf("SyncType", str(n)) for n in range(1, 8)]
    children.append(Element("SyncCap", DEVINF_NS, caps))  # type: ignore[arg-type]
    return Element("DataStore", DEVINF_NS, children)


_VCARD = [("text/vcard", "3.0"), ("text/x-vcard", "2.1")]
_ICAL = [("text/calendar", "2.0"), ("text/x-vcalendar", "1.0")]
_NOTE = [("text/plain", "1.0")]
#: The service's datastores: their URIs and the formats they take and give.
SERVER_DATASTORES = (("addressbook", _VCARD), ("calendar", _ICAL), ("todo", _ICAL), ("memo", _NOTE))


def server_devinf(server_id: str) -> Element:
    """The service's DevInf 1.2 (``./devinf12``)."""
    children: list[Element | str | bytes] = [
        _leaf("VerDTD", "1.2"),
        _leaf("Man", "EMM"),
        _leaf("Mod", "EMM OMA DS server"),
        _leaf("OEM", "EMM"),
        _leaf("FwV", "1.0"),
        _leaf("SwV", "1.0"),
        _leaf("HwV", "1.0"),
        _leaf("DevID", server_id),
        _leaf("DevTyp", "server"),
        Element("UTC", DEVINF_NS),
        Element("SupportLargeObjs", DEVINF_NS),
        Element("SupportNumberOfChanges", DEVINF_NS),
    ]
    for uri, formats in SERVER_DATASTORES:
        children.append(_datastore_devinf(uri, formats, formats))
    return Element("DevInf", DEVINF_NS, children)


def read_devinf(devinf: Element) -> dict[str, object]:
    """What the service keeps of a client's DevInf: identity and, per datastore, the formats
    it receives (preferred first)."""
    info: dict[str, object] = {}
    stores: dict[str, list[list[str]]] = {}
    for child in devinf.elements():
        if child.tag in ("Man", "Mod", "SwV", "FwV", "DevID", "DevTyp"):
            info[child.tag] = child.text
        elif child.tag == "DataStore":
            ref = ""
            formats: list[list[str]] = []
            for part in child.elements():
                if part.tag == "SourceRef":
                    ref = part.text
                elif part.tag in ("Rx-Pref", "Rx"):
                    ct = part.find("CTType")
                    ver = part.find("VerCT")
                    entry = [ct.text if ct else "", ver.text if ver else ""]
                    if part.tag == "Rx-Pref":
                        formats.insert(0, entry)
                    else:
                        formats.append(entry)
            if ref:
                stores[ref] = formats
    info["datastores"] = stores
    return info


# -- the session ----------------------------------------------------------------------------


@dataclass
class _Datastore:
    server_uri: str
    client_uri: str
    mode: str
    run: DatastoreRun
    client_next: str
    server_next: str
    #: A large object being received.
    chunk: _Incoming | None = None


@dataclass
class _Incoming:
    """A large object arriving in chunks (``received``: its bytes so far, kept under
    ``limit``, the declared Size or the server's MaxObjSize, whichever is smaller)."""

    command: str
    luid: str
    parts: list[str]
    size: int | None
    content_type: str | None
    received: int
    limit: int
    #: The status that refused the object (413, 424): its further chunks are dropped.
    refused: int | None = None


@dataclass
class _Outgoing:
    """A server change waiting in the outgoing package (``offset``: bytes already sent)."""

    store: _Datastore
    change: ServerChange
    offset: int = 0
    encoded: bytes | None = None


Pending = Status | Alert | Results | Get | Put | _Outgoing


@dataclass
class DsSession:
    """One SyncML session of one device (see the module docstring for the packages)."""

    backend: DsBackend
    session_id: str
    resp_uri: str
    server_uri: str
    wbxml: bool = False
    peer: object | None = None
    phase: str = "init"  # init -> client-sync -> server-sync -> mapping -> done
    stores: dict[str, _Datastore] = field(default_factory=dict)
    pending: deque[Pending] = field(default_factory=deque)
    max_msg_size: int = SERVER_MAX_MSG_SIZE
    msg_id: int = 0
    client_id: str = ""
    devinf_known: bool = False

    @property
    def authenticated(self) -> bool:
        return self.peer is not None

    # ---------------------------------------------------------------- one message

    async def receive(self, message: Message) -> Message:
        """Answer one message of the client."""
        header = message.header
        self.client_id = header.source.loc_uri
        if header.meta is not None and header.meta.max_msg_size:
            self.max_msg_size = min(SERVER_MAX_MSG_SIZE, header.meta.max_msg_size)
        reply = _Reply(self, header)
        if not self.authenticated:
            outcome = await self.backend.authenticate(_credentials(header))
            if outcome.status != AUTHENTICATION_ACCEPTED:
                reply.header_status(outcome.status, outcome.challenge)
                for command in message.commands:
                    if not isinstance(command, Status):
                        reply.status_of(command, outcome.status)
                for status in reply.statuses:
                    reply.add(status)
                return reply.finish(final=True)
            self.peer = outcome.peer
            self.devinf_known = outcome.devinf_known
            reply.header_status(AUTHENTICATION_ACCEPTED, outcome.challenge)
        else:
            reply.header_status(OK, None)
        for command in message.commands:
            await self._command(command, reply)
        await self._advance(message.final, reply)
        return self._pack(reply, client_final=message.final)

    async def _command(self, command: Command, reply: _Reply) -> None:
        if isinstance(command, Status):
            return  # the client's verdicts on our commands; nothing waits on them
        if isinstance(command, BadCommand):
            reply.status_of(command, command.status)
        elif isinstance(command, Alert):
            await self._alert(command, reply)
        elif isinstance(command, Put):
            await self._put(command, reply)
        elif isinstance(command, Get):
            self._get(command, reply)
        elif isinstance(command, Results):
            reply.status_of(command, OK)
            for item in command.items:
                if isinstance(item.data, Element):
                    await self.backend.save_devinf(self.peer, read_devinf(item.data))
        elif isinstance(command, Sync):
            await self._sync(command, reply)
        elif isinstance(command, Map):
            await self._map(command, reply)
        else:
            reply.status_of(command, OPTIONAL_FEATURE_NOT_SUPPORTED)

    # ---------------------------------------------------------------- package 1: Alerts

    async def _alert(self, alert: Alert, reply: _Reply) -> None:
        code = int(alert.data) if alert.data and alert.data.isdigit() else 0
        if code == NEXT_MESSAGE:
            reply.status_of(alert, OK)
            return
        code = _SERVER_ALERTED.get(code, code)
        item = alert.items[0] if alert.items else None
        if code not in MODES or item is None or item.target is None or item.source is None:
            reply.status_of(alert, BAD_REQUEST if code in MODES else OPTIONAL_FEATURE_NOT_SUPPORTED)
            return
        if self.phase != "init":
            reply.status_of(alert, COMMAND_NOT_ALLOWED)
            return
        anchor = item.meta.anchor if item.meta is not None else None
        if anchor is None or not anchor.next:
            reply.status_of(alert, INCOMPLETE_COMMAND)
            return
        server_uri, client_uri = item.target.loc_uri, item.source.loc_uri
        opened = await self.backend.open_datastore(self.peer, server_uri, client_uri)
        if isinstance(opened, int):
            reply.status_of(alert, opened)
            return
        mode = MODES[code]
        status = OK
        state = opened.state
        anchors_needed = mode in ("two-way", "one-way-from-client", "one-way-from-server")
        if anchors_needed and (
            state.refresh_requested
            or state.client_anchor is None
            or anchor.last != state.client_anchor
        ):
            status, mode = REFRESH_REQUIRED, "slow"
        store = _Datastore(
            server_uri,
            client_uri,
            mode,
            opened,
            client_next=anchor.next,
            server_next=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f".{time.time_ns()}",
        )
        await opened.begin(mode)
        self.stores[server_uri] = store
        # The Status echoes the client's Next anchor (MetInf inside Data).
        anchor_item = Item(
            data=Element("Anchor", METINF_NS, [Element("Next", METINF_NS, [anchor.next])])
        )
        reply.status_of(alert, status, items=[anchor_item])
        self.pending.append(
            Alert(
                cmd_id="",
                data=str(MODE_CODES[mode]),
                items=[
                    Item(
                        target=Target(client_uri),
                        source=Source(server_uri),
                        meta=Meta(
                            anchor=Anchor(next=store.server_next, last=state.server_anchor),
                            max_obj_size=SERVER_MAX_OBJ_SIZE,
                        ),
                    )
                ],
            )
        )

    async def _put(self, put: Put, reply: _Reply) -> None:
        item = put.items[0] if put.items else None
        target = item.source.loc_uri if item and item.source else None
        if item is None or target not in (DEVINF_URI, "./devinf11", "./devinf10"):
            reply.status_of(put, NOT_FOUND if item else INCOMPLETE_COMMAND)
            return
        if not isinstance(item.data, Element) or item.data.tag != "DevInf":
            reply.status_of(put, BAD_REQUEST)
            return
        await self.backend.save_devinf(self.peer, read_devinf(item.data))
        self.devinf_known = True
        reply.status_of(put, OK)

    def _get(self, get: Get, reply: _Reply) -> None:
        item = get.items[0] if get.items else None
        target = item.target.loc_uri if item and item.target else None
        if target != DEVINF_URI:
            reply.status_of(get, NOT_FOUND)
            return
        reply.status_of(get, OK)
        reply.results.append(
            Results(
                cmd_id="",
                cmd_ref=get.cmd_id,
                msg_ref=reply.msg_ref,
                meta=Meta(type=DEVINF_TYPE_WBXML if self.wbxml else DEVINF_TYPE_XML),
                items=[Item(source=Source(DEVINF_URI), data=server_devinf(self.server_uri))],
            )
        )

    # ---------------------------------------------------------------- package 3: Sync

    async def _sync(self, sync: Sync, reply: _Reply) -> None:
        store = self.stores.get(sync.target.loc_uri) if sync.target else None
        if store is None or self.phase not in ("client-sync", "init"):
            code = NOT_FOUND if store is None else COMMAND_NOT_ALLOWED
            reply.status_of(sync, code)
            for inner in sync.commands:
                reply.status_of(inner, code)
            return
        reply.status_of(sync, OK)
        receives = store.mode not in ("one-way-from-server", "refresh-from-server")
        batch: list[tuple[Command, Item, ClientChange]] = []
        for inner in sync.commands:
            if not isinstance(inner, Add | Replace | Delete):
                code = (
                    inner.status
                    if isinstance(inner, BadCommand)
                    else OPTIONAL_FEATURE_NOT_SUPPORTED
                )
                reply.status_of(inner, code)
                continue
            if not receives:
                reply.status_of(inner, COMMAND_NOT_ALLOWED)
                continue
            for item in inner.items:
                change = self._client_change(store, inner, item, reply)
                if change is not None:
                    batch.append((inner, item, change))
        if not batch:
            return
        outcomes = await store.run.apply([change for _, _, change in batch])
        for (inner, item, _), outcome in zip(batch, outcomes, strict=True):
            reply.item_status(inner, item, outcome.status)

    def _client_change(
        self, store: _Datastore, command: Add | Replace | Delete, item: Item, reply: _Reply
    ) -> ClientChange | None:
        """The change an item stands for; None when answered already (a chunk, an error)."""
        loc = item.source or item.target
        if loc is None:
            reply.item_status(command, item, INCOMPLETE_COMMAND)
            return None
        luid = loc.loc_uri
        if isinstance(command, Delete):
            return ClientChange("Delete", luid, None, None)
        meta = item.meta or command.meta
        content_type = meta.type if meta else None
        data = item.data
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if isinstance(data, Element):
            reply.item_status(command, item, BAD_REQUEST)
            return None
        if store.chunk is not None and store.chunk.luid == luid:
            incoming = store.chunk
        elif item.more_data:
            size = meta.size if meta else None
            limit = min(size, SERVER_MAX_OBJ_SIZE) if size is not None else SERVER_MAX_OBJ_SIZE
            incoming = _Incoming(command.name, luid, [], size, content_type, 0, limit)
            if size is not None and size > SERVER_MAX_OBJ_SIZE:
                incoming.refused = REQUEST_ENTITY_TOO_LARGE
            store.chunk = incoming
        else:
            if store.chunk is not None:  # a new item while another was half sent: lost
                store.chunk = None
            if data is None:
                reply.item_status(command, item, INCOMPLETE_COMMAND)
                return None
            return ClientChange(command.name, luid, data, content_type)
        content_type = content_type or incoming.content_type
        incoming.received += len((data or "").encode())
        if incoming.refused is None and incoming.received > incoming.limit:
            # More than declared (424) or than the server takes (413): the object is dropped.
            too_large = incoming.size is None or incoming.size > SERVER_MAX_OBJ_SIZE
            incoming.refused = REQUEST_ENTITY_TOO_LARGE if too_large else SIZE_MISMATCH
        if incoming.refused is not None:
            # Its chunks still to come get the same answer and are not kept.
            incoming.parts.clear()
            if not item.more_data:
                store.chunk = None
            reply.item_status(command, item, incoming.refused)
            return None
        incoming.parts.append(data or "")
        if item.more_data:
            reply.item_status(command, item, CHUNK_ACCEPTED)
            return None
        store.chunk = None
        joined = "".join(incoming.parts)
        size = incoming.size
        if size is not None and size not in (
            len(joined.encode()),
            len(joined.replace("\r\n", "\n").replace("\n", "\r\n").encode()),
        ):
            reply.item_status(command, item, SIZE_MISMATCH)
            return None
        return ClientChange(incoming.command, luid, joined, content_type)

    # ---------------------------------------------------------------- package 5: Map

    async def _map(self, command: Map, reply: _Reply) -> None:
        store = self.stores.get(command.target.loc_uri)
        if store is None:
            reply.status_of(command, NOT_FOUND)
            return
        pairs = [(item.target.loc_uri, item.source.loc_uri) for item in command.map_items]
        reply.status_of(command, await store.run.map(pairs))

    # ---------------------------------------------------------------- packages in turn

    async def _advance(self, final: bool, reply: _Reply) -> None:
        if not final:
            return
        if self.phase == "init":
            if not self.devinf_known:
                # What formats the device takes: asked for once, answered in package 3.
                self.devinf_known = True
                self.pending.append(
                    Get(
                        cmd_id="",
                        meta=Meta(type=DEVINF_TYPE_WBXML if self.wbxml else DEVINF_TYPE_XML),
                        items=[Item(target=Target(DEVINF_URI))],
                    )
                )
            self.phase = "client-sync"
        elif self.phase == "client-sync":
            for store in self.stores.values():
                self.pending.append(_Outgoing(store, ServerChange("Sync", "", None, None, None)))
                for change in await store.run.outgoing():
                    self.pending.append(_Outgoing(store, change))
            self.phase = "server-sync"
        elif self.phase == "mapping":
            for store in self.stores.values():
                await store.run.finish(store.client_next, store.server_next)
            self.phase = "done"

    def _pack(self, reply: _Reply, *, client_final: bool) -> Message:
        """Fill the reply with what is pending, up to the client's MaxMsgSize."""
        sending_package = self.phase == "server-sync" or bool(self.pending)
        for status in reply.statuses:
            reply.add(status)
        for results in reply.results:
            self.pending.appendleft(results)
        while self.pending:
            if not reply.offer(self.pending[0]):
                break
            self.pending.popleft()
        if self.pending:
            return reply.finish(final=False)
        if self.phase == "server-sync":
            self.phase = "mapping"
        if not client_final and not sending_package:
            reply.add(
                Alert(
                    cmd_id="",
                    data=str(NEXT_MESSAGE),
                    items=[Item(target=Target(self.client_id), source=Source(self.server_uri))],
                )
            )
            return reply.finish(final=False)
        return reply.finish(final=True)


def _credentials(header: SyncHdr) -> Credentials:
    cred = header.cred
    kind = None
    username = header.source.loc_name
    data = None
    if cred is not None:
        kind = (cred.meta.type if cred.meta and cred.meta.type else AUTH_BASIC).lower()
        data = cred.data
        if kind == AUTH_BASIC:
            try:
                text = base64.b64decode(cred.data, validate=True).decode()
            except ValueError:
                text = ""
            username = text.partition(":")[0] or username
    return Credentials(header.source.loc_uri, kind, data, username)


class _Reply:
    """One message of the server being put together, and what it may still take."""

    def __init__(self, session: DsSession, request: SyncHdr) -> None:
        self.session = session
        self.msg_ref = request.msg_id
        session.msg_id += 1
        self.header = SyncHdr(
            session_id=request.session_id,
            msg_id=str(session.msg_id),
            target=Target(request.source.loc_uri),
            source=Source(request.target.loc_uri),
            resp_uri=session.resp_uri,
            meta=Meta(max_msg_size=session.max_msg_size, max_obj_size=SERVER_MAX_OBJ_SIZE),
        )
        self.request = request
        self.statuses: list[Status] = []
        self.results: list[Results] = []
        self.commands: list[Command] = []
        self.next_cmd_id = 1
        self.base = self._measure([])
        self.size = self.base
        self.open_sync: Sync | None = None

    # statuses -----------------------------------------------------------------

    def header_status(self, code: int, challenge: tuple[str, str | None] | None) -> None:
        chal = None
        if challenge is not None:
            kind, nonce = challenge
            chal = Chal(Meta(type=kind, format="b64", next_nonce=nonce))
        self.statuses.append(
            Status(
                cmd_id="",
                msg_ref=self.msg_ref,
                cmd_ref="0",
                cmd="SyncHdr",
                data=str(code),
                target_refs=[self.request.target.loc_uri],
                source_refs=[self.request.source.loc_uri],
                chal=chal,
            )
        )

    def status_of(self, command: Command, code: int, items: list[Item] | None = None) -> None:
        """The Status of a whole command (its CmdID, name, and the addresses it named)."""
        targets: list[str] = []
        sources: list[str] = []
        if isinstance(command, Alert | Sync) or hasattr(command, "items"):
            for item in getattr(command, "items", []) or []:
                if item.target is not None:
                    targets.append(item.target.loc_uri)
                if item.source is not None:
                    sources.append(item.source.loc_uri)
        if isinstance(command, Sync | Map):
            if command.target is not None:
                targets.append(command.target.loc_uri)
            if command.source is not None:
                sources.append(command.source.loc_uri)
        self.statuses.append(
            Status(
                cmd_id="",
                msg_ref=self.msg_ref,
                cmd_ref=command.cmd_id or "0",
                cmd=command.name,
                data=str(code),
                target_refs=targets,
                source_refs=sources,
                items=items or [],
            )
        )

    def item_status(self, command: Command, item: Item, code: int) -> None:
        self.statuses.append(
            Status(
                cmd_id="",
                msg_ref=self.msg_ref,
                cmd_ref=command.cmd_id or "0",
                cmd=command.name,
                data=str(code),
                target_refs=[item.target.loc_uri] if item.target else [],
                source_refs=[item.source.loc_uri] if item.source else [],
            )
        )

    # packing ------------------------------------------------------------------

    def _measure(self, commands: list[Command]) -> int:
        return len(encode_message(Message(self.header, commands, True), self.session.wbxml))

    def _cmd_id(self) -> str:
        value = str(self.next_cmd_id)
        self.next_cmd_id += 1
        return value

    def add(self, command: Status | Alert | Results | Get | Put) -> None:
        """Add a command that must go now (statuses of this message)."""
        command.cmd_id = self._cmd_id()
        self.commands.append(command)
        self.size += self._measure([command]) - self.base
        self.open_sync = None

    def room(self) -> int:
        return self.session.max_msg_size - _CLOSING_ROOM - self.size

    def offer(self, pending: Pending) -> bool:
        """Add ``pending`` if it fits (or the part of a large object that fits)."""
        if not isinstance(pending, _Outgoing):
            cost = self._measure([pending]) - self.base
            if cost > self.room() and self.commands[1:]:
                return False
            self.add(pending)
            return True
        sync = self.open_sync
        store = pending.store
        wrapper = 0
        if sync is None or sync.target is None or sync.target.loc_uri != store.client_uri:
            sync = Sync(cmd_id="", target=Target(store.client_uri), source=Source(store.server_uri))
            wrapper = self._measure([sync]) - self.base
            if wrapper > self.room():
                return False
        if pending.change.command == "Sync":  # the datastore's Sync, maybe without changes
            self._open(sync, wrapper)
            return True
        command, cost = self._change_command(pending, self.room() - wrapper)
        if command is None:
            return False
        self._open(sync, wrapper)
        command.cmd_id = self._cmd_id()
        sync.commands.append(command)
        self.size += cost
        # A chunk ends the message: the rest follows once the client has acknowledged it.
        return not command.items[0].more_data

    def _open(self, sync: Sync, wrapper: int) -> None:
        if sync is not self.open_sync:
            sync.cmd_id = self._cmd_id()
            self.commands.append(sync)
            self.size += wrapper
            self.open_sync = sync

    def _change_command(self, pending: _Outgoing, room: int) -> tuple[Command | None, int]:
        change = pending.change
        if change.command == "Delete":
            command: Command = Delete(cmd_id="0", items=[Item(target=Target(change.luid or ""))])
            cost = self._measure([command]) - self.base
            return (command, cost) if cost <= room or not self.commands[1:] else (None, 0)
        data = (change.data or "").encode()
        first = pending.offset == 0
        rest = data[pending.offset :]
        item = Item(meta=Meta(type=change.content_type) if first else None)
        if change.command == "Add":
            item.source = Source(change.server_id)
        else:
            item.target = Target(change.luid or "")
            item.source = Source(change.server_id)
        cls = Add if change.command == "Add" else Replace
        item.data = rest.decode()
        command = cls(cmd_id="0", items=[item])
        cost = self._measure([command]) - self.base
        if cost <= room:
            return command, cost
        if first and cost <= self.session.max_msg_size // 2 and self.commands[1:]:
            return None, 0  # fits a message of its own: wait for the next one
        # A large object: send what fits now, the rest in the next messages.
        item.data = ""
        overhead = self._measure([cls(cmd_id="0", items=[item])]) - self.base
        take = room - overhead - 64
        if take < _MIN_CHUNK:
            return None, 0
        if first:
            item.meta = Meta(type=change.content_type, size=len(data))
        while True:
            end = min(len(rest), take)
            while end > 0 and end < len(rest) and (rest[end] & 0xC0) == 0x80:
                end -= 1
            item.data = rest[:end].decode()
            item.more_data = end < len(rest)
            command = cls(cmd_id="0", items=[item])
            cost = self._measure([command]) - self.base
            if cost <= room or take <= _MIN_CHUNK:
                break
            take -= cost - room + 16
        pending.offset += end
        return command, cost

    def finish(self, *, final: bool) -> Message:
        return Message(self.header, self.commands, final)
