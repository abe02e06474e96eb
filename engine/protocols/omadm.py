"""The OMA DM 1.2 server side of one management session, sans-IO.

A :class:`DmSession` receives parsed SyncML messages (:mod:`engine.protocols.syncml`) and
answers each with one message. What spans the round trips of one session lives here: who
authenticated, the server's management commands still to send (``MaxMsgSize`` cuts them
into messages, a large value into chunks), which command of which *operation* each CmdID
was, and a large object half received. The rest of the system is reached only through
:class:`DmBackend`, declared here.

The packages of a session (OMA DM Protocol 1.2, sections 8 and 9):

1. client: credentials, Alert 1201 (client-initiated) or 1200 (answering a notification),
   the DevInfo nodes in a Replace, perhaps generic alerts (1226) and Windows' client event
   (1224, the login status or session type);
2. server: Status for the SyncHdr first, one Status per client command in order, then
   management commands (Get, Add, Replace, Delete, Exec, Atomic, Sequence), ``Final``;
3. client: Status per command, Results for each Get; a Results too large for one message
   comes in chunks (``MoreData``, ``Size`` in the first), each answered with 213 and an
   Alert 1222 asking for the next message;
4. server: Statuses, and more commands or none. A server message with ``Final`` and no
   command but Statuses ends the session.

Authentication (OMA DM Security 1.2): Basic, MD5 (``B64(H(B64(H(user:password)):nonce))``)
with a fresh nonce per session handed out in ``NextNonce`` of a ``Chal``, or HMAC over the
whole message in the ``x-syncml-hmac`` transport header. Failures answer 401 (wrong) or 407
(missing) with a ``Chal`` carrying a new nonce; success answers 212. A session whose device
is already known by its TLS client certificate (Windows) starts authenticated.

The server authenticates itself to the client the same way, with its own credentials on the
device (:class:`ServerCredential`, the DMAcc ``SRVCRED``): once the client authenticated, each
server message carries the server's MD5 ``Cred`` in its SyncHdr (or, when the client used
HMAC, an ``x-syncml-hmac`` header over the response), keyed with the *server nonce*. The
client names that nonce itself: a ``Chal`` in its Status for the server's SyncHdr carries
the ``NextNonce`` the server must use from then on (and in its next package 0). A client
that refuses the server's credentials (401/407 on the SyncHdr, 215 for each command) gets
the same commands again, signed with the nonce its ``Chal`` gave; refused again, the server
ends the session without reporting those commands (they are given again next session).
"""

from __future__ import annotations

import base64
import hashlib
import re
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
    Atomic,
    BadCommand,
    Chal,
    Command,
    Cred,
    Delete,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    SyncHdr,
    Target,
    encode_message,
    encoded_size,
)

# -- vocabulary (OMA DM Protocol 1.2, Alert and Status codes) --------------------------------

SERVER_INITIATED = 1200
CLIENT_INITIATED = 1201
NEXT_MESSAGE = 1222
SESSION_ABORT = 1223
CLIENT_EVENT = 1224  # Windows: login status / session type (MS-MDM 3.2.5.1)
GENERIC_ALERT = 1226
SESSION_ALERTS = frozenset({SERVER_INITIATED, CLIENT_INITIATED})

ACCEPTED_FOR_PROCESSING = 202
NOT_EXECUTED = 215
DEVICE_FULL = 420
PROTOCOL_VERSION_NOT_SUPPORTED = 513

AUTH_HMAC = "syncml:auth-MAC"
VER_PROTO = "DM/1.2"

#: Windows' unenrolment generic alert (MS-MDM, "Unenrollment").
UNENROL_ALERT_TYPE = "com.microsoft:mdm.unenrollment.userrequest"
LOGIN_STATUS_TYPE = "com.microsoft/MDM/LoginStatus"

#: The largest message the service takes; a client that takes less gets its own limit.
SERVER_MAX_MSG_SIZE = 64 * 1024
SERVER_MAX_OBJ_SIZE = 4 * 1024 * 1024
_MIN_MSG_SIZE = 1024
#: What one client package may report (Replace/Add, Results) before the server answers
#: 420 Device full: its values wait in memory until the package ends.
MAX_HELD_VALUES = 5000
MAX_HELD_BYTES = 8 * 1024 * 1024
#: The longest NextNonce the server keeps from a client.
MAX_NONCE = 256
#: The longest server nonce (decoded) a client may give the server to sign with; see
#: :func:`acceptable_server_nonce`.
MAX_SERVER_NONCE_BYTES = 32
#: How many times in a row a client may refuse the server's credentials before the server
#: ends the session.
MAX_SERVER_REFUSALS = 2
#: Room kept free in each message for what closes it (SyncBody, Final, SyncML, a Status).
_CLOSING_ROOM = 64
_MIN_CHUNK = 128


# -- authentication helpers (pure) ------------------------------------------------------------


