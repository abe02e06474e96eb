"""Devices: inventory, licences, groups and installation codes, through the real service;
and the redemption of installation codes at the domain level, on a real SQLite store."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from engine import qrcode
from engine.errors import Forbidden
from engine.installation_codes import (
    ALPHABET,
    InstallationCodeRefused,
    NewCode,
    create_code,
    enrolment_uri,
    normalise_code,
    redeem_installation_code,
    revoke,
)
from engine.principals import AccountKind, Principal
from engine.store import Store, open_sqlite_store
from engine.store.accounts import insert_account
from engine.store.organisations import insert_organisation
from engine.timestamps import format_time, now
from web.api.operations import OPERATIONS, PREFIX
from web.api.schema import validate

from .conftest import RunningService, bearer, supervisor_token

MANAGER_PASSWORD = "manager password 1"
USER_PASSWORD = "device owner password"


# --------------------------------------------------------------------------- helpers


@dataclass
class Org:
    code: str
    id: str
    admin: dict[str, str]  # the first manager, holding every right

    def url(self, path: str = "") -> str:
        return f"{PREFIX}/organisations/{self.code}{path}"


@dataclass
class Account:
    id: str
    auth: dict[str, str]


async def make_org(
    client: httpx.AsyncClient, supervisor: dict[str, str], code: str, **values: Any
) -> Org:
    created = await client.post(
        f"{PREFIX}/organisations",
        json={"code": code, "short_name": code, "first_manager_password": MANAGER_PASSWORD}
        | values,
        headers=supervisor,
    )
    assert created.status_code == 201, created.text
    token = await sign_in(client, code, "admin", MANAGER_PASSWORD)
    return Org(code, created.json()["id"], bearer(token))


async def sign_in(client: httpx.AsyncClient, organisation: str, login: str, password: str) -> str:
    response = await client.post(
        f"{PREFIX}/auth/token",
        json={"organisation": organisation, "login": login, "password": password},
    )
    assert response.status_code == 201, response.text
    return response.json()["token"]


async def make_account(
    client: httpx.AsyncClient, org: Org, login: str, kind: str = "user", **values: Any
) -> Account:
    """An account made through the accounts API, signed in."""
    created = await client.post(
        org.url("/accounts"),
        json={"login": login, "kind": kind, "password": USER_PASSWORD} | values,
        headers=org.admin,
    )
    assert created.status_code == 201, created.text
    token = await sign_in(client, org.code, login, USER_PASSWORD)
    return Account(created.json()["id"], bearer(token))


def checked(response: httpx.Response, method: str, path: str, status: int) -> Any:
    """Assert the status, and that the answer matches what the operation declares."""
    assert response.status_code == status, response.text
    (op,) = [op for op in OPERATIONS if op.method == method and op.path == path]
    schema = op.responses[status]
    if schema is None:
        assert response.content == b""
        return None
    body = response.json()
    validate(body, schema)
    return body


async def new_device(client: httpx.AsyncClient, org: Org, **values: Any) -> dict[str, Any]:
    body = {"name": "phone", "platform": "android", "protocol": "wsdm"} | values
    response = await client.post(org.url("/devices"), json=body, headers=org.admin)
    return checked(response, "POST", "/organisations/{organisation}/devices", 201)


def audit(running: RunningService, prefix: str = "") -> list[dict[str, Any]]:
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT action, actor, organisation_id, target_id, details FROM audit_events"
            " WHERE action LIKE ? ORDER BY at, id",
            (prefix + "%",),
        )
        return [dict(row) | {"details": json.loads(row["details"])} for row in rows]


def actions(running: RunningService, prefix: str = "") -> list[str]:
    return [event["action"] for event in audit(running, prefix)]


def sql(running: RunningService, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(running.bootstrap.database.path, timeout=30) as conn:
        return conn.execute(statement, args).fetchall()


async def start(running: RunningService, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await supervisor_token(client, running.supervisor_password))


# --------------------------------------------------------------------------- inventory


async def test_device_life_cycle_with_its_installation_code(running: RunningService) -> None:
    async with running.client() as client:
        org = await make_org(client, await start(running, client), "acme")
        jane = await make_account(client, org, "jane")
        created = await new_device(
            client,
            org,
            name="  Jane's phone ",
            owner=jane.id,
            imei="356938035643809",
            model="Pixel 8",
            phone_number="+44 20 7946 0018",
        )
        device = created["id"]
        assert created["name"] == "Jane's phone"
        assert created["state"] == "created"
        assert created["owner"] == {"id": jane.id, "login": "jane"}
        assert created["compliant"] is None and created["enrolled_at"] is None
        assert created["inventory"] == {} and created["groups"] == []
        code = created["installation_code"]
        assert code["purpose"] == "enrol_device" and code["device"] == device
        assert (code["usage_limit"], code["times_used"], code["state"]) == (1, 0, "active")
        expires = datetime.fromisoformat(code["expires_at"].replace("Z", "+00:00"))
        assert timedelta(days=13, hours=23) < expires - datetime.now(UTC) <= timedelta(days=14)
        assert normalise_code(code["code"]) == code["code"]

        item = f"/devices/{device}"
        path = "/organisations/{organisation}/devices/{device}"
        got = checked(await client.get(org.url(item), headers=org.admin), "GET", path, 200)
        assert got == {k: v for k, v in created.items() if k != "installation_code"}

        changed = checked(
            await client.patch(
                org.url(item), json={"name": "Spare", "phone_number": None}, headers=org.admin
            ),
            "PATCH",
            path,
            200,
        )
        assert (changed["name"], changed["phone_number"]) == ("Spare", None)
        off = await client.patch(org.url(item), json={"state": "inactive"}, headers=org.admin)
        assert checked(off, "PATCH", path, 200)["state"] == "inactive"
        on = await client.patch(org.url(item), json={"state": "active"}, headers=org.admin)
        assert checked(on, "PATCH", path, 200)["state"] == "created"  # never enrolled yet
        unowned = await client.patch(org.url(item), json={"owner": None}, headers=org.admin)
        assert checked(unowned, "PATCH", path, 200)["owner"] is None

        # The device took a command before it was removed (made here as the protocol would).
        at = now()
        for command, state in (("c1", "queued"), ("c2", "sent"), ("c3", "acknowledged")):
            sql(
                running,
                "INSERT INTO commands (id, organisation_id, device_id, kind, state, created_at,"
                " updated_at) VALUES (?, ?, ?, 'lock', ?, ?, ?)",
                command,
                org.id,
                device,
                state,
                at,
                at,
            )
        removed = await client.delete(org.url(item), headers=org.admin)
        checked(removed, "DELETE", path, 204)
        assert (await client.get(org.url(item), headers=org.admin)).status_code == 404
        assert (await client.delete(org.url(item), headers=org.admin)).status_code == 404
        assert (await client.patch(org.url(item), json={}, headers=org.admin)).status_code == 404
        listed = await client.get(org.url("/devices"), headers=org.admin)
        assert listed.json()["total"] == 0
        # Nothing undelivered stays deliverable; what was done stays as it was.
        assert sql(running, "SELECT id, state FROM commands ORDER BY id") == [
            ("c1", "cancelled"),
            ("c2", "cancelled"),
            ("c3", "acknowledged"),
        ]
        codes = await client.get(org.url(f"/installation-codes/{code['id']}"), headers=org.admin)
        assert codes.status_code == 404  # revoked with the device
        assert sql(running, "SELECT state, owner_id FROM devices") == [("removed", None)]

    events = audit(running, "device.")
    assert [e["action"] for e in events] == ["device.created"] + ["device.changed"] * 4 + [
        "device.removed"
    ]
    assert all(e["target_id"] == device and e["organisation_id"] == org.id for e in events)
    assert events[-1]["details"]["commands_cancelled"] == 2
    assert events[-1]["details"]["codes_revoked"] == 1
    assert actions(running, "installation_code.") == ["installation_code.created"]
    assert code["code"] not in json.dumps(audit(running))  # a credential: never logged


async def test_bad_devices_are_refused_and_change_nothing(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await start(running, client)
        org = await make_org(client, supervisor, "acme")
        other = await make_org(client, supervisor, "other")
        helpdesk = await make_account(client, org, "helpdesk", kind="manager", rights=[])
        outsider = await make_account(client, other, "outsider")
        device = await new_device(client, org)
        group = await client.post(org.url("/device-groups"), json={"name": "g"}, headers=org.admin)
        before = actions(running)
        cases = [
            ({"name": "x", "platform": "symbian", "protocol": "wsdm"}, "platform"),
            ({"name": "x", "platform": "android", "protocol": "apple_mdm"}, "protocol"),
            ({"name": "x", "platform": "ios", "protocol": "microsoft_edm"}, "protocol"),
            ({"name": " ", "platform": "android", "protocol": "wsdm"}, "name"),
            ({"name": "x", "platform": "android", "protocol": "wsdm", "colour": "red"}, "colour"),
            ({"platform": "android", "protocol": "wsdm"}, "name"),
            ({"name": "x", "platform": "android", "protocol": "wsdm", "owner": "nobody"}, "owner"),
            # Managers own no devices; another organisation's account is nobody here.
            ({"name": "x", "platform": "ios", "protocol": "eas", "owner": helpdesk.id}, "owner"),
            ({"name": "x", "platform": "ios", "protocol": "eas", "owner": outsider.id}, "owner"),
            ({"name": "x", "platform": "ios", "protocol": "eas", "phone_number": "call me"},
             "phone_number"),
        ]  # fmt: skip
        for body, field in cases:
            response = await client.post(org.url("/devices"), json=body, headers=org.admin)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["field"] == field
        item = org.url(f"/devices/{device['id']}")
        for body, field in [
            ({"state": "removed"}, "state"),
            ({"owner": helpdesk.id}, "owner"),
            ({"platform": "ios"}, "platform"),
            ({"name": ""}, "name"),
        ]:
            response = await client.patch(item, json=body, headers=org.admin)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["field"] == field
        nothing = await client.patch(item, json={}, headers=org.admin)
        assert nothing.status_code == 200 and nothing.json()["name"] == "phone"
        same = await client.patch(
            org.url(f"/device-groups/{group.json()['id']}"), json={}, headers=org.admin
        )
        assert same.status_code == 200 and same.json()["name"] == "g"
        bad_sort = await client.get(org.url("/devices?sort=password"), headers=org.admin)
        assert bad_sort.status_code == 422 and bad_sort.json()["field"] == "sort"
        bad_filter = await client.get(org.url("/devices?filter[udid_hash]=x"), headers=org.admin)
        assert bad_filter.status_code == 422 and bad_filter.json()["field"] == "filter"
        assert (await client.get(item, headers=org.admin)).json()["name"] == "phone"
        assert sql(running, "SELECT count(*) FROM devices") == [(1,)]
    assert actions(running) == before


async def test_inventory_pages_sort_and_filter(running: RunningService) -> None:
    async with running.client() as client:
        org = await make_org(client, await start(running, client), "acme")
        jane = await make_account(client, org, "jane")
        specs = [
            ("delta", "ios", "apple_mdm", {"owner": jane.id, "model": "iPhone 15"}),
            ("alpha", "android", "wsdm", {"serial_number": "SN-0042", "os_version": "14"}),
            ("Charlie", "windows", "microsoft_edm", {"imei": "490154203237518"}),
            ("bravo", "android", "oma_dm", {"phone_number": "+1 555 0100", "owner": jane.id}),
            ("echo", "ipados", "eas", {}),
        ]
        for name, platform, protocol, extra in specs:
            await new_device(client, org, name=name, platform=platform, protocol=protocol, **extra)
        sql(running, "UPDATE devices SET compliant = 1 WHERE name = 'alpha'")
        sql(running, "UPDATE devices SET compliant = 0 WHERE name = 'echo'")
        sql(
            running,
            "UPDATE devices SET state = 'enrolled', enrolled_at = ?, last_seen_at = ?"
            " WHERE name = 'bravo'",
            "2024-05-01T10:00:00.000Z",
            "2024-06-01T10:00:00.000Z",
        )
        path = "/organisations/{organisation}/devices"

        async def names(query: str) -> tuple[list[str], int]:
            response = await client.get(org.url(f"/devices?{query}"), headers=org.admin)
            page = checked(response, "GET", path, 200)
            return [item["name"] for item in page["items"]], page["total"]

        assert await names("") == (["Charlie", "alpha", "bravo", "delta", "echo"], 5)
        assert await names("limit=2") == (["Charlie", "alpha"], 5)
        assert await names("limit=2&offset=2") == (["bravo", "delta"], 5)
        assert await names("limit=2&offset=4") == (["echo"], 5)
        assert await names("sort=-name&limit=2") == (["echo", "delta"], 5)
        assert await names("sort=platform&limit=2") == (["alpha", "bravo"], 5)
        assert await names("filter[platform]=ios") == (["delta"], 1)
        assert await names("filter[protocol]=EDM") == (["Charlie"], 1)
        assert await names("filter[owner]=jan") == (["bravo", "delta"], 2)
        assert await names("filter[owner]=jan&sort=-name") == (["delta", "bravo"], 2)
        assert await names("filter[state]=enrolled") == (["bravo"], 1)
        assert await names("filter[compliant]=true") == (["alpha"], 1)
        assert await names("filter[compliant]=false") == (["echo"], 1)
        assert await names("filter[compliant]=unknown") == (["Charlie", "bravo", "delta"], 3)
        assert await names("filter[serial_number]=0042") == (["alpha"], 1)
        assert await names("filter[imei]=4901") == (["Charlie"], 1)
        assert await names("filter[phone_number]=555") == (["bravo"], 1)
        assert await names("filter[model]=iphone") == (["delta"], 1)
        assert await names("filter[os_version]=14") == (["alpha"], 1)
        assert await names("filter[last_seen_at]=2024-06") == (["bravo"], 1)
        assert await names("filter[enrolled_at]=2024-05") == (["bravo"], 1)
        assert await names("filter[name]=a&filter[platform]=android") == (["alpha", "bravo"], 2)
        assert (await names("sort=-last_seen_at&limit=1"))[0] == ["bravo"]
        # Unowned first; equal values in the order the devices were made.
        assert (await names("sort=owner"))[0][-2:] == ["delta", "bravo"]
        assert (await names("sort=-enrolled_at"))[0][0] == "bravo"
        assert (await names("sort=compliant"))[0][:2] == ["echo", "alpha"]
        too_many = await client.get(org.url("/devices?limit=501"), headers=org.admin)
        assert too_many.status_code == 422 and too_many.json()["field"] == "limit"


# --------------------------------------------------------------------------- licences


async def test_licences_and_devices_per_user(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await start(running, client)
        org = await make_org(client, supervisor, "acme", licences=3, devices_per_user=1)
        jane = await make_account(client, org, "jane")
        john = await make_account(client, org, "john")
        first = await new_device(client, org, owner=jane.id)
        refused = await client.post(
            org.url("/devices"),
            json={"name": "x", "platform": "ios", "protocol": "eas", "owner": jane.id},
            headers=org.admin,
        )
        assert refused.status_code == 409
        assert "per user" in refused.json()["detail"]
        second = await new_device(client, org, owner=john.id)
        third = await new_device(client, org)  # no owner: counts for the organisation only
        full = await client.post(
            org.url("/devices"),
            json={"name": "x", "platform": "ios", "protocol": "eas"},
            headers=org.admin,
        )
        assert full.status_code == 409 and "3 device licences" in full.json()["detail"]
        # An active device cannot go to an owner who has all the devices allowed.
        give = await client.patch(
            org.url(f"/devices/{third['id']}"), json={"owner": jane.id}, headers=org.admin
        )
        assert give.status_code == 409
        # Deactivating frees a licence and the owner's allowance...
        off = await client.patch(
            org.url(f"/devices/{first['id']}"), json={"state": "inactive"}, headers=org.admin
        )
        assert off.json()["state"] == "inactive"
        again = await new_device(client, org, owner=jane.id)
        # ...which the deactivated device cannot take back while they are used.
        back = await client.patch(
            org.url(f"/devices/{first['id']}"), json={"state": "active"}, headers=org.admin
        )
        assert back.status_code == 409
        # An inactive device may change owner; it holds no licence.
        moved = await client.patch(
            org.url(f"/devices/{first['id']}"), json={"owner": john.id}, headers=org.admin
        )
        assert moved.status_code == 200 and moved.json()["owner"]["login"] == "john"
        # Removing frees a licence for good.
        assert (
            await client.delete(org.url(f"/devices/{again['id']}"), headers=org.admin)
        ).status_code == 204
        assert (
            await client.delete(org.url(f"/devices/{second['id']}"), headers=org.admin)
        ).status_code == 204
        back = await client.patch(
            org.url(f"/devices/{first['id']}"), json={"state": "active"}, headers=org.admin
        )
        assert back.status_code == 200 and back.json()["state"] == "created"
        # The vendor raises the limits: the organisation may grow again.
        raised = await client.patch(
            f"{PREFIX}/organisations/acme",
            json={"licences": 4, "devices_per_user": None},
            headers=supervisor,
        )
        assert raised.status_code == 200
        await new_device(client, org, owner=john.id)
        # licences = 0 means "not limited": an organisation whose vendor set no number.
        free = await make_org(client, supervisor, "free", licences=0)
        for _ in range(5):
            await new_device(client, free)
    refusals = [e for e in audit(running, "device.") if e["organisation_id"] == org.id]
    assert [e["action"] for e in refusals].count("device.created") == 5  # refused: none


# --------------------------------------------------------------------------- who sees what


async def test_device_owners_see_only_their_own_devices(running: RunningService) -> None:
    async with running.client() as client:
        org = await make_org(client, await start(running, client), "acme")
        jane = await make_account(client, org, "jane")
        john = await make_account(client, org, "john")
        hers = await new_device(client, org, name="hers", owner=jane.id)
        his = await new_device(client, org, name="his", owner=john.id)
        await new_device(client, org, name="nobody's")
        group = await client.post(org.url("/device-groups"), json={"name": "g"}, headers=org.admin)
        before = actions(running)

        listed = await client.get(org.url("/devices"), headers=jane.auth)
        page = checked(listed, "GET", "/organisations/{organisation}/devices", 200)
        assert [item["name"] for item in page["items"]] == ["hers"] and page["total"] == 1
        own = await client.get(org.url(f"/devices/{hers['id']}"), headers=jane.auth)
        assert own.status_code == 200 and own.json()["owner"]["login"] == "jane"
        other = await client.get(org.url(f"/devices/{his['id']}"), headers=jane.auth)
        assert other.status_code == 404
        # Changes are for managers: refused whether the device is theirs or not.
        for method, path, body in [
            ("POST", "/devices", {"name": "x", "platform": "ios", "protocol": "eas"}),
            ("PATCH", f"/devices/{hers['id']}", {"name": "mine"}),
            ("PATCH", f"/devices/{his['id']}", {"name": "mine"}),
            ("DELETE", f"/devices/{hers['id']}", None),
            ("POST", "/device-groups", {"name": "mine"}),
            ("GET", "/device-groups", None),
            ("GET", f"/device-groups/{group.json()['id']}", None),
            ("PUT", f"/device-groups/{group.json()['id']}/devices/{hers['id']}", None),
            ("POST", "/installation-codes", {"purpose": "new_account_and_device"}),
            ("DELETE", f"/installation-codes/{hers['installation_code']['id']}", None),
        ]:
            response = await client.request(method, org.url(path), json=body, headers=jane.auth)
            assert response.status_code == 403, (method, path, response.text)
        # Codes: those of their own devices only, with the QR code to scan.
        codes = (await client.get(org.url("/installation-codes"), headers=jane.auth)).json()
        assert [c["id"] for c in codes["items"]] == [hers["installation_code"]["id"]]
        mine = f"/installation-codes/{hers['installation_code']['id']}"
        assert (await client.get(org.url(mine), headers=jane.auth)).status_code == 200
        assert (await client.get(org.url(mine + "/qr.svg"), headers=jane.auth)).status_code == 200
        theirs = f"/installation-codes/{his['installation_code']['id']}"
        assert (await client.get(org.url(theirs), headers=jane.auth)).status_code == 404
        assert (await client.get(org.url(theirs + "/qr.svg"), headers=jane.auth)).status_code == 404
        assert (await client.get(org.url(mine), headers=john.auth)).status_code == 404
    assert actions(running) == before


async def test_managers_need_the_devices_right_to_change(running: RunningService) -> None:
    async with running.client() as client:
        org = await make_org(client, await start(running, client), "acme")
        reader = await make_account(client, org, "reader", kind="manager", rights=[])
        helper = await make_account(
            client, org, "helper", kind="manager", rights=["devices", "accounts"]
        )
        device = await new_device(client, org)
        before = actions(running)
        # Every manager reads everything.
        for path in ("/devices", f"/devices/{device['id']}", "/device-groups"):
            response = await client.get(org.url(path), headers=reader.auth)
            assert response.status_code == 200, (path, response.text)
        codes = await client.get(org.url("/installation-codes"), headers=reader.auth)
        assert codes.json()["total"] == 1
        for method, path, body in [
            ("POST", "/devices", {"name": "x", "platform": "ios", "protocol": "eas"}),
            ("PATCH", f"/devices/{device['id']}", {"name": "y"}),
            ("DELETE", f"/devices/{device['id']}", None),
            ("POST", "/device-groups", {"name": "g"}),
            ("POST", "/installation-codes", {"purpose": "new_account_and_device"}),
            ("DELETE", f"/installation-codes/{device['installation_code']['id']}", None),
        ]:
            response = await client.request(method, org.url(path), json=body, headers=reader.auth)
            assert response.status_code == 403, (method, path, response.text)
        assert actions(running) == before
        made = await client.post(
            org.url("/devices"),
            json={"name": "x", "platform": "macos", "protocol": "apple_mdm"},
            headers=helper.auth,
        )
        assert made.status_code == 201
    created = audit(running, "device.created")[-1]
    assert created["actor"] == "helper" and created["target_id"] == made.json()["id"]


async def test_another_organisations_things_are_not_found(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await start(running, client)
        a = await make_org(client, supervisor, "org-a")
        b = await make_org(client, supervisor, "org-b")
        a_group = (
            await client.post(a.url("/device-groups"), json={"name": "g"}, headers=a.admin)
        ).json()
        a_device = await new_device(client, a)
        b_device = await new_device(client, b)
        b_group = (
            await client.post(b.url("/device-groups"), json={"name": "g"}, headers=b.admin)
        ).json()
        b_code = b_device["installation_code"]["id"]
        before = actions(running)
        for method, path, body in [
            ("GET", f"/devices/{b_device['id']}", None),
            ("PATCH", f"/devices/{b_device['id']}", {"name": "mine"}),
            ("DELETE", f"/devices/{b_device['id']}", None),
            ("GET", f"/device-groups/{b_group['id']}", None),
            ("PATCH", f"/device-groups/{b_group['id']}", {"name": "mine"}),
            ("DELETE", f"/device-groups/{b_group['id']}", None),
            ("GET", f"/device-groups/{b_group['id']}/devices", None),
            # A's own group, B's device: the membership is refused as not found.
            ("PUT", f"/device-groups/{a_group['id']}/devices/{b_device['id']}", None),
            ("DELETE", f"/device-groups/{a_group['id']}/devices/{b_device['id']}", None),
            ("PUT", f"/device-groups/{b_group['id']}/devices/{a_device['id']}", None),
            ("GET", f"/installation-codes/{b_code}", None),
            ("GET", f"/installation-codes/{b_code}/qr.svg", None),
            ("DELETE", f"/installation-codes/{b_code}", None),
        ]:
            response = await client.request(method, a.url(path), json=body, headers=a.admin)
            assert response.status_code == 404, (method, path, response.text)
        # Another organisation's device in a code is no device of this one.
        bind = await client.post(
            a.url("/installation-codes"),
            json={"purpose": "bind_device", "device": b_device["id"]},
            headers=a.admin,
        )
        assert bind.status_code == 422 and bind.json()["field"] == "device"
        # Organisation B's paths with A's manager: B does not exist for them.
        for path in ("/devices", "/device-groups", "/installation-codes"):
            response = await client.get(b.url(path), headers=a.admin)
            assert response.status_code == 404, path
        assert (await client.get(b.url(f"/devices/{b_device['id']}"), headers=b.admin)).json()[
            "name"
        ] == "phone"
    assert actions(running) == before


# --------------------------------------------------------------------------- groups


async def test_device_groups_and_their_members(running: RunningService) -> None:
    groups = "/organisations/{organisation}/device-groups"
    async with running.client() as client:
        org = await make_org(client, await start(running, client), "acme")
        reader = await make_account(client, org, "reader", kind="manager", rights=[])
        made = await client.post(
            org.url("/device-groups"),
            json={"name": " Field staff ", "description": "vans"},
            headers=org.admin,
        )
        group = checked(made, "POST", groups, 201)
        assert made.headers["Location"].endswith(group["id"])
        assert (group["name"], group["description"], group["devices"]) == ("Field staff", "vans", 0)
        office = checked(
            await client.post(
                org.url("/device-groups"), json={"name": "Office"}, headers=org.admin
            ),
            "POST",
            groups,
            201,
        )
        twice = await client.post(
            org.url("/device-groups"), json={"name": "Office"}, headers=org.admin
        )
        assert twice.status_code == 409
        rename = await client.patch(
            org.url(f"/device-groups/{office['id']}"),
            json={"name": "Field staff"},
            headers=org.admin,
        )
        assert rename.status_code == 409
        blank = await client.post(org.url("/device-groups"), json={"name": " "}, headers=org.admin)
        assert blank.status_code == 422 and blank.json()["field"] == "name"

        phone = await new_device(client, org, name="phone")
        tablet = await new_device(
            client, org, name="tablet", platform="ipados", protocol="apple_mdm"
        )
        member = f"/device-groups/{group['id']}/devices"
        for device in (phone, tablet, phone):  # putting a member in again changes nothing
            put = await client.put(org.url(f"{member}/{device['id']}"), headers=org.admin)
            checked(put, "PUT", groups + "/{group}/devices/{device}", 204)
        await client.put(
            org.url(f"/device-groups/{office['id']}/devices/{phone['id']}"), headers=org.admin
        )
        listed = await client.get(org.url(f"{member}?sort=-name"), headers=reader.auth)
        page = checked(listed, "GET", groups + "/{group}/devices", 200)
        assert [d["name"] for d in page["items"]] == ["tablet", "phone"]
        filtered = await client.get(org.url(f"{member}?filter[platform]=ipad"), headers=org.admin)
        assert [d["name"] for d in filtered.json()["items"]] == ["tablet"]
        detail = (await client.get(org.url(f"/devices/{phone['id']}"), headers=org.admin)).json()
        assert detail["groups"] == [
            {"id": group["id"], "name": "Field staff"},
            {"id": office["id"], "name": "Office"},
        ]
        got = await client.get(org.url(f"/device-groups/{group['id']}"), headers=reader.auth)
        assert checked(got, "GET", groups + "/{group}", 200)["devices"] == 2
        page = await client.get(org.url("/device-groups?sort=-devices"), headers=org.admin)
        assert [g["name"] for g in checked(page, "GET", groups, 200)["items"]] == [
            "Field staff",
            "Office",
        ]
        found = await client.get(
            org.url("/device-groups?filter[description]=VAN"), headers=org.admin
        )
        assert found.json()["total"] == 1

        out = await client.delete(org.url(f"{member}/{tablet['id']}"), headers=org.admin)
        checked(out, "DELETE", groups + "/{group}/devices/{device}", 204)
        again = await client.delete(org.url(f"{member}/{tablet['id']}"), headers=org.admin)
        assert again.status_code == 204
        changed = await client.patch(
            org.url(f"/device-groups/{group['id']}"),
            json={"name": "Field", "description": ""},
            headers=org.admin,
        )
        assert checked(changed, "PATCH", groups + "/{group}", 200)["name"] == "Field"
        # A removed device leaves its groups.
        await client.delete(org.url(f"/devices/{phone['id']}"), headers=org.admin)
        assert (await client.get(org.url(member), headers=org.admin)).json()["total"] == 0
        gone = await client.put(org.url(f"{member}/{phone['id']}"), headers=org.admin)
        assert gone.status_code == 404
        removed = await client.delete(org.url(f"/device-groups/{office['id']}"), headers=org.admin)
        checked(removed, "DELETE", groups + "/{group}", 204)
        assert (
            await client.get(org.url(f"/device-groups/{office['id']}"), headers=org.admin)
        ).status_code == 404
        assert (
            await client.get(org.url(f"/device-groups/{office['id']}/devices"), headers=org.admin)
        ).status_code == 404
    assert actions(running, "device_group.") == [
        "device_group.created",
        "device_group.created",
        "device_group.device_added",
        "device_group.device_added",
        "device_group.device_added",
        "device_group.device_removed",
        "device_group.changed",
        "device_group.removed",
    ]
    assert sql(running, "SELECT count(*) FROM device_group_members") == [(0,)]


# --------------------------------------------------------------------------- codes


async def test_installation_codes_on_demand(running: RunningService) -> None:
    codes = "/organisations/{organisation}/installation-codes"
    async with running.client() as client:
        org = await make_org(client, await start(running, client), "acme")
        jane = await make_account(client, org, "jane")
        boss = await make_account(client, org, "boss", kind="manager", rights=["devices"])
        template = (await client.get(org.url(f"/accounts/{jane.id}"), headers=org.admin)).json()[
            "template"
        ]
        device = await new_device(client, org)
        before = actions(running)
        soon = format_time(datetime.now(UTC) + timedelta(days=2))
        bad = [
            ({"purpose": "wipe_everything"}, "purpose"),
            ({"purpose": "bind_device"}, "device"),
            ({"purpose": "enrol_device", "device": "nope"}, "device"),
            ({"purpose": "new_device_for_account"}, "account"),
            ({"purpose": "new_device_for_account", "account": boss.id}, "account"),
            ({"purpose": "new_account_and_device", "device": device["id"]}, "device"),
            ({"purpose": "new_account_and_device", "template": "nope"}, "template"),
            ({"purpose": "bind_device", "device": device["id"], "template": template}, "template"),
            ({"purpose": "new_account_and_device", "usage_limit": 0}, "usage_limit"),
            ({"purpose": "new_account_and_device", "expires_at": "2001-01-01T00:00:00Z"},
             "expires_at"),
            ({"purpose": "new_account_and_device", "expires_at": "2999-01-01T00:00:00Z"},
             "expires_at"),
        ]  # fmt: skip
        for body, field in bad:
            response = await client.post(
                org.url("/installation-codes"), json=body, headers=org.admin
            )
            assert response.status_code == 422, (body, response.text)
            assert response.json()["field"] == field, body
        assert actions(running) == before

        made = []
        for body in [
            {"purpose": "new_account_and_device", "template": template, "usage_limit": None},
            {"purpose": "new_device_for_account", "account": jane.id, "expires_at": soon},
            {"purpose": "bind_device", "device": device["id"], "usage_limit": 3},
        ]:
            response = await client.post(
                org.url("/installation-codes"), json=body, headers=boss.auth
            )
            code = checked(response, "POST", codes, 201)
            assert response.headers["Location"].endswith(code["id"])
            made.append(code)
        unlimited, for_jane, bind = made
        assert (unlimited["usage_limit"], unlimited["template"]) == (None, template)
        assert for_jane["account"] == jane.id and for_jane["expires_at"] == soon
        assert bind["device"] == device["id"] and bind["usage_limit"] == 3
        texts = {code["code"] for code in made} | {device["installation_code"]["code"]}
        assert len(texts) == 4
        for text in texts:
            assert len(text) == 14 and text[4] == text[9] == "-"
            assert set(text.replace("-", "")) <= set(ALPHABET)
            assert not set(text) & set("01OI")

        # Jane sees the code made for her account, not the others.
        mine = (await client.get(org.url("/installation-codes"), headers=jane.auth)).json()
        assert [code["id"] for code in mine["items"]] == [for_jane["id"]]

        # The list: newest first by default; sorted and filtered by the listed fields.
        page = checked(
            await client.get(org.url("/installation-codes"), headers=org.admin), "GET", codes, 200
        )
        newest_first = [bind, for_jane, unlimited, device["installation_code"]]
        assert [c["id"] for c in page["items"]] == [c["id"] for c in newest_first]
        binds = await client.get(
            org.url("/installation-codes?filter[purpose]=bind&sort=created_at"), headers=org.admin
        )
        assert [c["id"] for c in binds.json()["items"]] == [bind["id"]]
        by_device = await client.get(
            org.url(f"/installation-codes?filter[device]={device['id']}"), headers=org.admin
        )
        assert by_device.json()["total"] == 2

        # Expired and used-up codes show as such.
        sql(
            running,
            "UPDATE installation_codes SET expires_at = '2020-01-01T00:00:00.000Z' WHERE id = ?",
            for_jane["id"],
        )
        sql(
            running,
            "UPDATE installation_codes SET times_used = 3, last_used_at = ? WHERE id = ?",
            now(),
            bind["id"],
        )
        states = {
            c["id"]: (c["state"], c["times_used"])
            for c in (await client.get(org.url("/installation-codes"), headers=org.admin)).json()[
                "items"
            ]
        }
        assert states[for_jane["id"]] == ("expired", 0)
        assert states[bind["id"]] == ("used_up", 3)
        assert states[unlimited["id"]] == ("active", 0)
        used = await client.get(org.url("/installation-codes?sort=-times_used"), headers=org.admin)
        assert used.json()["items"][0]["last_used_at"] is not None

        # The QR code: an SVG of the enrolment URI the client app reads.
        qr = await client.get(
            org.url(f"/installation-codes/{bind['id']}/qr.svg"), headers=org.admin
        )
        assert qr.status_code == 200
        assert qr.headers["content-type"].split(";")[0] == "image/svg+xml"
        uri = enrolment_uri(running.bootstrap.public_url, "acme", bind["code"])
        assert uri.startswith("emm://enrol?server=https%3A%2F%2Flocalhost")
        assert qr.text == qrcode.to_svg(qrcode.encode(uri))

        # Revoked: gone from the API, kept (and never reissued) in the store.
        item = org.url(f"/installation-codes/{unlimited['id']}")
        checked(await client.get(item, headers=org.admin), "GET", codes + "/{code}", 200)
        revoked = await client.delete(item, headers=boss.auth)
        checked(revoked, "DELETE", codes + "/{code}", 204)
        assert (await client.get(item, headers=org.admin)).status_code == 404
        assert (await client.delete(item, headers=org.admin)).status_code == 404
        assert (await client.get(item + "/qr.svg", headers=org.admin)).status_code == 404
        listed = (await client.get(org.url("/installation-codes"), headers=org.admin)).json()
        assert unlimited["id"] not in {c["id"] for c in listed["items"]}
    assert actions(running, "installation_code.")[-4:] == [
        "installation_code.created",
        "installation_code.created",
        "installation_code.created",
        "installation_code.revoked",
    ]
    logged = json.dumps(audit(running))
    assert not any(text in logged for text in texts)


# --------------------------------------------------------------------------- redemption


@dataclass
class Tenancy:
    store: Store
    supervisor: Principal
    organisation_id: str
    user_id: str


async def _tenancy(store: Store) -> Tenancy:
    """An organisation with a user, and a supervisor to act, straight in the store."""
    at = now()
    supervisor = {
        "id": "sup-1",
        "organisation_id": None,
        "login": "supervisor",
        "kind": "supervisor",
        "created_at": at,
        "updated_at": at,
    }
    organisation = {
        "id": "org-1",
        "code": "acme",
        "short_name": "Acme",
        "created_at": at,
        "updated_at": at,
    }
    user = supervisor | {
        "id": "user-1",
        "organisation_id": "org-1",
        "login": "jane",
        "kind": "user",
    }

    def setup(conn: sqlite3.Connection) -> None:
        insert_account(conn, supervisor)
        insert_organisation(conn, organisation)
        insert_account(conn, user)

    await store.write(setup)
    principal = Principal("sup-1", "supervisor", AccountKind.SUPERVISOR, None)
    return Tenancy(store, principal, "org-1", "user-1")


async def _code(world: Tenancy, **values: Any) -> dict[str, Any]:
    new = NewCode(**({"purpose": "new_account_and_device"} | values))
    return await create_code(world.store, world.supervisor, "acme", new)


async def _execute(store: Store, statement: str, *args: Any) -> None:
    def unit(conn: sqlite3.Connection) -> None:
        conn.execute(statement, args)

    await store.write(unit)


async def test_redeeming_codes(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "emm.sqlite3") as store:
        world = await _tenancy(store)
        code = await _code(world, account="user-1", purpose="new_device_for_account")
        typed = code["code"].lower().replace("-", " ")  # as a person might type it
        grant = await redeem_installation_code(store, typed, source="192.0.2.7")
        assert (grant.code_id, grant.organisation_id, grant.organisation_code) == (
            code["id"],
            "org-1",
            "acme",
        )
        assert (grant.purpose, grant.account_id, grant.device_id) == (
            "new_device_for_account",
            "user-1",
            None,
        )
        assert grant.times_used == 1

        async def refused(text: str) -> str:
            with pytest.raises(InstallationCodeRefused) as caught:
                await redeem_installation_code(store, text)
            assert caught.value.field == "code"
            return caught.value.reason

        assert await refused(code["code"]) == "used_up"
        assert await refused("ABCD-EFGH-JKLM") == "unknown"
        assert await refused("not a code at all") == "unknown"
        assert await refused("") == "unknown"

        revoked = await _code(world)
        await revoke(store, world.supervisor, "acme", revoked["id"])
        assert await refused(revoked["code"]) == "unknown"  # exactly like an unknown one

        expired = await _code(world, usage_limit=None)
        await _execute(
            store,
            "UPDATE installation_codes SET expires_at = ? WHERE id = ?",
            format_time(datetime.now(UTC) - timedelta(seconds=1)),
            expired["id"],
        )
        assert await refused(expired["code"]) == "expired"

        account_gone = await _code(world, account="user-1", purpose="new_device_for_account")
        await _execute(store, "UPDATE accounts SET active = 0 WHERE id = 'user-1'")
        assert await refused(account_gone["code"]) == "account_unavailable"

        closed = await _code(world)
        await _execute(store, "UPDATE organisations SET active = 0")
        assert await refused(closed["code"]) == "organisation_inactive"
        await _execute(store, "UPDATE organisations SET active = 1")
        assert (await redeem_installation_code(store, closed["code"])).purpose == (
            "new_account_and_device"
        )

        def uses(conn: sqlite3.Connection) -> list[tuple[str, int, str | None]]:
            return [
                (row["id"], row["times_used"], row["last_used_at"])
                for row in conn.execute("SELECT * FROM installation_codes ORDER BY id")
            ]

        counted = {row[0]: row[1:] for row in await store.read(uses)}
        assert counted[code["id"]][0] == 1 and counted[code["id"]][1] is not None
        assert counted[expired["id"]] == (0, None)  # refusals change nothing
        assert counted[closed["id"]][0] == 1

        def events(conn: sqlite3.Connection) -> list[tuple[str, str, str | None]]:
            return [
                (row["action"], row["actor"], row["source"])
                for row in conn.execute(
                    "SELECT * FROM audit_events WHERE action = 'installation_code.redeemed'"
                    " ORDER BY at"
                )
            ]

        assert await store.read(events) == [
            ("installation_code.redeemed", "enrolment", "192.0.2.7"),
            ("installation_code.redeemed", "enrolment", None),
        ]


async def test_codes_of_devices_follow_the_device(tmp_path: Path) -> None:
    from engine.devices import NewDevice, create_device, update_device

    async with open_sqlite_store(tmp_path / "emm.sqlite3") as store:
        world = await _tenancy(store)
        device = await create_device(
            store, world.supervisor, "acme", NewDevice("phone", "android", "wsdm", owner="user-1")
        )
        auto = device["installation_code"]
        await update_device(store, world.supervisor, "acme", device["id"], {"state": "inactive"})
        with pytest.raises(InstallationCodeRefused) as caught:
            await redeem_installation_code(store, auto["code"])
        assert caught.value.reason == "device_unavailable"
        await update_device(store, world.supervisor, "acme", device["id"], {"state": "active"})
        grant = await redeem_installation_code(store, auto["code"])
        assert (grant.purpose, grant.device_id) == ("enrol_device", device["id"])
        # A user is no manager: codes are not theirs to make.
        user = Principal("user-1", "jane", AccountKind.USER, "org-1")
        with pytest.raises(Forbidden):
            await create_code(store, user, "acme", NewCode("new_account_and_device"))


@pytest.mark.parametrize("limit", [1, 3])
async def test_concurrent_redemption_never_passes_the_usage_limit(
    tmp_path: Path, limit: int
) -> None:
    async with open_sqlite_store(tmp_path / "emm.sqlite3") as store:
        world = await _tenancy(store)
        code = await _code(world, usage_limit=limit)
        granted: list[int] = []
        reasons: list[str] = []

        async def enrol() -> None:
            try:
                granted.append((await redeem_installation_code(store, code["code"])).times_used)
            except InstallationCodeRefused as refused:
                reasons.append(refused.reason)

        async with trio.open_nursery() as nursery:
            for _ in range(40):
                nursery.start_soon(enrol)
        assert sorted(granted) == list(range(1, limit + 1))
        assert reasons == ["used_up"] * (40 - limit)

        def used(conn: sqlite3.Connection) -> tuple[int, int]:
            times = conn.execute("SELECT times_used FROM installation_codes").fetchone()[0]
            events = conn.execute(
                "SELECT count(*) FROM audit_events WHERE action = 'installation_code.redeemed'"
            ).fetchone()[0]
            return times, events

        assert await store.read(used) == (limit, limit)
