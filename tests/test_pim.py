"""The PIM store with a real SQLite file: changes since N per device, tombstones, slow-sync
matching, and the three conflict policies (nothing is lost in any of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.ids import new_id
from engine.pim import CollectionSync, PimChanges, collection_unit, facts_of, for_device
from engine.protocols import icalendar, vcard
from engine.protocols.omads import ClientChange, DatastoreState
from engine.store import Store, open_sqlite_store
from engine.timestamps import now


def card(name: str, rev: str = "20260101T000000Z", note: str = "") -> str:
    extra = f"NOTE:{note}\r\n" if note else ""
    return (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nN:{name};;;;\r\n"
        f"REV:{rev}\r\n{extra}END:VCARD\r\n"
    )


class Bench:
    def __init__(self, store: Store, organisation: str, account: str, devices: list[str]):
        self.store = store
        self.organisation = organisation
        self.account = account
        self.devices = devices

    async def session(self, device: str, mode: str, policy: str = "newest-wins") -> CollectionSync:
        collection = await self.store.write(
            collection_unit, self.organisation, self.account, "contacts"
        )
        state = await self.store.read(
            lambda c: c.execute(
                "SELECT seen_version FROM pim_sync_states WHERE device_id = ?", (device,)
            ).fetchone()
        )
        run = CollectionSync(
            store=self.store,
            organisation_id=self.organisation,
            device_id=device,
            collection_id=collection["id"],
            kind="contacts",
            datastore="./contacts",
            state=DatastoreState(None, None, False),
            seen_version=state[0] if state else 0,
            policy=policy,
        )
        await run.begin(mode)
        return run

    async def live(self) -> list[str]:
        rows = await self.store.read(
            lambda c: c.execute(
                "SELECT data FROM pim_items WHERE deleted = 0 ORDER BY id"
            ).fetchall()
        )
        return [row[0] for row in rows]


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    async with open_sqlite_store(tmp_path / "pim.sqlite3") as store:
        organisation, account = new_id(), new_id()
        devices = [new_id(), new_id()]
        at = now()

        def setup(conn: object) -> None:
            conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
                " VALUES (?, 'o', 'O', ?, ?)",
                (organisation, at, at),
            )
            conn.execute(  # type: ignore[attr-defined]
                "INSERT INTO accounts (id, organisation_id, login, kind, created_at, updated_at)"
                " VALUES (?, ?, 'u', 'user', ?, ?)",
                (account, organisation, at, at),
            )
            for device in devices:
                conn.execute(  # type: ignore[attr-defined]
                    "INSERT INTO devices (id, organisation_id, owner_id, platform, protocol,"
                    " created_at, updated_at) VALUES (?, ?, ?, 'android', 'oma_ds', ?, ?)",
                    (device, organisation, account, at, at),
                )

        await store.write(setup)
        yield Bench(store, organisation, account, devices)


async def synced(
    bench: Bench, device: str, mode: str, changes: list[ClientChange], policy: str = "newest-wins"
):  # type: ignore[no-untyped-def]
    run = await bench.session(device, mode, policy)
    outcomes = await run.apply(changes) if changes else []
    outgoing = await run.outgoing()
    await run.map([(c.server_id, f"L{c.server_id}") for c in outgoing if c.command == "Add"])
    await run.finish("a", "b")
    return outcomes, outgoing


async def two_devices_with_one_card(bench: Bench) -> None:
    one, two = bench.devices
    await synced(bench, one, "slow", [ClientChange("Add", "x1", card("Ann"), "text/vcard")])
    # The second device sends the same card in its slow sync: recognised, not duplicated.
    outcomes, outgoing = await synced(
        bench, two, "slow", [ClientChange("Replace", "y1", card("Ann"), "text/vcard")]
    )
    assert [o.status for o in outcomes] == [200] and outgoing == []
    assert len(await bench.live()) == 1


async def test_changes_reach_the_other_device_and_deletions_are_tombstones(bench: Bench) -> None:
    one, two = bench.devices
    await two_devices_with_one_card(bench)
    await synced(bench, one, "two-way", [ClientChange("Add", "x2", card("Bob"), None)])
    _, outgoing = await synced(bench, two, "two-way", [])
    assert [c.command for c in outgoing] == ["Add"] and "Bob" in (outgoing[0].data or "")
    await synced(bench, one, "two-way", [ClientChange("Delete", "x1", None, None)])
    _, outgoing = await synced(bench, two, "two-way", [])
    assert [(c.command, c.luid) for c in outgoing] == [("Delete", "y1")]
    deleted = await bench.store.read(
        lambda c: c.execute("SELECT count(*) FROM pim_items WHERE deleted = 1").fetchone()[0]
    )
    assert deleted == 1
    # Nothing comes back to the device that made the change.
    _, outgoing = await synced(bench, one, "two-way", [])
    assert outgoing == []


@pytest.mark.parametrize(
    ("policy", "client_rev", "status", "kept", "sent"),
    [
        ("server-wins", "20990101T000000Z", 419, ["server"], ["Replace"]),
        ("newest-wins", "20990101T000000Z", 208, ["device"], []),
        ("newest-wins", "20000101T000000Z", 419, ["server"], ["Replace"]),
        ("keep-both", "20990101T000000Z", 209, ["server", "device"], ["Add"]),
    ],
)
async def test_conflicts_lose_nothing(
    bench: Bench, policy: str, client_rev: str, status: int, kept: list[str], sent: list[str]
) -> None:
    one, two = bench.devices
    await two_devices_with_one_card(bench)
    await synced(
        bench,
        two,
        "two-way",
        [ClientChange("Replace", "y1", card("Ann", "20500101T000000Z", "server"), None)],
    )
    outcomes, outgoing = await synced(
        bench,
        one,
        "two-way",
        [ClientChange("Replace", "x1", card("Ann", client_rev, "device"), None)],
        policy,
    )
    assert [o.status for o in outcomes] == [status]
    notes = sorted(text.split("NOTE:")[1].split("\r\n")[0] for text in await bench.live())
    assert notes == sorted(kept)
    assert [c.command for c in outgoing] == sent


async def test_delete_of_an_item_changed_elsewhere_keeps_the_change(bench: Bench) -> None:
    one, two = bench.devices
    await two_devices_with_one_card(bench)
    await synced(
        bench, two, "two-way", [ClientChange("Replace", "y1", card("Ann", note="kept"), None)]
    )
    outcomes, outgoing = await synced(
        bench, one, "two-way", [ClientChange("Delete", "x1", None, None)]
    )
    assert [o.status for o in outcomes] == [419]
    assert [c.command for c in outgoing] == ["Add"] and "kept" in (outgoing[0].data or "")


async def test_refresh_from_client_replaces_the_collection(bench: Bench) -> None:
    one, _ = bench.devices
    await two_devices_with_one_card(bench)
    await synced(
        bench, one, "refresh-from-client", [ClientChange("Replace", "z", card("Zed"), None)]
    )
    assert [("Zed" in text) for text in await bench.live()] == [True]


def test_fingerprints_mean_the_same_across_versions_and_clients() -> None:
    v21 = (
        "BEGIN:VCARD\r\nVERSION:2.1\r\nN:Doe;John\r\nTEL;CELL;PREF:+1\r\n"
        "NOTE;ENCODING=QUOTED-PRINTABLE:caf=C3=A9\r\nEND:VCARD\r\n"
    )
    v30 = (
        "BEGIN:VCARD\nVERSION:3.0\nPRODID:x\nREV:2026\nN:Doe;John\n"
        "TEL;TYPE=PREF,CELL:+1\nNOTE:café\nEMAIL:\nEND:VCARD\n"
    )
    assert vcard.fingerprint(v21) == vcard.fingerprint(v30)
    assert vcard.fingerprint(vcard.convert(v21, "3.0")) == vcard.fingerprint(v21)
    assert vcard.version(vcard.convert(v30, "2.1")) == "2.1"
    assert vcard.fingerprint(vcard.convert(v30, "2.1")) == vcard.fingerprint(v30)
    event = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1\r\nSUMMARY:S\r\n"
        "DTSTAMP:1\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    echoed = event.replace("SUMMARY:S", "SUMMARY:S\r\nDESCRIPTION:S").replace(
        "DTSTAMP:1", "DTSTAMP:2"
    )
    assert icalendar.fingerprint(event) == icalendar.fingerprint(echoed)
    assert icalendar.version(icalendar.convert(event, "1.0")) == "1.0"
    assert (
        facts_of("notes", "a\r\nb\r\n\r\n", None).fingerprint
        == facts_of("notes", "a\nb", None).fingerprint
    )


def test_items_are_converted_only_for_a_device_that_does_not_take_their_format() -> None:
    card30 = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;John\r\nTEL;TYPE=CELL:+1\r\nEND:VCARD\r\n"
    both = [["text/vcard", "3.0"], ["text/x-vcard", "2.1"]]
    assert for_device("contacts", "text/vcard", card30, both) == ("text/vcard", card30)
    assert for_device("contacts", "text/vcard", card30, []) == ("text/vcard", card30)
    content_type, data = for_device("contacts", "text/vcard", card30, [["text/x-vcard", "2.1"]])
    assert content_type == "text/x-vcard" and "VERSION:2.1" in data and "TEL;CELL:+1" in data
    assert vcard.fingerprint(data) == vcard.fingerprint(card30)
    event = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:S\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    content_type, data = for_device(
        "calendar", "text/calendar", event, [["text/x-vcalendar", "1.0"]]
    )
    assert content_type == "text/x-vcalendar" and "VERSION:1.0" in data


async def test_committed_changes_are_told_to_their_listeners(bench: Bench) -> None:
    """What a sync client changes is told once committed (ActiveSync's parked Pings hear
    it at once); a message without changes tells nobody."""
    heard: list[str] = []
    changes = PimChanges()
    changes.subscribe(heard.append)
    run = await bench.session(bench.devices[0], "two-way")
    run.changes = changes
    assert await run.apply([]) == []
    assert heard == []
    await run.apply([ClientChange("Add", "x1", card("Ann"), "text/vcard")])
    assert heard == [run.collection_id]
    assert await bench.live() == [card("Ann")]  # committed before anyone was told
