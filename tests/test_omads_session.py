"""The sans-IO OMA DS session with an in-memory backend: packages over several messages,
MaxMsgSize measured on the encoded reply, large objects cut and joined, 222 and Final."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine.protocols import omads as ds, syncml
from engine.protocols.syncml import (
    Add,
    Alert,
    Anchor,
    Item,
    Message,
    Meta,
    Source,
    Status,
    Sync,
    SyncHdr,
    Target,
)


@dataclass
class FakeRun:
    to_send: list[ds.ServerChange]
    state: ds.DatastoreState = field(default_factory=lambda: ds.DatastoreState(None, None, False))
    applied: list[ds.ClientChange] = field(default_factory=list)
    mapped: list[tuple[str, str]] = field(default_factory=list)
    finished: tuple[str, str] | None = None
    mode: str = ""

    async def begin(self, mode: str) -> None:
        self.mode = mode

    async def apply(self, changes: list[ds.ClientChange]) -> list[ds.ChangeOutcome]:
        self.applied += changes
        return [ds.ChangeOutcome(201, str(len(self.applied))) for _ in changes]

    async def outgoing(self) -> list[ds.ServerChange]:
        return self.to_send

    async def map(self, pairs: list[tuple[str, str]]) -> int:
        self.mapped += pairs
        return 200

    async def finish(self, client_anchor: str, server_anchor: str) -> None:
        self.finished = (client_anchor, server_anchor)


@dataclass
class FakeBackend:
    run: FakeRun

    async def authenticate(self, credentials: ds.Credentials) -> ds.Authentication:
        return ds.Authentication(212, peer="peer", challenge=("syncml:auth-md5", "bm9uY2U="))

    async def open_datastore(self, peer: object, server_uri: str, client_uri: str) -> object:
        return self.run if server_uri == "addressbook" else 404

    async def save_devinf(self, peer: object, devinf: dict[str, object]) -> None:
        pass


class Driver:
    """Plays the client: numbers messages and commands, encodes and decodes every reply."""

    def __init__(self, run: FakeRun, *, wbxml: bool, max_msg_size: int) -> None:
        self.session = ds.DsSession(
            backend=FakeBackend(run),
            session_id="7",
            resp_uri="http://x/omads?s=t",
            server_uri="http://x/omads",
            wbxml=wbxml,
        )
        self.wbxml = wbxml
        self.max_msg_size = max_msg_size
        self.msg_id = 0
        self.sizes: list[int] = []

    async def send(self, commands: list[object], final: bool = True) -> Message:
        self.msg_id += 1
        number = 0
        for command in commands:
            for each in [command, *getattr(command, "commands", [])]:
                number += 1
                each.cmd_id = str(number)  # type: ignore[attr-defined]
        header = SyncHdr(
            session_id="7",
            msg_id=str(self.msg_id),
            target=Target("http://x/omads"),
            source=Source("client-1", "alice"),
            meta=Meta(max_msg_size=self.max_msg_size),
        )
        request = syncml.encode_message(Message(header, commands, final), self.wbxml)  # type: ignore[arg-type]
        parsed = syncml.parse_message(request, syncml.content_type(self.wbxml))
        reply = await self.session.receive(parsed)
        encoded = syncml.encode_message(reply, self.wbxml)
        self.sizes.append(len(encoded))
        decoded = syncml.parse_message(encoded, syncml.content_type(self.wbxml))
        first = decoded.commands[0]
        assert isinstance(first, Status) and first.cmd == "SyncHdr"
        assert first.msg_ref == str(self.msg_id)
        return decoded


def alert() -> Alert:
    return Alert(
        cmd_id="",
        data="201",
        items=[
            Item(
                target=Target("addressbook"),
                source=Source("./addressbook"),
                meta=Meta(anchor=Anchor(next="a2")),
            )
        ],
    )


def sync(*commands: object) -> Sync:
    return Sync(
        cmd_id="",
        target=Target("addressbook"),
        source=Source("./addressbook"),
        commands=list(commands),
    )  # type: ignore[arg-type]


def next_message() -> Alert:
    return Alert(cmd_id="", data="222", items=[Item(target=Target("x"), source=Source("y"))])


@pytest.mark.parametrize("wbxml", [False, True], ids=["xml", "wbxml"])
async def test_outgoing_package_respects_max_msg_size_and_splits_large_objects(wbxml: bool) -> None:
    big = ("PHOTO;ENCODING=b:" + "QUJD" * 5000 + "\r\n") * 1
    changes = [ds.ServerChange("Add", "900", None, big, "text/vcard")]
    changes += [
        ds.ServerChange(
            "Add", str(n), None, f"BEGIN:VCARD\r\nFN:P{n}\r\nEND:VCARD\r\n", "text/vcard"
        )
        for n in range(60)
    ]
    run = FakeRun(changes)
    client = Driver(run, wbxml=wbxml, max_msg_size=4096)
    package2 = await client.send([alert()])
    assert package2.final
    # Without a DevInf of the device the server asks for it (once).
    asked = [c for c in package2.commands if isinstance(c, syncml.Get)]
    assert [g.items[0].target.loc_uri for g in asked] == ["./devinf12"]
    alerted = next(c for c in package2.commands if isinstance(c, Status) and c.cmd == "Alert")
    echoed = alerted.items[0].data
    assert echoed.tag == "Anchor" and echoed.find("Next").text == "a2"  # type: ignore[union-attr]
    received: dict[str, list[str]] = {}
    sizes: dict[str, int | None] = {}
    more: list[bool] = []
    reply = await client.send([sync()])
    while True:
        for command in reply.commands:
            if isinstance(command, Sync):
                for add in command.commands:
                    item = add.items[0]
                    uri = item.source.loc_uri
                    if uri not in received:
                        sizes[uri] = item.meta.size if item.meta else None
                    received.setdefault(uri, []).append(item.data)
                    more.append(item.more_data)
        if reply.final:
            break
        reply = await client.send([next_message()], final=False)
    assert max(client.sizes) <= 4096, client.sizes
    assert "".join(received["900"]) == big
    assert len(received["900"]) > 4 and sizes["900"] == len(big.encode())
    assert more.count(True) == len(received["900"]) - 1
    assert len(received) == 61
    assert client.session.phase == "mapping"
    done = await client.send([])
    assert done.final and run.finished == ("a2", client.session.stores["addressbook"].server_next)


@pytest.mark.parametrize("wbxml", [False, True], ids=["xml", "wbxml"])
async def test_incoming_large_object_is_joined_and_checked(wbxml: bool) -> None:
    run = FakeRun([])
    client = Driver(run, wbxml=wbxml, max_msg_size=65536)
    await client.send([alert()])
    text = "BEGIN:VCARD\r\nFN:Big\r\nNOTE:" + "x" * 3000 + "\r\nEND:VCARD\r\n"
    first = Add(
        cmd_id="",
        items=[
            Item(
                source=Source("L1"),
                meta=Meta(type="text/vcard", size=len(text)),
                data=text[:1000],
                more_data=True,
            )
        ],
    )
    reply = await client.send([sync(first)], final=False)
    answered = {(s.cmd_ref, s.cmd): s.data for s in reply.commands if isinstance(s, Status)}
    assert answered[("2", "Add")] == "213"
    assert any(isinstance(c, Alert) and c.data == "222" for c in reply.commands)
    assert not reply.final
    rest = Add(cmd_id="", items=[Item(source=Source("L1"), data=text[1000:])])
    reply = await client.send([sync(rest)])
    answered = {(s.cmd_ref, s.cmd): s.data for s in reply.commands if isinstance(s, Status)}
    assert answered[("2", "Add")] == "201"
    assert [c.data for c in run.applied] == [text]
    # A declared size the chunks do not add up to is refused (424), nothing applied.
    run2 = FakeRun([])
    client2 = Driver(run2, wbxml=wbxml, max_msg_size=65536)
    await client2.send([alert()])
    wrong = Add(
        cmd_id="",
        items=[Item(source=Source("L2"), meta=Meta(size=99999), data="abc", more_data=True)],
    )
    await client2.send([sync(wrong)], final=False)
    end = Add(cmd_id="", items=[Item(source=Source("L2"), data="def")])
    reply = await client2.send([sync(end)])
    answered = {(s.cmd_ref, s.cmd): s.data for s in reply.commands if isinstance(s, Status)}
    assert answered[("2", "Add")] == "424"
    assert run2.applied == []


async def test_client_package_over_several_messages_gets_222_until_final() -> None:
    run = FakeRun([ds.ServerChange("Add", "5", None, "BEGIN:VCARD\r\nEND:VCARD\r\n", "text/vcard")])
    client = Driver(run, wbxml=False, max_msg_size=65536)
    await client.send([alert()])
    one = Add(
        cmd_id="", items=[Item(source=Source("1"), data="BEGIN:VCARD\r\nFN:A\r\nEND:VCARD\r\n")]
    )
    reply = await client.send([sync(one)], final=False)
    assert not reply.final
    assert not any(isinstance(c, Sync) for c in reply.commands)  # the server waits its turn
    two = Add(
        cmd_id="", items=[Item(source=Source("2"), data="BEGIN:VCARD\r\nFN:B\r\nEND:VCARD\r\n")]
    )
    reply = await client.send([sync(two)])
    assert reply.final
    server_sync = next(c for c in reply.commands if isinstance(c, Sync))
    assert [a.items[0].source.loc_uri for a in server_sync.commands] == ["5"]
    assert len(run.applied) == 2


def chunk(luid: str, data: str, *, size: int | None = None, more: bool = True) -> Add:
    meta = Meta(type="text/vcard", size=size) if size is not None else None
    return Add(cmd_id="", items=[Item(source=Source(luid), meta=meta, data=data, more_data=more)])


async def item_status(client: Driver, command: Add, final: bool = False) -> str:
    reply = await client.send([sync(command)], final=final)
    return next(s.data for s in reply.commands if isinstance(s, Status) and s.cmd == "Add")


async def test_an_incoming_large_object_is_kept_within_its_size_and_max_obj_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chunks beyond the declared Size (424) or the server's MaxObjSize (413) drop the
    object: nothing is kept of it, its later chunks get the same answer, none is applied."""
    monkeypatch.setattr(ds, "SERVER_MAX_OBJ_SIZE", 2000)
    run = FakeRun([])
    client = Driver(run, wbxml=False, max_msg_size=65536)
    await client.send([alert()])
    # Declared larger than the server takes: refused at once.
    assert await item_status(client, chunk("A", "x" * 100, size=5000)) == "413"
    assert await item_status(client, chunk("A", "x" * 100, more=False)) == "413"
    # More than declared, before the last chunk: 424, and the rest too.
    assert await item_status(client, chunk("B", "x" * 100, size=150)) == "213"
    assert await item_status(client, chunk("B", "x" * 100)) == "424"
    assert client.session.stores["addressbook"].chunk.parts == []  # type: ignore[union-attr]
    assert await item_status(client, chunk("B", "x" * 100, more=False)) == "424"
    # No Size declared: MaxObjSize bounds it.
    assert await item_status(client, chunk("C", "x" * 1500)) == "213"
    assert await item_status(client, chunk("C", "x" * 1500)) == "413"
    assert await item_status(client, chunk("C", "x", more=False), final=True) == "413"
    assert run.applied == []
    assert client.session.stores["addressbook"].chunk is None
