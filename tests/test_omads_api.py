"""The datastores of a device over the REST API, refresh requests, and the organisation's
feature switches for synchronisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.ids import new_id
from engine.timestamps import now

from .conftest import RunningService, bearer
from .omads_world import PASSWORD, DsWorld, _password_hash, database, make_world, vcard
from .test_omads_protocol import RawClient, alert, basic, statuses

API = "/api/v1"


@pytest.fixture
def world(running: RunningService, tmp_path: Path) -> DsWorld:
    return make_world(running, tmp_path)


async def token(world: DsWorld, login: str) -> dict[str, str]:
    async with world.running.client() as http:
        answer = await http.post(
            f"{API}/auth/token",
            json={"organisation": "acme", "login": login, "password": PASSWORD},
        )
    assert answer.status_code == 201, answer.text
    return bearer(answer.json()["token"])


def add_account(world: DsWorld, login: str, kind: str, rights: list[str] = []) -> str:  # noqa: B006
    account_id = new_id()
    at = now()
    with database(world.running) as conn:
        conn.execute(
            "INSERT INTO accounts (id, organisation_id, login, kind, password_hash, rights,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                account_id,
                world.organisation_id,
                login,
                kind,
                _password_hash(),
                json.dumps(rights),
                at,
                at,
            ),
        )
    return account_id


async def slow_sync_one_contact(world: DsWorld, device: str) -> None:
    from engine.protocols.syncml import Add, Item, Source, Sync, Target

    async with world.running.client() as http:
        client = RawClient(http, world.url, device)
        await client.send([alert(201)], cred=basic("alice", PASSWORD))
        add = Add(cmd_id="", items=[Item(source=Source("1"), data=vcard("Doe John"))])
        await client.send([Sync(cmd_id="", target=Target("addressbook"), commands=[add])])
        await client.send([])


async def test_datastores_and_refresh(world: DsWorld) -> None:
    device = world.add_device("api-1")
    await slow_sync_one_contact(world, "api-1")
    owner = await token(world, "alice")
    path = f"{API}/organisations/acme/devices/{device}/datastores"
    async with world.running.client() as http:
        listed = await http.get(path, headers=owner)
        assert listed.status_code == 200, listed.text
        (store,) = listed.json()["items"]
        assert store["kind"] == "contacts" and store["items"] == 1 and store["device_items"] == 1
        assert store["last_mode"] == "slow" and store["last_sync_at"]
        assert store["refresh_requested"] is False and store["enabled"] is True
        # Another owner's device is not found; a manager without the commands right may
        # look but not ask for a refresh; the owner may.
        add_account(world, "bob", "user")
        other = await http.get(path, headers=await token(world, "bob"))
        assert other.status_code == 404
        add_account(world, "viewer", "manager")
        viewer = await token(world, "viewer")
        assert (await http.get(path, headers=viewer)).status_code == 200
        refused = await http.post(path + "/refresh", json={}, headers=viewer)
        assert refused.status_code == 403
        asked = await http.post(path + "/refresh", json={"kinds": ["contacts"]}, headers=owner)
        assert asked.status_code == 200, asked.text
        assert asked.json()["items"][0]["refresh_requested"] is True
    assert (
        world.scalar(
            "SELECT count(*) FROM audit_events WHERE action = 'device.sync_refresh_requested'"
        )
        == 1
    )
    # The next two-way sync of the device is answered 508: a slow sync.
    state = world.scalar("SELECT client_anchor FROM pim_sync_states")
    async with world.running.client() as http:
        client = RawClient(http, world.url, "api-1", session="9")
        reply = await client.send([alert(200, last=str(state))], cred=basic("alice", PASSWORD))
    assert statuses(reply)[("1", "Alert")].data == "508"


async def test_feature_switch_refuses_the_datastore(world: DsWorld) -> None:
    world.add_device("api-2")
    world.execute(
        "UPDATE organisations SET features = ? WHERE id = ?",
        json.dumps({"contacts_sync": False}),
        world.organisation_id,
    )
    async with world.running.client() as http:
        client = RawClient(http, world.url, "api-2")
        reply = await client.send(
            [alert(201), alert(201, uri="calendar")], cred=basic("alice", PASSWORD)
        )
    answered = statuses(reply)
    assert answered[("1", "Alert")].data == "403"
    assert answered[("2", "Alert")].data == "200"


async def test_portal_device_pages_show_datastores_and_ask_for_refresh(world: DsWorld) -> None:
    from .portal_client import Portal, flash_of

    device = world.add_device("portal-1")
    await slow_sync_one_contact(world, "portal-1")
    add_account(world, "helpdesk", "manager", ["commands"])
    async with world.running.client() as http:
        owner = Portal(http)
        await owner.sign_in("alice", PASSWORD, "acme")
        html = await owner.page(f"/my/devices/{device}")
        assert "Synchronised data" in html and "Contacts" in html and "slow" in html
        answer = await owner.post_form(f"/my/devices/{device}/datastores/refresh")
        assert answer.status_code == 302, answer.text
        assert "slow sync" in (flash_of(await owner.page(answer.headers["location"])) or "")
    assert world.scalar("SELECT refresh_requested FROM pim_sync_states") == 1
    world.execute("UPDATE pim_sync_states SET refresh_requested = 0")
    async with world.running.client() as http:
        manager = Portal(http)
        await manager.sign_in("helpdesk", PASSWORD, "acme")
        page = f"/admin/o/acme/devices/{device}"
        html = await manager.page(page)
        assert "Synchronised data" in html
        answer = await manager.post_form(
            f"/admin/o/acme/devices/{device}/datastores/refresh", {"kinds": "contacts"}
        )
        assert answer.status_code == 302, answer.text
    assert world.scalar("SELECT refresh_requested FROM pim_sync_states") == 1
