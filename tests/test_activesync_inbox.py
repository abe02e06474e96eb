"""ActiveSync mail kept in the store, through the running service: local delivery to the
Inbox of the sender's organisation (Ping woken at once, Bcc hidden, never across
organisations), Read and Flag reaching the owner's other devices, deletes as moves to
Deleted Items, Drafts from protocol 16.0, and a delivered meeting request answered into the
calendar; refusals change nothing."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from bench.eas_client import EasClient
from engine.actors.eas_pings import PingBoard
from engine.ids import new_id
from engine.principals import AccountKind
from engine.protocols import eas_pim
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import (
    AIRSYNC,
    AIRSYNCBASE,
    COMPOSE_MAIL,
    EMAIL,
    EMAIL2,
    MEETING_RESPONSE,
    SEARCH,
    TASKS,
)
from engine.protocols.wbxml import Element
from engine.timestamps import now

from .conftest import RunningService
from .eas_world import EasWorld, eas_world
from .omads_world import _password_hash, database, make_world
from .portal_client import Portal
from .test_api_commands import (
    API,
    PASSWORD as API_PASSWORD,
    add_account as api_account,
    new_organisation,
    sign_in_supervisor,
)

COUNTED = ("pim_items", "pim_collections", "pim_id_map", "eas_folder_states")
INVITATION = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:review-1\r\n"
    "DTSTART:20270310T100000Z\r\nDTEND:20270310T110000Z\r\nSUMMARY:Review\r\n"
    "ORGANIZER:mailto:alice@acme.test\r\n"
    "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@acme.test\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
MEETING_MAIL = (
    "From: Alice <alice@acme.test>\r\nTo: Bob <bob@acme.test>\r\nSubject: Review\r\n"
    'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    '--b1\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nPlease come.\r\n'
    '--b1\r\nContent-Type: text/calendar; charset="utf-8"; method=REQUEST\r\n\r\n'
    + INVITATION
    + "--b1--\r\n"
)


def message(subject: str, to: str, cc: str = "", bcc: str = "", extra: str = "") -> str:
    lines = [f"From: Alice <alice@acme.test>\r\nTo: {to}\r\n"]
    if cc:
        lines.append(f"Cc: {cc}\r\n")
    if bcc:
        lines.append(f"Bcc: {bcc}\r\n")
    return (
        "".join(lines) + extra + f"Subject: {subject}\r\nDate: Mon, 01 Mar 2027 09:00:00 +0000\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n\r\nSee you there.\r\n'
    )


def add_account(running: RunningService, organisation_id: str, login: str, email: str) -> str:
    account_id = new_id()
    with database(running) as conn:
        conn.execute(
            "INSERT INTO accounts (id, organisation_id, login, kind, display_name, email,"
            " password_hash, created_at, updated_at) VALUES (?, ?, ?, 'user', ?, ?, ?, ?, ?)",
            (
                account_id,
                organisation_id,
                login,
                login.title(),
                email,
                _password_hash(),
                now(),
                now(),
            ),
        )
    return account_id


class Mail:
    """Alice and Bob (and Dave) of acme; Bob and Eve of globex."""

    def __init__(self, world: EasWorld, tmp_path: Path) -> None:
        self.world = world
        running = world.running
        org = world.ds.organisation_id
        with database(running) as conn:
            conn.execute(
                "UPDATE accounts SET email = 'alice@acme.test' WHERE id = ?", (world.ds.owner_id,)
            )
        self.bob = add_account(running, org, "bob", "bob@acme.test")
        self.dave = add_account(running, org, "dave", "dave@acme.test")
        self.globex = EasWorld(make_world(running, tmp_path / "globex", "globex"), world.http)
        other = self.globex.ds.organisation_id
        self.globex_bob = add_account(running, other, "bob", "bob@globex.test")
        # Someone of another organisation claiming an address of ours gets nothing either.
        self.eve = add_account(running, other, "eve", "carol@acme.test")

    async def device(
        self, device_id: str, login: str = "bob", version: str = "16.1", code: str = "acme"
    ) -> EasClient:
        world = self.globex if code == "globex" else self.world
        owner = {"alice": world.ds.owner_id, "bob": self.bob, "dave": self.dave}[login]
        world.add_device(device_id, owner=owner)
        client = world.client(device_id, user=f"{code}\\{login}", version=version)
        await client.provision()
        await client.folder_sync()
        return client

    def items(self, account_id: str, kind: str) -> list[str]:
        with database(self.world.running) as conn:
            return [
                row[0]
                for row in conn.execute(
                    "SELECT i.data FROM pim_items i JOIN pim_collections c"
                    " ON c.id = i.collection_id WHERE c.kind = ? AND c.account_id = ?"
                    " AND i.deleted = 0 ORDER BY i.id",
                    (kind, account_id),
                )
            ]

    def counts(self) -> dict[str, int]:
        with database(self.world.running) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}


@pytest.fixture
async def mail(running: RunningService, tmp_path: Path) -> AsyncIterator[Mail]:
    async with eas_world(running, tmp_path) as world:
        yield Mail(world, tmp_path)


def _parked() -> int:
    return sum(len(o) for o in gc.get_objects() if isinstance(o, PingBoard))


async def _until(condition: object, deadline: float = 5.0) -> None:
    with trio.fail_after(deadline):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polled state
            await trio.sleep(0.02)


async def sync_with(client: EasClient, folder: str, *parts: Element) -> Element:
    """A Sync of one folder with these elements after SyncKey and CollectionId (commands,
    DeletesAsMoves); the answered Collection."""
    root = await client.call(
        "Sync",
        el(
            AIRSYNC,
            "Sync",
            el(
                AIRSYNC,
                "Collections",
                el(
                    AIRSYNC,
                    "Collection",
                    el(AIRSYNC, "SyncKey", client.sync_keys[folder]),
                    el(AIRSYNC, "CollectionId", folder),
                    *parts,
                ),
            ),
        ),
    )
    assert root is not None
    collection = root.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert collection is not None
    if child_text(collection, "Status") == "1":
        client.sync_keys[folder] = child_text(collection, "SyncKey") or ""
    return collection


def commands(*command: Element) -> Element:
    return el(AIRSYNC, "Commands", *command)


def response_status(collection: Element) -> list[str]:
    responses = collection.find("Responses")
    return [child_text(r, "Status") or "" for r in (responses.elements() if responses else [])]


async def test_delivery_wakes_the_recipient_and_stays_in_the_organisation(mail: Mail) -> None:
    alice = await mail.device("INBOXALICE", "alice")
    bob = await mail.device("INBOXBOB")
    await bob.sync_all("inbox")
    answer: list[tuple[int, list[str]]] = []

    async def ping() -> None:
        status, folders, _ = await bob.ping(["inbox", "contacts"], 60)
        answer.append((status, folders))

    text = message(
        "Lunch",
        "Bob <bob@acme.test>, bob@globex.test",
        cc="carol@acme.test",
        bcc="dave@acme.test",
        extra="X-ActiveSync-Read: 1\r\n",
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ping)
        await _until(lambda: _parked() == 1)
        sent_at = trio.current_time()
        assert (await alice.send_mail(text, save=True)).status_code == 200
        await _until(lambda: bool(answer))
        assert trio.current_time() - sent_at < 1.0
    assert answer == [(2, ["inbox"])]
    assert await bob.estimate("inbox") == (1, 1)
    outcome = await bob.sync("inbox")
    ((server_id, data),) = outcome.added.items()
    assert child_text(data, "Subject") == "Lunch" and child_text(data, "Read") == "0"
    assert "bob@globex.test" in (child_text(data, "To") or "")
    # Bcc is nowhere in the delivered copy, not even in the whole message (MIME).
    mime = await bob.fetch(
        "inbox",
        server_id,
        [
            el(AIRSYNC, "MIMESupport", "2"),
            el(AIRSYNCBASE, "BodyPreference", el(AIRSYNCBASE, "Type", "4")),
        ],
    )
    assert mime is not None
    whole = child_text(mime.find("Body"), "Data") or ""  # type: ignore[arg-type]
    assert "Subject: Lunch" in whole and "dave" not in whole.lower() and "X-ActiveSync" not in whole
    # Search finds it in the Inbox.
    query = el(
        SEARCH,
        "And",
        el(AIRSYNC, "Class", "Email"),
        el(AIRSYNC, "CollectionId", "inbox"),
        el(SEARCH, "FreeText", "lunch"),
    )
    store = (
        (
            await bob.call(
                "Search",
                el(
                    SEARCH,
                    "Search",
                    el(SEARCH, "Store", el(SEARCH, "Name", "Mailbox"), el(SEARCH, "Query", query)),
                ),
            )
        )
        .find("Response")
        .find("Store")
    )  # type: ignore[union-attr]
    assert child_text(store, "Total") == "1"  # type: ignore[arg-type]
    # The blind-copied colleague got it; the sender's Sent Items keep the Bcc.
    (daves,) = mail.items(mail.dave, "inbox_mail")
    assert "Bcc" not in daves and "Subject: Lunch" in daves
    (sent,) = mail.items(mail.world.ds.owner_id, "sent_mail")
    assert "Bcc: dave@acme.test" in sent
    # Another organisation's people get nothing, whatever their address.
    with database(mail.world.running) as conn:
        foreign = conn.execute(
            "SELECT count(*) FROM pim_items WHERE organisation_id = ?",
            (mail.globex.ds.organisation_id,),
        ).fetchone()[0]
    assert foreign == 0
    # And a message from there reaches nobody here.
    globex = await mail.device("GLOBEXALICE", "alice", code="globex")
    assert (await globex.send_mail(message("Hi", "bob@acme.test"), save=False)).status_code == 200
    assert len(mail.items(mail.bob, "inbox_mail")) == 1
    # Without SaveInSentItems the message is still delivered, just not kept.
    await alice.send_mail(message("Again", "bob@acme.test"), save=False)
    assert len(mail.items(mail.bob, "inbox_mail")) == 2
    assert len(mail.items(mail.world.ds.owner_id, "sent_mail")) == 1
    # A message without recipients is refused and changes nothing.
    before = mail.counts()
    response = await alice.send_mail("From: alice@acme.test\r\nSubject: x\r\n\r\nhi\r\n")
    assert response.status_code == 200 and response.content
    assert mail.counts() == before


async def test_read_and_flag_reach_the_other_devices(mail: Mail) -> None:
    alice = await mail.device("FLAGALICE", "alice")
    phone = await mail.device("FLAGPHONE")
    tablet = await mail.device("FLAGTABLET")
    await alice.send_mail(message("Report", "bob@acme.test"))
    for client in (phone, tablet):
        await client.sync_all("inbox")
    (server_id,) = phone.items["inbox"]
    flag = el(
        EMAIL,
        "Flag",
        el(EMAIL, "Status", "2"),
        el(EMAIL, "FlagType", "Follow up"),
        el(TASKS, "DueDate", "2027-03-05T00:00:00.000Z"),
    )
    outcome = await phone.sync("inbox", changes={server_id: [el(EMAIL, "Read", "1"), flag]})
    assert outcome.status == 1 and not outcome.changed and not outcome.responses
    (stored,) = mail.items(mail.bob, "inbox_mail")
    assert "X-ActiveSync-Read: 1" in stored
    changed = (await tablet.sync("inbox")).changed
    data = changed[next(iter(changed))]
    assert child_text(data, "Read") == "1" and child_text(data, "Subject") == "Report"
    shown = data.find("Flag")
    assert shown is not None and child_text(shown, "Status") == "2"
    assert child_text(shown, "DueDate") == "2027-03-05T00:00:00.000Z"
    # Only Read and Flag change: a new Subject is ignored; an empty Flag clears it.
    await tablet.sync(
        "inbox", changes={server_id: [el(EMAIL, "Subject", "Other"), el(EMAIL, "Flag")]}
    )
    (stored,) = mail.items(mail.bob, "inbox_mail")
    assert "Subject: Report" in stored and "X-ActiveSync-Flag" not in stored
    data = next(iter((await phone.sync("inbox")).changed.values()))
    assert data.find("Flag") is None and child_text(data, "Subject") == "Report"
    # SmartReply from the Inbox: quoted, kept in Bob's Sent Items, delivered to Alice unread.
    reply = "From: bob@acme.test\r\nTo: alice@acme.test\r\nSubject: Re: Report\r\n\r\nOK\r\n"
    source = [el(COMPOSE_MAIL, "FolderId", "inbox"), el(COMPOSE_MAIL, "ItemId", server_id)]
    response = await phone.smart("SmartReply", reply, source)
    assert response.status_code == 200 and response.content == b""
    (answered,) = mail.items(mail.world.ds.owner_id, "inbox_mail")
    assert "Subject: Re: Report" in answered and "> See you there." in answered
    assert "X-ActiveSync-Read: 0" in answered and answered.count("X-ActiveSync") == 1
    assert len(mail.items(mail.bob, "sent_mail")) == 1
    # A ServerId the device does not hold changes nothing.
    before = mail.counts()
    outcome = await phone.sync("inbox", changes={"424242": [el(EMAIL, "Read", "0")]})
    assert [child_text(r, "Status") for r in outcome.responses] == ["8"]
    assert mail.counts() == before


async def test_a_sender_cannot_pose_as_a_colleague_or_mark_its_mail_read(mail: Mail) -> None:
    """From is the sender's own address; a leading folded line does not join the store's
    Read header; a forwarded Sent copy keeps its Bcc to itself; parts nested too deep are
    refused with nothing kept."""
    alice = await mail.device("SPOOFALICE", "alice")
    spoofed = message("Pay this", "bob@acme.test").replace(
        "From: Alice <alice@acme.test>", "From: Dave <dave@acme.test>\r\nSender: dave@acme.test"
    )
    assert (await alice.send_mail(spoofed)).status_code == 200
    (delivered,) = mail.items(mail.bob, "inbox_mail")
    assert "dave@acme.test" not in delivered and "From: alice@acme.test" in delivered
    assert "X-ActiveSync-Read: 0\r\n" in delivered
    assert eas_pim.mail_state(eas_pim.with_state(" x\r\n" + spoofed, False, []))[0] is False
    # Forwarding the Sent copy (which keeps its Bcc) does not tell the new recipients.
    await alice.send_mail(message("Plans", "bob@acme.test", bcc="dave@acme.test"))
    await alice.sync_all("sent")
    sent_id = next(
        sid for sid, data in alice.items["sent"].items() if child_text(data, "Subject") == "Plans"
    )
    forward = "From: alice@acme.test\r\nTo: bob@acme.test\r\nSubject: Fwd: Plans\r\n\r\nFYI\r\n"
    source = [el(COMPOSE_MAIL, "FolderId", "sent"), el(COMPOSE_MAIL, "ItemId", sent_id)]
    assert (await alice.smart("SmartForward", forward, source)).status_code == 200
    (forwarded,) = [t for t in mail.items(mail.bob, "inbox_mail") if "Subject: Fwd: Plans" in t]
    assert "Bcc" not in forwarded and "dave@acme.test" not in forwarded
    before = mail.counts()
    nested = "".join(
        f'Content-Type: multipart/mixed; boundary="b{n}"\r\n\r\n--b{n}\r\n' for n in range(40)
    )
    deep = "From: alice@acme.test\r\nTo: bob@acme.test\r\nSubject: Deep\r\n" + nested + "x\r\n"
    response = await alice.send_mail(deep)
    assert response.status_code == 200 and response.content != b""  # a ComposeMail Status
    assert mail.counts() == before


async def test_deletes_move_to_deleted_items_unless_told_otherwise(mail: Mail) -> None:
    alice = await mail.device("DELALICE", "alice")
    bob = await mail.device("DELBOB")
    for subject in ("One", "Two"):
        await alice.send_mail(message(subject, "bob@acme.test"))
    await bob.sync_all("inbox")
    await bob.sync_all("deleted")
    by_subject = {child_text(d, "Subject"): sid for sid, d in bob.items["inbox"].items()}
    # DeletesAsMoves absent (1): the message moves to Deleted Items.
    await bob.sync("inbox", deletes=[by_subject["One"]])
    assert [m for m in mail.items(mail.bob, "inbox_mail") if "Subject: One" in m] == []
    (moved,) = mail.items(mail.bob, "deleted_mail")
    assert "Subject: One" in moved
    added = (await bob.sync("deleted")).added
    assert [child_text(d, "Subject") for d in added.values()] == ["One"]
    # DeletesAsMoves 0: deleted for good.
    collection = await sync_with(
        bob,
        "inbox",
        el(AIRSYNC, "DeletesAsMoves", "0"),
        commands(el(AIRSYNC, "Delete", el(AIRSYNC, "ServerId", by_subject["Two"]))),
    )
    assert child_text(collection, "Status") == "1" and not response_status(collection)
    assert (
        mail.items(mail.bob, "inbox_mail") == [] and len(mail.items(mail.bob, "deleted_mail")) == 1
    )
    # Emptying Deleted Items deletes.
    (deleted_id,) = added
    await bob.sync("deleted", deletes=[deleted_id])
    assert mail.items(mail.bob, "deleted_mail") == []
    # An unknown ServerId: status 8, nothing changes.
    before = mail.counts()
    collection = await sync_with(
        bob, "inbox", commands(el(AIRSYNC, "Delete", el(AIRSYNC, "ServerId", "424242")))
    )
    assert response_status(collection) == ["8"]
    assert mail.counts() == before
    # MoveItems takes a message between mail folders.
    await alice.send_mail(message("Three", "bob@acme.test"))
    (three,) = (await bob.sync("inbox")).added
    ((_, status, _),) = await bob.move_items([(three, "inbox", "deleted")])
    assert status == 3 and len(mail.items(mail.bob, "deleted_mail")) == 1


def draft(subject: str, body: str = "Draft text") -> list[Element]:
    return [
        el(EMAIL, "To", "dave@acme.test"),
        el(EMAIL2, "Bcc", "boss@acme.test"),
        el(EMAIL, "Subject", subject),
        el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Type", "1"), el(AIRSYNCBASE, "Data", body)),
    ]


async def test_drafts_from_protocol_16(mail: Mail) -> None:
    phone = await mail.device("DRAFTPHONE")
    tablet = await mail.device("DRAFTTABLET")
    for client in (phone, tablet):
        await client.sync_all("drafts")
    outcome = await phone.sync("drafts", adds={"c1": draft("Plan")})
    ((added,),) = [[r for r in outcome.responses if child_text(r, "Status") == "1"]]
    server_id = child_text(added, "ServerId") or ""
    (stored,) = mail.items(mail.bob, "drafts_mail")
    assert "Subject: Plan" in stored and "Bcc: boss@acme.test" in stored
    assert mail.items(mail.dave, "inbox_mail") == []  # a draft is not sent
    data = next(iter((await tablet.sync("drafts")).added.values()))
    assert child_text(data, "Subject") == "Plan" and child_text(data, "Bcc") == "boss@acme.test"
    assert child_text(data, "IsDraft") == "1"
    # A Change replaces what it names; the rest stays (16.0 ghosting).
    await phone.sync("drafts", changes={server_id: [el(EMAIL, "Subject", "Plan B")]})
    (stored,) = mail.items(mail.bob, "drafts_mail")
    assert "Subject: Plan B" in stored and "Draft text" in stored
    data = next(iter((await tablet.sync("drafts")).changed.values()))
    assert child_text(data, "Subject") == "Plan B"
    # A draft that cannot be a message (a header smuggled in) is refused: nothing changes.
    before = mail.counts()
    outcome = await phone.sync(
        "drafts", adds={"c2": [el(EMAIL, "Subject", "x\r\nBcc: spy@globex.test")]}
    )
    assert [child_text(r, "Status") for r in outcome.responses] == ["6"]
    assert mail.counts() == before
    # Delete: to Deleted Items, as any message.
    await phone.sync("drafts", deletes=[server_id])
    assert mail.items(mail.bob, "drafts_mail") == []
    assert ["Subject: Plan B" in m for m in mail.items(mail.bob, "deleted_mail")] == [True]
    # email2:Send: the draft goes out as SendMail sends (from the owner) and leaves Drafts.
    add = el(
        AIRSYNC,
        "Add",
        el(AIRSYNC, "ClientId", "c3"),
        Element("ApplicationData", AIRSYNC, draft("Go")),
        el(EMAIL2, "Send"),
    )
    assert response_status(await sync_with(phone, "drafts", commands(add))) == ["1"]
    assert mail.items(mail.bob, "drafts_mail") == []
    (sent,) = mail.items(mail.bob, "sent_mail")
    assert "From: Bob <bob@acme.test>" in sent and "Subject: Go" in sent
    assert ["Subject: Go" in m for m in mail.items(mail.dave, "inbox_mail")] == [True]
    assert (await tablet.sync("drafts")).added == {}  # made and sent between two Syncs
    # Before 16.0 a device may not add drafts (MS-ASCMD 3.1.5.4): status 6, nothing kept.
    old = await mail.device("DRAFTOLD", version="14.1")
    await old.sync_all("drafts")
    before = mail.counts()
    outcome = await old.sync("drafts", adds={"c1": draft("Old")})
    assert [child_text(r, "Status") for r in outcome.responses] == ["6"]
    assert mail.counts() == before
    assert mail.items(mail.bob, "drafts_mail") == []
    # Adding to the Inbox is refused at any version.
    await phone.sync_all("inbox")
    outcome = await phone.sync("inbox", adds={"c9": draft("Nope")})
    assert [child_text(r, "Status") for r in outcome.responses] == ["6"]
    assert mail.items(mail.bob, "inbox_mail") == []


async def test_delivered_meeting_request_accepted_into_the_calendar(mail: Mail) -> None:
    alice = await mail.device("MEETALICE", "alice")
    bob = await mail.device("MEETBOB")
    await alice.sync_all("inbox")
    await bob.sync_all("calendar")
    await alice.send_mail(MEETING_MAIL)
    await bob.sync_all("inbox")
    ((request_id, data),) = bob.items["inbox"].items()
    assert child_text(data, "MessageClass") == "IPM.Schedule.Meeting.Request"
    assert data.find("MeetingRequest") is not None
    send = el(
        MEETING_RESPONSE, "SendResponse", el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Data", "Yes"))
    )
    root = await bob.call(
        "MeetingResponse",
        el(
            MEETING_RESPONSE,
            "MeetingResponse",
            el(
                MEETING_RESPONSE,
                "Request",
                el(MEETING_RESPONSE, "UserResponse", "1"),
                el(MEETING_RESPONSE, "CollectionId", "inbox"),
                el(MEETING_RESPONSE, "RequestId", request_id),
                send,
            ),
        ),
    )
    result = root.find("Result") if root is not None else None
    assert result is not None and child_text(result, "Status") == "1"
    calendar_id = child_text(result, "CalendarId")
    added = (await bob.sync("calendar")).added
    assert (
        list(added) == [calendar_id] and child_text(added[calendar_id or ""], "Subject") == "Review"
    )
    (event,) = mail.items(mail.bob, "calendar")
    assert "PARTSTAT=ACCEPTED:mailto:bob@acme.test" in event
    assert (await bob.sync("inbox")).deleted == [request_id]  # the request left the Inbox
    # The organiser, of the same organisation, receives the reply.
    (reply,) = (await alice.sync("inbox")).added.values()
    assert child_text(reply, "Subject") == "Accepted: Review"
    # A request of another owner's Inbox cannot be answered from here.
    before = mail.counts()
    root = await alice.call(
        "MeetingResponse",
        el(
            MEETING_RESPONSE,
            "MeetingResponse",
            el(
                MEETING_RESPONSE,
                "Request",
                el(MEETING_RESPONSE, "UserResponse", "1"),
                el(MEETING_RESPONSE, "CollectionId", "inbox"),
                el(MEETING_RESPONSE, "RequestId", request_id),
            ),
        ),
    )
    assert child_text(root.find("Result"), "Status") == "2"  # type: ignore[union-attr,arg-type]
    assert mail.counts() == before


async def test_device_page_of_a_device_syncing_mail(running: RunningService) -> None:
    """The device's page and its OMA DS datastores still show once it syncs mail folders."""
    async with running.client() as client:
        supervisor = await sign_in_supervisor(running, client)
        org = await new_organisation(client, supervisor, "mailpage")
        user = await api_account(running, client, org, "carol", AccountKind.USER)
        device_row = new_id()
        with database(running) as conn:
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, udid, created_at, updated_at) VALUES (?, ?, ?, 'phone', 'ios', 'eas',"
                " 'enrolled', 'MAILPAGE', ?, ?)",
                (device_row, org.id, user.id, now(), now()),
            )
        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
            phone = EasClient(http, "mailpage\\carol", API_PASSWORD, "MAILPAGE")
            await phone.provision()
            await phone.folder_sync()
            for folder in ("inbox", "sent", "contacts"):
                await phone.sync_all(folder)
        base = f"{API}/organisations/{org.code}/devices/{device_row}"
        listed = await client.get(f"{base}/datastores", headers=org.admin)
        assert listed.status_code == 200, listed.text
        assert [row["kind"] for row in listed.json()["items"]] == ["contacts"]
        async with running.client() as browser:
            portal = Portal(browser)
            await portal.sign_in("admin", API_PASSWORD, org.code)
            page = await portal.page(f"/admin/o/{org.code}/devices/{device_row}")
            assert "Exchange ActiveSync" in page and "Inbox" in page
