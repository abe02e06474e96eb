"""Commands over the REST API: kinds and parameters, rights, self-service, bulk, cancel.

Accounts and devices are made here straight in the service's SQLite file (WAL lets a test
write beside the running service), so these tests depend only on the commands area. The
helpers are shared with the audit and APNS tests.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import commands
from engine.errors import Invalid, NotFound
from engine.ids import new_id
from engine.listing import ListQuery
from engine.passwords import hash_password
from engine.principals import AccountKind, Principal
from engine.store import open_sqlite_store, sqlite as sqlite_store
from engine.store.migrations import MIGRATIONS
from engine.timestamps import now
from engine.wakeups import Waiting, Wakeups
from web.api.commands import BATCH, COMMAND, COMMAND_PAGE, QUEUED_BATCH
from web.api.schema import Schema, validate

from .conftest import RunningService, bearer, supervisor_token

API = "/api/v1"
PASSWORD = "a password for tests"


# --------------------------------------------------------------------------- shared helpers


@functools.cache
def _password_hash() -> str:
    """One scrypt hash for every test account: hashing costs ~50 ms each time."""
    return hash_password(PASSWORD)


@contextmanager
def database(path: Path | RunningService) -> Iterator[sqlite3.Connection]:
    """A connection to the service's SQLite file; commits and closes on leaving."""
    file = path.bootstrap.database.path if isinstance(path, RunningService) else path
    with closing(sqlite3.connect(file, timeout=10)) as conn, conn:
        conn.row_factory = sqlite3.Row
        yield conn


@dataclass
class Org:
    code: str
    id: str
    admin: dict[str, str]  # headers of the first manager (all rights)


@dataclass
class Account:
    id: str
    auth: dict[str, str]


async def sign_in_supervisor(running: RunningService, client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await supervisor_token(client, running.supervisor_password))


async def new_organisation(client: httpx.AsyncClient, supervisor: dict[str, str], code: str) -> Org:
    created = await client.post(
        f"{API}/organisations",
        json={"code": code, "short_name": code.title(), "first_manager_password": PASSWORD},
        headers=supervisor,
    )
    assert created.status_code == 201, created.text
    token = await client.post(
        f"{API}/auth/token", json={"organisation": code, "login": "admin", "password": PASSWORD}
    )
    assert token.status_code == 201, token.text
    return Org(code, created.json()["id"], bearer(token.json()["token"]))


async def add_account(
    running: RunningService,
    client: httpx.AsyncClient,
    org: Org,
    login: str,
    kind: AccountKind,
    rights: tuple[str, ...] = (),
) -> Account:
    """An account of ``org``, signed in."""
    account_id = new_id()
    at = now()
    with database(running) as conn:
        conn.execute(
            "INSERT INTO accounts (id, organisation_id, login, kind, password_hash, rights,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (account_id, org.id, login, kind.value, _password_hash(), json.dumps(rights), at, at),
        )
    token = await client.post(
        f"{API}/auth/token", json={"organisation": org.code, "login": login, "password": PASSWORD}
    )
    assert token.status_code == 201, token.text
    return Account(account_id, bearer(token.json()["token"]))


def add_devices(
    running: RunningService,
    org: Org,
    count: int = 1,
    *,
    owner: Account | None = None,
    state: str = "enrolled",
) -> list[str]:
    ids = [new_id() for _ in range(count)]
    at = now()
    with database(running) as conn:
        conn.executemany(
            "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol, state,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, 'ios', 'apple_mdm', ?, ?, ?)",
            [
                (device, org.id, owner.id if owner else None, f"phone {n}", state, at, at)
                for n, device in enumerate(ids)
            ],
        )
    return ids


def add_device(
    running: RunningService, org: Org, *, owner: Account | None = None, state: str = "enrolled"
) -> str:
    return add_devices(running, org, owner=owner, state=state)[0]


def add_group(running: RunningService, org: Org, device_ids: list[str]) -> str:
    group_id = new_id()
    at = now()
    with database(running) as conn:
        conn.execute(
            "INSERT INTO device_groups (id, organisation_id, name, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (group_id, org.id, f"group {group_id[-6:]}", at, at),
        )
        conn.executemany(
            "INSERT INTO device_group_members (group_id, device_id, organisation_id, added_at)"
            " VALUES (?, ?, ?, ?)",
            [(group_id, device, org.id, at) for device in device_ids],
        )
    return group_id


