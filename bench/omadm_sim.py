"""OMA DM 1.2 client simulators: a plain OMA DM phone and a Windows device.

:class:`DmClient` speaks OMA DM 1.2 as a DM client does: package 1 (Alert 1201 or 1200, its
DevInfo in a Replace), Basic or MD5 credentials (it keeps the NextNonce the server hands out
and answers 401/407 challenges within the session), XML or WBXML, its own MaxMsgSize and the
server's, large objects both ways (MoreData, Size, 213 and Alert 1222). Its management tree
is a dict of node URI → value; it answers Get, Add, Replace, Delete, Exec, Atomic (all or
nothing) and Sequence on it, and records what it executed.

Once its DM account (``./DMAcc/<x>``) holds the server's credentials (``AppAuth`` with
``AAuthLevel`` ``SRVCRED``, e.g. from the server's bootstrap), it authenticates the server
as OMA DM Security 1.2 says: every server message must carry the server's MD5 ``Cred`` (or
an ``x-syncml-hmac`` header) keyed with the server nonce it keeps (``AAuthData``); the first
one that does gets 212 and a ``Chal`` with the next server nonce, one that does not gets
401/407 with a ``Chal`` and 215 for each of its commands, executed never. A package 0
notification (:meth:`DmClient.notified`) opens a session only when its digest is right
for the server nonce it keeps; the digest of the ``SRVCRED`` secret and the nonce, as
OMA DM Notification Initiated Session 1.2 says.

:func:`windows_client` makes the same client speak as Windows does after enrolment
(:mod:`bench.windows_sim`): over TLS with the enrolment's client certificate, at the
management URL with ``?mode=Maintenance&Platform=WoA``, with Alert 1224 (login status) in
package 1 and no SyncML credentials (the certificate is the identity).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import ssl
import tempfile
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization

from engine.protocols import omadm as dm, omadm_dmacc as dmacc
from engine.protocols.syncml import (
    Add,
    Alert,
    Atomic,
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
    content_type,
    encode_message,
    encoded_size,
    parse_message,
)

from .http1 import KeepAliveClient

_sessions = itertools.count(1)
ALREADY_EXISTS = 418
ATOMIC_FAILED = 507
#: Nodes a DM client never lets a server read (DMAcc: Add and Replace only).
_UNREADABLE = ("/AAuthSecret", "/AAuthData")


class SessionFailed(Exception):
    """The server refused the session (``status`` of its SyncHdr Status)."""

    def __init__(self, status: int, text: str = "") -> None:
        super().__init__(f"{status} {text}")
        self.status = status


def plain_tree(device_id: str) -> dict[str, str]:
    """The standard objects of a plain OMA DM phone."""
    return {
        "./DevInfo/DevId": device_id,
        "./DevInfo/Man": "Simulated",
        "./DevInfo/Mod": "DM Phone 1",
        "./DevInfo/DmV": "1.2",
        "./DevInfo/Lang": "en-GB",
        "./DevDetail/DevTyp": "phone",
        "./DevDetail/OEM": "Simulated",
        "./DevDetail/FwV": "1.0.7",
        "./DevDetail/SwV": "14.2",
        "./DevDetail/HwV": "rev B",
        "./DevDetail/LrgObj": "true",
    }


@dataclass
class DmClient:
    """One OMA DM client and its management tree.

    ``http``: an ``httpx.AsyncClient``, or for load tests a ``bench.http1.KeepAliveClient``
    (the same ``post``), whose lower CPU leaves more of the machine to the service.
    """

    http: httpx.AsyncClient | KeepAliveClient
    url: str
    device_id: str
    username: str = ""
    password: str = ""
    wbxml: bool = False
    max_msg_size: int = 16 * 1024
    tree: dict[str, str] = field(default_factory=dict)
    auth: str | None = dm.AUTH_BASIC  # None: no SyncML credentials (a certificate)
    nonce: str | None = None
    login_status: str | None = None  # Windows: Alert 1224
    query: str = ""
    executed: list[str] = field(default_factory=list)
    exec_data: list[str | None] = field(default_factory=list)
    alerts: list[tuple[str, str]] = field(default_factory=list)  # generic alerts to send
    round_trips: int = 0
    statuses: list[Status] = field(default_factory=list)  # every Status the server sent
    commands_seen: int = 0
    #: The client's Status code for each server SyncHdr (212/200: the server authenticated
    #: itself, 401/407: refused), and the notifications it took and discarded.
    server_verdicts: list[int] = field(default_factory=list)
    notifications: list[bool] = field(default_factory=list)
    server_hmac: str | None = None
    _body: bytes = b""

    def __post_init__(self) -> None:
        if not self.tree:
            self.tree = plain_tree(self.device_id)

    # ------------------------------------------------------------------ one session

    async def notified(self, package: bytes) -> bool:
        """A package 0 notification arrived (by SMS/WAP push): checked with the server's
        credentials of the account its server id names, then a session (Alert 1200, the
        notification's session id) or nothing. Whether the session was opened."""
        try:
            mac, version, _ui, _initiator, session, server_id = dm.read_notification(package)
        except (ValueError, UnicodeDecodeError):
            self.notifications.append(False)
            return False
        account = dmacc.read_account(self.tree, server_id)
        server = account.credentials.get(dmacc.SRVCRED) if account else None
        nonce = self._server_nonce(server)
        ok = (
            version == 12
            and server is not None
            and nonce is not None
            and hmac.compare_digest(
                mac,
                dm.notification_digest(
                    dm.user_digest(server_id, server.secret), nonce, package[16:]
                ),
            )
        )
        self.notifications.append(ok)
        if ok:
            await self.session(alert=dm.SERVER_INITIATED, session_id=format(session, "X"))
        return ok

    async def session(self, alert: int = dm.CLIENT_INITIATED, session_id: str = "") -> None:
        """Run one whole management session."""
        session_id = session_id or str(next(_sessions))
        account = dmacc.read_account(self.tree)
        server = account.credentials.get(dmacc.SRVCRED) if account else None
        trusted = False  # the server authenticated itself in this session
        msg_ids = itertools.count(1)
        target = self.url
        outgoing: list[Command] = self._package1(alert)
        final = True
        chunk_in: dict[str, list[str]] = {}
        pending_results: list[Results] = []
        server_max = self.max_msg_size
        while True:
            msg_id = str(next(msg_ids))
            message = Message(self._header(session_id, msg_id), [], final)
            commands, pending_results, more = self._fit(outgoing, pending_results, server_max)
            for number, command in enumerate(commands, 1):
                command.cmd_id = str(number)
            message.commands = commands
            message.final = not more
            reply = await self._post(target, message)
            header_status = next(
                (c for c in reply.commands if isinstance(c, Status) and c.cmd == "SyncHdr"), None
            )
            if header_status is None:
                raise SessionFailed(500, "no SyncHdr Status")
            code = int(header_status.data)
            if header_status.chal is not None:
                meta = header_status.chal.meta
                kind = (meta.type or dm.AUTH_BASIC).lower()
                known = {k.lower(): k for k in (dm.AUTH_BASIC, dm.AUTH_MD5, dm.AUTH_HMAC)}
                if self.auth is not None:
                    self.auth = known.get(kind, kind)
                if meta.next_nonce:
                    self.nonce = meta.next_nonce
            if reply.header.resp_uri:
                target = reply.header.resp_uri
            if reply.header.meta and reply.header.meta.max_msg_size:
                server_max = reply.header.meta.max_msg_size
            if code in (dm.INVALID_CREDENTIALS, dm.MISSING_CREDENTIALS):
                if self.auth is None or getattr(self, "_retried", False):
                    raise SessionFailed(code, "credentials refused")
                self._retried = True
                outgoing = self._package1(alert)
                continue
            if code not in (dm.OK, dm.AUTHENTICATION_ACCEPTED):
                raise SessionFailed(code)
            self._retried = False
            self.statuses += [c for c in reply.commands if isinstance(c, Status)]
            verdict, refused = self._judge_server(reply, server, trusted)
            trusted = trusted or (server is not None and not refused)
            answers: list[Command] = [verdict]
            wants_next = False
            server_commands = [c for c in reply.commands if not isinstance(c, Status)]
            for command in server_commands:
                if refused:  # an unauthenticated server's commands are not executed
                    answers.append(self._status(reply, command, dm.NOT_EXECUTED))
                    continue
                if isinstance(command, Alert) and command.data == str(dm.NEXT_MESSAGE):
                    wants_next = True
                    answers.append(self._status(reply, command, dm.OK))
                    continue
                self.commands_seen += 1
                answers += self._execute(reply, command, chunk_in, pending_results)
            if more and not refused:
                outgoing = answers
                continue
            if wants_next and pending_results:
                outgoing = answers
                continue
            real = [c for c in server_commands if not isinstance(c, Alert)]
            if reply.final and not real and not pending_results:
                return  # the server ended the session
            if not reply.final:
                answers.append(Alert(cmd_id="", data=str(dm.NEXT_MESSAGE)))
            outgoing = answers

    # ------------------------------------------------------------------ the server's credentials

    def _server_nonce(self, server: dmacc.AppAuth | None) -> str | None:
        return self.tree.get(f"{server.uri}/AAuthData") if server is not None else None

    def _next_server_nonce(self, server: dmacc.AppAuth) -> Chal:
        """A new server nonce, kept as the account's AAuthData and sent in a Chal."""
        nonce = base64.b64encode(secrets.token_bytes(16)).decode()
        self.tree[f"{server.uri}/AAuthData"] = nonce
        return Chal(Meta(type=dm.AUTH_MD5, format="b64", next_nonce=nonce))

    def _server_authenticated(self, reply: Message, server: dmacc.AppAuth) -> bool:
        nonce = self._server_nonce(server)
        if nonce is None:
            return False
        digest = dm.user_digest(server.name, server.secret)
        cred = reply.header.cred
        if cred is not None:
            return hmac.compare_digest(cred.data, dm.md5_credential(digest, nonce))
        header = dm.parse_hmac_header(self.server_hmac)
        return (
            header is not None
            and header.username == server.name
            and hmac.compare_digest(header.mac, dm.hmac_mac(digest, nonce, self._body))
        )

    def _judge_server(
        self, reply: Message, server: dmacc.AppAuth | None, trusted: bool
    ) -> tuple[Status, bool]:
        """The Status for the server's SyncHdr, and whether the server was refused."""
        status = Status(
            cmd_id="",
            msg_ref=reply.header.msg_id,
            cmd_ref="0",
            cmd="SyncHdr",
            data=str(dm.OK),
            target_refs=[reply.header.target.loc_uri],
            source_refs=[reply.header.source.loc_uri],
        )
        refused = False
        if server is not None:
            if self._server_authenticated(reply, server):
                if not trusted:  # once a session: 212 and the server nonce of next time
                    status.data = str(dm.AUTHENTICATION_ACCEPTED)
                    status.chal = self._next_server_nonce(server)
            else:
                signed = reply.header.cred is not None or self.server_hmac is not None
                status.data = str(dm.INVALID_CREDENTIALS if signed else dm.MISSING_CREDENTIALS)
                status.chal = self._next_server_nonce(server)
                refused = True
        self.server_verdicts.append(int(status.data))
        return status, refused

    def _package1(self, alert: int) -> list[Command]:
        commands: list[Command] = [Alert(cmd_id="", data=str(alert))]
        if self.login_status is not None:
            commands.append(
                Alert(
                    cmd_id="",
                    data=str(dm.CLIENT_EVENT),
                    items=[Item(meta=Meta(type=dm.LOGIN_STATUS_TYPE), data=self.login_status)],
                )
            )
        for alert_type, data in self.alerts:
            commands.append(
                Alert(
                    cmd_id="",
                    data=str(dm.GENERIC_ALERT),
                    items=[Item(meta=Meta(type=alert_type, format="int"), data=data)],
                )
            )
        self.alerts = []
        devinfo = [
            Item(source=Source(uri), data=self.tree[uri])
            for uri in sorted(self.tree)
            if uri.startswith("./DevInfo/")
        ]
        commands.append(Replace(cmd_id="", items=devinfo))
        return commands

    def _header(self, session_id: str, msg_id: str) -> SyncHdr:
        cred = None
        if self.auth == dm.AUTH_BASIC:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            cred = Cred(token, Meta(type=dm.AUTH_BASIC, format="b64"))
        elif self.auth == dm.AUTH_MD5 and self.nonce is not None:
            digest = dm.md5_credential(dm.user_digest(self.username, self.password), self.nonce)
            cred = Cred(digest, Meta(type=dm.AUTH_MD5, format="b64"))
        return SyncHdr(
            session_id=session_id,
            msg_id=msg_id,
            target=Target(self.url),
            source=Source(self.device_id, self.username or None),
            ver_proto=dm.VER_PROTO,
            cred=cred,
            meta=Meta(max_msg_size=self.max_msg_size),
        )

    def _fit(
        self, outgoing: list[Command], results: list[Results], server_max: int
    ) -> tuple[list[Command], list[Results], bool]:
        """The commands of this message; Results cut to the server's MaxMsgSize. The last
        bool: more of this package follows (the message goes without Final)."""
        room = min(server_max, self.max_msg_size) - 600
        commands = list(outgoing)
        used = sum(dm.measure(c, self.wbxml) for c in commands) + 8 * len(commands)
        left: list[Results] = []
        for index, result in enumerate(results):
            cost = _results_cost(result, self.wbxml)
            if used + cost <= room:
                commands.append(result)
                used += cost
                continue
            item = result.items[0]
            data = item.data if isinstance(item.data, str) else ""
            take = room - used - 300
            if take < 64:
                left = results[index:]
                break
            first = item.meta is not None  # a continuation carries no Meta
            size = len(data.encode())
            piece = Results(
                cmd_id="",
                cmd_ref=result.cmd_ref,
                msg_ref=result.msg_ref,
                items=[
                    Item(
                        source=item.source,
                        meta=Meta(format=(item.meta.format if item.meta else None), size=size)
                        if first
                        else None,
                        data=data[:take],
                        more_data=True,
                    )
                ],
            )
            rest = Results(
                cmd_id="",
                cmd_ref=result.cmd_ref,
                msg_ref=result.msg_ref,
                items=[Item(source=item.source, data=data[take:])],
            )
            commands.append(piece)
            left = [rest, *results[index + 1 :]]
            break
        return commands, left, bool(left)

    async def _post(self, url: str, message: Message) -> Message:
        local = self._local(url)
        body = encode_message(message, self.wbxml)
        headers = {"Content-Type": content_type(self.wbxml, dm=True)}
        if self.auth == dm.AUTH_HMAC and self.nonce is not None:
            digest = dm.user_digest(self.username, self.password)
            mac = dm.hmac_mac(digest, self.nonce, body)
            headers["x-syncml-hmac"] = f'algorithm=MD5, username="{self.username}", mac={mac}'
        response = await self.http.post(local, content=body, headers=headers)
        self.round_trips += 1
        if response.status_code != 200:
            raise SessionFailed(response.status_code, response.text[:200])
        self.server_hmac = response.headers.get("x-syncml-hmac")
        self._body = response.content
        return parse_message(response.content, response.headers["content-type"])

    def _local(self, url: str) -> str:
        parts = urlsplit(url)
        base = urlsplit(self.url)
        query = parts.query or self.query
        return f"{base.scheme}://{base.netloc}{parts.path}" + (f"?{query}" if query else "")

    # ------------------------------------------------------------------ the tree

    @staticmethod
    def _status(reply: Message, command: Command, code: int) -> Status:
        items = [] if isinstance(command, Alert) else _items(command)
        return Status(
            cmd_id="",
            msg_ref=reply.header.msg_id,
            cmd_ref=command.cmd_id,
            cmd=command.name,
            data=str(code),
            target_refs=[i.target.loc_uri for i in items if i.target],
        )

    def _execute(
        self,
        reply: Message,
        command: Command,
        chunks: dict[str, list[str]],
        results: list[Results],
    ) -> list[Command]:
        if isinstance(command, Atomic | Sequence):
            before = dict(self.tree)
            inner: list[Command] = []
            for sub in command.commands:
                inner += self._execute(reply, sub, chunks, results)
            failed = any(isinstance(s, Status) and not 200 <= int(s.data) < 300 for s in inner)
            if isinstance(command, Atomic) and failed:
                self.tree = before  # all or nothing
                return [self._status(reply, command, ATOMIC_FAILED), *inner]
            return [self._status(reply, command, dm.OK), *inner]
        if isinstance(command, Get):
            uri = command.items[0].target.loc_uri  # type: ignore[union-attr]
            if uri.endswith(_UNREADABLE):
                return [self._status(reply, command, dm.COMMAND_NOT_ALLOWED)]
            if uri not in self.tree:
                return [self._status(reply, command, dm.NOT_FOUND)]
            results.append(
                Results(
                    cmd_id="",
                    cmd_ref=command.cmd_id,
                    msg_ref=reply.header.msg_id,
                    items=[Item(source=Source(uri), meta=Meta(format="chr"), data=self.tree[uri])],
                )
            )
            return [self._status(reply, command, dm.OK)]
        if isinstance(command, Replace | Add):
            answers: list[Command] = []
            for item in command.items:
                uri = item.target.loc_uri if item.target else ""
                if isinstance(command, Add) and uri in self.tree and uri not in chunks:
                    return [self._status(reply, command, ALREADY_EXISTS)]
                data = item.data.decode() if isinstance(item.data, bytes) else item.data
                parts = chunks.setdefault(uri, [])
                parts.append(data if isinstance(data, str) else "")
                if item.more_data:
                    return [self._status(reply, command, dm.CHUNK_ACCEPTED)]
                self.tree[uri] = "".join(chunks.pop(uri))
            answers.append(self._status(reply, command, dm.OK))
            return answers
        if isinstance(command, Delete):  # a node and what lies below it
            found = False
            for item in command.items:
                uri = item.target.loc_uri if item.target else ""
                doomed = [node for node in self.tree if node == uri or node.startswith(uri + "/")]
                found |= bool(doomed)
                for node in doomed:
                    del self.tree[node]
            return [self._status(reply, command, dm.OK if found else dm.NOT_FOUND)]
        if isinstance(command, Exec):
            uri = command.item.target.loc_uri if command.item.target else ""
            self.executed.append(uri)
            data = command.item.data
            self.exec_data.append(data.decode() if isinstance(data, bytes) else data)  # type: ignore[arg-type]
            return [self._status(reply, command, dm.OK)]
        return [self._status(reply, command, dm.OPTIONAL_FEATURE_NOT_SUPPORTED)]


def _results_cost(result: Results, wbxml: bool) -> int:
    """What a Results adds to a message: a generous bound for small plain ones (cheap),
    the encoder's figure otherwise."""
    item = result.items[0] if len(result.items) == 1 else None
    data = item.data if item is not None else None
    uri = item.source.loc_uri if item is not None and item.source else ""
    plain = isinstance(data, str) and len(data) < 256 and (data + uri).isascii()
    if plain and not any(c in data + uri for c in "&<>\r"):  # type: ignore[operator]
        return 400 + len(data) + 2 * len(uri)  # type: ignore[arg-type]
    return encoded_size(result, wbxml)


def _items(command: Command) -> list[Item]:
    if isinstance(command, Exec):
        return [command.item]
    return list(getattr(command, "items", []) or [])


# --------------------------------------------------------------------------- Windows


def windows_tls(enrolment: object, ca_file: str) -> ssl.SSLContext:
    """A TLS context presenting the enrolment's certificate (as Windows picks it from its
    store by SSLCLIENTCERTSEARCHCRITERIA) and trusting the service's CA."""
    context = ssl.create_default_context(cafile=ca_file)
    key = enrolment.key  # type: ignore[attr-defined]
    certificate = enrolment.certificate  # type: ignore[attr-defined]
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=True) as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        handle.flush()
        context.load_cert_chain(handle.name)
    return context


