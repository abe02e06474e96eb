"""The server's own credentials in the sans-IO OMA DM session (OMA DM Security 1.2): the MD5
``Cred`` of every signed server message, the client's ``NextNonce`` for the server, commands
sent again after the client refused the server, the session's end after a second refusal;
the package 0 digest by the formula; the DMAcc bootstrap and its reading on a device."""

from __future__ import annotations

import base64
import hashlib
import secrets

from engine.omadm_credentials import SERVER_ID, ServerSecrets
from engine.protocols import omadm as dm, omadm_dmacc as dmacc
from engine.protocols.syncml import (
    Add,
    Alert,
    Atomic,
    Chal,
    Exec,
    Item,
    Message,
    Meta,
    Replace,
    Source,
    Status,
    Target,
)

from .test_omadm_protocol import Backend, client_message, status_for

DIGEST = dm.user_digest("EMM", "server password")


class ServerBackend(Backend):
    def __init__(self, server: dm.ServerCredential | None) -> None:
        super().__init__(
            dm.Authentication(dm.AUTHENTICATION_ACCEPTED, "peer", (dm.AUTH_MD5, "Tk4="), server)
        )
        self.server_nonces: list[str] = []
        self.judged: list[int] = []

    async def server_judged(self, peer: object, status: int, nonce: str | None) -> None:
        self.judged.append(status)
        if nonce is not None:
            self.server_nonces.append(nonce)


def package1() -> list[object]:
    return [
        Alert("", data=str(dm.CLIENT_INITIATED)),
        Replace("", items=[Item(source=Source("./DevInfo/DevId"), data="IMEI:1")]),
    ]


def header_status(reply: Message, code: int, nonce: str | None = None) -> Status:
    """The client's Status for the server's SyncHdr (with a Chal giving the next nonce)."""
    chal = Chal(Meta(type=dm.AUTH_MD5, format="b64", next_nonce=nonce)) if nonce else None
    return Status("", reply.header.msg_id, "0", "SyncHdr", str(code), chal=chal)


def lock() -> dm.Operation:
    return dm.Operation("lock", [Exec("", item=Item(target=Target("./LAWMO/Operations/Lock")))])


def test_server_digests_follow_the_oma_formulas() -> None:
    def b64md5(data: bytes) -> bytes:
        return base64.b64encode(hashlib.md5(data).digest())

    server = dm.ServerCredential("EMM", DIGEST, "c2VydmVy")
    cred = server.cred()
    assert cred is not None and cred.meta is not None and cred.meta.type == dm.AUTH_MD5
    assert cred.data == b64md5(b64md5(b"EMM:server password") + b":server").decode()
    server.hmac = True
    assert server.cred() is None
    header = dm.parse_hmac_header(server.mac_header(b"<SyncML/>"))
    assert header is not None and header.username == "EMM"
    expected = b64md5(b64md5(b"EMM:server password") + b":server:" + b64md5(b"<SyncML/>"))
    assert header.mac == expected.decode()
    # Package 0: H(B64(H(server-identifier:password)):nonce:B64(H(trigger))), 16 bytes.
    package = dm.notification("EMM", DIGEST, "c2VydmVy", 0x0102)
    trigger = package[16:]
    assert (
        package[:16]
        == hashlib.md5(b64md5(b"EMM:server password") + b":server:" + b64md5(trigger)).digest()
    )


def test_server_passwords_differ_per_device_and_hold_across_restarts() -> None:
    first, again = ServerSecrets(b"k" * 32), ServerSecrets(b"k" * 32)
    assert first.password("device-a") == again.password("device-a")
    assert first.password("device-a") != first.password("device-b")
    assert ServerSecrets(b"j" * 32).password("device-a") != first.password("device-a")
    assert len(first.password("device-a")) == 24
    assert first.digest("device-a") == dm.user_digest(SERVER_ID, first.password("device-a"))