def audit_rows(running: RunningService, action: str) -> list[dict[str, Any]]:
    with database(running) as conn:
        return [
            dict(row) | {"details": json.loads(row["details"])}
            for row in conn.execute(
                "SELECT * FROM audit_events WHERE action = ? ORDER BY at, id", (action,)
            )
        ]


def count(running: RunningService, table: str) -> int:
    with database(running) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def answer(response: httpx.Response, status: int, schema: Schema | None = None) -> Any:
    """The JSON body, after checking the status and (for success) the declared schema."""
    assert response.status_code == status, response.text
    body = response.json()
    if schema is not None:
        validate(body, schema)
    return body


# --------------------------------------------------------------------------- commands


def _device_commands(org: Org, device: str) -> str:
    return f"{API}/organisations/{org.code}/devices/{device}/commands"


#: Per kind: parameters it accepts, and wrong ones with the member they are refused for.
KIND_CASES: dict[str, tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]]]] = {
    "lock": (
        [{}, {"message": "Found me? Call", "phone_number": "+44 20 7946 0000"}],
        [
            ({"message": 5}, "message"),
            ({"message": "x" * 201}, "message"),
            ({"phone_number": "call me"}, "phone_number"),
            ({"colour": "red"}, "colour"),
        ],
    ),
    "unlock": ([{}], [({"message": "hi"}, "message")]),
    "wipe": (
        [{}, {"pin": "123456", "preserve_data_plan": True}],
        [({"pin": "12345"}, "pin"), ({"preserve_data_plan": "yes"}, "preserve_data_plan")],
    ),
    "enterprise_wipe": ([{}], [({"pin": "123456"}, "pin")]),
    "locate": ([{}], [({"duration_minutes": 5}, "duration_minutes")]),
    "track": (
        [{"duration_minutes": 60, "interval_minutes": 5}],
        [
            ({}, "duration_minutes"),
            ({"duration_minutes": 60}, "interval_minutes"),
            ({"duration_minutes": 0, "interval_minutes": 1}, "duration_minutes"),
            ({"duration_minutes": 20000, "interval_minutes": 1}, "duration_minutes"),
            ({"duration_minutes": True, "interval_minutes": 1}, "duration_minutes"),
            ({"duration_minutes": 10, "interval_minutes": 20}, "interval_minutes"),
            ({"duration_minutes": 60, "interval_minutes": "5"}, "interval_minutes"),
        ],
    ),
    "message": (
        [{"text": "Please update", "title": "IT"}],
        [({}, "text"), ({"text": "   "}, "text"), ({"text": "x" * 1001}, "text")],
    ),
    "install_application": (
        [{"application_id": "com.example.app"}, {"url": "https://apps.example.com/a.ipa"}],
        [
            ({}, "application_id"),
            ({"application_id": "com.example.app", "url": "https://a.example/x"}, "application_id"),
            ({"url": "http://apps.example.com/a.ipa"}, "url"),
            ({"url": "https:///no-host"}, "url"),
            ({"application_id": "has space"}, "application_id"),
        ],
    ),
    "remove_application": (
        [{"application_id": "com.example.app"}],
        [({}, "application_id"), ({"url": "https://a.example/x"}, "url")],
    ),
    "request_inventory": ([{}], [({"full": True}, "full")]),
}


def test_every_kind_has_parameter_cases() -> None:
    assert set(KIND_CASES) == {kind.value for kind in commands.CommandKind} == set(commands.KINDS)


def test_the_state_table() -> None:
    allowed = {
        ("queued", "sent"),
        ("queued", "cancelled"),
        ("sent", "acknowledged"),
        ("sent", "failed"),
        ("sent", "cancelled"),
    }
    for current in commands.State:
        for target in commands.State:
            if (current.value, target.value) in allowed:
                commands.check_transition(current, target)
            else:
                with pytest.raises(commands.RefusedTransition):
                    commands.check_transition(current, target)
    assert {"acknowledged", "failed", "cancelled"} == commands.FINAL


