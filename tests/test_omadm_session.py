"""OMA DM 1.2 through the running service, driven by the plain OMA DM client simulator:
Basic then MD5 with a fresh nonce per session, XML and WBXML, inventory from DevInfo and
DevDetail, lock and wipe from the command queue (LAWMO Exec), Replace of a setting, large
objects both ways within MaxMsgSize, HMAC, and bad input that changes nothing."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import trio

from bench.omadm_sim import DmClient, SessionFailed
from engine.ids import new_id
from engine.principals import AccountKind
from engine.protocols import omadm as dm, syncml
from engine.timestamps import now

from .conftest import RunningService
from .test_api_commands import (
    API,
    PASSWORD,
    Org,
    add_account,
    database,
    new_organisation,
    sign_in_supervisor,
)

IMEI = "490154203237518"
TABLES = ("omadm_nodes", "omadm_peers", "commands", "devices", "audit_events")


@dataclass
class World:
    running: RunningService
    client: httpx.AsyncClient
    org: Org
    device_id: str

    def dm(self, **kwargs: object) -> DmClient:
        values: dict[str, object] = {
            "username": "alice",
            "password": PASSWORD,
        } | kwargs
        return DmClient(self.client, self.running.http_url + "/omadm", f"IMEI:{IMEI}", **values)  # type: ignore[arg-type]

    async def queue(self, kind: str, parameters: dict[str, object] | None = None) -> str:
        response = await self.client.post(
            f"{API}/organisations/{self.org.code}/devices/{self.device_id}/commands",
            json={"kind": kind, "parameters": parameters or {}},
            headers=self.org.admin,
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def command(self, command_id: str) -> dict[str, object]:
        response = await self.client.get(
            f"{API}/organisations/{self.org.code}/commands/{command_id}",
            headers=self.org.admin,
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def tree(self) -> dict[str, str | None]:
        response = await self.client.get(
            f"{API}/organisations/{self.org.code}/devices/{self.device_id}/omadm-tree",
            headers=self.org.admin,
        )
        assert response.status_code == 200, response.text
        return {node["uri"]: node["value"] for node in response.json()["nodes"]}


async def recorded_wakeup(running: RunningService) -> dict[str, object]:
    """The device's DM state once the wake-up is recorded (a task does it after the queueing
    answered): polled with a deadline."""
    with trio.fail_after(5):
        while True:
            with database(running) as conn:
                peer = conn.execute("SELECT * FROM omadm_peers").fetchone()
            if peer is not None and peer["pending_alert_at"] is not None:
                return dict(peer)
            await trio.sleep(0.02)


def counts(running: RunningService) -> dict[str, int]:
    with database(running) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


@pytest.fixture
async def world(running: RunningService) -> AsyncIterator[World]:
    async with plain_dm_world(running) as made:
        yield made


@asynccontextmanager
async def plain_dm_world(running: RunningService) -> AsyncIterator[World]:
    """An organisation, its user alice and her plain OMA DM phone (by IMEI)."""
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "contoso")
        owner = await add_account(running, client, org, "alice", AccountKind.USER)
        device_id = new_id()
        at = now()
        with database(running) as conn:
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, imei, created_at, updated_at)"
                " VALUES (?, ?, ?, 'phone', 'android', 'oma_dm', 'created', ?, ?, ?)",
                (device_id, org.id, owner.id, IMEI, at, at),
            )
        yield World(running, client, org, device_id)


async def test_basic_then_md5_with_a_fresh_nonce_each_session(world: World) -> None:
    client = world.dm()
    await client.session()
    first_nonce = client.nonce
    assert client.auth == dm.AUTH_MD5 and first_nonce
    await client.session()  # MD5 with the nonce of the first session
    assert client.nonce and client.nonce != first_nonce
    assert client.auth == dm.AUTH_MD5
    # The inventory was read from DevInfo and DevDetail.
    tree = await world.tree()
    assert tree["./DevDetail/SwV"] == "14.2" and tree["./DevInfo/Man"] == "Simulated"
    device = await world.client.get(
        f"{API}/organisations/contoso/devices/{world.device_id}", headers=world.org.admin
    )
    body = device.json()
    assert body["state"] == "enrolled" and body["os_version"] == "14.2"
    assert body["model"] == "DM Phone 1"


async def test_a_used_nonce_is_refused_with_a_new_one(world: World) -> None:
    client = world.dm()
    await client.session()
    used = client.nonce
    await client.session()
    replay = world.dm(auth=dm.AUTH_MD5, nonce=used)
    replay._retried = True  # no second attempt: see the refusal itself
    before = counts(world.running)
    with pytest.raises(SessionFailed) as refused:
        await replay.session()
    assert refused.value.status == dm.INVALID_CREDENTIALS
    assert replay.nonce and replay.nonce not in (used, client.nonce)
    after = counts(world.running)
    assert after["omadm_nodes"] == before["omadm_nodes"]
    assert after["commands"] == before["commands"]


async def test_wrong_password_gets_401_and_a_fresh_nonce_and_changes_nothing(
    world: World,
) -> None:
    good = world.dm()
    await good.session()  # the service now knows the digest: it challenges with MD5
    before = counts(world.running)
    with database(world.running) as conn:
        nonce_before = conn.execute("SELECT nonce FROM omadm_peers").fetchone()[0]
    wrong = world.dm(password="not the password", auth=dm.AUTH_MD5, nonce=good.nonce)
    with pytest.raises(SessionFailed) as refused:
        await wrong.session()
    assert refused.value.status == dm.INVALID_CREDENTIALS
    assert wrong.nonce not in (None, nonce_before)
    after = counts(world.running)
    assert after["omadm_nodes"] == before["omadm_nodes"]
    assert after["devices"] == before["devices"]
    missing = world.dm(auth=None)
    with pytest.raises(SessionFailed) as refused:
        await missing.session()
    assert refused.value.status == dm.MISSING_CREDENTIALS


async def test_wbxml_session_with_lock_wipe_and_a_setting(world: World) -> None:
    client = world.dm(wbxml=True)
    await client.session()
    lock = await world.queue("lock")
    wipe = await world.queue("wipe")
    await recorded_wakeup(world.running)  # no push channel reaches it: recorded instead
    await client.session()
    assert client.executed == [
        "./LAWMO/Operations/PartiallyLock",
        "./LAWMO/Operations/FactoryReset",
    ]
    for command_id in (lock, wipe):
        command = await world.command(command_id)
        assert command["state"] == "acknowledged"
        assert command["result"]["statuses"][0]["status"] == 200


async def test_results_larger_than_a_message_come_in_chunks(world: World) -> None:
    client = world.dm(max_msg_size=2048)
    big = "x" * 9000 + "é" * 500
    client.tree["./DevDetail/SwV"] = big
    await client.session()
    tree = await world.tree()
    assert tree["./DevDetail/SwV"] == big
    assert client.round_trips >= 6


async def test_a_malformed_message_is_refused_and_changes_nothing(world: World) -> None:
    before = counts(world.running)
    for body in (b"<SyncML", b"<x/>", b'<!DOCTYPE x [<!ENTITY e "b">]><SyncML>&e;</SyncML>'):
        response = await world.client.post(
            "/omadm", content=body, headers={"Content-Type": syncml.CONTENT_TYPE_DM_XML}
        )
        assert response.status_code == 400
    response = await world.client.post(
        "/omadm", content=b"<SyncML/>", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert counts(world.running) == before


async def test_a_bad_command_gets_an_error_status_and_the_rest_goes_on(world: World) -> None:
    client = world.dm()
    await client.session()
    statuses = [s for s in client.statuses if s.cmd == "Replace"]
    assert statuses and statuses[0].data == "200"
    body = (
        '<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>'
        f"<SessionID>99</SessionID><MsgID>1</MsgID><Target><LocURI>x</LocURI></Target>"
        f"<Source><LocURI>IMEI:{IMEI}</LocURI></Source></SyncHdr><SyncBody>"
        "<Alert><CmdID>1</CmdID><Data>1201</Data></Alert><Search><CmdID>2</CmdID></Search>"
        "<Replace><CmdID>3</CmdID></Replace><Final/></SyncBody></SyncML>"
    )
    before = counts(world.running)
    response = await world.client.post(
        "/omadm", content=body.encode(), headers={"Content-Type": syncml.CONTENT_TYPE_DM_XML}
    )
    assert response.status_code == 200
    reply = syncml.parse_message(response.content, response.headers["content-type"])
    codes = {(s.cmd, s.cmd_ref): s.data for s in reply.commands if isinstance(s, syncml.Status)}
    assert codes[("SyncHdr", "0")] == "407"  # no credentials: nothing is looked at
    assert codes[("Search", "2")] != "200" and codes[("Replace", "3")] != "200"
    assert counts(world.running)["omadm_nodes"] == before["omadm_nodes"]


def test_hmac_header_parsing() -> None:
    header = dm.parse_hmac_header('algorithm=MD5, username="alice", mac=abc==')
    assert header == dm.HmacHeader("MD5", "alice", "abc==")
    assert dm.parse_hmac_header("garbage") is None
    json.dumps({})


async def set_node(world: World, uri: str, value: str, fmt: str = "chr") -> str:
    response = await world.client.post(
        f"{API}/organisations/contoso/devices/{world.device_id}/omadm-settings",
        json={"uri": uri, "value": value, "format": fmt},
        headers=world.org.admin,
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def settings(world: World) -> dict[str, dict[str, object]]:
    response = await world.client.get(
        f"{API}/organisations/contoso/devices/{world.device_id}/omadm-settings",
        headers=world.org.admin,
    )
    assert response.status_code == 200, response.text
    return {s["id"]: s for s in response.json()["items"]}


async def test_replace_of_a_setting_and_a_large_value_in_chunks(world: World) -> None:
    client = world.dm(wbxml=True, max_msg_size=4096)
    await client.session()
    small = await set_node(world, "./Settings/Ringtone/Volume", "7", "int")
    large_value = "<policy>" + "é" * 3000 + "z" * 30_000 + "</policy>"
    large = await set_node(world, "./Settings/Policy/Blob", large_value, "xml")
    await client.session()
    assert client.tree["./Settings/Ringtone/Volume"] == "7"
    assert client.tree["./Settings/Policy/Blob"] == large_value
    assert client.round_trips > 10  # one chunk per message within 4 KB
    states = await settings(world)
    assert states[small]["state"] == states[large]["state"] == "applied"
    assert states[small]["status"] == 200
    tree = await world.tree()
    assert tree["./Settings/Policy/Blob"] == large_value  # written: in the snapshot too


async def test_a_refused_setting_is_failed(world: World) -> None:
    client = world.dm()
    await client.session()
    refused = await set_node(world, "./Vendor/Nowhere/Node", "1")
    client_execute = client._execute

    def refuse_replace(reply, command, chunks, results):  # type: ignore[no-untyped-def]
        if command.name == "Replace":
            return [client._status(reply, command, dm.FORBIDDEN)]
        return client_execute(reply, command, chunks, results)

    client._execute = refuse_replace  # type: ignore[method-assign]
    await client.session()
    state = (await settings(world))[refused]
    assert (state["state"], state["status"]) == ("failed", 403)
    assert "./Vendor/Nowhere/Node" not in await world.tree()


async def test_bad_settings_are_refused(world: World) -> None:
    for body in (
        {"uri": "Vendor/x", "value": "1"},
        {"uri": "./a/../b", "value": "1"},
        {"uri": "./a", "value": "1", "format": "exe"},
    ):
        response = await world.client.post(
            f"{API}/organisations/contoso/devices/{world.device_id}/omadm-settings",
            json=body,
            headers=world.org.admin,
        )
        assert response.status_code in (400, 422), response.text
    assert await settings(world) == {}


async def test_hmac_in_the_transport_header(world: World) -> None:
    client = world.dm()
    await client.session()  # Basic: the service keeps the digest, hands out a nonce
    client.auth = dm.AUTH_HMAC
    await client.session()
    assert client.auth == dm.AUTH_HMAC and client.round_trips == 4
    tree = await world.tree()
    assert tree["./DevInfo/DmV"] == "1.2"
    forged = world.dm(auth=dm.AUTH_HMAC, nonce=client.nonce, password="guessed")
    forged._retried = True
    before = counts(world.running)
    with pytest.raises(SessionFailed) as refused:
        await forged.session()
    assert refused.value.status == dm.INVALID_CREDENTIALS
    assert forged.auth == dm.AUTH_HMAC and forged.nonce != client.nonce
    assert counts(world.running)["omadm_nodes"] == before["omadm_nodes"]


async def test_a_wake_up_leaves_a_package0_notification_and_1200_opens_the_session(
    world: World,
) -> None:
    client = world.dm()
    await client.session()  # provisions the server's credentials on the device
    await world.queue("unlock")
    peer = await recorded_wakeup(world.running)
    package = base64.b64decode(peer["notification"])
    _mac, version, _ui, initiator, _session, server = dm.read_notification(package)
    assert (version, initiator, server) == (12, 1, "EMM")
    assert await client.notified(package)  # checked with the server's credentials, 1200
    assert client.executed == ["./LAWMO/Operations/UnLock"]
    with database(world.running) as conn:
        peer = conn.execute("SELECT * FROM omadm_peers").fetchone()
    assert peer["pending_alert_at"] is None and peer["notification"] is None


async def test_a_command_whose_answer_was_lost_is_given_again(world: World) -> None:
    client = world.dm()
    await client.session()
    lock = await world.queue("lock")
    post = client._post
    calls = 0

    async def cut_after_the_lock(url, message):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 3:  # the Status of the lock never arrives: the connection drops
            raise httpx.ConnectError("gone")
        return await post(url, message)

    client._post = cut_after_the_lock  # type: ignore[method-assign]
    with pytest.raises(httpx.ConnectError):
        await client.session()
    assert client.executed == ["./LAWMO/Operations/PartiallyLock"]
    assert (await world.command(lock))["state"] == "sent"
    client._post = post  # type: ignore[method-assign]
    await client.session()
    assert client.executed == ["./LAWMO/Operations/PartiallyLock"] * 2
    assert (await world.command(lock))["state"] == "acknowledged"


@pytest.mark.parametrize("enrolled", [False, True], ids=["windows platform", "enrolment"])
async def test_a_windows_device_is_never_reached_without_its_certificate(
    world: World, enrolled: bool
) -> None:
    """The owner's password over plain OMA DM opens no session on a Windows device (by its
    platform, or by its Windows enrolment whatever the platform says)."""
    at = now()
    with database(world.running) as conn:
        if enrolled:
            conn.execute(
                "INSERT INTO windows_enrolments (device_id, organisation_id, enrolment_type,"
                " auth_policy, certificate_thumbprint, certificate_serial,"
                " certificate_not_after, client_secret, server_secret, client_nonce, state,"
                " enrolled_at, updated_at)"
                " VALUES (?, ?, 'Device', 'OnPremise', 't', 's', ?, 'c', 's', 'n', 'enrolled',"
                " ?, ?)",
                (world.device_id, world.org.id, at, at, at),
            )
        else:
            conn.execute("UPDATE devices SET platform = 'windows' WHERE id = ?", (world.device_id,))
    before = counts(world.running)
    with pytest.raises(SessionFailed) as refused:
        await world.dm().session()
    assert refused.value.status == dm.INVALID_CREDENTIALS
    assert counts(world.running) == before