async def test_signed_messages_follow_the_clients_next_nonce() -> None:
    backend = ServerBackend(dm.ServerCredential("EMM", DIGEST, "Tm9uY2Ux"))
    backend.queue = [[lock()], []]
    session = dm.DmSession(backend, "1", "https://dm.example/omadm")
    reply = await session.receive(client_message("1", "1", package1()))
    assert reply.header.cred is not None
    assert reply.header.cred.data == dm.md5_credential(DIGEST, "Tm9uY2Ux")
    exec_ = next(c for c in reply.commands if isinstance(c, Exec))
    # The client took the server (212) and names the nonce of the server's next Cred.
    answer = [header_status(reply, 212, "Tm9uY2Uy"), status_for(reply, exec_)]
    reply = await session.receive(client_message("1", "2", answer))
    assert backend.server_nonces == ["Tm9uY2Uy"]
    assert reply.header.cred is not None
    assert reply.header.cred.data == dm.md5_credential(DIGEST, "Tm9uY2Uy")
    assert [o.ok for o in backend.outcomes] == [True]


async def test_a_refused_server_sends_its_commands_again_signed_with_the_new_nonce() -> None:
    backend = ServerBackend(dm.ServerCredential("EMM", DIGEST, "b2xk"))
    backend.queue = [[lock()], []]
    session = dm.DmSession(backend, "1", "x")
    reply = await session.receive(client_message("1", "1", package1()))
    exec_ = next(c for c in reply.commands if isinstance(c, Exec))
    refused = [header_status(reply, 401, "bmV3"), status_for(reply, exec_, dm.NOT_EXECUTED)]
    reply = await session.receive(client_message("1", "2", refused))
    assert backend.outcomes == []  # not a failure of the command: it goes again
    again = next(c for c in reply.commands if isinstance(c, Exec))
    assert again.item.target is not None
    assert again.item.target.loc_uri == "./LAWMO/Operations/Lock"
    assert reply.header.cred is not None
    assert reply.header.cred.data == dm.md5_credential(DIGEST, "bmV3")
    reply = await session.receive(
        client_message("1", "3", [header_status(reply, 212), status_for(reply, again)])
    )
    assert [(o.key, o.ok) for o in backend.outcomes] == [("lock", True)]


async def test_refused_twice_the_session_ends_without_reporting_the_commands() -> None:
    backend = ServerBackend(dm.ServerCredential("EMM", DIGEST, "b2xk"))
    backend.queue = [[lock()], []]
    session = dm.DmSession(backend, "1", "x")
    reply = await session.receive(client_message("1", "1", package1()))
    for msg_id, nonce in (("2", "bjE="), ("3", "bjI=")):
        exec_ = next(c for c in reply.commands if isinstance(c, Exec))
        refused = [header_status(reply, 401, nonce), status_for(reply, exec_, dm.NOT_EXECUTED)]
        reply = await session.receive(client_message("1", msg_id, refused))
        if msg_id == "2":
            assert any(isinstance(c, Exec) for c in reply.commands)
    assert reply.final and session.finished
    assert not [c for c in reply.commands if not isinstance(c, Status)]
    assert backend.outcomes == []  # the lock was never done: it stays for a later session
    assert backend.server_nonces == ["bjE=", "bjI="]


async def test_a_device_without_the_servers_credentials_gets_no_cred() -> None:
    backend = ServerBackend(None)
    session = dm.DmSession(backend, "1", "x")
    reply = await session.receive(client_message("1", "1", package1()))
    assert reply.header.cred is None
    # A nonce for a server the session has no credentials of is not taken.
    await session.receive(client_message("1", "2", [header_status(reply, 200, "bjE=")]))
    assert backend.server_nonces == []


async def test_hmac_clients_get_the_servers_mac_rather_than_a_cred() -> None:
    backend = ServerBackend(dm.ServerCredential("EMM", DIGEST, "bg=="))
    session = dm.DmSession(backend, "1", "x")
    header = dm.HmacHeader("MD5", "alice", "mac")
    reply = await session.receive(client_message("1", "1", package1()), b"body", header)
    assert reply.header.cred is None
    assert session.server is not None and session.server.hmac


