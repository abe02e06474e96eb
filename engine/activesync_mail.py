"""Exchange ActiveSync mail commands beyond SendMail: SmartReply and SmartForward (MS-ASCMD
2.2.1.18, 2.2.1.19) and MeetingResponse (MS-ASCMD 2.2.1.11), on the PIM store.

SmartReply and SmartForward name the original by its folder and ServerId (``Source`` with
``FolderId`` and ``ItemId``), by the ``LongId`` a Search gave, or — protocol 12.1, whose
message comes as ``message/rfc822`` — by the query's ``CollectionId`` and ``ItemId``. The
service adds the original (:mod:`engine.protocols.eas_compose`) and keeps the result in Sent
Items when asked (``SaveInSentItems``, ``SaveInSent=T``); it is delivered to the recipients
of the sender's organisation (:mod:`engine.activesync_delivery`); there is no mail transport,
so nothing leaves the service. Failures: 105 InvalidCombinationOfIDs (a LongId beside an ItemId or
FolderId), 107 InvalidMIME, 119 MessageHasNoRecipient, 150 ItemNotFound.

MeetingResponse answers a meeting request — a message holding an iTIP REQUEST
(``text/calendar``) or an event of the Calendar folder — with accept (1), tentative (2) or
decline (3). Accepting or tentatively accepting puts the event in the owner's calendar (the
one with the same UID is updated) with the owner's PARTSTAT and answers its ``CalendarId``;
declining removes it from the calendar. A request message leaves its folder once answered.
From 16.0 a ``SendResponse`` keeps the iMIP REPLY for the organiser in Sent Items and
delivers it to the organiser when they are of the same organisation.
Statuses per request: 1 success, 2 invalid meeting request, 3 mailbox error (the
organisation does not synchronise calendars), 4 server error.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from email.errors import MessageError
from typing import TYPE_CHECKING, Any

from .activesync_delivery import send_unit
from .activesync_items import FOLDER_KINDS
from .pim import collection_unit, facts_of
from .protocols import activesync as eas, eas_bodies, eas_compose, eas_meetings, eas_pim
from .protocols.activesync import EasError, child_text, el, integer
from .protocols.activesync_tables import (
    AIRSYNC,
    COMPOSE_MAIL,
    ITEM_OPERATIONS,
    MEETING_RESPONSE,
    SEARCH,
)
from .protocols.wbxml import Element
from .store import activesync as eas_db, pim as pim_db
from .timestamps import now

if TYPE_CHECKING:
    from .activesync import Backend, Caller, EasCall

#: What a handler answers: a WBXML document, a command status, or nothing (HTTP 200, empty).
Answer = Element | int | None

# --------------------------------------------------------------------------- ids


def long_id(folder: str, item_id: int) -> str:
    """The LongId a Search result names a stored item by (MS-ASCMD 2.2.3.97)."""
    return f"{folder}:{item_id}"


def _item_of_long_id(
    conn: sqlite3.Connection, account_id: str, value: str
) -> tuple[str, dict[str, Any]] | None:
    folder, _, number = value.partition(":")
    kind = FOLDER_KINDS.get(folder)
    if kind is None or not number.isdigit() or len(number) > 18:
        return None
    collection = pim_db.collection_of(conn, account_id, kind)
    item = pim_db.item_in(conn, collection["id"], int(number)) if collection else None
    if item is None or item["deleted"]:
        return None
    return folder, {**item, "collection_id": collection["id"]}  # type: ignore[index]


def _item_of_server_id(
    conn: sqlite3.Connection, caller: Caller, folder: str, server_id: str
) -> dict[str, Any] | None:
    kind = FOLDER_KINDS.get(folder)
    if kind is None or server_id.startswith(eas_db.CLIENT_PREFIX):
        return None
    collection = pim_db.collection_of(conn, caller.account["id"], kind)
    if collection is None:
        return None
    item_id = pim_db.mapped_item(conn, caller.device["id"], collection["id"], server_id)
    item = pim_db.item_in(conn, collection["id"], item_id) if item_id is not None else None
    if item is None or item["deleted"]:
        return None
    return {**item, "collection_id": collection["id"]}


def find_item(
    conn: sqlite3.Connection,
    caller: Caller,
    folder: str | None,
    server_id: str | None,
    long: str | None,
) -> tuple[str, dict[str, Any]] | None:
    """The caller's live item a request names (folder and ServerId, or LongId) with its
    folder, or None."""
    if long is not None:
        return _item_of_long_id(conn, caller.account["id"], long)
    if folder is None or server_id is None:
        return None
    found = _item_of_server_id(conn, caller, folder, server_id)
    return (folder, found) if found is not None else None


def long_id_of(parent: Element) -> str | None:
    """The ``search:LongId`` a request element names an item by, if any."""
    return next((c.text for c in parent.elements() if c.tag == "LongId" and c.ns == SEARCH), None)


def _long_id_unit(
    conn: sqlite3.Connection, caller: Caller, value: str
) -> tuple[str, dict[str, Any]] | None:
    return find_item(conn, caller, None, None, value)


async def fetch_long_id(backend: Backend, call: EasCall, caller: Caller, fetch: Element) -> Element:
    """An ItemOperations Fetch of an item by the LongId a Search gave (MS-ASCMD 2.2.3.97):
    status 6 when it names nothing of the owner's."""
    value = long_id_of(fetch) or ""
    found = await backend.store.read(_long_id_unit, caller, value)
    if found is None:
        return el(
            ITEM_OPERATIONS,
            "Fetch",
            el(ITEM_OPERATIONS, "Status", "6"),
            el(SEARCH, "LongId", value),
        )
    folder, item = found
    kind = FOLDER_KINDS[folder] or ""
    bodies = eas_bodies.preferences_of(fetch, call.query.version)
    try:
        data = eas_pim.application_data(kind, item["data"] or "", bodies)
    except eas_pim.UNREADABLE:  # an item that cannot be shown is not found
        return el(
            ITEM_OPERATIONS,
            "Fetch",
            el(ITEM_OPERATIONS, "Status", "6"),
            el(SEARCH, "LongId", value),
        )
    return el(
        ITEM_OPERATIONS,
        "Fetch",
        el(ITEM_OPERATIONS, "Status", "1"),
        el(SEARCH, "LongId", value),
        el(AIRSYNC, "Class", eas_pim.CLASSES[kind]),
        Element("Properties", ITEM_OPERATIONS, data.children),
    )


