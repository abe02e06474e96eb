"""Exchange ActiveSync through the running service: OPTIONS, Provision in both phases,
FolderSync, Sync of contacts both ways with paging, Ping, remote wipe and bad input."""

from __future__ import annotations

import base64
import gc
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from bench.eas_client import EasFailure, contact
from engine.activesync import Backend, EasCall, EasReply, EasSessionLogic
from engine.actors.eas_pings import PingBoard
from engine.ids import new_id
from engine.protocols import activesync as eas
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import AIRSYNC, FOLDER_HIERARCHY
from engine.protocols.wbxml import Element
from engine.timestamps import now
from engine.wakeups import Waiting

from .conftest import RunningService
from .eas_world import EasWorld, eas_world, ready
from .omads_world import database, make_world, vcard


@pytest.fixture
async def world(running: RunningService, tmp_path: Path) -> AsyncIterator[EasWorld]:
    async with eas_world(running, tmp_path) as made:
        yield made


async def test_options_tell_versions_and_commands(world: EasWorld) -> None:
    client = world.client("OPTDEVICE")
    response = await client.options()
    assert response.status_code == 200
    assert response.headers["MS-ASProtocolVersions"] == "12.1,14.0,14.1,16.0,16.1"
    commands = response.headers["MS-ASProtocolCommands"].split(",")
    assert {"Sync", "FolderSync", "Ping", "Provision", "Settings"} <= set(commands)
    wrong = world.client("OPTDEVICE", password="not it")
    assert (await wrong.options()).status_code == 401


async def test_provision_both_phases_then_policy_key_is_checked(world: EasWorld) -> None:
    world.add_device("PROVDEVICE1")
    client = world.client("PROVDEVICE1")
    # No key yet: 142 DeviceNotProvisioned, in the command's own Status (14.0 and later).
    response = await client.post(
        "FolderSync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "0"))
    )
    assert child_text(eas.decode(response.content), "Status") == "142"
    first = await client.provision()
    policy = first.find("Policies").find("Policy")
    doc = policy.find("Data").find("EASProvisionDoc")
    assert child_text(doc, "DevicePasswordEnabled") == "1"
    assert child_text(doc, "MinDevicePasswordLength") == "4"
    assert client.policy_key and client.policy_key != child_text(policy, "PolicyKey")
    folders = await client.folder_sync()
    assert {"contacts", "calendar", "tasks", "notes", "inbox"} <= set(folders)
    # A key that is not the device's: 144; a changed policy: 143.
    good = client.policy_key
    client.policy_key = "12345"
    response = await client.post(
        "FolderSync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "0"))
    )
    assert child_text(eas.decode(response.content), "Status") == "144"
    client.policy_key = good
    world.settings(min_passcode_length=6)
    response = await client.post(
        "FolderSync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "0"))
    )
    assert child_text(eas.decode(response.content), "Status") == "143"
    again = await client.provision()
    doc = again.find("Policies").find("Policy").find("Data").find("EASProvisionDoc")
    assert child_text(doc, "MinDevicePasswordLength") == "6"
    await client.folder_sync()
    with database(world.running) as conn:
        row = conn.execute(
            "SELECT model, os_version FROM devices WHERE udid = 'PROVDEVICE1'"
        ).fetchone()
    assert tuple(row) == ("Test Phone", "TestOS 17.1")


async def test_protocol_12_1_is_told_449_and_encoded_query_works(world: EasWorld) -> None:
    world.add_device("OLDDEVICE")
    client = world.client("OLDDEVICE", version="12.1", encoded_query=True)
    response = await client.post(
        "FolderSync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "0"))
    )
    assert response.status_code == 449
    await client.provision()
    assert "contacts" in await client.folder_sync()


