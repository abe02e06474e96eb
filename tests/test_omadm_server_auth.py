"""The server's credentials through the running service, with the plain OMA DM client
simulator as the device: the first session provisions the DM account (DMAcc, SRVCRED and
CLCRED), later sessions are signed and the device checks them, the package 0 notification is
keyed with the server's credentials (accepted; tampered or replayed, discarded), HMAC both
ways, a device out of step with the server nonce, a server the device cannot authenticate,
and nonces from unauthenticated messages: protocol statuses, and nothing changed."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from bench.omadm_sim import DmClient
from engine.omadm_credentials import ServerSecrets
from engine.pki import CertificateAuthority
from engine.protocols import omadm as dm, omadm_dmacc as dmacc, syncml
from engine.protocols.syncml import Alert, Chal, Message, Meta, Source, Status, SyncHdr, Target

from .conftest import RunningService
from .portal_client import signed_in
from .test_api_commands import PASSWORD, database
from .test_omadm_session import IMEI, World, counts, plain_dm_world, recorded_wakeup

SRVCRED = "./DMAcc/EMM/AppAuth/SRVCRED"


@pytest.fixture
async def world(running: RunningService) -> AsyncIterator[World]:
    async with plain_dm_world(running) as made:
        yield made


def peer_row(running: RunningService) -> dict[str, object]:
    with database(running) as conn:
        return dict(conn.execute("SELECT * FROM omadm_peers").fetchone())


def server_secrets(running: RunningService) -> ServerSecrets:
    tls = running.bootstrap.tls
    return ServerSecrets.of(CertificateAuthority.load(tls.ca_certificate, tls.ca_private_key))


async def command_state(world: World, command_id: str) -> str:
    return str((await world.command(command_id))["state"])


async def bootstrapped(world: World) -> DmClient:
    client = world.dm()
    await client.session()
    assert f"{SRVCRED}/AAuthSecret" in client.tree
    return client


async def test_the_first_session_provisions_the_dm_account_and_later_ones_are_signed(
    world: World,
) -> None:
    client = world.dm()
    await client.session()
    # No server credentials on the device yet: nothing to check in this session.
    assert set(client.server_verdicts) == {dm.OK}
    tree = client.tree
    password = server_secrets(world.running).password(world.device_id)
    assert tree["./DMAcc/EMM/ServerID"] == "EMM"
    assert tree["./DMAcc/EMM/AppID"] == "w7"
    assert tree["./DMAcc/EMM/AppAddr/1/Addr"] == world.running.http_url + "/omadm"
    assert tree[f"{SRVCRED}/AAuthLevel"] == "SRVCRED"
    assert (tree[f"{SRVCRED}/AAuthName"], tree[f"{SRVCRED}/AAuthSecret"]) == ("EMM", password)
    assert tree["./DMAcc/EMM/AppAuth/CLCRED/AAuthName"] == "alice"
    assert "./DMAcc/EMM/AppAuth/CLCRED/AAuthSecret" not in tree
    peer = peer_row(world.running)
    assert peer["bootstrapped_at"] and peer["server_nonce"] == tree[f"{SRVCRED}/AAuthData"]
    shown = await world.client.get(
        f"/api/v1/organisations/contoso/devices/{world.device_id}/omadm-tree",
        headers=world.org.admin,
    )
    assert shown.json()["bootstrapped_at"] == peer["bootstrapped_at"]
    page = f"/admin/o/contoso/devices/{world.device_id}"
    async with signed_in(world.running, "admin", PASSWORD, organisation="contoso") as portal:
        html = await portal.page(page)
    assert "Server credentials on the device" in html and str(peer["bootstrapped_at"]) in html
    # The server's password is derived, never stored, nor kept in the tree snapshot.
    with database(world.running) as conn:
        dumped = "\n".join(str(tuple(row)) for row in conn.execute("SELECT * FROM omadm_nodes"))
        dumped += "\n".join(str(tuple(row)) for row in conn.execute("SELECT * FROM omadm_peers"))
    assert password not in dumped and "AAuthSecret" not in dumped
    # The next session is signed: the device takes the server (212, once) and gives the
    # nonce of next time, which the service keeps.
    before, mark = tree[f"{SRVCRED}/AAuthData"], len(client.server_verdicts)
    await client.session()
    assert client.server_verdicts[mark:] == [dm.AUTHENTICATION_ACCEPTED, dm.OK]
    assert tree[f"{SRVCRED}/AAuthData"] != before
    assert peer_row(world.running)["server_nonce"] == tree[f"{SRVCRED}/AAuthData"]


async def test_a_signed_notification_opens_a_session_tampered_or_replayed_ones_do_not(
    world: World,
) -> None:
    client = await bootstrapped(world)
    command = await world.queue("unlock")
    package = base64.b64decode(str((await recorded_wakeup(world.running))["notification"]))
    _mac, version, _ui, initiator, session, server = dm.read_notification(package)
    assert (version, initiator, server) == (12, 1, "EMM")
    before, trips = counts(world.running), client.round_trips
    tampered = bytearray(package)
    tampered[-5] ^= 0x01  # the session id of the trigger
    assert not await client.notified(bytes(tampered))
    assert not await client.notified(package[:20])  # cut short
    assert client.round_trips == trips and counts(world.running) == before
    assert await client.notified(package)
    assert client.executed == ["./LAWMO/Operations/UnLock"]
    assert await command_state(world, command) == "acknowledged"
    # The session rotated the server nonce: the same package again is a replay.
    trips = client.round_trips
    assert not await client.notified(package)
    assert client.round_trips == trips and client.notifications == [False, False, True, False]
    assert session == int(package[21:23].hex(), 16)


async def test_a_device_not_bootstrapped_gets_no_notification(world: World) -> None:
    with database(world.running) as conn:
        conn.execute("DELETE FROM omadm_peers")
    await world.queue("lock")
    peer = await recorded_wakeup(world.running)
    assert peer["notification"] is None and peer["bootstrapped_at"] is None


async def test_hmac_both_ways(world: World) -> None:
    client = await bootstrapped(world)
    client.auth = dm.AUTH_HMAC
    command = await world.queue("lock")
    mark = len(client.server_verdicts)
    await client.session()
    assert client.server_verdicts[mark:] == [dm.AUTHENTICATION_ACCEPTED, dm.OK, dm.OK]
    assert client.server_hmac is not None  # the server's MAC, in the transport header
    assert client.executed == ["./LAWMO/Operations/PartiallyLock"]
    assert await command_state(world, command) == "acknowledged"


async def test_a_device_out_of_step_with_the_server_nonce_refuses_then_gets_it_again(
    world: World,
) -> None:
    client = await bootstrapped(world)
    client.tree[f"{SRVCRED}/AAuthData"] = "b3V0IG9mIHN0ZXA="  # changed on the device only
    command = await world.queue("lock")
    mark = len(client.server_verdicts)
    await client.session()
    # 401 and a new nonce; the same commands again, signed with it; taken from then on.
    assert client.server_verdicts[mark:] == [
        dm.INVALID_CREDENTIALS,
        dm.AUTHENTICATION_ACCEPTED,
        dm.OK,
        dm.OK,
    ]
    assert client.executed == ["./LAWMO/Operations/PartiallyLock"]
    assert await command_state(world, command) == "acknowledged"
    assert peer_row(world.running)["server_nonce"] == client.tree[f"{SRVCRED}/AAuthData"]


async def test_a_server_the_device_cannot_authenticate_changes_nothing(world: World) -> None:
    client = await bootstrapped(world)
    client.tree[f"{SRVCRED}/AAuthSecret"] = "not the server's password"
    command = await world.queue("lock")
    tree_before = await world.tree()
    before, mark = counts(world.running), len(client.server_verdicts)
    await client.session()
    assert client.server_verdicts[mark:] == [dm.INVALID_CREDENTIALS] * 3
    assert client.executed == []
    assert counts(world.running) == before
    assert await world.tree() == tree_before
    assert await command_state(world, command) == "queued"
    # With the right password again the command goes through.
    client.tree[f"{SRVCRED}/AAuthSecret"] = server_secrets(world.running).password(world.device_id)
    await client.session()
    assert client.executed == ["./LAWMO/Operations/PartiallyLock"]
    assert await command_state(world, command) == "acknowledged"


@pytest.mark.parametrize("password", ["wrong password", None])
async def test_a_nonce_from_an_unauthenticated_message_is_not_taken(
    world: World, password: str | None
) -> None:
    await bootstrapped(world)
    before, peer = counts(world.running), peer_row(world.running)
    header = SyncHdr(
        "77",
        "1",
        Target(world.running.http_url + "/omadm"),
        Source(f"IMEI:{IMEI}", "alice"),
        ver_proto=dm.VER_PROTO,
        cred=syncml.Cred(
            base64.b64encode(f"alice:{password}".encode()).decode(),
            Meta(type=dm.AUTH_BASIC, format="b64"),
        )
        if password
        else None,
    )
    chal = Chal(Meta(type=dm.AUTH_MD5, format="b64", next_nonce="c3RvbGVu"))
    commands = [
        Status("1", "1", "0", "SyncHdr", "212", chal=chal),
        Alert("2", data=str(dm.CLIENT_INITIATED)),
    ]
    body = syncml.encode_message(Message(header, commands, True), False)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            world.running.http_url + "/omadm",
            content=body,
            headers={"Content-Type": syncml.content_type(False, dm=True)},
        )
    reply = syncml.parse_message(response.content, response.headers["content-type"])
    status = reply.commands[0]
    assert isinstance(status, Status) and status.cmd == "SyncHdr"
    expected = dm.INVALID_CREDENTIALS if password else dm.MISSING_CREDENTIALS
    assert status.data == str(expected) and reply.header.cred is None
    after = peer_row(world.running)
    assert counts(world.running) == before
    assert (after["server_nonce"], after["bootstrapped_at"]) == (
        peer["server_nonce"],
        peer["bootstrapped_at"],
    )


async def test_a_replayed_signed_session_start_is_refused(world: World) -> None:
    client = await bootstrapped(world)
    sent: list[bytes] = []
    post = client.http.post

    async def record(url, content, headers):  # type: ignore[no-untyped-def]
        sent.append(content)
        return await post(url, content=content, headers=headers)

    client.http.post = record  # type: ignore[method-assign]
    await client.session()
    client.http.post = post  # type: ignore[method-assign]
    before, peer = counts(world.running), peer_row(world.running)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            world.running.http_url + "/omadm",
            content=sent[0],
            headers={"Content-Type": syncml.content_type(False, dm=True)},
        )
    reply = syncml.parse_message(response.content, response.headers["content-type"])
    status = reply.commands[0]
    assert isinstance(status, Status) and status.data == str(dm.INVALID_CREDENTIALS)
    assert status.chal is not None and status.chal.meta.next_nonce  # a fresh client nonce
    assert reply.header.cred is None  # no signature for a client that did not authenticate
    assert counts(world.running) == before
    assert peer_row(world.running)["server_nonce"] == peer["server_nonce"]
    assert dmacc.read_account(client.tree) is not None


async def test_a_bootstrap_whose_answer_was_lost_is_recovered_by_the_devices_challenge(
    world: World,
) -> None:
    client = world.dm()
    post = client._post
    calls = 0

    async def cut_after_the_bootstrap(url, message):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:  # the device took the DM account; its Status never arrives
            raise httpx.ConnectError("gone")
        return await post(url, message)

    client._post = cut_after_the_bootstrap  # type: ignore[method-assign]
    with pytest.raises(httpx.ConnectError):
        await client.session()
    client._post = post  # type: ignore[method-assign]
    assert f"{SRVCRED}/AAuthSecret" in client.tree
    assert peer_row(world.running)["bootstrapped_at"] is None
    command = await world.queue("lock")
    assert (await recorded_wakeup(world.running))["notification"] is None
    mark = len(client.server_verdicts)
    await client.session()
    # The device misses the server's Cred (407) and names a nonce; the server signs with
    # it, the device takes it: the device counts as bootstrapped from then on.
    assert client.server_verdicts[mark : mark + 2] == [
        dm.MISSING_CREDENTIALS,
        dm.AUTHENTICATION_ACCEPTED,
    ]
    assert client.executed == ["./LAWMO/Operations/PartiallyLock"]
    assert await command_state(world, command) == "acknowledged"
    peer = peer_row(world.running)
    assert peer["bootstrapped_at"]
    assert peer["server_nonce"] == client.tree[f"{SRVCRED}/AAuthData"]


async def test_a_device_that_lost_its_dm_account_is_provisioned_again(world: World) -> None:
    client = await bootstrapped(world)
    for uri in [u for u in client.tree if u.startswith("./DMAcc/")]:
        del client.tree[uri]  # a factory reset
    command = await world.queue("lock")
    mark = len(client.server_verdicts)
    await client.session()
    # The device did not check the server's Cred (200, no nonce): the account goes again.
    assert client.server_verdicts[mark] == dm.OK
    assert client.executed == ["./LAWMO/Operations/PartiallyLock"]
    assert await command_state(world, command) == "acknowledged"
    peer = peer_row(world.running)
    assert peer["bootstrapped_at"]
    assert peer["server_nonce"] == client.tree[f"{SRVCRED}/AAuthData"]
    await world.queue("unlock")
    package = base64.b64decode(str((await recorded_wakeup(world.running))["notification"]))
    assert await client.notified(package)
    assert client.server_verdicts[-3] == dm.AUTHENTICATION_ACCEPTED


async def test_an_account_set_up_by_hand_gets_the_servers_credentials_added(
    world: World,
) -> None:
    client = world.dm()
    client.tree |= {
        "./DMAcc/EMM": "",
        "./DMAcc/EMM/ServerID": "EMM",
        "./DMAcc/EMM/Name": "set up by hand",
        "./DMAcc/EMM/AppAddr/1/Addr": world.running.http_url + "/omadm",
    }
    await client.session()
    # The whole account could not be added (418, nothing of it kept): its SRVCRED alone.
    assert client.tree["./DMAcc/EMM/Name"] == "set up by hand"
    assert "./DMAcc/EMM/AppAuth/CLCRED/AAuthName" not in client.tree
    password = server_secrets(world.running).password(world.device_id)
    assert client.tree[f"{SRVCRED}/AAuthSecret"] == password
    peer = peer_row(world.running)
    assert peer["bootstrapped_at"]
    assert peer["server_nonce"] == client.tree[f"{SRVCRED}/AAuthData"]
    mark = len(client.server_verdicts)
    await client.session()
    assert client.server_verdicts[mark:] == [dm.AUTHENTICATION_ACCEPTED, dm.OK]
