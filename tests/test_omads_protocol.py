"""OMA DS messages written by hand against the running service: authentication (Basic, MD5
with a fresh nonce, replays), devices outside the inventory, 508 on a tampered anchor,
malformed bodies and partly wrong messages. Every refusal leaves the PIM store unchanged."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import httpx
import pytest
import trio

from engine.ids import new_id
from engine.omads import OmadsBackend
from engine.passwords import hash_password
from engine.protocols import omads as ds, syncml
from engine.protocols.syncml import (
    Add,
    Alert,
    Anchor,
    BadCommand,
    Cred,
    Item,
    Message,
    Meta,
    Source,
    Status,
    Sync,
    SyncHdr,
    Target,
)
from engine.store import open_sqlite_store
from engine.timestamps import now

from .conftest import RunningService
from .omads_world import PASSWORD, DsWorld, make_world, vcard

XML = syncml.CONTENT_TYPE_DS_XML


@pytest.fixture
def world(running: RunningService, tmp_path: Path) -> DsWorld:
    return make_world(running, tmp_path)


def basic(user: str, password: str) -> Cred:
    return Cred(
        base64.b64encode(f"{user}:{password}".encode()).decode(),
        Meta(type="syncml:auth-basic", format="b64"),
    )


def md5(user: str, password: str, nonce: str) -> Cred:
    def b64md5(data: bytes) -> bytes:
        return base64.b64encode(hashlib.md5(data).digest())

    digest = b64md5(b64md5(f"{user}:{password}".encode()) + b":" + base64.b64decode(nonce))
    return Cred(digest.decode(), Meta(type="syncml:auth-md5", format="b64"))


class RawClient:
    """A hand-driven SyncML client: one session, messages numbered in order."""

    def __init__(self, http: httpx.AsyncClient, url: str, device: str, session: str = "1") -> None:
        self.http = http
        self.url = url
        self.device = device
        self.session = session
        self.msg_id = 0

    async def send(
        self,
        commands: list[object],
        *,
        cred: Cred | None = None,
        final: bool = True,
        user: str = "alice",
    ) -> Message:
        self.msg_id += 1
        header = SyncHdr(
            session_id=self.session,
            msg_id=str(self.msg_id),
            target=Target(self.url),
            source=Source(self.device, user),
            cred=cred,
            meta=Meta(max_msg_size=65536),
        )
        number = 0
        for command in commands:
            for each in [command, *getattr(command, "commands", [])]:
                number += 1
                each.cmd_id = str(number)  # type: ignore[attr-defined]
        body = syncml.encode_message(Message(header, commands, final))  # type: ignore[arg-type]
        response = await self.http.post(self.url, content=body, headers={"Content-Type": XML})
        assert response.status_code == 200, response.text
        reply = syncml.parse_message(response.content, response.headers["Content-Type"])
        if reply.header.resp_uri:
            self.url = reply.header.resp_uri
        return reply


def alert(code: int, uri: str = "addressbook", last: str | None = None, next_: str = "n1") -> Alert:
    return Alert(
        cmd_id="",
        data=str(code),
        items=[
            Item(
                target=Target(uri),
                source=Source(f"./{uri}"),
                meta=Meta(anchor=Anchor(next=next_, last=last)),
            )
        ],
    )


def statuses(reply: Message) -> dict[tuple[str, str], Status]:
    return {
        (status.cmd_ref, status.cmd): status
        for status in reply.commands
        if isinstance(status, Status)
    }


async def test_basic_then_md5_with_fresh_nonces(world: DsWorld) -> None:
    world.add_device("raw-1")
    async with world.running.client() as http:
        client = RawClient(http, world.url, "raw-1")
        first = await client.send([alert(201)], cred=basic("alice", PASSWORD))
        header = statuses(first)[("0", "SyncHdr")]
        assert header.data == "212"
        assert header.chal is not None and header.chal.meta.type == "syncml:auth-md5"
        nonce = header.chal.meta.next_nonce
        assert nonce
        # The next session authenticates with MD5 and the nonce it was given ...
        again = RawClient(http, world.url, "raw-1", session="2")
        second = await again.send([alert(201)], cred=md5("alice", PASSWORD, nonce))
        accepted = statuses(second)[("0", "SyncHdr")]
        assert accepted.data == "212"
        assert accepted.chal is not None and accepted.chal.meta.next_nonce != nonce
        # ... and the same digest does not open a third one.
        replay = RawClient(http, world.url, "raw-1", session="3")
        refused = await replay.send([alert(201)], cred=md5("alice", PASSWORD, nonce))
        assert statuses(refused)[("0", "SyncHdr")].data == "401"


@pytest.mark.parametrize(
    ("device", "user", "password"),
    [
        ("raw-2", "alice", "not the password"),
        ("not-in-inventory", "alice", PASSWORD),
        ("raw-2", "bob", PASSWORD),
    ],
    ids=["wrong-password", "device-not-in-inventory", "not-the-owner"],
)
async def test_refused_credentials_change_nothing(
    world: DsWorld, device: str, user: str, password: str
) -> None:
    world.add_device("raw-2")
    before = world.counts()
    async with world.running.client() as http:
        client = RawClient(http, world.url, device)
        add = Add(cmd_id="", items=[Item(source=Source("1"), data=vcard("Doe John"))])
        reply = await client.send(
            [alert(201), Sync(cmd_id="", target=Target("addressbook"), commands=[add])],
            cred=basic(user, password),
            user=user,
        )
    answered = statuses(reply)
    assert answered[("0", "SyncHdr")].data == "401"
    assert answered[("0", "SyncHdr")].chal is not None
    assert answered[("1", "Alert")].data == "401"
    assert answered[("2", "Sync")].data == "401"
    assert reply.final
    assert world.counts() == before


async def test_missing_credentials_are_challenged(world: DsWorld) -> None:
    world.add_device("raw-3")
    async with world.running.client() as http:
        reply = await RawClient(http, world.url, "raw-3").send([alert(201)])
    header = statuses(reply)[("0", "SyncHdr")]
    assert header.data == "407"
    assert header.chal is not None and header.chal.meta.type == "syncml:auth-basic"


async def test_inactive_device_is_refused(world: DsWorld) -> None:
    world.add_device("raw-4", state="inactive")
    async with world.running.client() as http:
        reply = await RawClient(http, world.url, "raw-4").send(
            [alert(201)], cred=basic("alice", PASSWORD)
        )
    assert statuses(reply)[("0", "SyncHdr")].data == "401"


async def test_unknown_anchor_is_508_and_a_slow_sync(world: DsWorld) -> None:
    world.add_device("raw-5")
    async with world.running.client() as http:
        client = RawClient(http, world.url, "raw-5")
        reply = await client.send([alert(200, last="tampered")], cred=basic("alice", PASSWORD))
    answered = statuses(reply)
    assert answered[("1", "Alert")].data == "508"
    server_alert = next(c for c in reply.commands if isinstance(c, Alert))
    assert server_alert.data == "201"
    assert server_alert.items[0].target.loc_uri == "./addressbook"


async def test_partly_wrong_message_gets_a_status_for_every_command(world: DsWorld) -> None:
    world.add_device("raw-6")
    async with world.running.client() as http:
        client = RawClient(http, world.url, "raw-6")
        reply = await client.send(
            [alert(201), alert(201, uri="nowhere"), alert(999)], cred=basic("alice", PASSWORD)
        )
        answered = statuses(reply)
        assert answered[("1", "Alert")].data == "200"
        assert answered[("2", "Alert")].data == "404"
        assert answered[("3", "Alert")].data == "406"
        assert all(s.msg_ref == "1" for s in answered.values())
        # Package 3: one good Add, one without data, a Sync of a datastore never alerted.
        good = Add(cmd_id="", items=[Item(source=Source("a"), data=vcard("Doe John"))])
        empty = Add(cmd_id="", items=[Item(source=Source("b"))])
        reply = await client.send(
            [
                Sync(cmd_id="", target=Target("addressbook"), commands=[good, empty]),
                Sync(cmd_id="", target=Target("memo"), commands=[]),
            ]
        )
    answered = statuses(reply)
    assert answered[("1", "Sync")].data == "200"
    assert answered[("2", "Add")].data == "201"
    assert answered[("3", "Add")].data == "412"
    assert answered[("4", "Sync")].data == "404"
    assert all(s.msg_ref == "2" for s in answered.values())
    assert world.scalar("SELECT count(*) FROM pim_items") == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"<SyncML><SyncHdr>", XML, 400),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]><SyncML/>", XML, 400),
        (b"\x03\x01\x6a\x00\xff\xff\xff", syncml.CONTENT_TYPE_DS_WBXML, 400),
        (b"<SyncML/>", "text/plain", 415),
    ],
    ids=["truncated-xml", "doctype", "garbage-wbxml", "not-syncml"],
)
async def test_malformed_bodies_change_nothing(
    world: DsWorld, body: bytes, content_type: str, status: int
) -> None:
    before = world.counts()
    async with world.running.client() as http:
        response = await http.post(world.url, content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert world.counts() == before


def test_bad_command_is_modelled() -> None:
    """The model turns an unknown command into a BadCommand the server answers."""
    assert BadCommand("Search", "4", "unsupported", 406).status == 406


async def test_oversized_message_is_refused_with_413(world: DsWorld) -> None:
    before = world.counts()
    body = b"<SyncML>" + b" " * (syncml.MAX_MESSAGE_BYTES + 1) + b"</SyncML>"
    async with world.running.client() as http:
        response = await http.post(world.url, content=body, headers={"Content-Type": XML})
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("text/plain")
    assert world.counts() == before


async def test_a_repeated_message_gets_the_same_answer_and_is_applied_once(world: DsWorld) -> None:
    """A client that did not get an answer sends the same message again (same MsgID)."""
    world.add_device("raw-7")
    async with world.running.client() as http:
        client = RawClient(http, world.url, "raw-7")
        await client.send([alert(201)], cred=basic("alice", PASSWORD))
        add = Add(cmd_id="", items=[Item(source=Source("1"), data=vcard("Doe John"))])
        sync = Sync(cmd_id="", target=Target("addressbook"), commands=[add])
        first = await client.send([sync])
        client.msg_id -= 1
        again = await client.send([sync])
    assert syncml.encode_message(again) == syncml.encode_message(first)
    assert world.scalar("SELECT count(*) FROM pim_items") == 1


def devinf_taking_only_vcard21() -> object:
    from engine.protocols.wbxml import Element
    from engine.protocols.wbxml_tables import DEVINF_NS

    def leaf(tag: str, text: str) -> Element:
        return Element(tag, DEVINF_NS, [text])

    store = Element(
        "DataStore",
        DEVINF_NS,
        [
            leaf("SourceRef", "./addressbook"),
            Element("Rx-Pref", DEVINF_NS, [leaf("CTType", "text/x-vcard"), leaf("VerCT", "2.1")]),
            Element("Tx-Pref", DEVINF_NS, [leaf("CTType", "text/x-vcard"), leaf("VerCT", "2.1")]),
        ],
    )
    return Element(
        "DevInf",
        DEVINF_NS,
        [
            leaf("VerDTD", "1.2"),
            leaf("Man", "Old"),
            leaf("DevID", "raw-9"),
            leaf("DevTyp", "phone"),
            store,
        ],
    )


async def test_server_asks_for_devinf_and_converts_for_a_vcard21_device(world: DsWorld) -> None:
    from engine.protocols.syncml import Results

    world.add_device("raw-8")
    world.add_device("raw-9")
    async with world.running.client() as http:
        first = RawClient(http, world.url, "raw-8")
        await first.send([alert(201)], cred=basic("alice", PASSWORD))
        add = Add(cmd_id="", items=[Item(source=Source("1"), data=vcard("Doe John"))])
        await first.send([Sync(cmd_id="", target=Target("addressbook"), commands=[add])])
        await first.send([])
        old = RawClient(http, world.url, "raw-9")
        reply = await old.send([alert(201)], cred=basic("alice", PASSWORD))
        (get,) = [c for c in reply.commands if isinstance(c, syncml.Get)]
        answer = Results(
            cmd_id="",
            cmd_ref=get.cmd_id,
            msg_ref="1",
            items=[Item(source=Source("./devinf12"), data=devinf_taking_only_vcard21())],
        )
        reply = await old.send([answer, Sync(cmd_id="", target=Target("addressbook"))])
    (server_sync,) = [c for c in reply.commands if isinstance(c, Sync)]
    (sent,) = server_sync.commands
    assert sent.items[0].meta.type == "text/x-vcard"
    assert "VERSION:2.1" in sent.items[0].data


async def test_md5_digest_is_not_used_after_the_account_changed(world: DsWorld) -> None:
    """A password change (any change of the account) makes the owner use Basic again, so
    the digest of an old password opens nothing."""
    world.add_device("raw-10")
    async with world.running.client() as http:
        client = RawClient(http, world.url, "raw-10")
        first = await client.send([alert(201)], cred=basic("alice", PASSWORD))
        nonce = statuses(first)[("0", "SyncHdr")].chal.meta.next_nonce  # type: ignore[union-attr]
        world.execute(
            "UPDATE accounts SET updated_at = '2999-01-01T00:00:00.000Z' WHERE id = ?",
            world.owner_id,
        )
        later = RawClient(http, world.url, "raw-10", session="2")
        reply = await later.send([alert(201)], cred=md5("alice", PASSWORD, nonce))
    header = statuses(reply)[("0", "SyncHdr")]
    assert header.data == "401"
    assert header.chal is not None and header.chal.meta.type == "syncml:auth-basic"


async def test_a_repeat_is_answered_only_at_the_token_of_the_session_it_belongs_to(
    world: DsWorld,
) -> None:
    """Someone who names another's device and SessionID gets a RespURI of their own; at it,
    the other's MsgID must not bring back the other's last answer (nor its RespURI)."""
    world.add_device("raw-9")
    async with world.running.client() as http:
        victim = RawClient(http, world.url, "raw-9")
        await victim.send([alert(201)], cred=basic("alice", PASSWORD))
        intruder = RawClient(http, world.url, "raw-9")
        refused = await intruder.send([alert(201)])
        assert statuses(refused)[("0", "SyncHdr")].data == "407"
        add = Add(cmd_id="", items=[Item(source=Source("1"), data=vcard("Doe John"))])
        answer = await victim.send([Sync(cmd_id="", target=Target("addressbook"), commands=[add])])
        intruder.msg_id = victim.msg_id - 1  # the victim's SessionID and MsgID, at its own URI
        stolen = await intruder.send([alert(201)])
    assert syncml.encode_message(stolen) != syncml.encode_message(answer)
    assert stolen.header.resp_uri != victim.url
    assert statuses(stolen)[("0", "SyncHdr")].data != "212"
    assert victim.url.split("?s=")[1] not in syncml.encode_message(stolen).decode()


async def test_a_nonce_is_accepted_once_by_two_sessions_of_the_same_device(
    tmp_path: Path,
) -> None:
    """The device named ``IMEI:x`` and ``x`` has two actors: both presenting the same MD5
    digest at once, one only gets in (the nonce is checked and replaced in one write)."""
    async with open_sqlite_store(tmp_path / "ds.sqlite3") as store:
        at, password_hash = now(), hash_password(PASSWORD)

        def setup(conn: object) -> None:
            org, account = new_id(), new_id()
            conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
                " VALUES (?, 'acme', 'Acme', ?, ?)",
                (org, at, at),
            )
            conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO accounts (id, organisation_id, login, kind, password_hash,"
                " created_at, updated_at) VALUES (?, ?, 'alice', 'user', ?, ?, ?)",
                (account, org, password_hash, at, at),
            )
            conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO devices (id, organisation_id, owner_id, platform, protocol, state,"
                " imei, created_at, updated_at)"
                " VALUES (?, ?, ?, 'android', 'oma_ds', 'enrolled', '3510', ?, ?)",
                (new_id(), org, account, at, at),
            )

        await store.write(setup)
        first = await OmadsBackend(store).authenticate(
            ds.Credentials("3510", ds.AUTH_BASIC, basic("alice", PASSWORD).data, "alice")
        )
        assert first.status == ds.AUTHENTICATION_ACCEPTED and first.challenge
        digest = md5("alice", PASSWORD, str(first.challenge[1])).data
        outcomes: list[int] = []

        async def present(sync_id: str) -> None:
            answer = await OmadsBackend(store).authenticate(
                ds.Credentials(sync_id, ds.AUTH_MD5, digest, "alice")
            )
            outcomes.append(answer.status)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(present, "IMEI:3510")
            nursery.start_soon(present, "3510")
    assert sorted(outcomes) == [ds.AUTHENTICATION_ACCEPTED, ds.INVALID_CREDENTIALS]


def _on_the_event_loop() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("route", ["/omads", "/omadm"])
async def test_a_large_body_is_parsed_off_the_event_loop(
    running: RunningService, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """Parsing comes before authentication: a large body must not hold the event loop."""
    parse = syncml.parse_message
    where: list[bool] = []

    def watched(*args: object, **kwargs: object) -> Message:
        where.append(_on_the_event_loop())
        return parse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(syncml, "parse_message", watched)
    content_type = XML if route == "/omads" else syncml.CONTENT_TYPE_DM_XML
    async with running.client() as http:
        for body in (b"<SyncML/>", b"<SyncML>" + b" " * 200_000 + b"</SyncML>"):
            response = await http.post(
                running.http_url + route, content=body, headers={"Content-Type": content_type}
            )
            assert response.status_code == 400
    assert where == [True, False]


async def test_an_unknown_device_id_gets_its_refusal_without_a_session_actor(
    world: DsWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone can name any device id: those of no inventory device are refused (the same
    challenge as ever) without activating a session actor for them."""
    import web.omadm
    import web.omads

    asked: list[str] = []
    for module in (web.omads, web.omadm):
        ask = module.ask_device_session

        async def recorded(protocol: str, key: str, *args: object, ask=ask) -> object:  # type: ignore[no-untyped-def]
            asked.append(key)
            return await ask(protocol, key, *args)

        monkeypatch.setattr(module, "ask_device_session", recorded)
    world.add_device("raw-known")
    before = world.counts()
    async with world.running.client() as http:
        for device in ("raw-unknown", "raw-known"):
            reply = await RawClient(http, world.url, device).send(
                [alert(201)], cred=basic("alice", "wrong")
            )
            header = statuses(reply)[("0", "SyncHdr")]
            assert header.data == "401" and header.chal is not None
        dm_body = syncml.encode_message(
            Message(
                SyncHdr("1", "1", Target("x"), Source("IMEI:000"), ver_proto="DM/1.2"),
                [Alert(cmd_id="1", data="1201")],
                True,
            )
        )
        response = await http.post(
            world.running.http_url + "/omadm",
            content=dm_body,
            headers={"Content-Type": syncml.CONTENT_TYPE_DM_XML},
        )
        dm_reply = syncml.parse_message(response.content, response.headers["Content-Type"])
    assert statuses(dm_reply)[("0", "SyncHdr")].data == "407"
    assert asked == ["raw-known"]
    assert world.counts() == before