async def test_contacts_both_ways_with_paging(world: EasWorld) -> None:
    client = await ready(world, "SYNCDEVICE1")
    # From the service (as OMA DS or the portal would store them) to the device, in pages.
    with database(world.running) as conn:
        collection = new_id()
        conn.execute(
            "INSERT INTO pim_collections (id, organisation_id, account_id, kind, version,"
            " created_at) VALUES (?, ?, ?, 'contacts', 0, ?)",
            (collection, world.ds.organisation_id, world.ds.owner_id, now()),
        )
        for number in range(25):
            card = vcard(f"Person{number:02d} Family")
            conn.execute(
                "INSERT INTO pim_items (collection_id, organisation_id, version, content_type,"
                " data, fingerprint, deleted, created_at, updated_at)"
                " VALUES (?, ?, ?, 'text/vcard', ?, ?, 0, ?, ?)",
                (
                    collection,
                    world.ds.organisation_id,
                    number + 1,
                    card,
                    f"f{number}",
                    now(),
                    now(),
                ),
            )
        conn.execute("UPDATE pim_collections SET version = 25 WHERE id = ?", (collection,))
    outcomes = await client.sync_all("contacts", window=10)
    pages = [len(o.added) for o in outcomes]
    assert pages == [0, 10, 10, 5]
    assert [o.more for o in outcomes[1:]] == [True, True, False]
    names = sorted(child_text(d, "FirstName") for d in client.items["contacts"].values())
    assert names[0] == "Person00" and len(names) == 25
    # From the device to the service.
    outcome = await client.sync("contacts", adds={"c1": contact("Ada", "Lovelace")})
    added = [r for r in outcome.responses if r.tag == "Add"]
    assert child_text(added[0], "Status") == "1"
    server_id = child_text(added[0], "ServerId")
    with database(world.running) as conn:
        data = conn.execute(
            "SELECT data FROM pim_items WHERE id = ?", (int(server_id),)
        ).fetchone()[0]
    assert "FN:Lovelace\\, Ada" in data and "TEL;TYPE=CELL:+44 20 7946 0000" in data
    # Change and delete from the device; the next Sync sends nothing back of its own.
    some = next(sid for sid in client.items["contacts"] if sid != server_id)
    outcome = await client.sync(
        "contacts", changes={server_id: contact("Ada", "King")}, deletes=[some]
    )
    assert outcome.responses == [] and outcome.added == {} and outcome.deleted == []
    with database(world.running) as conn:
        data = conn.execute(
            "SELECT data FROM pim_items WHERE id = ?", (int(server_id),)
        ).fetchone()[0]
        deleted = conn.execute(
            "SELECT deleted FROM pim_items WHERE id = ?", (int(some),)
        ).fetchone()[0]
    assert "N:King;Ada" in data and deleted == 1
    # A second device of the same owner gets the changes of the first.
    other = await ready(world, "SYNCDEVICE2")
    await other.sync_all("contacts")
    assert len(other.items["contacts"]) == 25
    assert "King" in {child_text(d, "LastName") for d in other.items["contacts"].values()}
    status, estimate = await other.estimate("contacts")
    assert (status, estimate) == (1, 0)
    fetched = await other.fetch("contacts", server_id)
    assert fetched is not None and child_text(fetched, "LastName") == "King"


async def test_wrong_sync_key_and_unknown_folder(world: EasWorld) -> None:
    client = await ready(world, "KEYDEVICE")
    await client.sync("contacts")
    # An answer lost on the way: the same SyncKey again gets the same answer.
    first = await client.sync("contacts", adds={"r1": contact("Lost", "Answer")})
    again = await client.sync("contacts", adds={"r1": contact("Lost", "Answer")}, key="1")
    assert again.sync_key == first.sync_key
    assert [child_text(r, "ServerId") for r in again.responses] == [
        child_text(r, "ServerId") for r in first.responses
    ]
    assert len(_stored_cards(world)) == 1
    outcome = await client.sync("contacts", key="999")
    assert outcome.status == 3
    assert (await client.sync("nonesuch")).status == 8