# --------------------------------------------------------------------------- SmartReply/Forward


@dataclass(frozen=True)
class Composed:
    """A SmartReply or SmartForward as the device sent it."""

    mime: str
    folder: str | None
    item_id: str | None
    long_id: str | None
    save: bool
    replace_mime: bool
    forwardees: tuple[tuple[str, str], ...] = ()


def mime_text(found: Element) -> str:
    """The text of a ``Mime`` element (opaque data or a string)."""
    data = b"".join(
        c if isinstance(c, bytes) else c.encode()
        for c in found.children
        if isinstance(c, bytes | str)
    )
    return data.decode("utf-8", "replace")


def composed_of(call: EasCall, tag: str) -> Composed | int:
    """The request of a SmartReply/SmartForward in either form, or a refusal status."""
    if call.raw is not None:  # 12.1: the message itself, the original named in the query
        parameters = call.query.parameters
        return Composed(
            mime=call.raw.decode("utf-8", "replace"),
            folder=parameters.get("CollectionId"),
            item_id=parameters.get("ItemId"),
            long_id=parameters.get("LongId"),
            save=parameters.get("SaveInSent", "").upper() == "T",
            replace_mime=False,
        )
    if call.body is None:
        raise EasError(f"{tag} needs a body", eas.INVALID_XML)
    root = eas.expect_root(call.body, COMPOSE_MAIL, tag)
    mime = mime_text(eas.require(root, "Mime"))
    source = root.find("Source")
    if source is None:
        raise EasError(f"{tag} without Source", eas.INVALID_XML)
    folder = child_text(source, "FolderId")
    item_id = child_text(source, "ItemId")
    long = child_text(source, "LongId")
    if long is not None and (item_id is not None or folder is not None):
        return eas_compose.INVALID_COMBINATION_OF_IDS
    if long is None and (item_id is None or folder is None):
        return eas_compose.INVALID_COMBINATION_OF_IDS if item_id or folder else eas.INVALID_XML
    forwardees = tuple(
        (child_text(f, "ForwardeeName", "") or "", child_text(f, "ForwardeeEmail", "") or "")
        for f in (root.find("Forwardees").elements() if root.find("Forwardees") else [])
    )
    return Composed(
        mime=mime,
        folder=folder,
        item_id=item_id,
        long_id=long,
        save=root.find("SaveInSentItems") is not None,
        replace_mime=root.find("ReplaceMime") is not None,
        forwardees=forwardees,
    )