async def test_parameters_are_checked_per_kind(running: RunningService) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "kinds")
        device = add_device(running, org)
        url = _device_commands(org, device)
        good = 0
        for kind, (accepted, refused) in KIND_CASES.items():
            for parameters in accepted:
                body = answer(
                    await client.post(
                        url, json={"kind": kind, "parameters": parameters}, headers=org.admin
                    ),
                    201,
                    COMMAND,
                )
                # Secret parameters (the wipe PIN) are for the device only, never shown back.
                shown = {k: "(secret)" if k == "pin" else v for k, v in parameters.items()}
                assert (body["kind"], body["parameters"], body["state"]) == (
                    kind,
                    shown,
                    "queued",
                )
                good += 1
            for parameters, member in refused:
                response = await client.post(
                    url, json={"kind": kind, "parameters": parameters}, headers=org.admin
                )
                problem = answer(response, 422)
                assert problem["field"] == f"parameters.{member}", (kind, parameters, problem)
        unknown = await client.post(url, json={"kind": "explode"}, headers=org.admin)
        assert answer(unknown, 422)["field"] == "kind"
        # Only the accepted ones were queued, each with its audit event.
        listed = answer(await client.get(url, headers=org.admin), 200, COMMAND_PAGE)
        assert listed["total"] == good == count(running, "commands")
    assert len(audit_rows(running, "command.queued")) == good
    secret = [e for e in audit_rows(running, "command.queued") if e["details"]["kind"] == "wipe"]
    assert {"pin": "(secret)", "preserve_data_plan": True} in [
        e["details"]["parameters"] for e in secret
    ]


async def test_rights_decide_who_may_give_which_command(running: RunningService) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "rights")
        helpdesk = await add_account(
            running, client, org, "helpdesk", AccountKind.MANAGER, ("commands",)
        )
        reporting = await add_account(running, client, org, "reporting", AccountKind.MANAGER)
        wiper = await add_account(
            running, client, org, "wiper", AccountKind.MANAGER, ("commands", "wipe")
        )
        device = add_device(running, org)
        url = _device_commands(org, device)
        lock = {"kind": "lock"}
        assert (await client.post(url, json=lock, headers=helpdesk.auth)).status_code == 201
        for kind in ("wipe", "enterprise_wipe"):
            refused = await client.post(url, json={"kind": kind}, headers=helpdesk.auth)
            assert refused.status_code == 403, refused.text
        assert (await client.post(url, json=lock, headers=reporting.auth)).status_code == 403
        bulk = {"kind": "lock", "device_ids": [device]}
        refused = await client.post(
            f"{API}/organisations/{org.code}/commands", json=bulk, headers=reporting.auth
        )
        assert refused.status_code == 403
        wipe = answer(await client.post(url, json={"kind": "wipe"}, headers=wiper.auth), 201)
        # A manager who may not wipe may not call a wipe off either; all may look.
        cancel = f"{API}/organisations/{org.code}/commands/{wipe['id']}/cancel"
        assert (await client.post(cancel, headers=helpdesk.auth)).status_code == 403
        assert (await client.post(cancel, headers=reporting.auth)).status_code == 403
        listed = answer(await client.get(url, headers=reporting.auth), 200, COMMAND_PAGE)
        assert listed["total"] == 2
        # Devices that are removed or inactive take no new commands, whoever asks.
        for state in ("removed", "inactive"):
            gone = add_device(running, org, state=state)
            refused = await client.post(_device_commands(org, gone), json=lock, headers=org.admin)
            assert answer(refused, 422)["field"] == "device"
    assert count(running, "commands") == 2
    assert [e["actor"] for e in audit_rows(running, "command.queued")] == ["helpdesk", "wiper"]