async def test_ping_answered_on_change_and_on_heartbeat(world: EasWorld) -> None:
    world.service(ping_min_heartbeat=1)
    phone = await ready(world, "PINGDEVICE1")
    tablet = await ready(world, "PINGDEVICE2")
    await phone.sync_all("contacts")
    await tablet.sync_all("contacts")
    # Out of bounds: status 5 with the bound.
    status, _, root = await phone.ping(["contacts"], 100_000)
    assert status == 5 and child_text(root, "HeartbeatInterval") == "3540"
    # Heartbeat expiry: status 1.
    started = trio.current_time()
    status, _, _ = await phone.ping(["contacts", "calendar"], 1)
    assert status == 1 and 0.9 <= trio.current_time() - started < 3
    # A change from another device of the owner answers at once.
    answer: list[tuple[int, list[str]]] = []

    async def ping() -> None:
        status, folders, _ = await phone.ping(["contacts", "calendar"], 60)
        answer.append((status, folders))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ping)
        await _until(lambda: _parked(world) == 1)
        changed_at = trio.current_time()
        await tablet.sync("contacts", adds={"n1": contact("Grace", "Hopper")})
        await _until(lambda: bool(answer))
        assert trio.current_time() - changed_at < 1.0
    assert answer == [(2, ["contacts"])]
    # A change written by another protocol (straight into the store) is noticed too.
    await phone.sync("contacts")
    answer.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ping)
        await _until(lambda: _parked(world) == 1)
        with database(world.running) as conn:
            collection = conn.execute(
                "SELECT id FROM pim_collections WHERE kind = 'calendar' AND account_id = ?",
                (world.ds.owner_id,),
            ).fetchone()[0]
            conn.execute(
                "UPDATE pim_collections SET version = version + 1 WHERE id = ?", (collection,)
            )
        await _until(lambda: bool(answer), 3)
    assert answer == [(2, ["calendar"])]


def _stored_cards(world: EasWorld) -> list[str]:
    with database(world.running) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT data FROM pim_items WHERE deleted = 0 AND content_type LIKE 'text/vcard%'"
            )
        ]


def _boards() -> list[PingBoard]:
    """The running service's Ping boards (the service runs in the test's process)."""
    return [o for o in gc.get_objects() if isinstance(o, PingBoard)]


def _parked(world: EasWorld) -> int:
    return sum(len(board) for board in _boards())


async def _until(condition: object, deadline: float = 5.0) -> None:
    with trio.fail_after(deadline):
        while not condition():
            print([len(b) for b in _boards()], getattr(condition, "answer", None))  # type: ignore[operator]
            await trio.sleep(0.02)


async def test_remote_wipe_reaches_device_and_is_acknowledged(world: EasWorld) -> None:
    world.service(ping_min_heartbeat=1)
    client = await ready(world, "WIPEDEVICE")
    row = world.add_device("OTHERWIPE")  # noqa: F841 - another device stays untouched
    with database(world.running) as conn:
        device_row = conn.execute("SELECT id FROM devices WHERE udid = 'WIPEDEVICE'").fetchone()[0]
    command_id = world.queue_command(device_row, "wipe")
    # Every command is now refused with 140 until the device provisions and is wiped.
    response = await client.post(
        "FolderSync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "1"))
    )
    assert child_text(eas.decode(response.content), "Status") == "140"
    await client.provision()
    assert client.wiped == "RemoteWipe"
    with database(world.running) as conn:
        state = conn.execute("SELECT state FROM commands WHERE id = ?", (command_id,)).fetchone()[0]
    assert state == "acknowledged"
    # Wiped: the device is kept out.
    with pytest.raises(EasFailure) as refused:
        await client.folder_sync()
    assert refused.value.http == 403


async def test_account_only_wipe_in_16_1(world: EasWorld) -> None:
    client = await ready(world, "AOWDEVICE")
    with database(world.running) as conn:
        device_row = conn.execute("SELECT id FROM devices WHERE udid = 'AOWDEVICE'").fetchone()[0]
    world.queue_command(device_row, "enterprise_wipe")
    await client.provision()
    assert client.wiped == "AccountOnlyRemoteWipe"


async def test_wipe_ends_a_parked_ping(world: EasWorld) -> None:
    world.service(ping_min_heartbeat=1)
    client = await ready(world, "WAKEDEVICE")
    await client.sync_all("contacts")
    with database(world.running) as conn:
        device_row = conn.execute(
            "SELECT id, organisation_id FROM devices WHERE udid = 'WAKEDEVICE'"
        ).fetchone()
    answer: list[int] = []

    async def ping() -> None:
        answer.append((await client.ping(["contacts"], 60))[0])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ping)
        await _until(lambda: _parked(world) == 1)
        world.queue_command(device_row[0], "wipe")
        for board in _boards():  # what queueing a command through the API tells the hub
            board.wake([Waiting(device_row[1], device_row[0], "eas")])
        await _until(lambda: bool(answer), 2)
    assert answer == [1]
    status, _, _ = await client.ping(["contacts"], 60)
    assert status == 140