def _smart_unit(
    conn: sqlite3.Connection, caller: Caller, request: Composed, forward: bool
) -> tuple[int, list[str]]:
    """Compose with the original, keep the message in Sent Items when asked and deliver it
    to the recipients of the organisation: the status and the collections that changed."""
    found = find_item(conn, caller, request.folder, request.item_id, request.long_id)
    if found is None or not eas_pim.is_mail(FOLDER_KINDS.get(found[0])):
        return eas_compose.ITEM_NOT_FOUND, []
    # Who was blind-copied stays with the sender, forwarded or not.
    original = eas_pim.drop_headers(eas_pim.without_state(found[1]["data"] or ""), ("Bcc",))
    try:
        if forward:
            text = eas_compose.forward(
                request.mime, original, request.replace_mime, request.forwardees
            )
        else:
            text = eas_compose.reply(request.mime, original, request.replace_mime)
    except EasError as exc:
        return exc.status, []
    except (MessageError, ValueError, LookupError, TypeError, AttributeError, RecursionError):
        return eas_compose.INVALID_MIME, []  # a message the email package cannot rework
    if not eas_compose.recipients(eas_compose.parse(text)):
        return eas_compose.MESSAGE_HAS_NO_RECIPIENT, []
    return 1, send_unit(conn, caller, text, request.save)


async def smart_mail(backend: Backend, call: EasCall, caller: Caller, forward: bool) -> Answer:
    """SmartReply or SmartForward: an empty answer when done, else the status."""
    request = composed_of(call, "SmartForward" if forward else "SmartReply")
    if isinstance(request, int):
        return request
    status, changed = await backend.store.write(_smart_unit, caller, request, forward)
    for collection_id in changed:
        backend.board.changed(collection_id)
    return None if status == 1 else status


# --------------------------------------------------------------------------- MeetingResponse

MEETING_OK, INVALID_MEETING_REQUEST, MAILBOX_ERROR, MEETING_SERVER_ERROR = 1, 2, 3, 4


@dataclass(frozen=True)
class MeetingRequest:
    """One ``Request`` of a MeetingResponse."""

    response: int
    folder: str | None
    request_id: str | None
    long_id: str | None
    send_response: bool
    note: str


def meeting_requests_of(root: Element, version: str) -> list[MeetingRequest | None]:
    """The requests of a MeetingResponse (None for one that names no valid response)."""
    requests: list[MeetingRequest | None] = []
    for request in root.elements():
        if request.tag != "Request":
            continue
        try:
            response = integer(child_text(request, "UserResponse"), "UserResponse", 1, 3)
        except EasError:
            response = None
        long = long_id_of(request)
        request_id = child_text(request, "RequestId")
        if response is None or (long is None and request_id is None):
            requests.append(None)
            continue
        send = request.find("SendResponse") if float(version) >= 16.0 else None
        note = ""
        if send is not None and send.find("Body") is not None:
            note = child_text(send.find("Body"), "Data", "") or ""  # type: ignore[arg-type]
        requests.append(
            MeetingRequest(
                response=response,
                folder=child_text(request, "CollectionId"),
                request_id=request_id,
                long_id=long,
                send_response=send is not None,
                note=note,
            )
        )
    return requests


def _put_event(
    conn: sqlite3.Connection, caller: Caller, collection_id: str, text: str, item_id: int | None
) -> int:
    """Insert or overwrite a calendar item as the service's change (every device of the
    owner, the asking one too, gets it on its next Sync)."""
    facts = facts_of("calendar", text, "text/calendar")
    values = {
        "version": pim_db.next_version(conn, collection_id),
        "origin": None,
        "content_type": facts.content_type,
        "data": text,
        "uid": facts.uid,
        "fingerprint": facts.fingerprint,
        "deleted": 0,
        "updated_at": now(),
    }
    if item_id is not None:
        pim_db.update_item(conn, item_id, values)
        return item_id
    return pim_db.insert_item(
        conn,
        {
            **values,
            "collection_id": collection_id,
            "organisation_id": caller.device["organisation_id"],
            "created_at": values["updated_at"],
        },
    )


