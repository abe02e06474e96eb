"""ActiveSync folders of the owner's own through the running service: FolderCreate,
FolderUpdate and FolderDelete reaching the owner's other devices, items in such folders,
MoveItems between them, default folders protected, refusals that change nothing, FilterType
on calendar and tasks; the folders in the device's state (REST API and device page); and a
database of before these folders migrating in place."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import trio

from bench.eas_client import EasClient, contact
from engine.ids import new_id
from engine.principals import AccountKind
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import CALENDAR, FOLDER_HIERARCHY, TASKS
from engine.store.migrations import MIGRATIONS
from engine.store.sqlite import connect, migrate
from engine.timestamps import now

from .conftest import RunningService
from .eas_world import EasWorld, eas_world, ready
from .omads_world import database, make_world
from .portal_client import Portal
from .test_api_commands import API, PASSWORD, add_account, new_organisation, sign_in_supervisor

CONTACTS_FOLDER = 14


@pytest.fixture
async def world(running: RunningService, tmp_path: Path) -> AsyncIterator[EasWorld]:
    async with eas_world(running, tmp_path) as made:
        yield made


def _rows(world: EasWorld, sql: str, *args: object) -> list[tuple[object, ...]]:
    with database(world.running) as conn:
        return [tuple(row) for row in conn.execute(sql, args)]


def _counts(world: EasWorld) -> dict[str, int]:
    counts = world.counts()
    with database(world.running) as conn:
        counts["pim_collections"] = conn.execute("SELECT count(*) FROM pim_collections").fetchone()[
            0
        ]
        counts["folder_keys"] = conn.execute(
            "SELECT sum(folder_sync_key) FROM eas_devices"
        ).fetchone()[0]
        counts["live_folders"] = conn.execute(
            "SELECT count(*) FROM pim_collections WHERE deleted_at IS NULL"
        ).fetchone()[0]
    return counts


async def test_contacts_folder_made_renamed_and_deleted_reaches_other_device(
    world: EasWorld,
) -> None:
    phone = await ready(world, "FOLDERPHONE")
    tablet = await ready(world, "FOLDERTABLET")
    status, work = await phone.folder_create("Work", CONTACTS_FOLDER)
    assert status == 1 and work is not None
    # The phone's own change is not told to it again; the tablet gets it.
    key = phone.folder_key
    await phone.folder_sync()
    assert phone.folder_key == key
    await tablet.folder_sync()
    assert tablet.folders[work] == ("Work", CONTACTS_FOLDER) and tablet.parents[work] == "0"
    # Items in the folder sync both ways, apart from the default Contacts.
    await phone.sync_all(work)
    outcome = await phone.sync(work, adds={"c1": contact("Ada", "Lovelace")})
    assert [child_text(r, "Status") for r in outcome.responses] == ["1"]
    await tablet.sync_all(work)
    (card,) = tablet.items[work].values()
    assert child_text(card, "FirstName") == "Ada"
    await tablet.sync_all("contacts")
    assert not tablet.items.get("contacts")
    # Renamed and moved under the default Contacts: the tablet sees an Update.
    assert await phone.folder_update(work, "Clients", parent="contacts") == 1
    await tablet.folder_sync()
    assert tablet.folders[work] == ("Clients", CONTACTS_FOLDER)
    assert tablet.parents[work] == "contacts"
    # Deleted: its items are tombstones, the tablet's Sync of it is told to FolderSync (12),
    # then the folder is gone from its hierarchy.
    assert await phone.folder_delete(work) == 1
    assert _rows(world, "SELECT deleted, data FROM pim_items WHERE collection_id = ?", work) == [
        (1, None)
    ]
    assert (await tablet.sync(work)).status == 12
    await tablet.folder_sync()
    assert work not in tablet.folders
    assert (await tablet.sync(work)).status == 8


async def test_a_folder_made_elsewhere_ends_a_parked_ping_with_status_7(
    world: EasWorld,
) -> None:
    phone = await ready(world, "HIERPHONE")
    tablet = await ready(world, "HIERTABLET")
    answered: list[int] = []
    done = trio.Event()

    async def park() -> None:
        answered.append((await tablet.ping(["contacts"], 300))[0])
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(park)
        await trio.sleep(0.3)  # parked
        assert (await phone.folder_create("Projects", CONTACTS_FOLDER))[0] == 1
        with trio.fail_after(1):
            await done.wait()
    assert answered == [7]  # FolderSync first


async def test_move_items_between_contact_folders_is_seen_by_another_device(
    world: EasWorld,
) -> None:
    phone = await ready(world, "MOVEPHONE")
    tablet = await ready(world, "MOVETABLET")
    _, first = await phone.folder_create("Friends", CONTACTS_FOLDER)
    _, second = await phone.folder_create("Family", CONTACTS_FOLDER)
    _, meetings = await phone.folder_create("Meetings", 13)
    assert first and second and meetings
    for folder in (first, second):
        await phone.sync_all(folder)
    await phone.sync(first, adds={"c1": contact("Grace", "Hopper")})
    (item,) = phone.items[first]
    await tablet.folder_sync()
    for folder in (first, second):
        await tablet.sync_all(folder)
    assert list(tablet.items[first]) == [item]
    ((source, status, moved),) = await phone.move_items([(item, first, second)])
    assert (source, status) == (item, 3) and moved and moved != item
    # The other device: Delete in the source, Add in the destination.
    assert (await tablet.sync(first)).deleted == [item]
    added = (await tablet.sync(second)).added
    assert list(added) == [moved] and child_text(added[moved], "FirstName") == "Grace"
    # The moving device is not told its own move.
    for folder in (first, second):
        outcome = await phone.sync(folder)
        assert not (outcome.added or outcome.changed or outcome.deleted), folder
    # Moved already (1), unknown destination (2), same folder (4), another kind (5).
    assert [a[1] for a in await phone.move_items([(item, first, second)])] == [1]
    assert [a[1] for a in await phone.move_items([(moved, second, "nowhere")])] == [2]
    assert [a[1] for a in await phone.move_items([(moved, second, second)])] == [4]
    assert [a[1] for a in await phone.move_items([(moved, second, meetings)])] == [5]
    assert [a[1] for a in await phone.move_items([(moved, "nowhere", first)])] == [1]
    assert _rows(
        world, "SELECT count(*) FROM pim_items WHERE collection_id = ? AND deleted = 0", second
    ) == [(1,)]


async def test_default_folders_are_protected_and_refusals_change_nothing(
    world: EasWorld, tmp_path: Path
) -> None:
    phone = await ready(world, "GUARDPHONE")
    _, mine = await phone.folder_create("Mine", CONTACTS_FOLDER)
    _, inner = await phone.folder_create("Inner", CONTACTS_FOLDER, parent=mine or "")
    assert mine and inner
    await phone.sync_all(mine)
    await phone.sync(mine, adds={"c1": contact("Alan", "Turing")})
    (card,) = phone.items[mine]
    # Another organisation's user, knowing the ids, finds nothing of them.
    stranger_world = EasWorld(make_world(world.running, tmp_path / "other", "globex"), world.http)
    stranger = await ready(stranger_world, "STRANGERPHONE", user="globex\\alice")
    before = _counts(world)
    assert await stranger.folder_delete(mine) == 4
    assert await stranger.folder_update(mine, "Taken") == 4
    assert (await stranger.folder_create("X", CONTACTS_FOLDER, parent=mine))[0] == 5
    assert [a[1] for a in await stranger.move_items([(card, mine, "contacts")])] == [1]
    assert (await stranger.sync(mine)).status == 8
    assert _counts(world) == before
    before = _counts(world)
    key = phone.folder_key
    assert await phone.folder_delete("contacts") == 3  # a default folder: not deleted
    assert await phone.folder_update("contacts", "People") == 2  # nor renamed
    assert await phone.folder_update("inbox", "Post") == 2
    assert (await phone.folder_create("Mine", CONTACTS_FOLDER))[0] == 2  # that name exists
    assert (await phone.folder_create("Contacts", CONTACTS_FOLDER))[0] == 2
    assert (await phone.folder_create("X", CONTACTS_FOLDER, parent="nowhere"))[0] == 5
    assert (await phone.folder_create("Diary", 16))[0] == 6  # no journal items here
    assert await phone.folder_update("nowhere", "X") == 4
    assert await phone.folder_update(mine, "Mine", parent=inner) == 5  # under itself
    assert await phone.folder_update(mine, "Mine", parent="nowhere") == 5
    assert await phone.folder_delete("nowhere") == 4
    # Malformed (10): a default type, no name, no SyncKey; a SyncKey not the device's (9).
    assert (await phone.folder_create("X", 9))[0] == 10
    assert (await phone.folder_create("", CONTACTS_FOLDER))[0] == 10
    no_key = await phone.call(
        "FolderDelete",
        el(FOLDER_HIERARCHY, "FolderDelete", el(FOLDER_HIERARCHY, "ServerId", mine)),
    )
    assert no_key is not None and child_text(no_key, "Status") == "10"
    for wrong in ("0", "99", "x"):
        stale = await phone.folder_command(
            "FolderDelete",
            el(FOLDER_HIERARCHY, "SyncKey", wrong),
            el(FOLDER_HIERARCHY, "ServerId", mine),
        )
        assert child_text(stale, "Status") == "9", wrong
    assert phone.folder_key == key
    assert _counts(world) == before
    # Deleting a folder deletes the folders under it.
    assert await phone.folder_delete(mine) == 1
    assert _counts(world)["live_folders"] == before["live_folders"] - 2


def _event(uid: str, start: datetime, hours: int = 1, recurring: bool = False) -> list:
    def compact(moment: datetime) -> str:
        return moment.strftime("%Y%m%dT%H%M%SZ")

    parts = [
        el(CALENDAR, "TimeZone", "AAAAAA=="),
        el(CALENDAR, "AllDayEvent", "0"),
        el(CALENDAR, "EndTime", compact(start + timedelta(hours=hours))),
        el(CALENDAR, "Subject", uid),
        el(CALENDAR, "StartTime", compact(start)),
        el(CALENDAR, "UID", uid),
    ]
    if recurring:
        parts.append(el(CALENDAR, "Recurrence", el(CALENDAR, "Type", "0")))
    return parts


def _subjects(client: EasClient, folder: str) -> set[str]:
    return {child_text(item, "Subject") or "" for item in client.items.get(folder, {}).values()}


async def test_filter_type_windows_calendar_and_tasks(world: EasWorld) -> None:
    phone = await ready(world, "FILTERPHONE")
    tablet = await ready(world, "FILTERTABLET")
    today = datetime.now(UTC).replace(microsecond=0)
    await phone.sync_all("calendar")
    await phone.sync(
        "calendar",
        adds={
            "e1": _event("long-ago", today - timedelta(days=60)),
            "e2": _event("last-week", today - timedelta(days=7)),
            "e3": _event("next-month", today + timedelta(days=30)),
            "e4": _event("daily-since-last-year", today - timedelta(days=365), recurring=True),
        },
    )
    # Two weeks back (4): the old meeting stays on the server only.
    await tablet.sync("calendar", filter_type=4)
    assert await tablet.estimate("calendar", filter_type=4) == (1, 3)
    await tablet.sync_all("calendar", filter_type=4)
    assert _subjects(tablet, "calendar") == {"last-week", "next-month", "daily-since-last-year"}
    # No filter (0): it comes; one month back (5): it leaves by SoftDelete, kept on the server.
    await tablet.sync_all("calendar", filter_type=0)
    assert "long-ago" in _subjects(tablet, "calendar")
    outcome = await tablet.sync("calendar", filter_type=5)
    assert len(outcome.deleted) == 1 and not outcome.added
    assert "long-ago" not in _subjects(tablet, "calendar")
    assert _rows(
        world,
        "SELECT count(*) FROM pim_items i JOIN pim_collections c ON c.id = i.collection_id"
        " WHERE c.kind = 'calendar' AND c.account_id = ? AND i.deleted = 0",
        world.ds.owner_id,
    ) == [(4,)]
    # The filter stays with the folder: a Sync without Options keeps it.
    assert not (await tablet.sync("calendar")).added
    # A FilterType calendar folders do not have (8): protocol error.
    assert (await tablet.sync("calendar", filter_type=8)).status == 4
    # Tasks: incomplete only (8).
    await phone.sync_all("tasks")
    done = [el(TASKS, "Complete", "1"), el(TASKS, "Subject", "Filed")]
    await phone.sync(
        "tasks",
        adds={
            "t1": [*done, el(TASKS, "DateCompleted", "2026-01-01T00:00:00.000Z")],
            "t2": [el(TASKS, "Complete", "0"), el(TASKS, "Subject", "Open")],
        },
    )
    await tablet.sync_all("tasks", filter_type=8)
    assert _subjects(tablet, "tasks") == {"Open"}


def test_a_database_of_before_migrates_in_place(tmp_path: Path) -> None:
    """Migration 13 keeps every collection (as the default of its kind), item, id map, sync
    state and ActiveSync folder state; then a second collection of a kind can be made, a
    second default cannot, and references are still enforced."""
    path = tmp_path / "old.db"
    conn = connect(path)
    migrate(conn, MIGRATIONS[:12])
    at = "2026-01-01T00:00:00Z"
    conn.execute(
        "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
        " VALUES ('o', 'acme', 'Acme', ?, ?)",
        (at, at),
    )
    conn.execute(
        "INSERT INTO accounts (id, organisation_id, login, kind, created_at, updated_at)"
        " VALUES ('a', 'o', 'alice', 'user', ?, ?)",
        (at, at),
    )
    conn.execute(
        "INSERT INTO devices (id, organisation_id, name, platform, protocol, state, created_at,"
        " updated_at) VALUES ('d', 'o', 'phone', 'ios', 'eas', 'enrolled', ?, ?)",
        (at, at),
    )
    conn.execute(
        "INSERT INTO pim_collections (id, organisation_id, account_id, kind, version,"
        " created_at) VALUES ('c', 'o', 'a', 'contacts', 3, ?)",
        (at,),
    )
    for version in (1, 2, 3):
        conn.execute(
            "INSERT INTO pim_items (collection_id, organisation_id, version, content_type, data,"
            " deleted, created_at, updated_at) VALUES ('c', 'o', ?, 'text/vcard', ?, ?, ?, ?)",
            (version, None if version == 3 else f"card {version}", int(version == 3), at, at),
        )
    conn.execute("INSERT INTO pim_id_map VALUES ('d', 'c', '1', 1)")
    conn.execute(
        "INSERT INTO pim_sync_states (device_id, collection_id, organisation_id, datastore,"
        " seen_version) VALUES ('d', 'c', 'o', 'eas:contacts', 3)"
    )
    conn.execute(
        "INSERT INTO eas_devices (device_id, organisation_id, account_id, eas_device_id,"
        " device_type, folders, created_at, updated_at)"
        " VALUES ('d', 'o', 'a', 'PHONE', 'iPhone', '[\"contacts\"]', ?, ?)",
        (at, at),
    )
    conn.execute(
        "INSERT INTO eas_folder_states (device_id, folder, organisation_id, collection_id,"
        " sync_key, seen_version, updated_at) VALUES ('d', 'contacts', 'o', 'c', 4, 3, ?)",
        (at,),
    )
    assert migrate(conn) == [13, 14]
    conn.row_factory = None  # plain tuples to compare
    assert conn.execute(
        "SELECT id, kind, version, is_default, deleted_at FROM pim_collections"
    ).fetchall() == [("c", "contacts", 3, 1, None)]
    assert [tuple(r) for r in conn.execute("SELECT id, data, deleted FROM pim_items")] == [
        (1, "card 1", 0),
        (2, "card 2", 0),
        (3, None, 1),
    ]
    assert conn.execute("SELECT luid, item_id FROM pim_id_map").fetchall() == [("1", 1)]
    assert conn.execute("SELECT seen_version FROM pim_sync_states").fetchone()[0] == 3
    assert tuple(
        conn.execute("SELECT sync_key, seen_version, filter_type FROM eas_folder_states").fetchone()
    ) == (4, 3, 0)
    conn.execute(
        "INSERT INTO pim_collections (id, organisation_id, account_id, kind, created_at,"
        " is_default, display_name, parent_id, folder_type)"
        " VALUES ('c2', 'o', 'a', 'contacts', ?, 0, 'Work', '0', 14)",
        (at,),
    )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO pim_collections (id, organisation_id, account_id, kind, created_at)"
            " VALUES ('c3', 'o', 'a', 'contacts', ?)",
            (at,),
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO pim_id_map VALUES ('d', 'gone', '2', 2)")
    conn.execute(
        "INSERT INTO pim_items (collection_id, organisation_id, version, content_type,"
        " created_at, updated_at) VALUES ('c2', 'o', 1, 'text/vcard', ?, ?)",
        (at, at),
    )
    assert conn.execute("SELECT max(id) FROM pim_items").fetchone()[0] == 4
    conn.close()


async def test_user_folders_show_over_the_api_and_on_the_device_page(
    running: RunningService,
) -> None:
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "easfolders")
        user = await add_account(running, client, org, "dave", AccountKind.USER)
        device_row = new_id()
        with database(running) as conn:
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, udid, created_at, updated_at) VALUES (?, ?, ?, 'phone', 'ios', 'eas',"
                " 'enrolled', 'SHOWDEVICE', ?, ?)",
                (device_row, org.id, user.id, now(), now()),
            )
        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
            phone = EasClient(http, "easfolders\\dave", PASSWORD, "SHOWDEVICE")
            await phone.provision()
            await phone.folder_sync()
            _, suppliers = await phone.folder_create("Suppliers", CONTACTS_FOLDER)
            assert suppliers
            await phone.sync_all(suppliers)
            await phone.sync(suppliers, adds={"c1": contact("Ada", "Lovelace")})
        base = f"{API}/organisations/{org.code}/devices/{device_row}/activesync"
        state = (await client.get(base, headers=org.admin)).json()
        assert state["user_folders"] == [
            {
                "id": suppliers,
                "name": "Suppliers",
                "type": CONTACTS_FOLDER,
                "parent_id": "0",
                "items": 1,
            }
        ]
        (folder,) = state["folders"]
        assert (folder["id"], folder["name"], folder["type"]) == (
            suppliers,
            "Suppliers",
            CONTACTS_FOLDER,
        )
        async with running.client() as browser:
            portal = Portal(browser)
            await portal.sign_in("admin", PASSWORD, org.code)
            page = await portal.page(f"/admin/o/{org.code}/devices/{device_row}")
            assert (
                "Folders the owner made" in page and "<td>Suppliers</td><td>contacts</td>" in page
            )