async def test_wrong_password_unknown_device_and_bad_input_change_nothing(
    world: EasWorld,
) -> None:
    client = await ready(world, "BADDEVICE")
    before = world.counts()
    wrong = world.client("BADDEVICE", password="wrong")
    wrong.policy_key = client.policy_key
    assert (
        await wrong.post(
            "FolderSync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "0"))
        )
    ).status_code == 401
    nobody = world.client("BADDEVICE", user="acme\\nobody")
    assert (await nobody.post("Provision", None)).status_code == 401
    unknown = world.client("NOTINVENTORY")
    assert (await unknown.post("Provision", None)).status_code == 403
    no_auth = await world.http.post(
        "/Microsoft-Server-ActiveSync?Cmd=Sync&User=x&DeviceId=BADDEVICE&DeviceType=iPhone"
    )
    assert no_auth.status_code == 401
    for body in (b"\x03\x01\x6a\x00\x45\x5c\x4f\x4b\x03\xff", b"not wbxml at all", b"\x03"):
        response = await client.post("Sync", body)
        assert response.status_code == 400
    for query in (
        "Cmd=Sync&User=x&DeviceType=iPhone",
        "Cmd=Nonsense&DeviceId=a&DeviceType=b",
        "%%%%",
        base64.b64encode(b"\xa1\x00").decode(),
    ):
        response = await world.http.post(
            f"/Microsoft-Server-ActiveSync?{query}", headers=client.headers()
        )
        assert response.status_code in (400, 501)
    # Well-formed WBXML that is no Sync: a protocol error status.
    outcome = await client.post(
        "Sync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "0"))
    )
    assert child_text(eas.decode(outcome.content), "Status") == "4"
    # Too large a body: 413 before anything is read into a session.
    async with world.running.client() as own:  # the service may close it mid-body
        huge = await own.post(
            "/Microsoft-Server-ActiveSync?Cmd=Sync&User=acme%5Calice&DeviceId=BADDEVICE"
            "&DeviceType=iPhone",
            content=b"\x03\x01\x6a\x00" + bytes(eas.MAX_BODY_BYTES),
            headers=client.headers(),
        )
    assert huge.status_code == 413
    # Another organisation's device, an inactive device, an inactive owner.
    other = make_world(world.running, world.ds.root / "other", code="globex")
    with database(world.running) as conn:
        conn.execute(
            "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
            " state, udid, created_at, updated_at) VALUES (?, ?, ?, 'x', 'ios', 'eas',"
            " 'enrolled', 'GLOBEXDEVICE', ?, ?)",
            (new_id(), other.organisation_id, other.owner_id, now(), now()),
        )
    world.add_device("SLEEPYDEVICE", state="inactive")
    assert world.counts() == {**before, "devices": before["devices"] + 2}
    before = world.counts()
    assert (await world.client("GLOBEXDEVICE").post("Provision", None)).status_code == 403
    assert (await world.client("SLEEPYDEVICE").post("Provision", None)).status_code == 403
    assert world.counts() == before
    with database(world.running) as conn:
        conn.execute("UPDATE accounts SET active = 0 WHERE id = ?", (world.ds.owner_id,))
    before = world.counts()
    response = await client.post(
        "FolderSync", el(FOLDER_HIERARCHY, "FolderSync", el(FOLDER_HIERARCHY, "SyncKey", "0"))
    )
    assert response.status_code == 401
    assert world.counts() == before


async def test_first_contact_enrolment_when_allowed(world: EasWorld) -> None:
    world.service(enrol_at_first_contact=True)
    client = world.client("NEWPHONE1", device_type="Android")
    await client.provision()
    await client.folder_sync()
    with database(world.running) as conn:
        row = conn.execute(
            "SELECT platform, protocol, owner_id FROM devices WHERE udid = 'NEWPHONE1'"
        ).fetchone()
    assert tuple(row) == ("android", "eas", world.ds.owner_id)


