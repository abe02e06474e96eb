"""ActiveSync Sync of calendar, tasks and notes both ways, and one truth with OMA DS: what a
SyncEvolution client sends appears on an ActiveSync device of the same owner, and what the
ActiveSync device changes reaches the SyncEvolution client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.eas_client import contact
from engine.protocols import activesync as eas
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import AIRSYNCBASE, CALENDAR, NOTES, TASKS

from .conftest import RunningService
from .eas_world import EasWorld, eas_world, ready
from .omads_world import database, vevent, vtodo
from .syncevolution import require_client

EVENT = [
    el(CALENDAR, "TimeZone", "AAAAAA=="),
    el(CALENDAR, "AllDayEvent", "0"),
    el(CALENDAR, "EndTime", "20270301T110000Z"),
    el(CALENDAR, "Location", "Board room"),
    el(CALENDAR, "Subject", "Budget"),
    el(CALENDAR, "StartTime", "20270301T100000Z"),
    el(CALENDAR, "UID", "eas-event-1"),
]
TASK = [
    el(TASKS, "Complete", "0"),
    el(TASKS, "DueDate", "2027-03-05T17:00:00.000Z"),
    el(TASKS, "UtcDueDate", "2027-03-05T17:00:00.000Z"),
    el(TASKS, "Importance", "2"),
    el(TASKS, "Subject", "Send report"),
]
NOTE = [
    el(NOTES, "Subject", "Ideas"),
    el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Type", "1"), el(AIRSYNCBASE, "Data", "Ideas\nfly")),
    el(NOTES, "MessageClass", "IPN.StickyNote"),
]


@pytest.fixture
async def world(running: RunningService, tmp_path: Path) -> AsyncIterator[EasWorld]:
    async with eas_world(running, tmp_path) as made:
        yield made


def _stored(world: EasWorld, kind: str) -> list[str]:
    with database(world.running) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT i.data FROM pim_items i JOIN pim_collections c ON c.id = i.collection_id"
                " WHERE c.kind = ? AND c.account_id = ? AND i.deleted = 0",
                (kind, world.ds.owner_id),
            )
        ]


async def test_calendar_tasks_and_notes_both_ways(world: EasWorld) -> None:
    phone = await ready(world, "CLASSDEVICE1")
    tablet = await ready(world, "CLASSDEVICE2")
    for folder, data in (("calendar", EVENT), ("tasks", TASK), ("notes", NOTE)):
        await phone.sync_all(folder)
        outcome = await phone.sync(folder, adds={"x1": data})
        assert [child_text(r, "Status") for r in outcome.responses] == ["1"], folder
    (event,) = _stored(world, "calendar")
    assert "DTSTART:20270301T100000Z" in event and "SUMMARY:Budget" in event
    assert "UID:eas-event-1" in event and "LOCATION:Board room" in event
    (task,) = _stored(world, "tasks")
    assert "SUMMARY:Send report" in task and "DUE:20270305T170000Z" in task
    assert _stored(world, "notes") == ["Ideas\nfly\n"]
    for folder, field, value in (
        ("calendar", "Subject", "Budget"),
        ("tasks", "Subject", "Send report"),
        ("notes", "Subject", "Ideas"),
    ):
        await tablet.sync_all(folder)
        (item,) = tablet.items[folder].values()
        assert child_text(item, field) == value, folder
    # The tablet moves the meeting; the phone gets the change.
    (server_id,) = tablet.items["calendar"]
    moved = [
        e if e.tag != "StartTime" else el(CALENDAR, "StartTime", "20270301T093000Z") for e in EVENT
    ]
    await tablet.sync("calendar", changes={server_id: moved})
    outcome = await phone.sync("calendar")
    assert child_text(outcome.changed[server_id], "StartTime") == "20270301T093000Z"


async def test_oma_ds_and_activesync_share_one_truth(world: EasWorld) -> None:
    require_client()
    world.ds.add_device("ds-phone")
    desktop = world.ds.client("ds-phone")
    desktop.put(
        "addressbook",
        "1",
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ada Lovelace\r\n"
        "N:Lovelace;Ada;;;\r\nTEL;TYPE=CELL:+44 7700 900123\r\nEND:VCARD\r\n",
    )
    desktop.put("calendar", "1", vevent("ds-ev-1", "Kick-off"))
    desktop.put("todo", "1", vtodo("ds-td-1", "Buy milk"))
    first = await desktop.sync(mode="slow")
    assert first.ok, first.output
    # OMA DS to ActiveSync.
    phone = await ready(world, "SHAREDEVICE")
    await phone.sync_all("contacts")
    (card,) = phone.items["contacts"].values()
    assert (child_text(card, "FirstName"), child_text(card, "MobilePhoneNumber")) == (
        "Ada",
        "+44 7700 900123",
    )
    await phone.sync_all("calendar")
    (event,) = phone.items["calendar"].values()
    assert child_text(event, "Subject") == "Kick-off" and child_text(event, "UID") == "ds-ev-1"
    await phone.sync_all("tasks")
    assert [child_text(t, "Subject") for t in phone.items["tasks"].values()] == ["Buy milk"]
    # ActiveSync to OMA DS: a change and a new contact.
    (server_id,) = phone.items["contacts"]
    await phone.sync(
        "contacts",
        changes={server_id: contact("Ada", "King", "+44 7700 900999")},
        adds={"n1": contact("Grace", "Hopper")},
    )
    second = await desktop.sync()
    assert second.ok, second.output
    cards = list(desktop.items("addressbook").values())
    assert len(cards) == 2
    assert any("King" in c and "+44 7700 900999" in c for c in cards)
    assert any("Hopper" in c for c in cards)


MESSAGE = (
    "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.org>\r\n"
    "Subject: =?utf-8?q?Caf=C3=A9_at_ten?=\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nSee you there.\r\n"
)


async def test_send_mail_keeps_the_message_in_sent_items(world: EasWorld) -> None:
    phone = await ready(world, "MAILDEVICE1")
    old = await ready(world, "MAILDEVICE2", version="12.1")
    assert phone.folders["sent"] == ("Sent Items", 5) and phone.folders["inbox"][1] == 2
    await phone.sync_all("sent")
    response = await phone.send_mail(MESSAGE)
    assert response.status_code == 200 and response.content == b""
    outcome = await phone.sync("sent")
    (mail,) = outcome.added.values()
    assert child_text(mail, "Subject") == "Café at ten"
    assert child_text(mail, "To") == '"Bob" <bob@example.org>'
    assert child_text(mail.find("Body"), "Data") == "See you there.\r\n"  # type: ignore[arg-type]
    # Protocol 12.1 sends the message itself; not saved when it says so.
    assert (await old.send_mail(MESSAGE.replace("ten", "eleven"))).status_code == 200
    assert (await old.send_mail(MESSAGE, save=False)).status_code == 200
    await old.sync_all("sent")
    subjects = sorted(child_text(m, "Subject") for m in old.items["sent"].values())
    assert subjects == ["Café at eleven", "Café at ten"]
    # No recipient: MessageHasNoRecipient; nothing stored. An Add to a mail folder: refused.
    refused = await phone.send_mail("Subject: nobody\r\n\r\nhello\r\n")
    assert child_text(eas.decode(refused.content), "Status") == "119"
    outcome = await phone.sync("sent", adds={"x": [el(NOTES, "Subject", "no")]})
    assert [child_text(r, "Status") for r in outcome.responses] == ["6"]
    assert len(_stored(world, "sent_mail")) == 2
