"""ActiveSync mail through the running service: bodies as the device asks for them (plain,
HTML, MIME, truncated, all-or-none, preview), SmartReply and SmartForward with the original,
and MeetingResponse on meeting requests and calendar events; refusals change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email import message_from_string
from pathlib import Path

import pytest

from bench.eas_client import EasClient, contact
from engine.protocols import activesync as eas
from engine.protocols.activesync import child_text, el
from engine.protocols.activesync_tables import (
    AIRSYNC,
    AIRSYNCBASE,
    COMPOSE_MAIL,
    MEETING_RESPONSE,
)
from engine.protocols.wbxml import Element

from .conftest import RunningService
from .eas_world import EasWorld, eas_world, ready
from .omads_world import database

TEXT = "Dear Bob,\r\nThe budget meeting moves to Thursday at ten.\r\nRegards, Alice\r\n"
MESSAGE = (
    "From: Alice <alice@acme.test>\r\nTo: Bob <bob@example.org>\r\nSubject: Budget\r\n"
    "Message-ID: <budget-1@acme.test>\r\nDate: Mon, 01 Mar 2027 09:00:00 +0000\r\n"
    'Content-Type: text/plain; charset="utf-8"\r\n\r\n' + TEXT
)
INVITATION = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:invite-1\r\n"
    "DTSTART:20270310T100000Z\r\nDTEND:20270310T110000Z\r\nSUMMARY:Planning\r\n"
    "ORGANIZER:mailto:bob@example.org\r\n"
    "ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:alice@acme.test\r\n"
    "END:VEVENT\r\nEND:VCALENDAR\r\n"
)
MEETING_MAIL = (
    "From: Bob <bob@example.org>\r\nTo: alice@acme.test\r\nSubject: Planning\r\n"
    'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b1"\r\n\r\n'
    '--b1\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nPlease come.\r\n'
    '--b1\r\nContent-Type: text/calendar; charset="utf-8"; method=REQUEST\r\n\r\n'
    + INVITATION
    + "--b1--\r\n"
)
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


def stored(world: EasWorld, kind: str) -> list[str]:
    with database(world.running) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT i.data FROM pim_items i JOIN pim_collections c ON c.id = i.collection_id"
                " WHERE c.kind = ? AND c.account_id = ? AND i.deleted = 0 ORDER BY i.id",
                (kind, world.ds.owner_id),
            )
        ]


def preference(kind: int, size: int | None = None, **extra: str) -> Element:
    parts = [el(AIRSYNCBASE, "Type", str(kind))]
    if size is not None:
        parts.append(el(AIRSYNCBASE, "TruncationSize", str(size)))
    parts += [el(AIRSYNCBASE, tag, value) for tag, value in extra.items()]
    return el(AIRSYNCBASE, "BodyPreference", *parts)


def body_of(data: Element) -> Element:
    found = data.find("Body")
    assert found is not None
    return found


async def sent_item(
    client: EasClient, options: list[Element] | None = None, subject: str | None = None
) -> tuple[str, Element]:
    """The message of Sent Items (the one, or the one with this subject), as a fresh sync
    with these options gives it."""
    client.sync_keys.pop("sent", None)
    await client.sync("sent")
    outcome = await client.sync("sent", options=options)
    found = [
        (server_id, data)
        for server_id, data in outcome.added.items()
        if subject is None or child_text(data, "Subject") == subject
    ]
    assert len(found) == 1, found
    return found[0]


def status_of(response: object) -> str | None:
    content = response.content  # type: ignore[attr-defined]
    return child_text(eas.decode(content), "Status") if content else None


# --------------------------------------------------------------------------- bodies


async def test_bodies_as_the_device_asks(world: EasWorld) -> None:
    phone = await ready(world, "BODYDEVICE1")
    assert (await phone.send_mail(MESSAGE)).status_code == 200
    size = len(TEXT.encode())
    # Plain text cut at 20 bytes, with the whole size and a preview.
    _, data = await sent_item(phone, [preference(1, 20, Preview="30")])
    body = body_of(data)
    assert child_text(body, "Type") == "1" and child_text(body, "Truncated") == "1"
    assert child_text(body, "EstimatedDataSize") == str(size)
    assert child_text(body, "Data") == TEXT[:20]
    assert child_text(body, "Preview") == "Dear Bob, The budget meeting m"
    # HTML only: the text as HTML, whole.
    _, data = await sent_item(phone, [preference(2)])
    body = body_of(data)
    assert child_text(body, "Type") == "2" and "budget meeting moves" in child_text(body, "Data")
    assert "<br>" in (child_text(body, "Data") or "") and body.find("Truncated") is None
    # All or none: too large, so none.
    _, data = await sent_item(phone, [preference(1, 5, AllOrNone="1")])
    body = body_of(data)
    assert child_text(body, "Truncated") == "1" and body.find("Data") is None
    # MIME with MIMESupport 2: the RFC 5322 message, CRLF line ends.
    server_id, data = await sent_item(
        phone, [el(AIRSYNC, "MIMESupport", "2"), preference(4), preference(1)]
    )
    body = body_of(data)
    mime = child_text(body, "Data") or ""
    assert child_text(body, "Type") == "4" and mime.startswith("From: Alice")
    parsed = message_from_string(mime)
    assert parsed["Subject"] == "Budget" and "\r\n\r\nDear Bob" in mime
    # MIME without MIMESupport is not given: the plain text it also asked for.
    _, data = await sent_item(phone, [preference(4), preference(1)])
    assert child_text(body_of(data), "Type") == "1"
    # ItemOperations Fetch honours the same preferences.
    fetched = await phone.fetch(
        "sent", server_id, [el(AIRSYNC, "MIMESupport", "2"), preference(4, 40)]
    )
    assert fetched is not None
    body = body_of(fetched)
    assert child_text(body, "Type") == "4" and child_text(body, "Truncated") == "1"
    assert len((child_text(body, "Data") or "").encode()) <= 40
    # Protocol 12.1 has no Preview.
    old = await ready(world, "BODYDEVICE2", version="12.1")
    _, data = await sent_item(old, [preference(1, 10, Preview="50")])
    assert body_of(data).find("Preview") is None
    # A contact's note is plain text, truncated likewise (HTML is not offered for it).
    await phone.sync_all("contacts")
    await phone.sync("contacts", adds={"c1": contact("Ann", "Lee")})
    other = await ready(world, "BODYDEVICE3")
    await other.sync("contacts")
    outcome = await other.sync("contacts", options=[preference(2, 3)])
    (card,) = outcome.added.values()
    assert child_text(body_of(card), "Type") == "1" and child_text(body_of(card), "Data") == "a n"
    # A malformed preference: Sync protocol error, nothing changes.
    before = counts(world)
    other.sync_keys.pop("sent", None)
    await other.sync("sent")
    refused = await other.sync("sent", options=[preference(9)])
    assert refused.status == 4 and counts(world) == before


# --------------------------------------------------------------------------- SmartReply/Forward


def source(folder: str, item: str) -> list[Element]:
    return [el(COMPOSE_MAIL, "FolderId", folder), el(COMPOSE_MAIL, "ItemId", item)]


async def test_smart_reply_and_forward_with_the_original(world: EasWorld) -> None:
    phone = await ready(world, "SMARTDEVICE1")
    await phone.send_mail(MESSAGE)
    server_id, _ = await sent_item(phone)
    reply = "From: alice@acme.test\r\nTo: bob@example.org\r\nSubject: Re: Budget\r\n\r\nThanks!\r\n"
    response = await phone.smart("SmartReply", reply, source("sent", server_id))
    assert response.status_code == 200 and response.content == b""
    replied = message_from_string(stored(world, "sent_mail")[-1])
    assert replied["In-Reply-To"] == "<budget-1@acme.test>"
    text = replied.get_payload(decode=True).decode()
    assert text.startswith("Thanks!") and "> The budget meeting moves to Thursday" in text
    forward = (
        "From: alice@acme.test\r\nTo: carol@example.org\r\nSubject: Fwd: Budget\r\n\r\nFYI\r\n"
    )
    response = await phone.smart("SmartForward", forward, source("sent", server_id))
    assert response.status_code == 200
    forwarded = message_from_string(stored(world, "sent_mail")[-1])
    kinds = [part.get_content_type() for part in forwarded.walk()]
    assert kinds[:3] == ["multipart/mixed", "text/plain", "message/rfc822"]
    (attached,) = forwarded.get_payload()[1].get_payload()
    assert attached["Message-ID"] == "<budget-1@acme.test>"
    # ReplaceMime: the device's message as it is; not kept when not asked to.
    response = await phone.smart(
        "SmartReply",
        reply.replace("Thanks!", "Whole"),
        source("sent", server_id),
        replace_mime=True,
    )
    assert response.status_code == 200
    assert "> The budget" not in stored(world, "sent_mail")[-1]
    assert len(stored(world, "sent_mail")) == 4
    await phone.smart("SmartReply", reply, source("sent", server_id), save=False)
    assert len(stored(world, "sent_mail")) == 4
    # Protocol 12.1: the message itself, the original named in the query.
    old = await ready(world, "SMARTDEVICE2", version="12.1")
    await old.sync_all("sent")
    first = next(
        sid for sid, data in old.items["sent"].items() if child_text(data, "Subject") == "Budget"
    )
    response = await old.smart(
        "SmartReply", reply, None, query=f"&CollectionId=sent&ItemId={first}"
    )
    assert response.status_code == 200 and len(stored(world, "sent_mail")) == 5
    assert "> The budget meeting" in stored(world, "sent_mail")[-1]
    # Refusals change nothing: unknown item, ids that do not go together, no recipient,
    # no Source, malformed WBXML.
    before = counts(world)
    refused = await phone.smart("SmartReply", reply, source("sent", "999999"))
    assert status_of(refused) == "150"
    both = [*source("sent", server_id), el(COMPOSE_MAIL, "LongId", "sent:1")]
    assert status_of(await phone.smart("SmartForward", forward, both)) == "105"
    nobody = "From: alice@acme.test\r\nSubject: x\r\n\r\nhi\r\n"
    assert status_of(await phone.smart("SmartForward", nobody, source("sent", server_id))) == "119"
    assert status_of(await phone.smart("SmartReply", reply, None)) == "103"
    assert (await phone.post("SmartReply", b"\x03\x01\x6a\x00\x45")).status_code == 400
    assert status_of(await phone.smart("SmartReply", reply, source("contacts", "1"))) == "150"
    assert counts(world) == before


# --------------------------------------------------------------------------- MeetingResponse


def meeting(response: int, request_id: str, folder: str, *extra: Element) -> Element:
    return el(
        MEETING_RESPONSE,
        "MeetingResponse",
        el(
            MEETING_RESPONSE,
            "Request",
            el(MEETING_RESPONSE, "UserResponse", str(response)),
            el(MEETING_RESPONSE, "CollectionId", folder),
            el(MEETING_RESPONSE, "RequestId", request_id),
            *extra,
        ),
    )


def result_of(root: Element | None) -> Element:
    assert root is not None
    found = root.find("Result")
    assert found is not None
    return found


async def test_meeting_response_to_a_request_and_to_an_event(world: EasWorld) -> None:
    phone = await ready(world, "MEETDEVICE1")
    await phone.sync_all("calendar")
    # A meeting request message: accepted with a reply to the organiser kept in Sent Items.
    await phone.send_mail(MEETING_MAIL)
    request_id, shown = await sent_item(phone)
    assert child_text(shown, "MessageClass") == "IPM.Schedule.Meeting.Request"
    invitation = shown.find("MeetingRequest")
    assert invitation is not None and child_text(invitation, "Organizer") == "bob@example.org"
    assert child_text(invitation, "StartTime") == "2027-03-10T10:00:00.000Z"
    assert child_text(invitation, "ResponseRequested") == "1"
    send = el(
        MEETING_RESPONSE, "SendResponse", el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Data", "Yes"))
    )
    result = result_of(await phone.call("MeetingResponse", meeting(1, request_id, "sent", send)))
    assert child_text(result, "Status") == "1" and child_text(result, "RequestId") == request_id
    calendar_id = child_text(result, "CalendarId")
    (event,) = stored(world, "calendar")
    assert "UID:invite-1" in event and "METHOD" not in event
    assert "PARTSTAT=ACCEPTED:mailto:alice@acme.test" in event
    outcome = await phone.sync("calendar")
    assert list(outcome.added) == [calendar_id]
    assert child_text(outcome.added[calendar_id], "Subject") == "Planning"
    (reply,) = stored(world, "sent_mail")  # the request left Sent Items; the REPLY is there
    assert (
        "METHOD:REPLY" in reply and "Accepted: Planning" in reply and "To: bob@example.org" in reply
    )
    # Tentative on the calendar event itself: same item, new PARTSTAT.
    result = result_of(
        await phone.call("MeetingResponse", meeting(2, calendar_id or "", "calendar"))
    )
    assert child_text(result, "Status") == "1" and child_text(result, "CalendarId") == calendar_id
    assert "PARTSTAT=TENTATIVE:mailto:alice@acme.test" in stored(world, "calendar")[0]
    # Refusals: an unknown request, a message that is no meeting request, a bad response.
    before = counts(world)
    for body in (
        meeting(1, "424242", "calendar"),
        meeting(9, calendar_id or "", "calendar"),
    ):
        result = result_of(await phone.call("MeetingResponse", body))
        assert child_text(result, "Status") == "2" and result.find("CalendarId") is None
    await phone.send_mail(MESSAGE, save=True)
    plain_id, _ = await sent_item(phone, subject="Budget")
    before = counts(world)
    result = result_of(await phone.call("MeetingResponse", meeting(1, plain_id, "sent")))
    assert child_text(result, "Status") == "2"
    empty = await phone.call("MeetingResponse", el(MEETING_RESPONSE, "MeetingResponse"))
    assert child_text(empty, "Status") == "103"  # type: ignore[arg-type]
    assert counts(world) == before
    # Declined: the event leaves the calendar, no CalendarId.
    result = result_of(
        await phone.call("MeetingResponse", meeting(3, calendar_id or "", "calendar"))
    )
    assert child_text(result, "Status") == "1" and result.find("CalendarId") is None
    assert stored(world, "calendar") == []
    assert (await phone.sync("calendar")).deleted == [calendar_id]
    # An organisation that does not synchronise calendars: a mailbox error.
    await phone.send_mail(MEETING_MAIL)
    with database(world.running) as conn:
        conn.execute(
            "UPDATE organisations SET features = '{\"calendar_sync\": false}' WHERE id = ?",
            (world.ds.organisation_id,),
        )
    meeting_id, _ = await sent_item(phone, subject="Planning")
    result = result_of(await phone.call("MeetingResponse", meeting(1, meeting_id, "sent")))
    assert child_text(result, "Status") == "3"
