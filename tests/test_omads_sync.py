"""OMA DS with the real SyncEvolution client against the running service.

Slow sync of all four datastores, two-way with changes on both sides, refresh-from-server
into a second, empty client of the same owner; in XML and in WBXML. After each step every
item is on every side once, equal in meaning (compared by the store's fingerprints).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import RunningService
from .omads_world import DsWorld, fingerprints, make_world, vcard, vevent, vtodo
from .syncevolution import SOURCES, require_client


@pytest.fixture
def world(running: RunningService, tmp_path: Path) -> DsWorld:
    require_client()
    return make_world(running, tmp_path / "clients")


def same_everywhere(world: DsWorld, *clients: object) -> None:
    for source, kind in (
        ("addressbook", "contacts"),
        ("calendar", "calendar"),
        ("todo", "tasks"),
        ("memo", "notes"),
    ):
        server = world.live_fingerprints(kind)
        for client in clients:
            assert fingerprints(client, source) == server, (source, client)  # type: ignore[arg-type]


@pytest.mark.parametrize("wbxml", [False, True], ids=["xml", "wbxml"])
async def test_slow_two_way_and_refresh_from_server(world: DsWorld, wbxml: bool) -> None:
    world.add_device("sc-phone")
    world.add_device("sc-laptop")
    phone = world.client("sc-phone", wbxml=wbxml)
    phone.put("addressbook", "1", vcard("Doe John"))
    phone.put("addressbook", "2", vcard("Roe Jane", "EMAIL;TYPE=WORK:jane@example.org\r\n"))
    phone.put("calendar", "1", vevent("ev-1", "Kick-off"))
    phone.put("todo", "1", vtodo("td-1", "Buy milk"))
    phone.put("memo", "1", "Shopping\nmilk, bread\n")

    first = await phone.sync(mode="slow")
    assert first.ok, first.output
    assert world.counts()["pim_items"] == 5
    same_everywhere(world, phone)

    # A second client of the same owner, empty, takes everything from the service.
    laptop = world.client("sc-laptop", wbxml=wbxml)
    for source in SOURCES:
        laptop.folder(source)
    refreshed = await laptop.sync(mode="refresh-from-server")
    assert refreshed.ok, refreshed.output
    assert len(laptop.items("addressbook")) == 2
    same_everywhere(world, phone, laptop)

    # Changes on both sides: the phone edits and deletes, the laptop adds and edits.
    phone.put("addressbook", "1", vcard("Doe John", "NOTE:moved to Leeds\r\n"))
    (phone.folder("memo") / "1").unlink()
    phone.put("calendar", "2", vevent("ev-2", "Review"))
    laptop_todo = next(iter(laptop.items("todo")))
    laptop.put("todo", laptop_todo, vtodo("td-1", "Buy oat milk"))
    laptop.put("addressbook", "new", vcard("Poe Edgar"))

    for client in (phone, laptop, phone):
        done = await client.sync()
        assert done.ok, done.output
    same_everywhere(world, phone, laptop)
    assert len(phone.items("addressbook")) == 3
    assert phone.items("memo") == {} and laptop.items("memo") == {}
    assert any("oat milk" in text for text in phone.items("todo").values())
    assert any("Leeds" in text for text in laptop.items("addressbook").values())
    # Deletion is recorded, not forgotten: the memo stays as a tombstone.
    assert world.counts()["pim_items"] == 7
    assert world.scalar("SELECT count(*) FROM pim_items WHERE deleted = 1") == 1


def photo_vcard(size: int) -> str:
    """A contact with a JPEG-sized photo (base64, folded as vCard 3.0 requires)."""
    import base64
    import random

    raw = random.Random(7).randbytes(size)
    encoded = base64.b64encode(raw).decode()
    lines = [encoded[:60]] + [" " + encoded[i : i + 74] for i in range(60, len(encoded), 74)]
    return (
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Photo Person\r\nN:Person;Photo;;;\r\n"
        "PHOTO;ENCODING=b;TYPE=JPEG:" + "\r\n".join(lines) + "\r\nEND:VCARD\r\n"
    )


@pytest.mark.parametrize("wbxml", [False, True], ids=["xml", "wbxml"])
async def test_small_messages_many_items_and_a_large_object(world: DsWorld, wbxml: bool) -> None:
    """MaxMsgSize 10240: 1,000 contacts and a 100 KB photo go up in many messages (the photo
    in chunks), then down into an empty client the same way."""
    world.add_device("sc-small-1")
    world.add_device("sc-small-2")
    sender = world.client("sc-small-1", wbxml=wbxml)
    for n in range(1000):
        sender.put("addressbook", f"c{n}", vcard(f"Person{n} Given{n}"))
    sender.put("addressbook", "photo", photo_vcard(100 * 1024))
    up = await sender.sync("addressbook", mode="slow", max_msg_size=10240, deadline=120)
    assert up.ok, up.output[-3000:]
    assert world.scalar("SELECT count(*) FROM pim_items WHERE deleted = 0") == 1001
    receiver = world.client("sc-small-2", wbxml=wbxml)
    receiver.folder("addressbook")
    down = await receiver.sync(
        "addressbook", mode="refresh-from-server", max_msg_size=10240, deadline=120
    )
    assert down.ok, down.output[-3000:]
    assert fingerprints(receiver, "addressbook") == world.live_fingerprints("contacts")
    assert fingerprints(sender, "addressbook") == world.live_fingerprints("contacts")


async def test_tampered_anchor_means_slow_sync_without_duplicates(world: DsWorld) -> None:
    world.add_device("sc-anchor")
    phone = world.client("sc-anchor")
    phone.put("addressbook", "1", vcard("Doe John"))
    phone.put("addressbook", "2", vcard("Roe Jane"))
    assert (await phone.sync("addressbook", mode="slow")).ok
    world.execute("UPDATE pim_sync_states SET client_anchor = 'tampered'")
    before = world.counts()
    refused = await phone.sync("addressbook")
    # The service answered 508 (slow sync); SyncEvolution does not slow-sync unasked: it
    # stops with its "unexpected slow sync" error (20048) before sending anything.
    assert not refused.ok
    assert "20048" in refused.output
    assert world.counts() == before
    again = await phone.sync("addressbook", mode="slow")
    assert again.ok, again.output
    assert world.counts()["pim_items"] == 2
    assert len(phone.items("addressbook")) == 2
    assert fingerprints(phone, "addressbook") == world.live_fingerprints("contacts")
    assert (await phone.sync("addressbook")).ok


async def test_one_way_syncs_each_carry_one_direction(world: DsWorld) -> None:
    world.add_device("sc-one-way")
    world.add_device("sc-other")
    phone = world.client("sc-one-way")
    other = world.client("sc-other")
    phone.put("memo", "1", "first note\n")
    assert (await phone.sync("memo", mode="slow")).ok
    other.folder("memo")
    assert (await other.sync("memo", mode="refresh-from-server")).ok
    other.put("memo", "2", "from the other device\n")
    assert (await other.sync("memo")).ok
    phone.put("memo", "3", "from the phone\n")
    sent = await phone.sync("memo", mode="one-way-from-client")
    assert sent.ok, sent.output
    assert len(phone.items("memo")) == 2  # the other device's note did not come down
    assert len(world.live_fingerprints("notes")) == 3  # the phone's note went up
    received = await phone.sync("memo", mode="one-way-from-server")
    assert received.ok, received.output
    assert fingerprints(phone, "memo") == world.live_fingerprints("notes")
