"""ActiveSync from the managers' side, through the REST API: the organisation's device
policy reaches devices (143, then the new EASProvisionDoc), a wipe queued over the API ends
the device's parked Ping and is acknowledged through Provision, and the device's ActiveSync
state shows its policy, wipe and folders."""

from __future__ import annotations

import httpx
import trio

from bench.eas_client import EasClient
from engine.principals import AccountKind
from engine.protocols import activesync as eas
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import FOLDER_HIERARCHY

from .conftest import RunningService
from .portal_client import Portal
from .test_api_commands import (
    API,
    PASSWORD,
    add_account,
    database,
    new_organisation,
    sign_in_supervisor,
)


async def test_policy_wipe_and_device_state_over_the_api(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "easco")
        user = await add_account(running, client, org, "bob", AccountKind.USER)
        device_row = "01eas000-0000-7000-8000-000000000001"
        with database(running) as conn:
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, udid, created_at, updated_at) VALUES (?, ?, ?, 'phone', 'ios', 'eas',"
                " 'enrolled', 'APIDEVICE', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                (device_row, org.id, user.id),
            )
        base = f"{API}/organisations/{org.code}"
        changed = await client.patch(
            f"{base}/activesync", headers=org.admin, json={"min_passcode_length": 5}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["settings"]["min_passcode_length"] == 5
        # Without the configuration right: refused, nothing changes.
        reader = await add_account(running, client, org, "reader", AccountKind.MANAGER)
        refused = await client.patch(
            f"{base}/activesync", headers=reader.auth, json={"min_passcode_length": 9}
        )
        assert refused.status_code == 403
        assert (await client.get(f"{base}/activesync", headers=reader.auth)).json()["settings"][
            "min_passcode_length"
        ] == 5

        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
            phone = EasClient(http, "easco\\bob", PASSWORD, "APIDEVICE")
            first = await phone.provision()
            doc = first.find("Policies").find("Policy").find("Data").find("EASProvisionDoc")
            assert child_text(doc, "MinDevicePasswordLength") == "5"
            await phone.folder_sync()
            await phone.sync_all("contacts")
            state = (
                await client.get(f"{base}/devices/{device_row}/activesync", headers=org.admin)
            ).json()
            assert state["policy"] == "current" and state["device_type"] == "iPhone"
            assert [f["id"] for f in state["folders"]] == ["contacts"]
            assert state["device_information"]["Model"] == "Test Phone"

            # The policy changes: the device is told 143 and provisions again.
            await client.patch(
                f"{base}/activesync", headers=org.admin, json={"camera_allowed": False}
            )
            response = await phone.post(
                "FolderSync",
                el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "1")),
            )
            assert child_text(eas.decode(response.content), "Status") == "143"
            again = await phone.provision()
            doc = again.find("Policies").find("Policy").find("Data").find("EASProvisionDoc")
            assert child_text(doc, "AllowCamera") == "0"

            # Configuration → Services bounds the heartbeat.
            bounded = await client.patch(
                f"{base}/config/services/eas",
                headers=org.admin,
                json={"use_system_wide": False, "overrides": {"ping_max_heartbeat": 600}},
            )
            assert bounded.status_code == 200, bounded.text
            status, _, root = await phone.ping(["contacts"], 1000)
            assert (status, child_text(root, "HeartbeatInterval")) == (5, "600")

            # A wipe from the API ends the parked Ping at once.
            answered: list[tuple[int, float]] = []
            done = trio.Event()

            async def ping() -> None:
                status, _, _ = await phone.ping(["contacts"], 120)
                answered.append((status, trio.current_time()))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping)
                await trio.sleep(0.3)
                queued_at = trio.current_time()
                wipe = await client.post(
                    f"{base}/devices/{device_row}/commands",
                    json={"kind": "wipe"},
                    headers=org.admin,
                )
                assert wipe.status_code == 201, wipe.text
                with trio.fail_after(2):
                    await done.wait()
            assert answered[0][0] == 1 and answered[0][1] - queued_at < 1.0
            status, _, _ = await phone.ping(["contacts"], 120)
            assert status == eas.REMOTE_WIPE_REQUESTED
            await phone.provision()
            assert phone.wiped == "RemoteWipe"
            command = (
                await client.get(f"{base}/commands/{wipe.json()['id']}", headers=org.admin)
            ).json()
            assert command["state"] == "acknowledged"
            state = (
                await client.get(f"{base}/devices/{device_row}/activesync", headers=org.admin)
            ).json()
            assert state["policy"] == "wiped" and state["wipe"] == "wipe"


async def test_portal_shows_activesync_state_and_edits_the_policy(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "easportal")
        user = await add_account(running, client, org, "carol", AccountKind.USER)
        device_row = "01eas000-0000-7000-8000-000000000002"
        with database(running) as conn:
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, udid, created_at, updated_at) VALUES (?, ?, ?, 'phone', 'ios', 'eas',"
                " 'enrolled', 'PORTALDEVICE', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                (device_row, org.id, user.id),
            )
        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
            phone = EasClient(http, "easportal\\carol", PASSWORD, "PORTALDEVICE")
            await phone.provision()
            await phone.folder_sync()
            await phone.sync_all("contacts")
        async with running.client() as browser:
            portal = Portal(browser)
            await portal.sign_in("admin", PASSWORD, org.code)
            page = await portal.page(f"/admin/o/{org.code}/devices/{device_row}")
            assert "Exchange ActiveSync" in page and ">current<" in page
            assert "Contacts" in page
            form = await portal.page(f"/admin/o/{org.code}/activesync")
            assert "Minimum passcode length" in form
            saved = await portal.submit(
                f"/admin/o/{org.code}/activesync",
                {
                    "passcode_required": "on",
                    "min_passcode_length": "7",
                    "max_ping_folders": "300",
                    "max_failed_attempts": "10",
                    "max_inactivity_seconds": "600",
                    "min_complex_characters": "1",
                    "passcode_history": "0",
                },
            )
            assert saved.status_code in (302, 303)
        settings = (
            await client.get(f"{API}/organisations/{org.code}/activesync", headers=org.admin)
        ).json()
        assert settings["settings"]["min_passcode_length"] == 7
        assert settings["settings"]["camera_allowed"] is False
