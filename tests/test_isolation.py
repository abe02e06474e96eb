"""Tenancy: for every REST route, nobody reaches another organisation's things.

The routes are enumerated from the OpenAPI document (which the parity test in
test_openapi.py ties to the routes actually served), so a new route is covered here the
moment it exists. Every refused attempt must also leave the database exactly as it was.
"""

from __future__ import annotations

import copy
import sqlite3
from typing import Any

import httpx

from web.api.operations import PREFIX

from .conftest import RunningService, bearer, supervisor_token
from .world import FIXED_VALUES, PARAM, Organisation, World, operations

OWNER_PASSWORD = "owner password 1"

#: Routes without an organisation that any signed-in account may call.
OPEN_TO_ALL = {
    ("GET", "/openapi.json"),
    ("POST", "/auth/token"),
    ("DELETE", "/auth/token"),
    ("POST", "/auth/password"),
    ("GET", "/auth/me"),
    ("GET", "/organisations"),
    ("GET", "/me/messages"),  # one's own messages as a device owner (others: none)
}


def table_counts(running: RunningService) -> dict[str, int]:
    """Rows per table, but for sign-in records that refused requests may still write."""
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if row[0] not in ("api_tokens", "sqlite_sequence")
        ]
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        counts["changed_settings"] = conn.execute(
            "SELECT coalesce(sum(revision), 0) FROM service_settings"
        ).fetchone()[0]
    return counts


async def attempt(
    world: World,
    method: str,
    path: str,
    op: dict[str, Any],
    token: str,
    path_org: Organisation,
    things_org: Organisation,
) -> httpx.Response:
    """Call a route with the organisation of ``path_org`` and the things of ``things_org``."""
    url = path.replace("{organisation}", path_org.code)
    url = PREFIX + await world.fill(things_org, url)
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    body = None
    if content is not None:
        body = await world.fill_example(things_org, copy.deepcopy(content["example"]))
    return await world.client.request(method, url, json=body, headers=bearer(token))


async def test_managers_never_reach_another_organisation(running: RunningService) -> None:
    async with running.client() as client:
        doc = (await client.get(f"{PREFIX}/openapi.json")).json()
        world = World(client, await supervisor_token(client, running.supervisor_password), doc)
        a = await world.organisation("org-a")
        b = await world.organisation("org-b")
        # Make every kind of thing in both organisations before looking.
        for _, path, _ in operations(doc):
            await world.fill(a, path)
            await world.fill(b, path)
        before = table_counts(running)
        checked = 0
        for method, path, op in operations(doc):
            if "{organisation}" in path:
                # Organisation B's route and things, with A's manager's token.
                response = await attempt(world, method, path, op, a.manager_token, b, b)
                assert response.status_code == 404, (method, path, response.text)
                if any(p != "organisation" and p not in FIXED_VALUES for p in PARAM.findall(path)):
                    # A's own organisation in the path, but B's things in it.
                    response = await attempt(world, method, path, op, a.manager_token, a, b)
                    assert response.status_code == 404, (method, path, response.text)
                checked += 1
            elif (method, path) not in OPEN_TO_ALL:
                response = await attempt(world, method, path, op, a.manager_token, a, a)
                assert response.status_code in (403, 404), (method, path, response.text)
                checked += 1
        listed = await client.get(f"{PREFIX}/organisations", headers=bearer(a.manager_token))
        assert [item["code"] for item in listed.json()["items"]] == ["org-a"]
    assert checked >= 10
    assert table_counts(running) == before, "a refused request changed something"


async def owner(world: World, org: Organisation, login: str) -> tuple[str, str]:
    """A device owner of ``org`` with one device: (token, device id)."""
    auth = bearer(org.manager_token)
    account = await world.client.post(
        f"{PREFIX}/organisations/{org.code}/accounts",
        json={"login": login, "kind": "user", "password": OWNER_PASSWORD},
        headers=auth,
    )
    assert account.status_code == 201, account.text
    device = await world.client.post(
        f"{PREFIX}/organisations/{org.code}/devices",
        json={
            "name": f"{login}'s phone",
            "platform": "android",
            "protocol": "wsdm",
            "owner": account.json()["id"],
        },
        headers=auth,
    )
    assert device.status_code == 201, device.text
    return await world.sign_in(org.code, OWNER_PASSWORD, login), device.json()["id"]


async def test_device_owners_reach_only_their_own_devices(running: RunningService) -> None:
    async with running.client() as client:
        doc = (await client.get(f"{PREFIX}/openapi.json")).json()
        world = World(client, await supervisor_token(client, running.supervisor_password), doc)
        a = await world.organisation("org-a")
        b = await world.organisation("org-b")
        for _, path, _ in operations(doc):
            await world.fill(a, path)
            await world.fill(b, path)
        mine, my_device = await owner(world, a, "owner.one")
        _, their_device = await owner(world, a, "owner.two")
        before = table_counts(running)
        checked = 0
        for method, path, op in operations(doc):
            if "{organisation}" in path:
                response = await attempt(world, method, path, op, mine, b, b)
                assert response.status_code in (403, 404), (method, path, response.text)
                checked += 1
                if "{device}" in path:
                    # The other owner's device, in the owner's own organisation.
                    own = a.things["device"]
                    a.things["device"] = their_device
                    response = await attempt(world, method, path, op, mine, a, a)
                    a.things["device"] = own
                    assert response.status_code in (403, 404), (method, path, response.text)
            elif (method, path) not in OPEN_TO_ALL:
                response = await attempt(world, method, path, op, mine, a, a)
                assert response.status_code in (403, 404), (method, path, response.text)
        # Their own device they do see, and only it.
        listed = await client.get(f"{PREFIX}/organisations/org-a/devices", headers=bearer(mine))
        assert [item["id"] for item in listed.json()["items"]] == [my_device]
    assert checked >= 10
    assert table_counts(running) == before, "a refused request changed something"