def md5_b64(data: bytes) -> str:
    """``B64(MD5(data))``, the building block of SyncML MD5 and HMAC."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def user_digest(username: str, password: str) -> str:
    """``B64(H(username:password))``: what the server keeps to check MD5 and HMAC."""
    return md5_b64(f"{username}:{password}".encode())


def nonce_bytes(nonce: str) -> bytes:
    """The nonce as the digest uses it: the bytes sent base64-encoded in NextNonce."""
    try:
        return base64.b64decode(nonce, validate=True)
    except ValueError:
        return nonce.encode()


def acceptable_server_nonce(nonce: str) -> bool:
    """Whether the server takes ``nonce`` as the one it signs with next. The server's MD5
    credential over a nonce of the client's choosing is an oracle: a nonce shaped
    ``N:B64(H(body))`` would make it equal the HMAC of that body, or a package 0 digest,
    under the nonce ``N``. Devices' nonces are a few random bytes; one longer than
    :data:`MAX_SERVER_NONCE_BYTES` once decoded is refused."""
    if not nonce or len(nonce) > MAX_NONCE or not nonce.isprintable():
        return False
    return len(nonce_bytes(nonce)) <= MAX_SERVER_NONCE_BYTES


def md5_credential(digest: str, nonce: str) -> str:
    """The MD5 Cred data: ``B64(H(B64(H(user:password)):nonce))``."""
    return md5_b64(digest.encode() + b":" + nonce_bytes(nonce))


def hmac_mac(digest: str, nonce: str, body: bytes) -> str:
    """The HMAC of a message: ``B64(H(B64(H(user:password)):nonce:B64(H(body))))``."""
    return md5_b64(digest.encode() + b":" + nonce_bytes(nonce) + b":" + md5_b64(body).encode())


def hmac_header(username: str, mac: str) -> str:
    """The ``x-syncml-hmac`` header value (OMA DM Security 1.2, 5.5.2)."""
    return f'algorithm=MD5, username="{username}", mac={mac}'


@dataclass
class ServerCredential:
    """The server's credentials on the device (DMAcc ``AppAuth`` with ``AAuthLevel``
    ``SRVCRED``): its name (``AAuthName``), ``B64(H(name:password))`` and the server nonce
    the device expects (``AAuthData``), which the client replaces with each ``NextNonce``
    it sends. ``hmac``: the client authenticated with HMAC, so the server answers in the
    ``x-syncml-hmac`` header rather than with a ``Cred``."""

    name: str
    digest: str
    nonce: str | None
    hmac: bool = False

    def cred(self) -> Cred | None:
        """The MD5 ``Cred`` of the server's SyncHdr (None without a nonce or with HMAC)."""
        if self.nonce is None or self.hmac:
            return None
        return Cred(md5_credential(self.digest, self.nonce), Meta(type=AUTH_MD5, format="b64"))

    def mac_header(self, body: bytes) -> str | None:
        """The ``x-syncml-hmac`` header of a response body (only when the client uses HMAC)."""
        if self.nonce is None or not self.hmac:
            return None
        return hmac_header(self.name, hmac_mac(self.digest, self.nonce, body))


_HMAC_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))\s*(?:,|$)')


@dataclass(frozen=True)
class HmacHeader:
    """The ``x-syncml-hmac`` transport header (OMA DM Security 1.2, 5.5.2)."""

    algorithm: str
    username: str
    mac: str


def parse_hmac_header(value: str | None) -> HmacHeader | None:
    """``algorithm=MD5, username="x", mac=y`` → :class:`HmacHeader` (None if malformed)."""
    if not value or len(value) > 1024:
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(value):
        match = _HMAC_PARAM.match(value, position)
        if match is None or match.end() == position:
            return None
        params[match.group(1).lower()] = (
            match.group(2) if match.group(2) is not None else (match.group(3) or "")
        )
        position = match.end()
    if "username" not in params or "mac" not in params:
        return None
    return HmacHeader(params.get("algorithm", "MD5"), params["username"], params["mac"])


# -- what the session needs of the system ---------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Who the message says is calling: SyncHdr Source, its Cred, or the HMAC header."""

    device_id: str
    kind: str | None  # AUTH_BASIC, AUTH_MD5, AUTH_HMAC, or None without credentials
    data: str | None
    username: str | None
    body: bytes = b""  # the whole message as received (HMAC covers it)
    server_uri: str = ""  # the server address the client called (SyncHdr Target)


@dataclass(frozen=True)
class Authentication:
    """The outcome of :meth:`DmBackend.authenticate`: ``status`` 212 with the backend's
    ``peer``, or 401/407; ``challenge`` (type, nonce) says how to authenticate next;
    ``server``: the server's credentials on the device, once it has them (its messages are
    then signed)."""

    status: int
    peer: object | None = None
    challenge: tuple[str, str] | None = None
    server: ServerCredential | None = None


@dataclass(frozen=True)
class NodeValue:
    """One node of the management tree as the device reported or the server wrote it."""

    uri: str
    data: str | None
    format: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class ClientAlert:
    """An alert of the client other than the session alert: 1224 or 1226 (generic)."""

    code: int
    type: str | None
    format: str | None
    source: str | None
    data: str | None
    correlator: str | None = None


@dataclass
class Operation:
    """Management commands the server sends for one purpose (a generic command, an inventory
    read): ``key`` is the backend's name for it; the outcome comes back under that key."""

    key: str
    commands: list[Command]


