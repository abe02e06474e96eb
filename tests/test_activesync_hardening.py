"""ActiveSync against what a device or a stored item can make of it: a Fetch before a folder's
first Sync makes nothing, series that end past the year 9999, ResolveRecipients and free/busy
kept within bounds, folders kept within their number and depth, mailbox queries of default
folders and of few words, and invitations whose times cannot be read. Each answers in the
protocol's own statuses, never HTTP 500."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.eas_client import mailbox_find, search as search_store
from engine.activesync_search import BUSY, FREE, SLOT, TENTATIVE, merged_free_busy
from engine.ids import new_id
from engine.pim import collection_unit, facts_of
from engine.protocols import eas_pim
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import (
    AIRSYNC,
    ITEM_OPERATIONS,
    MEETING_RESPONSE,
    RESOLVE_RECIPIENTS,
    SEARCH,
)
from engine.protocols.wbxml import Element
from engine.store import pim as pim_db
from engine.timestamps import now

from .conftest import RunningService
from .eas_world import EasWorld, eas_world, ready
from .omads_world import _password_hash, database
from .test_activesync_search import store_of

COUNTED = ("pim_items", "pim_collections", "pim_id_map")


@pytest.fixture
async def world(running: RunningService, tmp_path: Path) -> AsyncIterator[EasWorld]:
    async with eas_world(running, tmp_path) as made:
        with database(running) as conn:
            conn.execute(
                "UPDATE accounts SET email = 'alice@acme.test', display_name = 'Alice Smith'"
                " WHERE id = ?",
                (made.ds.owner_id,),
            )
        yield made


def counts(world: EasWorld) -> dict[str, int]:
    with database(world.running) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}


def add_accounts(world: EasWorld, names: list[tuple[str, str, str]]) -> list[str]:
    """GAL entries (login, display name, email) of the world's organisation."""
    at = now()
    ids = []
    with database(world.running) as conn:
        for login, name, email in names:
            ids.append(new_id())
            conn.execute(
                "INSERT INTO accounts (id, organisation_id, login, kind, display_name, email,"
                " password_hash, created_at, updated_at) VALUES (?, ?, ?, 'user', ?, ?, ?, ?, ?)",
                (ids[-1], world.ds.organisation_id, login, name, email, _password_hash(), at, at),
            )
    return ids


def put_item(
    world: EasWorld, kind: str, text: str, account: str | None = None, collection: str | None = None
) -> int:
    """An item stored as the service's own (in the account's default collection of ``kind``
    unless a collection is named)."""
    with database(world.running) as conn:
        org = world.ds.organisation_id
        collection_id = (
            collection or collection_unit(conn, org, account or world.ds.owner_id, kind)["id"]
        )
        facts = facts_of(kind, text, eas_pim.CONTENT_TYPES[kind])
        return pim_db.insert_item(
            conn,
            {
                "collection_id": collection_id,
                "organisation_id": org,
                "version": pim_db.next_version(conn, collection_id),
                "origin": None,
                "content_type": facts.content_type,
                "data": text,
                "uid": facts.uid,
                "fingerprint": facts.fingerprint,
                "deleted": 0,
                "created_at": now(),
                "updated_at": now(),
            },
        )


def event(uid: str, start: str, end: str, *extra: str) -> str:
    lines = "".join(line + "\r\n" for line in extra)
    return (
        f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:{start}\r\n"
        f"DTEND:{end}\r\nSUMMARY:{uid}\r\n{lines}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def invitation_mail(uid: str, start: str, end: str | None = "20270310T110000Z") -> str:
    ending = f"DTEND:{end}\r\n" if end else ""
    calendar = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTART:{start}\r\n{ending}SUMMARY:{uid}\r\n"
        "ORGANIZER:mailto:bob@example.org\r\n"
        "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:alice@acme.test\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    return (
        f"From: Bob <bob@example.org>\r\nTo: alice@acme.test\r\nSubject: {uid}\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        '--b1\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nPlease come.\r\n'
        '--b1\r\nContent-Type: text/calendar; charset="utf-8"; method=REQUEST\r\n\r\n'
        + calendar
        + "--b1--\r\n"
    )