def test_bootstrap_provisions_a_dm_account_the_device_reads_back() -> None:
    account = dmacc.Provisioned(
        account="EMM",
        server_id="EMM",
        name="EMM",
        address="https://dm.example/omadm",
        server_password="secret",
        server_nonce="bm9uY2U=",
        client_name="alice",
    )
    atomic = dmacc.bootstrap(account)
    assert isinstance(atomic, Atomic)
    tree: dict[str, str] = {}
    for command in atomic.commands:
        assert isinstance(command, Add)
        item = command.items[0]
        assert item.target is not None and item.meta is not None
        tree[item.target.loc_uri] = item.data if isinstance(item.data, str) else ""
    assert atomic.commands[0].items[0].meta.type == dmacc.ACCOUNT_TYPE  # type: ignore[attr-defined]
    assert tree["./DMAcc/EMM/AppAddr/1/Addr"] == "https://dm.example/omadm"
    found = dmacc.read_account(tree, "EMM")
    assert found is not None and found.uri == "./DMAcc/EMM"
    server = found.credentials[dmacc.SRVCRED]
    assert (server.type, server.name, server.secret, server.data) == (
        "DIGEST",
        "EMM",
        "secret",
        "bm9uY2U=",
    )
    client = found.credentials[dmacc.CLCRED]
    assert client.name == "alice" and client.secret == ""  # no user secret is provisioned
    assert dmacc.read_account(tree, "OTHER") is None


async def test_a_refused_chunk_goes_again_from_its_first_byte() -> None:
    """A large value in chunks, every other signed message refused: each refused chunk is
    sent again from where it started, and the value arrives whole, signed throughout."""
    backend = ServerBackend(dm.ServerCredential("EMM", DIGEST, "bjA="))
    value = "".join(chr(ord("a") + n % 26) for n in range(9000))
    big = Replace("", items=[Item(target=Target("./Big"), meta=Meta(format="chr"), data=value)])
    backend.queue = [[dm.Operation("big", [big])], []]
    session = dm.DmSession(backend, "1", "x")
    message = client_message("1", "1", package1())
    message.header.meta = Meta(max_msg_size=2048)
    reply = await session.receive(message)
    taken: list[str] = []
    msg, refusals, nonce = 1, 0, "bjA="
    while True:
        # Signed with the nonce the client gave last (in the message this one answers).
        assert reply.header.cred is not None
        assert reply.header.cred.data == dm.md5_credential(DIGEST, nonce)
        replaces = [c for c in reply.commands if isinstance(c, Replace)]
        if reply.final and not replaces:
            break
        refuse = bool(replaces) and msg % 2 == 1 and refusals < 3
        nonce = base64.b64encode(b"n%d" % msg).decode()
        answers: list[object] = [header_status(reply, 401 if refuse else 200, nonce)]
        for command in replaces:
            if refuse:
                answers.append(status_for(reply, command, dm.NOT_EXECUTED))
                continue
            item = command.items[0]
            taken.append(item.data if isinstance(item.data, str) else "")
            answers.append(status_for(reply, command, 213 if item.more_data else 200))
        refusals += refuse
        if not reply.final:
            answers.append(Alert("", data=str(dm.NEXT_MESSAGE)))
        msg += 1
        reply = await session.receive(client_message("1", str(msg), answers))
    assert refusals == 3 and "".join(taken) == value
    assert [(o.key, o.ok) for o in backend.outcomes] == [("big", True)]


def test_a_server_nonce_shaped_to_forge_an_hmac_or_package_0_is_refused() -> None:
    """Signed with a nonce ``N:B64(H(body))``, the server's MD5 credential would equal the
    HMAC of that body under ``N``; such a nonce is never taken."""
    device_nonce = secrets.token_bytes(16)
    shaped = device_nonce + b":" + dm.md5_b64(b"any body").encode()
    assert not dm.acceptable_server_nonce(base64.b64encode(shaped).decode())
    assert dm.acceptable_server_nonce(base64.b64encode(device_nonce).decode())
    assert not dm.acceptable_server_nonce("")
    assert not dm.acceptable_server_nonce("tab\there")