def _remove(conn: sqlite3.Connection, collection_id: str, item_id: int) -> None:
    pim_db.update_item(
        conn,
        item_id,
        {
            "version": pim_db.next_version(conn, collection_id),
            "origin": None,
            "data": None,
            "deleted": 1,
            "updated_at": now(),
        },
    )


def meeting_unit(
    conn: sqlite3.Connection, caller: Caller, request: MeetingRequest
) -> tuple[int, str | None, list[str]]:
    """Answer one meeting request: its status, the CalendarId, the collections changed."""
    found = find_item(conn, caller, request.folder, request.request_id, request.long_id)
    if found is None:
        return INVALID_MEETING_REQUEST, None, []
    folder, item = found
    kind = FOLDER_KINDS.get(folder)
    if kind == "calendar":
        calendar_text = item["data"] or ""
    elif eas_pim.is_mail(kind):
        calendar_text = eas_compose.meeting_request(item["data"] or "") or ""
    else:
        calendar_text = ""
    if "BEGIN:VEVENT" not in calendar_text.upper():
        return INVALID_MEETING_REQUEST, None, []
    if eas_meetings.meeting_request_element(calendar_text) is None:
        return INVALID_MEETING_REQUEST, None, []  # no start, or times that cannot be read
    if not caller.features.get("calendar_sync", True):
        return MAILBOX_ERROR, None, []
    attendee = caller.account.get("email") or ""
    calendar = collection_unit(
        conn, caller.device["organisation_id"], caller.account["id"], "calendar"
    )
    changed = {calendar["id"]}
    event = eas_compose.with_response(calendar_text, attendee, request.response)
    uid = facts_of("calendar", event, "text/calendar").uid
    if kind == "calendar":
        existing: int | None = item["id"]
    else:
        match = pim_db.live_item_matching(conn, calendar["id"], "", uid, ()) if uid else None
        existing = match["id"] if match else None
    calendar_id = None
    if request.response == 3:
        if existing is not None:
            _remove(conn, calendar["id"], existing)
    else:
        item_id = _put_event(conn, caller, calendar["id"], event, existing)
        luids = eas_db.server_ids_of_items(conn, caller.device["id"], calendar["id"], [item_id])
        calendar_id = luids.get(item_id, str(item_id))
    if kind != "calendar":  # the answered request leaves its folder
        _remove(conn, item["collection_id"], item["id"])
        changed.add(item["collection_id"])
    if request.send_response and attendee:
        reply = eas_compose.meeting_reply(calendar_text, attendee, request.response, request.note)
        if reply is not None:
            changed.update(send_unit(conn, caller, reply, True))
    return MEETING_OK, calendar_id, sorted(changed)


async def meeting_response(backend: Backend, call: EasCall, caller: Caller) -> Answer:
    if call.body is None:
        raise EasError("MeetingResponse needs a body", eas.INVALID_XML)
    root = eas.expect_root(call.body, MEETING_RESPONSE, "MeetingResponse")
    results: list[Element] = []
    for request in meeting_requests_of(root, call.query.version):
        if request is None:
            results.append(el(MEETING_RESPONSE, "Result", el(MEETING_RESPONSE, "Status", "2")))
            continue
        try:
            status, calendar_id, changed = await backend.store.write(meeting_unit, caller, request)
        except (ValueError, OverflowError, AttributeError, TypeError, LookupError, MessageError):
            # An invitation that cannot be read or answered (the email package raises all
            # of these on hostile addresses): nothing kept.
            status, calendar_id, changed = INVALID_MEETING_REQUEST, None, []
        for collection_id in changed:
            backend.board.changed(collection_id)
        children: list[Element | str | bytes | None] = []
        if request.request_id is not None:
            children.append(el(MEETING_RESPONSE, "RequestId", request.request_id))
        children.append(el(MEETING_RESPONSE, "Status", str(status)))
        if calendar_id is not None:
            children.append(el(MEETING_RESPONSE, "CalendarId", calendar_id))
        results.append(el(MEETING_RESPONSE, "Result", *children))
    if not results:
        raise EasError("MeetingResponse without Request", eas.INVALID_XML)
    return el(MEETING_RESPONSE, "MeetingResponse", *results)