def message(subject: str, text: str) -> str:
    return (
        f"From: Alice <alice@acme.test>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n"
        "Date: Mon, 01 Mar 2027 09:00:00 +0000\r\n"
        f'Content-Type: text/plain; charset="utf-8"\r\n\r\n{text}\r\n'
    )


def fetch(folder: str, server_id: str) -> Element:
    return el(
        ITEM_OPERATIONS,
        "ItemOperations",
        el(
            ITEM_OPERATIONS,
            "Fetch",
            el(ITEM_OPERATIONS, "Store", "Mailbox"),
            el(AIRSYNC, "CollectionId", folder),
            el(AIRSYNC, "ServerId", server_id),
        ),
    )


def fetched_status(root: Element | None) -> str | None:
    assert root is not None
    return child_text(root.find("Response").find("Fetch"), "Status")  # type: ignore[union-attr,arg-type]


# --------------------------------------------------------------------------- Fetch


async def test_fetch_before_the_first_sync_makes_nothing(world: EasWorld) -> None:
    phone = await ready(world, "HARDFETCH1")
    before = counts(world)
    for folder in ("calendar", "contacts", "sent", "tasks", "notes"):
        response = await phone.post("ItemOperations", fetch(folder, "1"))
        assert response.status_code == 200, folder
        assert fetched_status(await phone.call("ItemOperations", fetch(folder, "1"))) == "6"
        assert await phone.estimate(folder) == (3, None)
    assert counts(world) == before
    # An item that cannot be shown (a start that is no date) is not found, not a failure.
    put_item(world, "calendar", event("broken", "2027XX10T100000Z", "20270310T110000Z"))
    await phone.sync_all("calendar")
    with database(world.running) as conn:
        (item_id,) = conn.execute(
            "SELECT i.id FROM pim_items i JOIN pim_collections c ON c.id = i.collection_id"
            " WHERE c.kind = 'calendar' AND c.account_id = ?",
            (world.ds.owner_id,),
        ).fetchone()
        conn.execute(
            "INSERT INTO pim_id_map (device_id, collection_id, luid, item_id) SELECT ?,"
            " collection_id, ?, id FROM pim_items WHERE id = ?",
            (phone_row(world, "HARDFETCH1"), str(item_id), item_id),
        )
    assert fetched_status(await phone.call("ItemOperations", fetch("calendar", str(item_id)))) == (
        "6"
    )


def phone_row(world: EasWorld, device_id: str) -> str:
    with database(world.running) as conn:
        return conn.execute("SELECT id FROM devices WHERE udid = ?", (device_id,)).fetchone()[0]


# --------------------------------------------------------------------------- FilterType