async def test_device_owners_serve_themselves_on_their_own_devices(
    running: RunningService,
) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "self")
        alice = await add_account(running, client, org, "alice", AccountKind.USER)
        bob = await add_account(running, client, org, "bob", AccountKind.USER)
        mine = add_device(running, org, owner=alice)
        theirs = add_device(running, org, owner=bob)
        for kind in sorted(commands.SELF_SERVICE):
            parameters = KIND_CASES[kind][0][-1]
            queued = await client.post(
                _device_commands(org, mine),
                json={"kind": kind, "parameters": parameters},
                headers=alice.auth,
            )
            assert queued.status_code == 201, (kind, queued.text)
        for kind in ("message", "remove_application"):
            parameters = KIND_CASES[kind][0][0]
            refused = await client.post(
                _device_commands(org, mine),
                json={"kind": kind, "parameters": parameters},
                headers=alice.auth,
            )
            assert refused.status_code == 403
        # Bob's device does not exist as far as Alice can tell.
        other = await client.post(
            _device_commands(org, theirs), json={"kind": "lock"}, headers=alice.auth
        )
        assert other.status_code == 404
        assert (
            await client.get(_device_commands(org, theirs), headers=alice.auth)
        ).status_code == 404
        from_admin = answer(
            await client.post(
                _device_commands(org, theirs), json={"kind": "locate"}, headers=org.admin
            ),
            201,
        )
        hers = answer(
            await client.get(f"{API}/organisations/{org.code}/commands", headers=alice.auth),
            200,
            COMMAND_PAGE,
        )
        assert hers["total"] == len(commands.SELF_SERVICE)
        assert {item["device_id"] for item in hers["items"]} == {mine}
        one = f"{API}/organisations/{org.code}/commands/{from_admin['id']}"
        assert (await client.get(one, headers=alice.auth)).status_code == 404
        assert (await client.get(one, headers=bob.auth)).status_code == 200
        # Owners cancel what they gave, not what the organisation gave.
        own = hers["items"][0]["id"]
        cancelled = await client.post(
            f"{API}/organisations/{org.code}/commands/{own}/cancel", headers=alice.auth
        )
        assert answer(cancelled, 200, COMMAND)["state"] == "cancelled"
        refused = await client.post(f"{one}/cancel", headers=bob.auth)
        assert refused.status_code == 403
        bulk = await client.post(
            f"{API}/organisations/{org.code}/commands",
            json={"kind": "lock", "device_ids": [mine]},
            headers=alice.auth,
        )
        assert bulk.status_code == 403
    assert count(running, "commands") == len(commands.SELF_SERVICE) + 1


async def test_bulk_commands_reach_devices_and_groups_in_one_batch(
    running: RunningService,
) -> None:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "bulk")
        a, b, d = add_devices(running, org, 3)
        removed = add_device(running, org, state="removed")
        group = add_group(running, org, [b, removed, d])
        url = f"{API}/organisations/{org.code}/commands"
        body = {"kind": "lock", "device_ids": [a, b, a], "group_ids": [group]}
        batch = answer(await client.post(url, json=body, headers=org.admin), 201, QUEUED_BATCH)
        assert batch["queued"] == 3 and batch["skipped"] == [removed]
        status_url = f"{API}/organisations/{org.code}/command-batches/{batch['batch_id']}"
        status = answer(await client.get(status_url, headers=org.admin), 200, BATCH)
        assert status["total"] == 3 and status["kind"] == "lock"
        assert status["counts"] == {
            "queued": 3,
            "sent": 0,
            "acknowledged": 0,
            "failed": 0,
            "cancelled": 0,
        }
        listed = answer(
            await client.get(
                url, params={"filter[batch_id]": batch["batch_id"]}, headers=org.admin
            ),
            200,
            COMMAND_PAGE,
        )
        assert {item["device_id"] for item in listed["items"]} == {a, b, d}
        cancel = f"{url}/{listed['items'][0]['id']}/cancel"
        assert (await client.post(cancel, headers=org.admin)).status_code == 200
        status = answer(await client.get(status_url, headers=org.admin), 200, BATCH)
        assert (status["counts"]["queued"], status["counts"]["cancelled"]) == (2, 1)

        # Anything unknown refuses the whole request, and nothing is queued.
        before = count(running, "commands")
        other = await new_organisation(client, supervisor, "bulk-b")
        foreign = add_device(running, other)
        cases = [
            ({"kind": "lock", "device_ids": [a, foreign]}, "device_ids"),
            ({"kind": "lock", "group_ids": [new_id()]}, "group_ids"),
            ({"kind": "lock", "device_ids": [removed]}, "device_ids"),
            ({"kind": "lock"}, "device_ids"),
            ({"kind": "track", "device_ids": [a]}, "parameters.duration_minutes"),
        ]
        for wrong, field in cases:
            refused = await client.post(url, json=wrong, headers=org.admin)
            assert answer(refused, 422)["field"] == field, wrong
        assert count(running, "commands") == before
    events = audit_rows(running, "command.bulk_queued")
    assert len(events) == 1 and events[0]["target_id"] == batch["batch_id"]
    assert events[0]["details"]["queued"] == 3 and events[0]["details"]["skipped"] == 1
    assert len(audit_rows(running, "command.cancelled")) == 1