async def test_sync_with_wait_answers_on_change_or_empty(world: EasWorld) -> None:
    world.service(ping_min_heartbeat=1, ping_max_heartbeat=120)
    phone = await ready(world, "WAITDEVICE1")
    tablet = await ready(world, "WAITDEVICE2")
    await phone.sync_all("contacts")
    await tablet.sync_all("contacts")
    assert (await phone.sync("contacts", heartbeat=1000)).status == 14  # out of bounds
    started = trio.current_time()
    empty = await phone.sync("contacts", heartbeat=1)
    assert empty.status == 1 and empty.added == {} and trio.current_time() - started >= 0.9
    outcome: list[object] = []
    done = trio.Event()

    async def wait_for_changes() -> None:
        outcome.append(await phone.sync("contacts", heartbeat=60))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_changes)
        await _until(lambda: _parked(world) == 1)
        changed_at = trio.current_time()
        await tablet.sync("contacts", adds={"w1": contact("Alan", "Turing")})
        with trio.fail_after(2):
            await done.wait()
        assert trio.current_time() - changed_at < 1.0
    (synced,) = outcome
    assert [child_text(d, "LastName") for d in synced.added.values()] == ["Turing"]  # type: ignore[attr-defined]


async def test_commands_activesync_cannot_carry_out_fail_at_once(world: EasWorld) -> None:
    client = await ready(world, "LOCKDEVICE")
    with database(world.running) as conn:
        device_row = conn.execute("SELECT id FROM devices WHERE udid = 'LOCKDEVICE'").fetchone()[0]
    lock = world.queue_command(device_row, "lock")
    await client.folder_sync()
    with database(world.running) as conn:
        state, result = conn.execute(
            "SELECT state, result FROM commands WHERE id = ?", (lock,)
        ).fetchone()
    assert state == "failed" and "cannot carry out lock" in result


async def _ping_with_changes(phone: object, tablet: object, name: str) -> None:
    """A Ping the tablet's change answers at once (the session forgets its last answers)."""
    await tablet.sync("contacts", adds={f"t-{name}": contact(name, "Tablet")})  # type: ignore[attr-defined]
    status, folders, _ = await phone.ping(["contacts"], 60)  # type: ignore[attr-defined]
    assert (status, folders) == (2, ["contacts"])


async def test_empty_sync_after_ping_repeats_with_the_current_keys(world: EasWorld) -> None:
    phone = await ready(world, "EMPTYSYNC1")
    tablet = await ready(world, "EMPTYSYNC2")
    await phone.sync_all("contacts")
    await tablet.sync_all("contacts")
    added = await phone.sync("contacts", adds={"e1": contact("Empty", "Sync")})
    await _ping_with_changes(phone, tablet, "Grace")
    # The empty Sync iOS sends after a Ping: the last request again, under the new key.
    root = await phone.call("Sync", None)
    assert root is not None
    collection = root.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert child_text(collection, "SyncKey") == str(int(added.sync_key) + 1)
    commands = collection.find("Commands")
    sent = [c.tag for c in commands.elements()] if commands is not None else []
    assert sent == ["Add"] and collection.find("Responses") is None
    assert sum("Empty" in c for c in _stored_cards(world)) == 1


async def test_add_resent_under_the_same_key_maps_to_the_same_item(world: EasWorld) -> None:
    phone = await ready(world, "RESENTADD1")
    tablet = await ready(world, "RESENTADD2")
    await phone.sync_all("contacts")
    await tablet.sync_all("contacts")
    key = phone.sync_keys["contacts"]
    first = await phone.sync("contacts", adds={"r1": contact("Lost", "Answer")})
    await _ping_with_changes(phone, tablet, "Ada")  # the in-memory answers are gone
    again = await phone.sync("contacts", adds={"r1": contact("Lost", "Answer")}, key=key)
    assert again.sync_key == first.sync_key
    assert [child_text(r, "ServerId") for r in again.responses] == [
        child_text(r, "ServerId") for r in first.responses
    ]
    assert sum("Lost" in c for c in _stored_cards(world)) == 1
    # The remembered ClientId is no ServerId, and is never sent as one.
    assert all(not sid.startswith("client:") for sid in phone.items["contacts"])
    assert (await phone.sync("contacts", deletes=["client:" + key + ":r1"])).responses[0].find(
        "Status"
    ).text == "8"  # type: ignore[union-attr]


