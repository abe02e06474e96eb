"""Windows management end to end: the Windows simulator enrols (discovery → policy →
enrolment with a real PKCS#10), then holds OMA DM sessions over TLS with its new
certificate; lock and wipe queued in the portal are delivered as RemoteLock/RemoteWipe Exec
and their status recorded; unenrolment both ways; certificates that are not an enrolment's
are refused."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import trio

from bench.omadm_sim import DmClient, SessionFailed, windows_client, windows_tls
from bench.windows_sim import Enrolment, SimulatedWindows
from engine.omadm_credentials import ServerSecrets
from engine.pki import CertificateAuthority
from engine.principals import AccountKind, Principal, parse_rights
from engine.protocols import omadm as dm, syncml
from engine.store import open_sqlite_store
from engine.windows_enrolment import request_unenrolment

from .conftest import RunningService
from .portal_client import signed_in
from .test_api_commands import (
    API,
    PASSWORD,
    Org,
    add_account,
    database,
    new_organisation,
    sign_in_supervisor,
)


@dataclass
class World:
    running: RunningService
    client: httpx.AsyncClient
    org: Org
    windows: SimulatedWindows
    enrolment: Enrolment

    def dm_client(self, http: httpx.AsyncClient) -> DmClient:
        return windows_client(
            http, self.enrolment.management_url, self.running.https_url, self.windows.hardware_id
        )

    def tls_client(self, context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
        context = context or windows_tls(self.enrolment, self.running.ca_file)
        return httpx.AsyncClient(verify=context, timeout=30)

    async def device(self) -> dict[str, object]:
        response = await self.client.get(
            f"{API}/organisations/contoso/devices/{self.enrolment.device_id}",
            headers=self.org.admin,
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def tree(self) -> dict[str, object]:
        response = await self.client.get(
            f"{API}/organisations/contoso/devices/{self.enrolment.device_id}/omadm-tree",
            headers=self.org.admin,
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def world(running: RunningService) -> AsyncIterator[World]:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "contoso")
        await add_account(running, client, org, "alice", AccountKind.USER)
        windows = SimulatedWindows(client, running.http_url, device_name="LAPTOP-7")
        enrolment = await windows.enrol("alice@contoso", PASSWORD)
        yield World(running, client, org, windows, enrolment)


async def test_enrolment_then_management_with_lock_and_wipe_from_the_portal(
    world: World,
) -> None:
    async with world.tls_client() as http:
        device = world.dm_client(http)
        await device.session()  # the first management session reads the inventory
        assert device.round_trips == 2
        tree = await world.tree()
        nodes = {node["uri"]: node["value"] for node in tree["nodes"]}  # type: ignore[index]
        assert nodes["./DevDetail/Ext/Microsoft/OSPlatform"] == "Windows 10 Enterprise"
        assert nodes["./DevInfo/Man"] == "Microsoft Corporation"
        assert tree["login_status"] == "user" and tree["sessions"] == 1
        found = await world.device()
        assert found["os_version"] == "10.0.19045.2006"
        assert found["inventory"]["oma_dm"]["total_ram_mb"] == "4096"  # type: ignore[index]

        page = f"/admin/o/contoso/devices/{world.enrolment.device_id}"
        async with signed_in(world.running, "admin", PASSWORD, organisation="contoso") as portal:
            for kind in ("lock", "wipe"):
                answer = await portal.submit(f"{page}/commands", {"kind": kind}, page=page)
                assert answer.status_code == 302, answer.text
            html = await portal.page(page)
            assert "OMA DM" in html and "./DevDetail/SwV" in html  # the tree snapshot
        with trio.fail_after(5):  # a task records the wake-up after the queueing answered
            while True:
                if (await world.tree())["pending_alert_at"] is not None:
                    break
                await trio.sleep(0.02)

        await device.session()
        assert device.executed == [
            "./Vendor/MSFT/RemoteLock/Lock",
            "./Device/Vendor/MSFT/RemoteWipe/doWipe",
        ]
        assert device.round_trips == 5  # inventory, then the commands, then the end
        commands = await world.client.get(
            f"{API}/organisations/contoso/devices/{world.enrolment.device_id}/commands",
            headers=world.org.admin,
        )
        states = {c["kind"]: c for c in commands.json()["items"]}
        assert states["lock"]["state"] == states["wipe"]["state"] == "acknowledged"
        assert states["wipe"]["result"]["statuses"][0]["uris"] == [
            "./Device/Vendor/MSFT/RemoteWipe/doWipe"
        ]
        assert (await world.tree())["pending_alert_at"] is None


async def test_a_failed_exec_fails_the_command(world: World) -> None:
    async with world.tls_client() as http:
        device = world.dm_client(http)
        await device.session()
        queued = await world.client.post(
            f"{API}/organisations/contoso/devices/{world.enrolment.device_id}/commands",
            json={"kind": "message", "parameters": {"text": "hello"}},
            headers=world.org.admin,
        )
        assert queued.status_code == 201
        await device.session()
        command = await world.client.get(
            f"{API}/organisations/contoso/commands/{queued.json()['id']}", headers=world.org.admin
        )
        assert command.json()["state"] == "failed"  # no OMA DM message on Windows


async def test_unenrolment_alert_from_the_device(world: World) -> None:
    async with world.tls_client() as http:
        device = world.dm_client(http)
        device.alerts.append((dm.UNENROL_ALERT_TYPE, "1"))
        await device.session()
        with database(world.running) as conn:
            state = conn.execute("SELECT state FROM windows_enrolments").fetchone()[0]
        assert state == "unenrolled"
        with pytest.raises(SessionFailed) as refused:
            await device.session()  # its certificate no longer identifies a device
        assert refused.value.status == 403


async def test_an_enterprise_wipe_unenrols_through_dmclient(world: World) -> None:
    asked = await world.client.post(
        f"{API}/organisations/contoso/devices/{world.enrolment.device_id}/commands",
        json={"kind": "enterprise_wipe"},
        headers=world.org.admin,
    )
    assert asked.status_code == 201, asked.text
    async with world.tls_client() as http:
        device = world.dm_client(http)
        await device.session()
    provider = world.enrolment.provider_id
    assert device.executed[-1] == f"./Vendor/MSFT/DMClient/Provider/{provider}/Unenroll"
    assert device.exec_data[-1] == provider
    with database(world.running) as conn:
        state = conn.execute("SELECT state FROM windows_enrolments").fetchone()[0]
    assert state == "unenrolled"


async def test_certificates_that_are_no_enrolments_are_refused(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    message = syncml.encode_message(
        syncml.Message(
            syncml.SyncHdr(
                session_id="1",
                msg_id="1",
                target=syncml.Target("https://localhost:8443/omadm"),
                source=syncml.Source("{X}"),
                ver_proto=dm.VER_PROTO,
            ),
            [syncml.Alert(cmd_id="1", data="1201")],
            final=True,
        )
    )
    headers = {"Content-Type": syncml.CONTENT_TYPE_DM_XML}
    # A certificate of another CA: the TLS handshake itself fails.
    foreign = CertificateAuthority.create("Foreign CA")
    cert, key = foreign.issue_client_certificate("intruder")
    identity = tmp_path / "foreign.pem"
    from engine.pki import write_pem

    write_pem(identity, cert, key)
    context = ssl.create_default_context(cafile=world.running.ca_file)
    context.load_cert_chain(str(identity))
    async with httpx.AsyncClient(verify=context, timeout=30) as http:
        with pytest.raises(httpx.HTTPError):
            await http.post(world.running.https_url + "/omadm", content=message, headers=headers)
    # A certificate of the service's CA that no enrolment holds: 403 in SyncML.
    ours = CertificateAuthority.load(
        world.running.bootstrap.tls.ca_certificate, world.running.bootstrap.tls.ca_private_key
    )
    cert, key = ours.issue_client_certificate("not-enrolled")
    identity = tmp_path / "ours.pem"
    write_pem(identity, cert, key)
    context = ssl.create_default_context(cafile=world.running.ca_file)
    context.load_cert_chain(str(identity))
    with database(world.running) as conn:
        before = conn.execute("SELECT count(*) FROM omadm_nodes").fetchone()[0]
    async with httpx.AsyncClient(verify=context, timeout=30) as http:
        response = await http.post(
            world.running.https_url + "/omadm", content=message, headers=headers
        )
    assert response.status_code == 403
    reply = syncml.parse_message(response.content, response.headers["content-type"])
    assert reply.commands[0].data == "403"  # type: ignore[union-attr]
    with database(world.running) as conn:
        assert conn.execute("SELECT count(*) FROM omadm_nodes").fetchone()[0] == before


async def test_unenrolment_requested_by_a_manager_is_delivered_by_dmclient(world: World) -> None:
    with database(world.running) as conn:
        admin = conn.execute(
            "SELECT * FROM accounts WHERE login = 'admin' AND organisation_id = ?",
            (world.org.id,),
        ).fetchone()
    principal = Principal(
        account_id=admin["id"],
        login="admin",
        kind=AccountKind(admin["kind"]),
        organisation_id=world.org.id,
        rights=parse_rights(json.loads(admin["rights"])),
    )
    async with open_sqlite_store(world.running.bootstrap.database.path) as store:
        await request_unenrolment(store, principal, "contoso", world.enrolment.device_id)
    async with world.tls_client() as http:
        device = world.dm_client(http)
        await device.session()  # package 4 of the session carries it, after the inventory
        with pytest.raises(SessionFailed) as refused:
            await device.session()  # the certificate no longer identifies a device
        assert refused.value.status == 403
    provider = world.enrolment.provider_id
    assert f"./Vendor/MSFT/DMClient/Provider/{provider}/Unenroll" in device.executed
    with database(world.running) as conn:
        state = conn.execute("SELECT state FROM windows_enrolments").fetchone()[0]
    assert state == "unenrolled"


async def test_policy_csp_settings_and_user_settings_wait_for_the_user(world: World) -> None:
    device_setting = "./Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength"
    user_setting = "./User/Vendor/MSFT/Policy/Config/Browser/AllowCookies"
    ids = {}
    for uri, value in ((device_setting, "8"), (user_setting, "0")):
        response = await world.client.post(
            f"{API}/organisations/contoso/devices/{world.enrolment.device_id}/omadm-settings",
            json={"uri": uri, "value": value, "format": "int"},
            headers=world.org.admin,
        )
        assert response.status_code == 202, response.text
        ids[uri] = response.json()["id"]

    async def states() -> dict[str, str]:
        response = await world.client.get(
            f"{API}/organisations/contoso/devices/{world.enrolment.device_id}/omadm-settings",
            headers=world.org.admin,
        )
        return {s["uri"]: s["state"] for s in response.json()["items"]}

    async with world.tls_client() as http:
        device = world.dm_client(http)
        device.login_status = "others"  # someone else is signed in
        await device.session()
        assert device.tree[device_setting] == "8" and user_setting not in device.tree
        assert await states() == {device_setting: "applied", user_setting: "queued"}
        device.login_status = "user"
        await device.session()
        assert device.tree[user_setting] == "0"
        assert (await states())[user_setting] == "applied"
    nodes = {n["uri"]: n for n in (await world.tree())["nodes"]}  # type: ignore[index]
    assert nodes[device_setting]["source"] == "server"
    assert nodes[device_setting]["format"] == "int"


async def test_the_appsrv_secret_is_the_servers_password_on_the_device(world: World) -> None:
    """The w7 APPLICATION's server credential (APPSRV, DMAcc SRVCRED on Windows) is the
    per-device server password every OMA DM device has, derived, not a second secret."""
    tls = world.running.bootstrap.tls
    ca = CertificateAuthority.load(tls.ca_certificate, tls.ca_private_key)
    appauth = {
        parm.get("name"): parm.get("value")
        for auth in world.enrolment.document.iter("characteristic")
        if auth.get("type") == "APPAUTH"
        for parm in auth.iter("parm")
        if any(p.get("value") == "APPSRV" for p in auth.iter("parm"))
    }
    expected = ServerSecrets.of(ca).password(world.enrolment.device_id)
    assert appauth["AAUTHSECRET"] == expected
    assert ServerSecrets.of(ca).password("another device") != expected