async def test_command_lists_page_sort_and_filter(running: RunningService) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "lists")
        device = add_device(running, org)
        url = _device_commands(org, device)
        for kind in ("lock", "locate", "unlock", "lock", "request_inventory"):
            answer(await client.post(url, json={"kind": kind}, headers=org.admin), 201)
        all_of = f"{API}/organisations/{org.code}/commands"
        newest = answer(await client.get(all_of, headers=org.admin), 200, COMMAND_PAGE)
        assert newest["items"][0]["kind"] == "request_inventory"
        page = answer(
            await client.get(
                all_of, params={"sort": "kind", "limit": 2, "offset": 1}, headers=org.admin
            ),
            200,
            COMMAND_PAGE,
        )
        assert [i["kind"] for i in page["items"]] == ["lock", "lock"]
        assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
        locks = answer(
            await client.get(
                all_of,
                params={"filter[kind]": "lock", "filter[state]": "queued"},
                headers=org.admin,
            ),
            200,
            COMMAND_PAGE,
        )
        assert sorted(i["kind"] for i in locks["items"]) == ["lock", "lock", "unlock"]
        by_device = await client.get(
            all_of, params={"filter[device_id]": device, "sort": "-created_at"}, headers=org.admin
        )
        assert answer(by_device, 200)["total"] == 5
        wrong = await client.get(all_of, params={"sort": "parameters"}, headers=org.admin)
        assert answer(wrong, 422)["field"] == "sort"


async def test_cancel_follows_the_state_table(running: RunningService) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "cancel")
        device = add_device(running, org)
        url = _device_commands(org, device)
        first = answer(await client.post(url, json={"kind": "locate"}, headers=org.admin), 201)
        cancel = f"{API}/organisations/{org.code}/commands/{first['id']}/cancel"
        cancelled = answer(await client.post(cancel, headers=org.admin), 200, COMMAND)
        assert cancelled["state"] == "cancelled" and cancelled["completed_at"]
        again = answer(await client.post(cancel, headers=org.admin), 200, COMMAND)
        assert again == cancelled
        done = answer(await client.post(url, json={"kind": "locate"}, headers=org.admin), 201)
        with database(running) as conn:
            conn.execute("UPDATE commands SET state = 'acknowledged' WHERE id = ?", (done["id"],))
        refused = await client.post(
            f"{API}/organisations/{org.code}/commands/{done['id']}/cancel", headers=org.admin
        )
        assert answer(refused, 422)["field"] == "state"
        got = await client.get(
            f"{API}/organisations/{org.code}/commands/{done['id']}", headers=org.admin
        )
        assert answer(got, 200, COMMAND)["state"] == "acknowledged"
    assert len(audit_rows(running, "command.cancelled")) == 1


async def test_another_organisations_ids_are_not_found(running: RunningService) -> None:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        a = await new_organisation(client, supervisor, "org-a")
        b = await new_organisation(client, supervisor, "org-b")
        b_device = add_device(running, b)
        b_command = answer(
            await client.post(
                _device_commands(b, b_device), json={"kind": "lock"}, headers=b.admin
            ),
            201,
        )
        b_batch = answer(
            await client.post(
                f"{API}/organisations/{b.code}/commands",
                json={"kind": "lock", "device_ids": [b_device]},
                headers=b.admin,
            ),
            201,
        )
        before = count(running, "commands")
        in_a = f"{API}/organisations/{a.code}"
        attempts = [
            client.post(_device_commands(a, b_device), json={"kind": "lock"}, headers=a.admin),
            client.get(_device_commands(a, b_device), headers=a.admin),
            client.get(f"{in_a}/commands/{b_command['id']}", headers=a.admin),
            client.post(f"{in_a}/commands/{b_command['id']}/cancel", headers=a.admin),
            client.get(f"{in_a}/command-batches/{b_batch['batch_id']}", headers=a.admin),
            # B's own paths, with A's manager.
            client.get(f"{API}/organisations/{b.code}/commands", headers=a.admin),
            client.post(_device_commands(b, b_device), json={"kind": "lock"}, headers=a.admin),
        ]
        for attempt in attempts:
            response = await attempt
            assert response.status_code == 404, response.text
        listed = answer(await client.get(f"{in_a}/commands", headers=a.admin), 200, COMMAND_PAGE)
        assert listed["total"] == 0
        assert count(running, "commands") == before