def test_a_series_ending_past_the_year_9999_has_no_end() -> None:
    start = "DTSTART:20270301T100000Z\r\nDTEND:20270301T110000Z\r\n"
    for rule in (
        "FREQ=YEARLY;COUNT=99999",
        "FREQ=DAILY;INTERVAL=99999999;COUNT=99999",
        "FREQ=WEEKLY;UNTIL=99991231T235959Z",
        "FREQ=WEEKLY;UNTIL=99991231",
        "FREQ=DAILY;COUNT=" + "9" * 5000,
    ):
        text = (
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n" + start + f"RRULE:{rule}\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        assert eas_pim.dated("calendar", text) == (None, False), rule
    late = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:99991231T230000Z\r\nDURATION:P9W\r\n"
    assert eas_pim.dated("calendar", late + "END:VEVENT\r\nEND:VCALENDAR\r\n") == (None, False)


async def test_series_without_end_are_synchronised_whatever_the_filter(world: EasWorld) -> None:
    put_item(
        world,
        "calendar",
        event("forever", "20270301T100000Z", "20270301T110000Z", "RRULE:FREQ=YEARLY;COUNT=99999"),
    )
    put_item(
        world,
        "calendar",
        event("until", "20270301T100000Z", "20270301T110000Z", "RRULE:FREQ=DAILY;UNTIL=99991231"),
    )
    phone = await ready(world, "HARDFILTER1")
    outcomes = await phone.sync_all("calendar", filter_type=4)
    assert sorted(child_text(d, "Subject") for o in outcomes for d in o.added.values()) == [
        "forever",
        "until",
    ]
    assert await phone.estimate("calendar", filter_type=5) == (1, 2)


# --------------------------------------------------------------------------- ResolveRecipients


def resolve(*names: str, options: Element | None = None) -> Element:
    return el(
        RESOLVE_RECIPIENTS,
        "ResolveRecipients",
        *(el(RESOLVE_RECIPIENTS, "To", name) for name in names),
        options,
    )


def responses(root: Element | None) -> list[Element]:
    assert root is not None and child_text(root, "Status") == "1"
    return [r for r in root.elements() if r.tag == "Response"]


async def test_resolve_recipients_within_bounds(world: EasWorld) -> None:
    add_accounts(world, [(f"amy{n}", f"Amy {n:03}", f"amy{n}@acme.test") for n in range(150)])
    add_accounts(world, [(f"ben{n}", f"Ben {n:03}", f"ben{n}@acme.test") for n in range(150)])
    phone = await ready(world, "HARDRESOLVE1")
    # More than 100 To is a protocol error (MS-ASCMD 2.2.3.183).
    refused = await phone.call("ResolveRecipients", resolve(*["amy"] * 101))
    assert child_text(refused, "Status") == "5"  # type: ignore[arg-type]
    # A name given a hundred times is answered once; suggestions stop at 100 whatever asked.
    many = el(
        RESOLVE_RECIPIENTS, "Options", el(RESOLVE_RECIPIENTS, "MaxAmbiguousRecipients", "9999")
    )
    (answer,) = responses(
        await phone.call("ResolveRecipients", resolve(*["amy"] * 100, options=many))
    )
    assert child_text(answer, "Status") == "3" and child_text(answer, "RecipientCount") == "150"
    assert len([r for r in answer.elements() if r.tag == "Recipient"]) == 100
    # Many ambiguous names: the suggestions of the whole response stay bounded.
    names = [f"{first} {n}" for n, first in enumerate(["amy", "ben"] * 50)]
    found = responses(await phone.call("ResolveRecipients", resolve(*names, options=many)))
    assert len(found) == 100
    total = sum(1 for r in found for c in r.elements() if c.tag == "Recipient")
    assert total <= 500
    assert {child_text(r, "Status") for r in found} <= {"1", "2", "3", "4"}


def naive_free_busy(
    events: list[tuple[datetime, datetime, str]], start: datetime, end: datetime
) -> str:
    """MergedFreeBusy slot by slot, every event against every slot."""
    slots = max(1, -(-int((end - start).total_seconds()) // int(SLOT.total_seconds())))
    digits = [FREE] * slots
    for begin, finish, state in events:
        for index in range(slots):
            slot_start = start + index * SLOT
            if begin < slot_start + SLOT and finish > slot_start and digits[index] < state:
                digits[index] = state
    return "".join(digits)


def test_merged_free_busy_is_the_slot_by_slot_answer() -> None:
    picker = random.Random(7)
    start = datetime(2027, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=3, minutes=20)
    for _ in range(200):
        events = []
        for _ in range(picker.randrange(0, 6)):
            begin = start + timedelta(minutes=picker.randrange(-600, 5000, 5))
            finish = begin + timedelta(minutes=picker.choice([0, 15, 30, 45, 60, 600]))
            events.append((begin, finish, picker.choice([BUSY, TENTATIVE])))
        texts = [
            event(
                f"e{n}",
                begin.strftime("%Y%m%dT%H%M%SZ"),
                finish.strftime("%Y%m%dT%H%M%SZ"),
                "STATUS:TENTATIVE" if state == TENTATIVE else "STATUS:CONFIRMED",
            )
            for n, (begin, finish, state) in enumerate(events)
        ]
        assert merged_free_busy(texts, start, end) == naive_free_busy(events, start, end)
    broken = event("bad", "2027XX01T000000Z", "20270301T010000Z")
    assert merged_free_busy([broken], start, start + SLOT) == FREE


async def test_free_busy_once_per_account(world: EasWorld) -> None:
    (bob,) = add_accounts(world, [("bob", "Bob Jones", "bob@acme.test")])
    for n in range(300):
        put_item(
            world,
            "calendar",
            event(f"u{n}", f"20270301T{n % 24:02}0000Z", "20270302T000000Z"),
            account=bob,
        )
    put_item(world, "calendar", event("bad", "garbage", "20270302T000000Z"), account=bob)
    phone = await ready(world, "HARDFREEBUSY1")
    availability = el(
        RESOLVE_RECIPIENTS,
        "Options",
        el(
            RESOLVE_RECIPIENTS,
            "Availability",
            el(RESOLVE_RECIPIENTS, "StartTime", "2027-03-01T00:00:00.000Z"),
            el(RESOLVE_RECIPIENTS, "EndTime", "2027-04-11T00:00:00.000Z"),
        ),
    )
    names = ["bob@acme.test"] * 99 + ["Bob Jones <bob@acme.test>"]
    found = responses(await phone.call("ResolveRecipients", resolve(*names, options=availability)))
    assert len(found) == 2
    for response in found:
        recipient = response.find("Recipient")
        assert recipient is not None
        busy = child_text(recipient.find("Availability"), "MergedFreeBusy") or ""  # type: ignore[arg-type]
        assert busy == BUSY * 48 + FREE * (40 * 48)


# --------------------------------------------------------------------------- folders


async def test_folders_within_their_number_and_depth(world: EasWorld) -> None:
    phone = await ready(world, "HARDFOLDERS1")
    parent = "0"
    chain = []
    for depth in range(1, 33):
        status, parent = await phone.folder_create(f"level {depth}", 12, parent or "0")
        assert status == 1, depth
        chain.append(parent)
    before = counts(world)
    assert await phone.folder_create("level 33", 12, parent or "0") == (6, None)
    assert counts(world) == before
    # Moving a folder with one below it under level 31 would put that one at 33.
    status, top = await phone.folder_create("top", 12)
    status, _ = await phone.folder_create("child", 12, top or "")
    assert status == 1
    assert await phone.folder_update(top or "", "top", chain[30] or "") == 6
    assert await phone.folder_update(top or "", "top", chain[29] or "") == 1
    # An account with 1000 folders of its own makes no more.
    with database(world.running) as conn:
        have = conn.execute(
            "SELECT count(*) FROM pim_collections WHERE account_id = ? AND is_default = 0",
            (world.ds.owner_id,),
        ).fetchone()[0]
        at = now()
        for n in range(1000 - have):
            conn.execute(
                "INSERT INTO pim_collections (id, organisation_id, account_id, kind, version,"
                " created_at, is_default, display_name, parent_id, folder_type, updated_at)"
                " VALUES (?, ?, ?, 'notes', 0, ?, 0, ?, '0', 17, ?)",
                (new_id(), world.ds.organisation_id, world.ds.owner_id, at, f"n{n}", at),
            )
    before = counts(world)
    assert await phone.folder_create("one too many", 12) == (6, None)
    assert counts(world) == before
    folders = await phone.folder_sync()
    assert len([sid for sid in folders if sid not in ("inbox",)]) >= 1000


# --------------------------------------------------------------------------- Search and Find


def search(text: str) -> Element:
    query = el(SEARCH, "Query", el(SEARCH, "And", el(SEARCH, "FreeText", text)))
    return search_store("Mailbox", query, el(SEARCH, "Range", "0-9"))


def find(text: str) -> Element:
    return mailbox_find("h1", text, "0-9", folder=None)


async def test_mailbox_queries_of_default_folders_and_few_words(world: EasWorld) -> None:
    phone = await ready(world, "HARDSEARCH1")
    put_item(world, "sent_mail", message("Budget", "The budget of March."))
    status, own = await phone.folder_create("Archive", 12)
    assert status == 1
    put_item(world, "sent_mail", message("Budget old", "The budget of May."), collection=own)
    store = store_of(await phone.call("Search", search("budget")))
    results = [r for r in store.elements() if r.tag == "Result"]
    assert [child_text(r.find("Properties"), "Subject") for r in results] == ["Budget"]  # type: ignore[arg-type]
    assert child_text(store, "Total") == "1"
    # A word given many times is one word; more than twenty distinct words is too complex.
    store = store_of(await phone.call("Search", search(" ".join(["BUDGET", "budget"] * 600))))
    assert child_text(store, "Total") == "1"
    many = " ".join(f"w{n}" for n in range(1200))
    assert child_text(store_of(await phone.call("Search", search(many))), "Status") == "8"
    assert child_text(await phone.call("Find", find(many)), "Status") == "2"  # type: ignore[arg-type]
    found = await phone.call("Find", find("budget march"))
    response = found.find("Response")  # type: ignore[union-attr]
    assert [r for r in response.elements() if r.tag == "Result"]  # type: ignore[union-attr]


# --------------------------------------------------------------------------- MeetingResponse


def meeting_request(response: int, request_id: str) -> Element:
    return el(
        MEETING_RESPONSE,
        "Request",
        el(MEETING_RESPONSE, "UserResponse", str(response)),
        el(MEETING_RESPONSE, "CollectionId", "sent"),
        el(MEETING_RESPONSE, "RequestId", request_id),
    )


async def test_invitations_whose_times_cannot_be_read(world: EasWorld) -> None:
    good = put_item(world, "sent_mail", invitation_mail("good-1", "20270310T100000Z"))
    bad = put_item(world, "sent_mail", invitation_mail("bad-1", "2027XX10T100000Z"))
    late = put_item(world, "sent_mail", invitation_mail("late-1", "99991231", None))
    phone = await ready(world, "HARDMEETING1")
    outcomes = await phone.sync_all("sent")
    shown = {sid: data for o in outcomes for sid, data in o.added.items()}
    assert set(shown) == {str(good), str(bad), str(late)}
    # Shown as the plain messages they also are.
    assert child_text(shown[str(bad)], "MessageClass") == "IPM.Note"
    assert child_text(shown[str(good)], "MessageClass") == "IPM.Schedule.Meeting.Request"
    store = store_of(await phone.call("Search", search("please come")))
    assert child_text(store, "Total") == "3"
    assert fetched_status(await phone.call("ItemOperations", fetch("sent", str(bad)))) == "1"
    found = await phone.call("Find", find("please"))
    assert child_text(found, "Status") == "1"  # type: ignore[arg-type]
    # The readable request is answered, the others are invalid requests, nothing else kept.
    answer = await phone.call(
        "MeetingResponse",
        el(
            MEETING_RESPONSE,
            "MeetingResponse",
            meeting_request(1, str(good)),
            meeting_request(1, str(bad)),
            meeting_request(2, str(late)),
        ),
    )
    assert answer is not None
    statuses = [child_text(r, "Status") for r in answer.elements() if r.tag == "Result"]
    assert statuses == ["1", "2", "2"]
    with database(world.running) as conn:
        events = conn.execute(
            "SELECT i.data FROM pim_items i JOIN pim_collections c ON c.id = i.collection_id"
            " WHERE c.kind = 'calendar' AND c.account_id = ? AND i.deleted = 0",
            (world.ds.owner_id,),
        ).fetchall()
    assert len(events) == 1 and "UID:good-1" in events[0][0]