class _Board:
    """Records which parked Pings a session ends."""

    def __init__(self) -> None:
        self.released: list[str] = []

    def release_key(self, key: str) -> None:
        self.released.append(key)


async def test_only_the_device_itself_ends_its_parked_ping() -> None:
    """Wrong credentials under the device's user name and DeviceId leave its Ping parked."""
    board = _Board()
    backend = Backend(None, None, board)  # type: ignore[arg-type]

    async def refused(username: str, password: str) -> None:
        return None

    backend.verify = refused  # type: ignore[method-assign]
    session = EasSessionLogic(backend, "acme\\alice|PHONE")
    query = eas.EasQuery("Sync", "acme\\alice", "PHONE", "iPhone", "14.1", None)
    reply = await session.handle(EasCall(query, "acme\\alice", "wrong", None))
    assert isinstance(reply, EasReply) and reply.status == 401
    assert board.released == []


async def test_credentials_are_checked_before_the_body_is_decoded(
    world: EasWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await ready(world, "DECODEDEVICE")
    decoded: list[tuple[int, bool]] = []
    original = eas.decode

    def spy(data: bytes) -> Element:
        decoded.append((len(data), threading.current_thread() is threading.main_thread()))
        return original(data)

    monkeypatch.setattr(eas, "decode", spy)
    wrong = world.client("DECODEDEVICE", password="wrong")
    wrong.policy_key = client.policy_key
    response = await wrong.post("Sync", b"\x03\x01\x6a\x00\x45\x5c\x4f\x4b\x03\xff")
    assert response.status_code == 401 and decoded == []
    # A string table is refused as malformed WBXML, as MS-ASHTTP says: 400.
    response = await client.post("Sync", b"\x03\x01\x6a\x04abc\x00\x45\x01")
    assert response.status_code == 400
    # A body over 64 KiB is decoded on a worker thread, not on the event loop.
    big = el(
        AIRSYNC,
        "Sync",
        el(
            AIRSYNC,
            "Collections",
            el(
                AIRSYNC,
                "Collection",
                el(AIRSYNC, "SyncKey", "9" * 70_000),
                el(AIRSYNC, "CollectionId", "contacts"),
            ),
        ),
    )
    response = await client.post("Sync", big)
    assert response.status_code == 200
    assert [main for size, main in decoded if size > 64 * 1024] == [False]
    assert [main for size, main in decoded if size < 64] == [True]


def _sync_request(*collections: tuple[str, str], partial: bool = False) -> Element:
    return el(
        AIRSYNC,
        "Sync",
        el(
            AIRSYNC,
            "Collections",
            *(
                el(
                    AIRSYNC,
                    "Collection",
                    el(AIRSYNC, "SyncKey", key),
                    el(AIRSYNC, "CollectionId", folder),
                    el(AIRSYNC, "GetChanges"),
                )
                for folder, key in collections
            ),
        ),
        el(AIRSYNC, "Partial") if partial else None,
    )


def _answered(root: Element | None) -> dict[str, tuple[str, str]]:
    assert root is not None
    return {
        child_text(c, "CollectionId") or "": (
            child_text(c, "SyncKey") or "",
            child_text(c, "Status") or "",
        )
        for c in root.find("Collections").elements()  # type: ignore[union-attr]
    }


async def test_partial_sync_keeps_the_other_collections_of_the_last_request(
    world: EasWorld,
) -> None:
    phone = await ready(world, "PARTIALSYNC")
    await phone.sync_all("contacts")
    await phone.sync_all("calendar")
    keys = phone.sync_keys
    both = _answered(
        await phone.call(
            "Sync", _sync_request(("contacts", keys["contacts"]), ("calendar", keys["calendar"]))
        )
    )
    assert {status for _, status in both.values()} == {"1"}
    partial = await phone.call(
        "Sync", _sync_request(("contacts", both["contacts"][0]), partial=True)
    )
    answered = _answered(partial)
    assert answered["calendar"] == (str(int(both["calendar"][0]) + 1), "1")
    assert answered["contacts"][1] == "1"
    # And an empty Sync repeats both, under the keys just answered.
    again = _answered(await phone.call("Sync", None))
    assert again == {folder: (str(int(key) + 1), "1") for folder, (key, _) in answered.items()}