async def test_a_devices_next_owner_sees_nothing_of_the_previous_owners_commands(
    running: RunningService,
) -> None:
    """Commands belong to the owner the device had when they were queued, results too."""
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "moves")
        alice = await add_account(running, client, org, "alice", AccountKind.USER)
        bob = await add_account(running, client, org, "bob", AccountKind.USER)
        device = add_device(running, org, owner=alice)
        url = _device_commands(org, device)
        all_of = f"{API}/organisations/{org.code}/commands"
        located = answer(await client.post(url, json={"kind": "locate"}, headers=alice.auth), 201)
        pending = answer(await client.post(url, json={"kind": "lock"}, headers=alice.auth), 201)
        message = {"kind": "message", "parameters": {"text": "Return me to IT"}}
        given = answer(await client.post(url, json=message, headers=org.admin), 201)
        where_alice_was = {"latitude": 51.5, "longitude": -0.12, "at": now()}
        with database(running) as conn:
            conn.execute(
                "UPDATE commands SET state = 'acknowledged', result = ? WHERE id = ?",
                (json.dumps(where_alice_was), located["id"]),
            )
        moved = await client.patch(
            f"{API}/organisations/{org.code}/devices/{device}",
            json={"owner": bob.id},
            headers=org.admin,
        )
        assert answer(moved, 200)["owner"]["id"] == bob.id
        bobs = answer(await client.post(url, json={"kind": "locate"}, headers=bob.auth), 201)
        where_bob_is = {"latitude": 48.85, "longitude": 2.35, "at": now()}
        with database(running) as conn:
            conn.execute(
                "UPDATE commands SET state = 'acknowledged', result = ? WHERE id = ?",
                (json.dumps(where_bob_is), bobs["id"]),
            )
        alices = {located["id"], pending["id"], given["id"]}

        # Bob sees his own command only: none of Alice's, nor where she was.
        for listing in (all_of, url):
            seen = answer(await client.get(listing, headers=bob.auth), 200, COMMAND_PAGE)
            assert [item["id"] for item in seen["items"]] == [bobs["id"]]
            assert seen["items"][0]["result"] == where_bob_is
        for command in alices:
            one = f"{all_of}/{command}"
            assert (await client.get(one, headers=bob.auth)).status_code == 404
            assert (await client.post(f"{one}/cancel", headers=bob.auth)).status_code == 404

        # Alice keeps her history of the device, never Bob's commands or where he is.
        hers = answer(await client.get(all_of, headers=alice.auth), 200, COMMAND_PAGE)
        assert {item["id"] for item in hers["items"]} == alices
        shown = answer(await client.get(f"{all_of}/{located['id']}", headers=alice.auth), 200)
        assert shown["result"] == where_alice_was
        assert (await client.get(f"{all_of}/{bobs['id']}", headers=alice.auth)).status_code == 404
        assert (await client.get(url, headers=alice.auth)).status_code == 404  # not hers now
        # ... and no longer reaches the device, not even to call off what she gave.
        refused = await client.post(f"{all_of}/{pending['id']}/cancel", headers=alice.auth)
        assert refused.status_code == 403
        everything = answer(await client.get(url, headers=org.admin), 200, COMMAND_PAGE)
        assert everything["total"] == 4  # managers see the device's whole history
        assert {i["state"] for i in everything["items"] if i["id"] == pending["id"]} == {"queued"}
    with database(running) as conn:
        owners = dict(conn.execute("SELECT id, owner_id FROM commands"))
    assert owners == {**dict.fromkeys(alices, alice.id), bobs["id"]: bob.id}
    assert audit_rows(running, "command.cancelled") == []


async def test_every_queued_command_records_the_owner_of_the_day(running: RunningService) -> None:
    async with running.client() as client:
        org = await new_organisation(client, await sign_in_supervisor(running, client), "owned")
        alice = await add_account(running, client, org, "alice", AccountKind.USER)
        hers = add_device(running, org, owner=alice)
        nobodys = add_device(running, org)
        in_group = add_device(running, org, owner=alice)
        batch = answer(
            await client.post(
                f"{API}/organisations/{org.code}/commands",
                json={
                    "kind": "lock",
                    "device_ids": [hers, nobodys],
                    "group_ids": [add_group(running, org, [in_group])],
                },
                headers=org.admin,
            ),
            201,
        )
        single = answer(
            await client.post(
                _device_commands(org, nobodys), json={"kind": "lock"}, headers=org.admin
            ),
            201,
        )
        seen = answer(
            await client.get(f"{API}/organisations/{org.code}/commands", headers=alice.auth), 200
        )
        assert sorted(item["device_id"] for item in seen["items"]) == sorted([hers, in_group])
    with database(running) as conn:
        of_batch = "SELECT device_id, owner_id FROM commands WHERE batch_id = ?"
        owners = dict(conn.execute(of_batch, (batch["batch_id"],)))
        alone = conn.execute("SELECT owner_id FROM commands WHERE id = ?", (single["id"],))
        assert alone.fetchone()[0] is None
    assert owners == {hers: alice.id, nobodys: None, in_group: alice.id}