def windows_tree(device_id: str, name: str = "DESKTOP-SIM") -> dict[str, str]:
    """The nodes a Windows 10 device answers for (DevInfo, DevDetail, DeviceStatus)."""
    return {
        "./DevInfo/DevId": device_id,
        "./DevInfo/Man": "Microsoft Corporation",
        "./DevInfo/Mod": "Virtual Machine",
        "./DevInfo/DmV": "1.3",
        "./DevInfo/Lang": "en-US",
        "./DevDetail/SwV": "10.0.19045.2006",
        "./DevDetail/OEM": "Microsoft Corporation",
        "./DevDetail/FwV": "Hyper-V UEFI Release v4.1",
        "./DevDetail/HwV": "Hyper-V UEFI Release v4.1",
        "./DevDetail/DevTyp": "Virtual Machine",
        "./DevDetail/Ext/Microsoft/DeviceName": name,
        "./DevDetail/Ext/Microsoft/OSPlatform": "Windows 10 Enterprise",
        "./DevDetail/Ext/Microsoft/TotalStorage": "130045",
        "./DevDetail/Ext/Microsoft/TotalRAM": "4096",
        "./Vendor/MSFT/DeviceStatus/Compliance/EncryptionCompliance": "0",
    }


def windows_client(
    http: httpx.AsyncClient, management_url: str, base_url: str, hardware_id: str
) -> DmClient:
    """A DM client speaking as Windows: ``http`` must present the enrolment's certificate
    (see :func:`windows_tls`); URLs the service hands out are followed at ``base_url``."""
    path = urlsplit(management_url).path
    return DmClient(
        http,
        base_url.rstrip("/") + path,
        "{" + hardware_id + "}",
        tree=windows_tree(hardware_id),
        auth=None,
        login_status="user",
        query="mode=Maintenance&Platform=WoA",
    )


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # a helper for checks in tests