@dataclass
class CommandOutcome:
    """The device's Status of one command of an operation (inner commands included)."""

    name: str
    uris: list[str]
    status: int


@dataclass
class OperationOutcome:
    key: str
    outcomes: list[CommandOutcome] = field(default_factory=list)
    results: list[NodeValue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(200 <= outcome.status < 300 for outcome in self.outcomes)


class DmBackend(Protocol):
    async def authenticate(self, credentials: Credentials) -> Authentication: ...

    async def alerted(self, peer: object, alert: ClientAlert) -> int:
        """A generic alert or client event; the Status code to answer it with."""

    async def server_judged(self, peer: object, status: int, nonce: str | None) -> None:
        """The client's Status for the server's SyncHdr when it says something: on the first
        signed server message (212: it authenticated the server; a plain 2xx: it did not
        check), 212 later, and ``nonce``, its ``NextNonce`` for the server, the nonce of the
        server's next credential and of its next package 0 to this device."""

    async def exchange(
        self,
        peer: object,
        session_alert: int,
        reported: list[NodeValue],
        outcomes: list[OperationOutcome],
        more: bool,
    ) -> list[Operation]:
        """Once per server package (and whenever something must be kept): the nodes the
        client sent on its own (DevInfo in package 1), the operations whose commands all
        have their Status (and Results); with ``more``, what the server sends next (asked
        for each package until it is empty). One call, so the backend can keep it all in
        one write."""


# -- the session ------------------------------------------------------------------------------


@dataclass
class _Sent:
    """An outgoing command waiting for its Status."""

    operation: _Running
    name: str
    uris: list[str]
    top: bool
    answered: bool = False
    #: What to send again if the client refuses the server's credentials (top-level
    #: commands and chunks), and from which byte of its value.
    origin: _Outgoing | None = None
    offset: int = 0


@dataclass
class _Running:
    operation: Operation
    waiting: int = 0  # top-level commands without a final Status
    outcome: OperationOutcome | None = None


@dataclass
class _Outgoing:
    """A top-level command waiting to be sent (``offset``: bytes of a large value sent)."""

    running: _Running
    command: Command
    offset: int = 0


@dataclass
class _Incoming:
    """A large Results value arriving in chunks (``received``: its bytes so far, kept under
    ``limit``, the declared Size or the server's MaxObjSize, whichever is smaller)."""

    cmd_ref: str
    uri: str
    parts: list[str]
    size: int | None
    meta: Meta | None
    received: int
    limit: int
    #: The status that refused the value (413, 424): its further chunks are dropped.
    refused: int | None = None


@dataclass
class DmSession:
    """One OMA DM session of one device (see the module docstring for the packages)."""

    backend: DmBackend
    session_id: str
    server_uri: str
    resp_uri: str | None = None
    wbxml: bool = False
    peer: object | None = None
    session_alert: int | None = None
    max_msg_size: int = SERVER_MAX_MSG_SIZE
    msg_id: int = 0
    next_cmd_id: int = 1
    outgoing: deque[_Outgoing] = field(default_factory=deque)
    sent: dict[tuple[str, str], _Sent] = field(default_factory=dict)
    running: list[_Running] = field(default_factory=list)
    #: A large Results being received.
    chunk: _Incoming | None = None
    finished: bool = False
    drained: bool = False
    reported: list[NodeValue] = field(default_factory=list)
    #: Bytes of node values held for the backend (what a client package reported): bounded
    #: by :data:`MAX_HELD_BYTES` however many messages the package spans.
    held: int = 0
    #: The server's credentials on the device (None: the device knows none of the server's).
    server: ServerCredential | None = None
    #: The client refused the server's credentials in its Status for the SyncHdr of this
    #: server message (its commands come back with 215 and are sent again, or dropped).
    refused_msg: str | None = None
    server_refusals: int = 0
    #: Server messages that went signed, and whether the client answered one yet.
    signed: set[str] = field(default_factory=set)
    judged: bool = False
    resend: list[_Outgoing] = field(default_factory=list)

    @property
    def authenticated(self) -> bool:
        return self.peer is not None

    async def receive(
        self, message: Message, body: bytes = b"", hmac: HmacHeader | None = None
    ) -> Message:
        """Answer one message of the client (``body``/``hmac``: for HMAC authentication)."""
        header = message.header
        if header.meta is not None and header.meta.max_msg_size:
            self.max_msg_size = min(
                SERVER_MAX_MSG_SIZE, max(header.meta.max_msg_size, _MIN_MSG_SIZE)
            )
        reply = _Reply(self, header)
        if not header.ver_proto.upper().startswith("DM/1."):
            # An OMA DS (or other SyncML) client at the DM service: refused as a whole.
            reply.header_status(PROTOCOL_VERSION_NOT_SUPPORTED, None)
            for command in message.commands:
                if not isinstance(command, Status):
                    reply.status_of(command, PROTOCOL_VERSION_NOT_SUPPORTED)
            self.finished = True
            return reply.finish(final=True)
        if not self.authenticated:
            credentials = _credentials(header, body, hmac)
            outcome = await self.backend.authenticate(credentials)
            if outcome.status != AUTHENTICATION_ACCEPTED:
                reply.header_status(outcome.status, outcome.challenge)
                for command in message.commands:
                    if not isinstance(command, Status):
                        reply.status_of(command, outcome.status)
                return reply.finish(final=True)
            self.peer = outcome.peer
            self.server = outcome.server
            if self.server is not None and credentials.kind == AUTH_HMAC:
                self.server.hmac = True
            reply.sign()
            reply.header_status(AUTHENTICATION_ACCEPTED, outcome.challenge)
        else:
            reply.header_status(OK, None)
        more_wanted = False
        for command in message.commands:
            if isinstance(command, Alert) and command.data == str(NEXT_MESSAGE):
                more_wanted = True
            await self._command(command, reply)
        if self.resend:  # refused by the client: these go again, first
            self.outgoing.extendleft(reversed(self.resend))
            self.resend = []
        receiving = self.chunk is not None or not message.final
        if self.finished:
            await self._exchange(more=False)  # keep what the client said and answered
            return reply.finish(final=True)
        if receiving and not more_wanted:
            # The client's package goes on: acknowledge and ask for its next message.
            reply.add(Alert(cmd_id="", data=str(NEXT_MESSAGE)))
            return reply.finish(final=False)
        more = not self.outgoing and not self.drained
        for operation in await self._exchange(more=more):
            self._queue(operation)
        if more and not self.outgoing:
            self.drained = True
        reply.pack(self.outgoing)
        if self.outgoing:
            return reply.finish(final=False)
        if not reply.commands_sent:
            self.finished = True  # Final without commands: the session is over
        return reply.finish(final=True)

    # ---------------------------------------------------------------- client commands

    async def _command(self, command: Command, reply: _Reply) -> None:
        if isinstance(command, Status):
            await self._status(command)
            return
        if isinstance(command, BadCommand):
            reply.status_of(command, command.status)
        elif isinstance(command, Alert):
            await self._alert(command, reply)
        elif isinstance(command, Replace | Add):
            values = [_node_value(item, command.meta) for item in command.items if item.source]
            if len(values) != len(command.items):
                reply.status_of(command, INCOMPLETE_COMMAND)
                return
            if len(self.reported) + len(values) > MAX_HELD_VALUES or not all(
                self._hold(value) for value in values
            ):
                reply.status_of(command, DEVICE_FULL)
                return
            self.reported += values
            reply.status_of(command, OK)
        elif isinstance(command, Results):
            await self._results(command, reply)
        else:
            # A DM client does not send Get, Delete, Exec, Atomic... to the server.
            reply.status_of(command, OPTIONAL_FEATURE_NOT_SUPPORTED)

    async def _alert(self, alert: Alert, reply: _Reply) -> None:
        code = int(alert.data) if alert.data and alert.data.isdigit() else 0
        if code in SESSION_ALERTS:
            self.session_alert = code
            reply.status_of(alert, OK)
        elif code == NEXT_MESSAGE:
            reply.status_of(alert, OK)
        elif code == SESSION_ABORT:
            reply.status_of(alert, OK)
            self.finished = True
        elif code in (GENERIC_ALERT, CLIENT_EVENT):
            if not alert.items:
                reply.status_of(alert, INCOMPLETE_COMMAND)
                return
            status = OK
            for item in alert.items:
                meta = item.meta
                data = (
                    item.data.decode("utf-8", "replace")
                    if isinstance(item.data, bytes)
                    else item.data
                )
                client_alert = ClientAlert(
                    code,
                    meta.type if meta else None,
                    meta.format if meta else None,
                    item.source.loc_uri if item.source else None,
                    data if isinstance(data, str) else None,
                    alert.correlator,
                )
                status = max(status, await self.backend.alerted(self.peer, client_alert))
            reply.status_of(alert, status)
        else:
            reply.status_of(alert, OPTIONAL_FEATURE_NOT_SUPPORTED)

    async def _results(self, results: Results, reply: _Reply) -> None:
        sent = self.sent.get((results.msg_ref or "", results.cmd_ref))
        if sent is None:
            sent = next((s for (msg, ref), s in self.sent.items() if ref == results.cmd_ref), None)
        if sent is None or sent.name != "Get":
            reply.status_of(results, NOT_FOUND)
            return
        outcome = _outcome_of(sent.operation)
        for item in results.items:
            value = _node_value(item, results.meta)
            incoming = self.chunk
            if incoming is not None and (incoming.cmd_ref, incoming.uri) == (
                results.cmd_ref,
                value.uri,
            ):
                pass
            elif item.more_data:
                meta = item.meta or results.meta
                size = meta.size if meta else None
                limit = min(size, SERVER_MAX_OBJ_SIZE) if size is not None else SERVER_MAX_OBJ_SIZE
                incoming = _Incoming(results.cmd_ref, value.uri, [], size, meta, 0, limit)
                if size is not None and size > SERVER_MAX_OBJ_SIZE:
                    incoming.refused = REQUEST_ENTITY_TOO_LARGE
                self.chunk = incoming
            else:
                incoming = None
            if incoming is not None:
                data = value.data or ""
                incoming.received += len(data.encode())
                if incoming.refused is None and incoming.received > incoming.limit:
                    # More than declared (424) or than the server takes (413): dropped.
                    too_large = incoming.size is None or incoming.size > SERVER_MAX_OBJ_SIZE
                    incoming.refused = REQUEST_ENTITY_TOO_LARGE if too_large else SIZE_MISMATCH
                if incoming.refused is not None:
                    incoming.parts.clear()  # its chunks still to come get the same answer
                    if not item.more_data:
                        self.chunk = None
                    reply.status_of(results, incoming.refused)
                    return
                incoming.parts.append(data)
                if item.more_data:
                    reply.status_of(results, CHUNK_ACCEPTED)
                    return
                self.chunk = None
                joined = "".join(incoming.parts)
                if incoming.size is not None and incoming.size != len(joined.encode()):
                    reply.status_of(results, SIZE_MISMATCH)
                    return
                meta = incoming.meta
                value = NodeValue(
                    value.uri, joined, meta.format if meta else None, meta.type if meta else None
                )
            if not self._hold(value):
                reply.status_of(results, DEVICE_FULL)
                return
            outcome.results.append(value)
        reply.status_of(results, OK)

    def _hold(self, value: NodeValue) -> bool:
        """Room for one more node value of this package (the backend gets them at its end)."""
        size = len(value.uri) + len((value.data or "").encode())
        if self.held + size > MAX_HELD_BYTES:
            return False
        self.held += size
        return True

    async def _status(self, status: Status) -> None:
        if status.cmd == "SyncHdr":
            await self._server_judged(status)
            return
        sent = self.sent.get((status.msg_ref, status.cmd_ref))
        if sent is None or sent.answered:
            return
        code = int(status.data) if status.data.isdigit() else COMMAND_FAILED
        if code == CHUNK_ACCEPTED:
            return  # a chunk of ours arrived; the rest follows
        if code == NOT_EXECUTED and status.msg_ref == self.refused_msg:
            self._refused(sent)
            return
        sent.answered = True
        running = sent.operation
        _outcome_of(running).outcomes.append(CommandOutcome(sent.name, sent.uris, code))
        if sent.top:
            running.waiting -= 1

    async def _server_judged(self, status: Status) -> None:
        """The client's Status for the server's SyncHdr: how it took the server's
        credentials, and (``Chal``) the nonce the server must use from now on."""
        code = int(status.data) if status.data.isdigit() else 0
        meta = status.chal.meta if status.chal is not None else None
        nonce = meta.next_nonce if meta is not None else None
        server = self.server  # None: a nonce for credentials this session does not have
        if nonce is not None and not acceptable_server_nonce(nonce):
            nonce = None
        answered = status.msg_ref in self.signed
        first = answered and not self.judged
        self.judged |= first
        # A 2xx for a message the server did not sign says nothing of its credentials: a
        # client cannot declare itself bootstrapped that way. A challenge (401/407) with a
        # nonce still counts: a device whose bootstrap answer was lost asks for them so.
        heard = answered or code in (INVALID_CREDENTIALS, MISSING_CREDENTIALS)
        if (
            server is not None
            and heard
            and (nonce is not None or code == AUTHENTICATION_ACCEPTED or first)
        ):
            if nonce is not None:
                server.nonce = nonce
            await self.backend.server_judged(self.peer, code, nonce)
        if code in (INVALID_CREDENTIALS, MISSING_CREDENTIALS):
            self.refused_msg = status.msg_ref
            self.server_refusals += 1
        elif 200 <= code < 300:
            self.server_refusals = 0

    def _refused(self, sent: _Sent) -> None:
        """A command the client did not execute because it refused the server's
        credentials: sent again (signed with the client's new nonce) or, when the server
        cannot satisfy the client, dropped with its operation (never reported: what it
        carried stays to be given in a later session) and the session ends."""
        sent.answered = True
        retry = self.server is not None and self.server_refusals <= MAX_SERVER_REFUSALS - 1
        origin = sent.origin
        if retry and origin is not None:
            origin.offset = sent.offset
            if not any(o is origin for o in self.outgoing) and not any(
                o is origin for o in self.resend
            ):
                self.resend.append(origin)
            return
        if not retry:
            dropped = [sent.operation, *(o.running for o in (*self.outgoing, *self.resend))]
            self.running = [r for r in self.running if not any(r is d for d in dropped)]
            for key in [k for k, s in self.sent.items() if any(s.operation is d for d in dropped)]:
                del self.sent[key]
            self.outgoing.clear()
            self.resend = []
            self.drained = True  # nothing more goes in this session

    async def _exchange(self, *, more: bool) -> list[Operation]:
        """At the end of the client's package: hand the backend what the client reported and
        every operation whose commands all have their Status (a Results may follow its
        Status in a later message of the same package); with ``more``, ask what to send
        next."""
        done = [
            r
            for r in self.running
            if r.waiting <= 0 and not self._chunk_open(r) and not self._receiving(r)
        ]
        for running in done:
            self.running.remove(running)
            for key in [k for k, s in self.sent.items() if s.operation is running]:
                del self.sent[key]
        reported, self.reported = self.reported, []
        self.held = sum(
            len(v.uri) + len((v.data or "").encode())
            for r in self.running
            for v in _outcome_of(r).results
        )
        if not (done or reported or more):
            return []
        return await self.backend.exchange(
            self.peer,
            self.session_alert or 0,
            reported,
            [_outcome_of(running) for running in done],
            more,
        )

    def _receiving(self, running: _Running) -> bool:
        """A large Results of this operation is still arriving."""
        chunk = self.chunk
        return chunk is not None and any(
            ref == chunk.cmd_ref and sent.operation is running
            for (_, ref), sent in self.sent.items()
        )

    def _chunk_open(self, running: _Running) -> bool:
        return any(o.running is running for o in self.outgoing)

    # ---------------------------------------------------------------- server commands

    def _queue(self, operation: Operation) -> None:
        running = _Running(operation, waiting=len(operation.commands))
        running.outcome = OperationOutcome(operation.key)
        self.running.append(running)
        for command in operation.commands:
            self.outgoing.append(_Outgoing(running, command))

    def cmd_id(self) -> str:
        value = str(self.next_cmd_id)
        self.next_cmd_id += 1
        return value

    def register(
        self,
        msg_id: str,
        command: Command,
        running: _Running,
        top: bool,
        origin: _Outgoing | None = None,
    ) -> None:
        """Number ``command`` (and what it holds) and remember what each CmdID was."""
        command.cmd_id = self.cmd_id()
        uris = [i.target.loc_uri for i in _items(command) if i.target is not None]
        self.sent[(msg_id, command.cmd_id)] = _Sent(running, command.name, uris, top, origin=origin)
        if isinstance(command, Atomic | Sequence):
            for inner in command.commands:
                self.register(msg_id, inner, running, False)


def _outcome_of(running: _Running) -> OperationOutcome:
    if running.outcome is None:
        running.outcome = OperationOutcome(running.operation.key)
    return running.outcome


def _items(command: Command) -> list[Item]:
    if isinstance(command, Exec):
        return [command.item]
    return list(getattr(command, "items", []) or [])


def _node_value(item: Item, command_meta: Meta | None) -> NodeValue:
    meta = item.meta or command_meta
    data = item.data
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    elif data is not None and not isinstance(data, str):
        data = None  # an embedded document: not a node value
    uri = item.source.loc_uri if item.source else (item.target.loc_uri if item.target else "")
    return NodeValue(uri, data, meta.format if meta else None, meta.type if meta else None)


def _credentials(header: SyncHdr, body: bytes, hmac: HmacHeader | None) -> Credentials:
    server = header.target.loc_uri
    if hmac is not None:
        return Credentials(header.source.loc_uri, AUTH_HMAC, hmac.mac, hmac.username, body, server)
    cred = header.cred
    username = header.source.loc_name
    if cred is None:
        return Credentials(header.source.loc_uri, None, None, username, body, server)
    kind = (cred.meta.type if cred.meta and cred.meta.type else AUTH_BASIC).lower()
    if kind == AUTH_BASIC:
        try:
            text = base64.b64decode(cred.data, validate=True).decode()
        except ValueError:
            text = ""
        username = text.partition(":")[0] or username
    return Credentials(header.source.loc_uri, kind, cred.data, username, body, server)


def basic_password(data: str) -> str | None:
    """The password of a Basic Cred (``B64(user:password)``), None when malformed."""
    try:
        text = base64.b64decode(data, validate=True).decode()
    except ValueError:
        return None
    return text.partition(":")[2]


class _Reply:
    """One server message being put together under the client's MaxMsgSize."""

    def __init__(self, session: DmSession, request: SyncHdr) -> None:
        self.session = session
        self.msg_ref = request.msg_id
        session.msg_id += 1
        self.msg_id = str(session.msg_id)
        self.header = SyncHdr(
            session_id=request.session_id,
            msg_id=self.msg_id,
            target=Target(request.source.loc_uri),
            source=Source(request.target.loc_uri),
            ver_proto=VER_PROTO,
            resp_uri=session.resp_uri,
            meta=Meta(max_msg_size=session.max_msg_size, max_obj_size=SERVER_MAX_OBJ_SIZE),
            cred=_room_for_cred(session),
        )
        self.request = request
        self.commands: list[Command] = []
        self.commands_sent = 0
        self.size = _header_size(self.header, session.wbxml)

    def sign(self) -> None:
        """The server's credentials in the header, once the session knows them (nothing
        else is in the message yet)."""
        self.header.cred = _room_for_cred(self.session)
        self.size = _header_size(self.header, self.session.wbxml)

    def header_status(self, code: int, challenge: tuple[str, str] | None) -> None:
        chal = None
        if challenge is not None:
            kind, nonce = challenge
            chal = Chal(Meta(type=kind, format="b64", next_nonce=nonce))
        self.add(
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

    def status_of(self, command: Command, code: int) -> None:
        """The Status of a client command: its CmdID and name, the addresses it named."""
        targets: list[str] = []
        sources: list[str] = []
        for item in _items(command) if not isinstance(command, BadCommand) else []:
            if item.target is not None:
                targets.append(item.target.loc_uri)
            if item.source is not None:
                sources.append(item.source.loc_uri)
        self.add(
            Status(
                cmd_id="",
                msg_ref=self.msg_ref,
                cmd_ref=command.cmd_id or "0",
                cmd=command.name,
                data=str(code),
                target_refs=targets[:1] if isinstance(command, Results) else targets,
                source_refs=sources[:1] if isinstance(command, Results) else sources,
            )
        )

    def add(self, command: Status | Alert) -> None:
        """A command that goes now whatever its size (Statuses must all be answered)."""
        command.cmd_id = self.session.cmd_id()
        self.commands.append(command)
        self.size += measure(command, self.session.wbxml)

    def room(self) -> int:
        return self.session.max_msg_size - _CLOSING_ROOM - self.size

    def pack(self, outgoing: deque[_Outgoing]) -> None:
        """Take management commands while they fit; cut a large value into chunks (one
        chunk per message: the client acknowledges it and asks for the next with 1222)."""
        wbxml = self.session.wbxml
        while outgoing:
            pending = outgoing[0]
            if pending.offset == 0:
                cost = measure(pending.command, wbxml) + _ID_ROOM * _count(pending.command)
                if cost <= self.room():
                    self._whole(pending, cost)
                    outgoing.popleft()
                    continue
                if not _chunkable(pending.command):
                    if not self.commands_sent:  # fits no message: alone, the client refuses
                        self._whole(pending, cost)
                        outgoing.popleft()
                    return
                if self.commands_sent and cost <= self.session.max_msg_size // 2:
                    return  # fits the next message whole
            if self._chunk(pending) and pending.offset >= len(_value_bytes(pending.command)):
                outgoing.popleft()
            return

    def _whole(self, pending: _Outgoing, cost: int) -> None:
        self.session.register(self.msg_id, pending.command, pending.running, True, pending)
        self.commands.append(pending.command)
        self.size += cost
        self.commands_sent += 1

    def _chunk(self, pending: _Outgoing) -> bool:
        """Put the next chunk of a large Replace/Add value into this message."""
        session = self.session
        original = pending.command
        assert isinstance(original, Replace | Add)
        item = original.items[0]
        data = _value_bytes(original)
        start = pending.offset
        first = start == 0
        meta = item.meta or Meta()
        piece_item = Item(
            target=item.target,
            meta=Meta(format=meta.format, type=meta.type, size=len(data) if first else None),
            data="",
            more_data=True,
        )
        piece = type(original)(cmd_id="0", items=[piece_item])
        overhead = encoded_size(piece, session.wbxml) + 16
        take = self.room() - overhead
        if take < _MIN_CHUNK:
            return False
        end = min(len(data), pending.offset + take)
        while end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        piece_item.data = data[pending.offset : end].decode()
        piece_item.more_data = end < len(data)
        pending.offset = end
        command_id = session.cmd_id()
        piece.cmd_id = command_id
        uris = [item.target.loc_uri] if item.target else []
        # Every chunk has its own CmdID; the last one's Status is the command's.
        session.sent[(self.msg_id, command_id)] = _Sent(
            pending.running,
            original.name,
            uris,
            not piece_item.more_data,
            origin=pending,
            offset=start,
        )
        self.commands.append(piece)
        self.size += encoded_size(piece, session.wbxml)
        self.commands_sent += 1
        return True

    def finish(self, *, final: bool) -> Message:
        server = self.session.server
        if self.header.cred is not None and server is not None:
            # Signed with the nonce the client gave in this very message, if it gave one
            # (an MD5 Cred has the same size whatever the nonce), or not at all without one.
            self.header.cred = server.cred()
        if server is not None and server.nonce is not None and len(self.session.signed) < 64:
            self.session.signed.add(self.msg_id)  # a Cred, or the HMAC header of its body
        return Message(self.header, self.commands, final)


def _room_for_cred(session: DmSession) -> Cred | None:
    """The server's MD5 Cred as the message is put together: the real one, or one of the
    same size while the session waits for the client's nonce (:meth:`_Reply.finish`)."""
    server = session.server
    if server is None or server.hmac:
        return None
    return server.cred() or Cred("=" * 24, Meta(type=AUTH_MD5, format="b64"))


#: Room for the CmdID a command is given after it was measured (and its inner commands').
_ID_ROOM = 6
#: Encoded sizes by shape: a Status or a plain Get/Exec/Delete whose texts are plain ASCII
#: takes as many bytes as its texts' lengths say, whatever the texts are.
_SIZES: dict[tuple[object, ...], int] = {}


def _plain(text: str) -> bool:
    return text.isascii() and not any(c in text for c in "&<>\r")


def _shape(command: Command) -> tuple[object, ...] | None:
    """What decides the encoded size of the most common commands, or None."""
    if isinstance(command, Status):
        if command.chal or command.items or command.cred:
            return None
        texts = [command.cmd_id, command.msg_ref, command.cmd_ref, *command.target_refs]
        texts += command.source_refs
        if not all(_plain(t) for t in texts):
            return None
        return (
            "Status",
            command.cmd,
            command.data,
            tuple(len(t) for t in texts),
            len(command.target_refs),
        )
    if isinstance(command, Get | Exec | Delete):
        items = _items(command)
        if len(items) != 1 or command.no_resp or command.cred or command.meta:
            return None
        item = items[0]
        if item.source or item.meta or item.data or item.target is None or item.more_data:
            return None
        if not (_plain(command.cmd_id) and _plain(item.target.loc_uri)):
            return None
        return (command.name, len(command.cmd_id), len(item.target.loc_uri))
    return None


def measure(command: Command, wbxml: bool) -> int:
    """``encoded_size`` of ``command``, remembered by shape for the common commands."""
    shape = _shape(command)
    if shape is None:
        return encoded_size(command, wbxml)
    key = (wbxml, *shape)
    size = _SIZES.get(key)
    if size is None:
        size = encoded_size(command, wbxml)
        if len(_SIZES) < 4096:
            _SIZES[key] = size
    return size


def _count(command: Command) -> int:
    """How many commands ``command`` is, its inner commands included."""
    return 1 + sum(_count(inner) for inner in getattr(command, "commands", ()))


def _chunkable(command: Command) -> bool:
    return (
        isinstance(command, Replace | Add)
        and len(command.items) == 1
        and isinstance(command.items[0].data, str)
        and command.items[0].target is not None
    )


def _value_bytes(command: Command) -> bytes:
    data = command.items[0].data  # type: ignore[union-attr]
    return data.encode() if isinstance(data, str) else b""


def _header_size(header: SyncHdr, wbxml: bool) -> int:
    """The bytes of a message with this header and no commands (remembered by shape)."""
    texts = [header.session_id, header.msg_id, header.target.loc_uri, header.source.loc_uri]
    texts.append(header.resp_uri or "")
    meta = header.meta
    cred = header.cred
    if (cred is not None and (cred.meta is None or cred.meta.type != AUTH_MD5)) or not all(
        _plain(t) for t in texts
    ):
        return len(encode_message(Message(header, [], True), wbxml))
    key = (
        "SyncHdr",
        wbxml,
        tuple(len(t) for t in texts),
        header.resp_uri is None,
        header.target.loc_name,
        header.source.loc_name,
        (len(str(meta.max_msg_size)), len(str(meta.max_obj_size))) if meta else None,
        len(cred.data) if cred is not None else None,
    )
    size = _SIZES.get(key)
    if size is None:
        size = len(encode_message(Message(header, [], True), wbxml))
        if len(_SIZES) < 4096:
            _SIZES[key] = size
    return size


# -- package 0: the server's notification -------------------------------------------------------


def notification(
    server_id: str,
    server_digest: str,
    nonce: str,
    session_id: int,
    *,
    ui_mode: int = 0,
    initiator: int = 1,
    version: int = 12,
) -> bytes:
    """The package 0 notification (OMA DM Notification Initiated Session 1.2, 6) that an
    SMS or WAP-push gateway carries to a device to make it open a session (Alert 1200).

    The trigger is a 64-bit header (version 10 bits, UI mode 2, initiator 1, 27 reserved,
    session id 16, length of the server id 8) and the server id; before it goes the MD5
    digest ``H(B64(H(server-id:password)):nonce:B64(H(trigger)))`` (``server_digest`` is
    ``B64(H(server-id:password))`` of the server's credentials on the device, ``nonce`` the
    device's current server nonce), which the device checks before it calls back.
    """
    if not 0 <= session_id < 1 << 16:
        raise ValueError("the session id is 16 bits")
    server = server_id.encode()
    if len(server) > 255:
        raise ValueError("the server id is at most 255 bytes")
    bits = (version << 54) | (ui_mode << 52) | (initiator << 51) | (session_id << 8) | len(server)
    trigger = bits.to_bytes(8, "big") + server
    return notification_digest(server_digest, nonce, trigger) + trigger


def notification_digest(server_digest: str, nonce: str, trigger: bytes) -> bytes:
    """The 16-byte MD5 digest before a trigger:
    ``H(B64(H(server-id:password)):nonce:B64(H(trigger)))``."""
    return hashlib.md5(
        server_digest.encode() + b":" + nonce_bytes(nonce) + b":" + md5_b64(trigger).encode()
    ).digest()


def read_notification(package: bytes) -> tuple[bytes, int, int, int, int, str]:
    """(digest, version, UI mode, initiator, session id, server id) of a package 0."""
    if len(package) < 24:
        raise ValueError("a notification has at least 24 bytes")
    digest, trigger = package[:16], package[16:]
    bits = int.from_bytes(trigger[:8], "big")
    length = bits & 0xFF
    server = trigger[8 : 8 + length]
    if len(server) != length:
        raise ValueError("the server id is cut short")
    return (
        digest,
        bits >> 54,
        (bits >> 52) & 0x3,
        (bits >> 51) & 0x1,
        (bits >> 8) & 0xFFFF,
        server.decode(),
    )