def test_migration_5_gives_existing_commands_their_devices_owner(tmp_path: Path) -> None:
    at = now()
    org_id, owner_id, owned, unowned = new_id(), new_id(), new_id(), new_id()
    with closing(sqlite_store.connect(tmp_path / "old.db")) as conn:
        sqlite_store.migrate(conn, MIGRATIONS[:4])
        conn.execute(
            "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
            " VALUES (?, 'old', 'Old', ?, ?)",
            (org_id, at, at),
        )
        conn.execute(
            "INSERT INTO accounts (id, organisation_id, login, kind, created_at, updated_at)"
            " VALUES (?, ?, 'alice', 'user', ?, ?)",
            (owner_id, org_id, at, at),
        )
        for device, owner in ((owned, owner_id), (unowned, None)):
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, platform, protocol, state,"
                " created_at, updated_at) VALUES (?, ?, ?, 'ios', 'apple_mdm', 'enrolled', ?, ?)",
                (device, org_id, owner, at, at),
            )
            conn.execute(
                "INSERT INTO commands (id, organisation_id, device_id, kind, created_at,"
                " updated_at) VALUES (?, ?, ?, 'lock', ?, ?)",
                (device, org_id, device, at, at),  # the command takes its device's id
            )
        assert sqlite_store.migrate(conn) == [m.version for m in MIGRATIONS[4:]]
        owners = dict(conn.execute("SELECT device_id, owner_id FROM commands"))
        assert owners == {owned: owner_id, unowned: None}
        # Removing the account (once it owns no device) leaves its commands to the managers.
        conn.execute("UPDATE devices SET owner_id = NULL")
        conn.execute("DELETE FROM accounts WHERE id = ?", (owner_id,))
        conn.commit()
        left = conn.execute("SELECT count(*) FROM commands WHERE owner_id IS NULL").fetchone()
        assert left[0] == 2


# --------------------------------------------------------------------------- protocol side


async def test_protocol_side_moves_commands_through_the_table(tmp_path: Path) -> None:
    """What protocol code calls: pending, sent, results (idempotent when repeated)."""
    async with open_sqlite_store(tmp_path / "emm.db") as store:
        at = now()
        org_id, device_id, account_id = new_id(), new_id(), new_id()

        def setup(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
                " VALUES (?, 'p', 'P', ?, ?)",
                (org_id, at, at),
            )
            conn.execute(
                "INSERT INTO accounts (id, login, kind, created_at, updated_at)"
                " VALUES (?, 'supervisor', 'supervisor', ?, ?)",
                (account_id, at, at),
            )
            conn.execute(
                "INSERT INTO devices (id, organisation_id, platform, protocol, state,"
                " created_at, updated_at) VALUES (?, ?, 'android', 'wsdm', 'enrolled', ?, ?)",
                (device_id, org_id, at, at),
            )

        await store.write(setup)
        who = Principal(account_id, "supervisor", AccountKind.SUPERVISOR, None)
        woken: list[Waiting] = []
        wakeups = Wakeups()
        wakeups.subscribe(woken.extend)
        first = await commands.queue_command(
            store, who, org_id, device_id, "locate", {}, wakeups=wakeups
        )
        second = await commands.queue_command(
            store, who, org_id, device_id, "request_inventory", {}
        )
        assert woken == [Waiting(org_id, device_id, "wsdm")]  # only the first asked to wake
        with pytest.raises(Invalid):
            await commands.queue_command(store, who, org_id, device_id, "nap", {}, wakeups=wakeups)
        bulk = await commands.queue_bulk(
            store, who, org_id, "lock", {}, device_ids=[device_id], wakeups=wakeups
        )
        assert bulk["queued"] == 1 and woken[1:] == [Waiting(org_id, device_id, "wsdm")]
        bulk_lock = (await commands.pending_commands(store, device_id))[-1]
        await commands.cancel_command(store, who, org_id, bulk_lock["id"])  # out of the way
        pending = await commands.pending_commands(store, device_id)
        assert [c["id"] for c in pending] == [first["id"], second["id"]]

        with pytest.raises(commands.RefusedTransition):
            await commands.record_result(store, first["id"], True, {"lat": 1})  # not sent yet
        sent = await commands.mark_sent(store, first["id"])
        assert sent["state"] == "sent" and sent["sent_at"]
        assert (await commands.mark_sent(store, first["id"]))["sent_at"] == sent["sent_at"]
        assert [c["id"] for c in await commands.pending_commands(store, device_id)] == [
            second["id"]
        ]
        with_sent = await commands.pending_commands(store, device_id, include_sent=True)
        assert [c["id"] for c in with_sent] == [first["id"], second["id"]]

        done = await commands.record_result(store, first["id"], True, {"lat": 1, "lon": 2})
        assert (done["state"], done["result"]) == ("acknowledged", {"lat": 1, "lon": 2})
        repeated = await commands.record_result(store, first["id"], True, {"lon": 2, "lat": 1})
        assert repeated == done  # the same answer again changes nothing
        for ok, result in ((True, {"lat": 9}), (False, {"lat": 1, "lon": 2})):
            with pytest.raises(commands.RefusedTransition):
                await commands.record_result(store, first["id"], ok, result)
        with pytest.raises(commands.RefusedTransition):
            await commands.mark_sent(store, first["id"])

        await commands.mark_sent(store, second["id"])
        failed = await commands.record_result(store, second["id"], False, {"error": "busy"})
        assert failed["state"] == "failed" and failed["completed_at"]
        with pytest.raises(Invalid):
            await commands.record_result(store, second["id"], True, ["not", "an", "object"])  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            await commands.mark_sent(store, new_id())

        third = await commands.queue_command(store, who, org_id, device_id, "lock", {})
        await commands.mark_sent(store, third["id"])
        cancelled = await commands.cancel_command(store, who, "p", third["id"])
        assert cancelled["state"] == "cancelled"
        with pytest.raises(commands.RefusedTransition):
            await commands.record_result(store, third["id"], True, {})

        def results(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT action FROM audit_events WHERE action LIKE 'command.%' ORDER BY at, id"
            )
            return [row[0] for row in rows]

        assert await store.read(results) == [
            "command.queued",
            "command.queued",
            "command.bulk_queued",
            "command.cancelled",
            "command.acknowledged",
            "command.failed",
            "command.queued",
            "command.cancelled",
        ]


