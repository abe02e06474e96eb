"""The sans-IO OMA DM session with byte vectors (Microsoft's MS-MDM samples, OMA DM examples)
and an in-memory backend: Status order, authentication challenges, Results into outcomes,
Atomic, large objects, MaxMsgSize, the package 0 notification and the digests."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest
import trio

from engine.protocols import omadm as dm, syncml
from engine.protocols.syncml import (
    Atomic,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Results,
    Source,
    Status,
    SyncHdr,
    Target,
)

VECTORS = Path(__file__).parent / "omadm_vectors"
XML = syncml.CONTENT_TYPE_DM_XML


class Backend:
    """Records what the session tells it; hands out the operations it is given."""

    def __init__(self, auth: dm.Authentication | None = None) -> None:
        self.auth = auth or dm.Authentication(
            dm.AUTHENTICATION_ACCEPTED, "peer", ("md5", "bm9uY2U=")
        )
        self.credentials: list[dm.Credentials] = []
        self.values: list[dm.NodeValue] = []
        self.alerts: list[dm.ClientAlert] = []
        self.queue: list[list[dm.Operation]] = []
        self.outcomes: list[dm.OperationOutcome] = []

    async def authenticate(self, credentials: dm.Credentials) -> dm.Authentication:
        self.credentials.append(credentials)
        return self.auth

    async def alerted(self, peer: object, alert: dm.ClientAlert) -> int:
        self.alerts.append(alert)
        return dm.OK

    async def exchange(
        self,
        peer: object,
        session_alert: int,
        reported: list[dm.NodeValue],
        outcomes: list[dm.OperationOutcome],
        more: bool,
    ) -> list[dm.Operation]:
        self.values += reported
        self.outcomes += outcomes
        return self.queue.pop(0) if more and self.queue else []


def vector(name: str) -> Message:
    return syncml.parse_message((VECTORS / name).read_bytes(), XML)


def statuses(reply: Message) -> list[tuple[str, str, str]]:
    return [(c.cmd, c.cmd_ref, c.data) for c in reply.commands if isinstance(c, Status)]


def client_message(session: str, msg_id: str, commands: list, final: bool = True) -> Message:  # type: ignore[type-arg]
    for number, command in enumerate(commands, 1):
        command.cmd_id = str(number)
    return Message(
        SyncHdr(
            session,
            msg_id,
            Target("https://dm.example/omadm"),
            Source("IMEI:1"),
            ver_proto="DM/1.2",
        ),
        commands,
        final,
    )


def status_for(reply: Message, command: object, code: int = 200) -> Status:
    return Status("", reply.header.msg_id, command.cmd_id, command.name, str(code))  # type: ignore[attr-defined]


async def test_ms_mdm_package1_gets_the_header_status_first_and_one_status_per_command() -> None:
    backend = Backend()
    backend.queue = [
        [dm.Operation("inventory", [Get("", items=[Item(target=Target("./DevDetail/SwV"))])])]
    ]
    session = dm.DmSession(backend, "1", "https://contoso.com/management-server", peer="windows")
    reply = await session.receive(vector("ms_mdm_package1.xml"))
    assert statuses(reply) == [
        ("SyncHdr", "0", "200"),
        ("Alert", "1", "200"),
        ("Alert", "2", "200"),
        ("Replace", "3", "200"),
    ]
    assert reply.commands[0].msg_ref == "1"  # type: ignore[union-attr]
    assert reply.header.ver_proto == "DM/1.2" and reply.final
    assert [c.name for c in reply.commands][-1] == "Get"
    assert [a.type for a in backend.alerts] == [dm.LOGIN_STATUS_TYPE]
    assert backend.alerts[0].data == "user"
    assert {v.uri: v.data for v in backend.values}["./DevInfo/Man"] == "Microsoft Corporation"
    assert session.session_alert == dm.CLIENT_INITIATED
    ids = [c.cmd_id for c in reply.commands]
    assert len(set(ids)) == len(ids)


async def test_microsofts_unenrolment_sample_with_its_quirks() -> None:
    backend = Backend()
    session = dm.DmSession(backend, "1", "x", peer="windows")
    reply = await session.receive(vector("ms_unenrolment_package1.xml"))
    # Both commands carry CmdID 2: each still gets its Status, in order.
    assert statuses(reply) == [
        ("SyncHdr", "0", "200"),
        ("Alert", "2", "200"),
        ("Replace", "2", "200"),
    ]
    assert backend.alerts[0].code == dm.GENERIC_ALERT
    assert backend.alerts[0].type == dm.UNENROL_ALERT_TYPE  # the sample's leading space is gone
    assert backend.alerts[0].data == "1"
    assert session.finished  # nothing to send: Final without commands ends the session


async def test_oma_dm_md5_package_refused_then_challenged() -> None:
    refused = dm.Authentication(dm.INVALID_CREDENTIALS, challenge=(dm.AUTH_MD5, "TmV4dE5vbmNl"))
    backend = Backend(refused)
    session = dm.DmSession(backend, "1", "x")
    message = vector("oma_dm_package1_md5.xml")
    reply = await session.receive(message)
    credentials = backend.credentials[0]
    assert (credentials.kind, credentials.username) == (dm.AUTH_MD5, "mgmtclient")
    assert credentials.device_id == "IMEI:001004FF1234567"
    assert statuses(reply) == [
        ("SyncHdr", "0", "401"),
        ("Alert", "1", "401"),
        ("Replace", "2", "401"),
    ]
    chal = reply.commands[0].chal  # type: ignore[union-attr]
    assert chal.meta.type == dm.AUTH_MD5 and chal.meta.format == "b64"
    assert chal.meta.next_nonce == "TmV4dE5vbmNl"
    assert backend.values == [] and not session.authenticated
    assert session.max_msg_size == 5000  # the client's MaxMsgSize is the limit
    assert reply.header.meta.max_msg_size == 5000  # type: ignore[union-attr]
    # The client tries again with the new nonce: accepted (212, and the next nonce).
    backend.auth = dm.Authentication(dm.AUTHENTICATION_ACCEPTED, "peer", (dm.AUTH_MD5, "Tk4y"))
    message.header.msg_id = "2"
    reply = await session.receive(message)
    assert statuses(reply)[0] == ("SyncHdr", "0", "212")
    assert reply.commands[0].chal.meta.next_nonce == "Tk4y"  # type: ignore[union-attr]
    assert {v.uri for v in backend.values} >= {"./DevInfo/DevId", "./DevInfo/Mod"}


async def test_results_statuses_and_atomic_become_outcomes() -> None:
    backend = Backend()
    atomic = Atomic(
        "",
        commands=[
            Replace("", items=[Item(target=Target("./A"), data="1")]),
            Exec("", item=Item(target=Target("./B/Go"))),
        ],
    )
    backend.queue = [
        [
            dm.Operation("read", [Get("", items=[Item(target=Target("./DevDetail/SwV"))])]),
            dm.Operation("both", [atomic]),
        ]
    ]
    session = dm.DmSession(backend, "7", "x", peer="p")
    reply = await session.receive(client_message("7", "1", [syncml.Alert("", data="1201")]))
    get, sent_atomic = [c for c in reply.commands if not isinstance(c, Status)]
    assert isinstance(sent_atomic, Atomic)
    inner = sent_atomic.commands
    answer = [
        status_for(reply, get),
        Results(
            "",
            cmd_ref=get.cmd_id,
            msg_ref=reply.header.msg_id,
            items=[Item(source=Source("./DevDetail/SwV"), meta=Meta(format="chr"), data="10.0")],
        ),
        status_for(reply, sent_atomic),
        status_for(reply, inner[0]),
        status_for(reply, inner[1], 500),
    ]
    reply = await session.receive(client_message("7", "2", answer))
    assert statuses(reply)[1:] == [("Results", "2", "200")]
    read, both = backend.outcomes
    assert read.ok and read.results == [dm.NodeValue("./DevDetail/SwV", "10.0", "chr", None)]
    assert not both.ok
    assert [(o.name, o.status) for o in both.outcomes] == [
        ("Atomic", 200),
        ("Replace", 200),
        ("Exec", 500),
    ]
    assert reply.final and session.finished


async def test_large_results_are_joined_and_a_wrong_size_is_424() -> None:
    for declared, expected in ((len(("é" * 10 + "abc").encode()), "200"), (999, "424")):
        backend = Backend()
        backend.queue = [[dm.Operation("big", [Get("", items=[Item(target=Target("./Big"))])])]]
        session = dm.DmSession(backend, "1", "x", peer="p")
        reply = await session.receive(client_message("1", "1", [syncml.Alert("", data="1201")]))
        get = next(c for c in reply.commands if isinstance(c, Get))
        first = Results(
            "",
            cmd_ref=get.cmd_id,
            msg_ref=reply.header.msg_id,
            items=[
                Item(
                    source=Source("./Big"), meta=Meta(size=declared), data="é" * 10, more_data=True
                )
            ],
        )
        reply2 = await session.receive(
            client_message("1", "2", [status_for(reply, get), first], final=False)
        )
        assert statuses(reply2)[-1] == ("Results", "2", "213")
        assert not reply2.final
        assert any(isinstance(c, syncml.Alert) and c.data == "1222" for c in reply2.commands)
        last = Results(
            "",
            cmd_ref=get.cmd_id,
            msg_ref=reply.header.msg_id,
            items=[Item(source=Source("./Big"), data="abc")],
        )
        reply3 = await session.receive(client_message("1", "3", [last]))
        assert statuses(reply3)[-1] == ("Results", "1", expected)
        if expected == "200":
            assert backend.outcomes[0].results[0].data == "é" * 10 + "abc"
        else:
            assert backend.outcomes[0].results == []


@pytest.mark.parametrize("wbxml", [False, True])
async def test_every_reply_stays_within_the_clients_max_msg_size(wbxml: bool) -> None:
    backend = Backend()
    gets = [
        Get("", items=[Item(target=Target(f"./Vendor/Node/{n:04}/With/A/Long/Path"))])
        for n in range(120)
    ]
    big = Replace(
        "", items=[Item(target=Target("./Big"), meta=Meta(format="chr"), data="v" * 20000)]
    )
    backend.queue = [
        [dm.Operation(f"g{n}", [g]) for n, g in enumerate(gets)] + [dm.Operation("big", [big])]
    ]
    session = dm.DmSession(backend, "1", "x", peer="p", wbxml=wbxml)
    message = client_message("1", "1", [syncml.Alert("", data="1201")])
    message.header.meta = Meta(max_msg_size=2048)
    reply = await session.receive(message)
    sent, chunks, msg = 0, [], 1
    while True:
        body = syncml.encode_message(reply, wbxml)
        assert len(body) <= 2048
        syncml.parse_message(body, syncml.content_type(wbxml, dm=True))  # well-formed both ways
        answers = []
        for command in reply.commands:
            if isinstance(command, Status):
                continue
            sent += 1
            code = 213 if isinstance(command, Replace) and command.items[0].more_data else 200
            if isinstance(command, Replace):
                chunks.append(command.items[0].data)
            answers.append(status_for(reply, command, code))
        if reply.final and not answers:
            break
        if not reply.final:
            answers.append(syncml.Alert("", data="1222"))
        msg += 1
        reply = await session.receive(client_message("1", str(msg), answers))
    assert "".join(chunks) == "v" * 20000 and len(chunks) > 5
    assert len(backend.outcomes) == 121 and all(o.ok for o in backend.outcomes)


def test_md5_and_hmac_digests_follow_the_oma_formulas() -> None:
    def b64md5(data: bytes) -> bytes:
        return base64.b64encode(hashlib.md5(data).digest())

    digest = dm.user_digest("Bruce2", "OhBehave")
    assert digest == b64md5(b"Bruce2:OhBehave").decode()
    nonce = base64.b64encode(b"Nonce").decode()
    assert dm.md5_credential(digest, nonce) == b64md5(digest.encode() + b":Nonce").decode()
    body = b"<SyncML/>"
    assert (
        dm.hmac_mac(digest, nonce, body)
        == b64md5(digest.encode() + b":Nonce:" + b64md5(body)).decode()
    )
    assert dm.parse_hmac_header('algorithm=MD5, username="Bruce2", mac=abc') == dm.HmacHeader(
        "MD5", "Bruce2", "abc"
    )
    assert dm.parse_hmac_header('username="x"') is None


def test_package0_notification_round_trip() -> None:
    digest = dm.user_digest("EMM", "server secret")
    package = dm.notification("EMM", digest, "bm9uY2U=", 0x1234, ui_mode=2)
    mac, version, ui_mode, initiator, session, server = dm.read_notification(package)
    assert (version, ui_mode, initiator, session, server) == (12, 2, 1, 0x1234, "EMM")
    trigger = package[16:]
    expected = hashlib.md5(
        digest.encode() + b":nonce:" + base64.b64encode(hashlib.md5(trigger).digest())
    ).digest()
    assert mac == expected
    with pytest.raises(ValueError):
        dm.read_notification(package[:20])


needs_libwbxml = pytest.mark.skipif(
    shutil.which("wbxml2xml") is None or shutil.which("xml2wbxml") is None,
    reason="libwbxml2-utils is not installed (scripts/test installs it)",
)


@needs_libwbxml
async def test_a_wbxml_session_through_libwbxml_both_ways(tmp_path: Path) -> None:
    """The MS-MDM package as libwbxml encodes it reads as the XML does; our WBXML reply
    (statuses, Get, Replace with Meta, Exec) decodes with libwbxml to the same message."""
    source = VECTORS / "oma_dm_package1_md5.xml"
    theirs = tmp_path / "package1.wbxml"
    await trio.run_process(["xml2wbxml", "-o", str(theirs), str(source)], capture_stderr=True)
    message = syncml.parse_message(theirs.read_bytes(), syncml.CONTENT_TYPE_DM_WBXML)
    backend = Backend()
    backend.queue = [
        [
            dm.Operation("read", [Get("", items=[Item(target=Target("./DevDetail/SwV"))])]),
            dm.Operation(
                "set",
                [
                    Replace(
                        "", items=[Item(target=Target("./A"), meta=Meta(format="int"), data="5")]
                    )
                ],
            ),
            dm.Operation(
                "lock", [Exec("", item=Item(target=Target("./LAWMO/Operations/FullyLock")))]
            ),
        ]
    ]
    session = dm.DmSession(backend, "1", "x", wbxml=True)
    reply = await session.receive(message)
    assert statuses(reply) == [
        ("SyncHdr", "0", "212"),
        ("Alert", "1", "200"),
        ("Replace", "2", "200"),
    ]
    ours = tmp_path / "reply.wbxml"
    ours.write_bytes(syncml.encode_message(reply, wbxml=True))
    back = tmp_path / "reply.xml"
    await trio.run_process(
        ["wbxml2xml", "-m", "0", "-o", str(back), str(ours)], capture_stderr=True
    )
    decoded = syncml.parse_message(back.read_bytes(), XML)
    assert decoded == syncml.parse_message(syncml.encode_message(reply), XML)
    assert [c.name for c in decoded.commands][-3:] == ["Get", "Replace", "Exec"]


@pytest.mark.parametrize("wbxml", [False, True])
def test_sizes_remembered_by_shape_are_the_encoded_sizes(wbxml: bool) -> None:
    commands = [
        Status("12", "3", "7", "Get", "200", target_refs=["./DevDetail/SwV"]),
        Status("1234", "33", "0", "SyncHdr", "212", ["https://x/omadm"], ["IMEI:1"]),
        Status("9", "1", "2", "Replace", "404", source_refs=["./a", "./b"]),
        Get("77", items=[Item(target=Target("./Vendor/MSFT/DeviceStatus/OS/Edition"))]),
        Exec("5", item=Item(target=Target("./LAWMO/Operations/FactoryReset"))),
    ]
    for _ in range(2):  # the second time from the remembered sizes
        for command in commands:
            assert dm.measure(command, wbxml) == syncml.encoded_size(command, wbxml)
    odd = Status("1", "1", "1", "Get", "200", target_refs=["./a&b<c"])
    assert dm.measure(odd, wbxml) == syncml.encoded_size(odd, wbxml)


async def test_a_syncml_ds_message_is_refused_with_513() -> None:
    backend = Backend()
    session = dm.DmSession(backend, "1", "x")
    message = vector("oma_dm_package1_md5.xml")
    message.header.ver_proto = "SyncML/1.2"
    reply = await session.receive(message)
    assert statuses(reply) == [
        ("SyncHdr", "0", "513"),
        ("Alert", "1", "513"),
        ("Replace", "2", "513"),
    ]
    assert backend.credentials == [] and session.finished


async def test_large_results_beyond_their_size_or_max_obj_size_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks beyond the declared Size (424) or the server's MaxObjSize (413) drop the
    value: nothing of it is kept and its later chunks get the same answer."""
    monkeypatch.setattr(dm, "SERVER_MAX_OBJ_SIZE", 2000)
    for size, first, second in ((5000, "413", "413"), (150, "213", "424"), (None, "213", "413")):
        backend = Backend()
        backend.queue = [[dm.Operation("big", [Get("", items=[Item(target=Target("./Big"))])])]]
        session = dm.DmSession(backend, "1", "x", peer="p")
        reply = await session.receive(client_message("1", "1", [syncml.Alert("", data="1201")]))
        get = next(c for c in reply.commands if isinstance(c, Get))
        answers = []
        for number, (data, more) in enumerate(
            [("x" * 100, True), ("x" * 1999, True), ("x", False)], 2
        ):
            meta = Meta(size=size) if number == 2 and size is not None else None
            item = Item(source=Source("./Big"), meta=meta, data=data, more_data=more)
            results = Results("", cmd_ref=get.cmd_id, msg_ref=reply.header.msg_id, items=[item])
            commands = [status_for(reply, get), results] if number == 2 else [results]
            answer = await session.receive(client_message("1", str(number), commands, not more))
            answers.append(statuses(answer)[-1][2])
            assert session.chunk is None or session.chunk.parts == [] or answers[-1] == "213"
        assert answers == [first, second, second]
        assert all(not o.results for o in backend.outcomes)


async def test_what_a_package_reports_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace values spread over many non-final messages are held until the package ends:
    beyond the bound they are refused with 420 (Device full) rather than kept."""
    monkeypatch.setattr(dm, "MAX_HELD_BYTES", 1000)
    backend = Backend()
    backend.queue = [[dm.Operation("read", [Get("", items=[Item(target=Target("./A"))])])]]
    session = dm.DmSession(backend, "1", "x", peer="p")
    await session.receive(client_message("1", "1", [syncml.Alert("", data="1201")]))
    assert not session.finished
    answers = []
    for number in range(2, 6):
        item = Item(source=Source(f"./Node{number}"), data="v" * 300)
        reply = await session.receive(
            client_message("1", str(number), [Replace("", items=[item])], final=number == 5)
        )
        answers.append(statuses(reply)[-1][2])
    assert answers == ["200", "200", "200", "420"]
    assert [v.uri for v in backend.values] == ["./Node2", "./Node3", "./Node4"]