async def test_a_result_after_the_device_changed_hands_is_not_the_old_owners(
    tmp_path: Path,
) -> None:
    """The answer may describe the new owner (where they are): the old one never sees it."""
    async with open_sqlite_store(tmp_path / "emm.db") as store:
        at = now()
        org_id, device_id, alice, bob = new_id(), new_id(), new_id(), new_id()

        def setup(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
                " VALUES (?, 'h', 'H', ?, ?)",
                (org_id, at, at),
            )
            conn.executemany(
                "INSERT INTO accounts (id, organisation_id, login, kind, created_at, updated_at)"
                " VALUES (?, ?, ?, 'user', ?, ?)",
                [(alice, org_id, "alice", at, at), (bob, org_id, "bob", at, at)],
            )
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, platform, protocol, state,"
                " created_at, updated_at) VALUES (?, ?, ?, 'ios', 'apple_mdm', 'enrolled', ?, ?)",
                (device_id, org_id, alice, at, at),
            )

        def give_to(conn: sqlite3.Connection, owner: str) -> None:
            conn.execute("UPDATE devices SET owner_id = ? WHERE id = ?", (owner, device_id))

        await store.write(setup)
        as_alice = Principal(alice, "alice", AccountKind.USER, org_id)
        as_bob = Principal(bob, "bob", AccountKind.USER, org_id)
        answered, late = [
            await commands.queue_command(store, as_alice, org_id, device_id, "locate", {})
            for _ in range(2)
        ]
        for command in (answered, late):
            await commands.mark_sent(store, command["id"])
        await commands.record_result(store, answered["id"], True, {"latitude": 1})
        await store.write(give_to, bob)
        await commands.record_result(store, late["id"], True, {"latitude": 2})

        query = ListQuery(50).checked(commands.COMMAND_LIST)
        hers = await commands.organisation_commands(store, as_alice, org_id, query)
        assert [item["id"] for item in hers.items] == [answered["id"]]
        with pytest.raises(NotFound):
            await commands.get_command(store, as_alice, org_id, late["id"])
        assert (await commands.organisation_commands(store, as_bob, org_id, query)).total == 0
        who = Principal(new_id(), "supervisor", AccountKind.SUPERVISOR, None)
        late_now = await commands.get_command(store, who, org_id, late["id"])
        assert late_now["result"] == {"latitude": 2}  # managers keep it
