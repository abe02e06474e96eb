"""A meeting request message as MS-ASEMAIL shows it (``email:MeetingRequest``, 2.2.2.48),
sans-IO: what lets a device offer Accept, Tentative and Decline, which it answers with
MeetingResponse.

The request's event (the iTIP REQUEST in the message's ``text/calendar`` part) gives the
times, place, organiser and whether a reply is wanted; ``GlobalObjId`` carries the event's
UID in the form Outlook uses for events from other systems (MS-OXOCAL 2.2.1.27: the
"vCal-Uid" wrapping), so the device can tie the request to the event it puts in its
calendar.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta

from .activesync_tables import EMAIL
from .contentline import ContentLine, parse
from .wbxml import Element

#: MS-OXOCAL's class id at the head of every PidLidGlobalObjectId.
_GLOBAL_ID_HEAD = bytes.fromhex("040000008200E00074C5B7101A82E008")
MESSAGE_CLASS = "IPM.Schedule.Meeting.Request"
CONTENT_CLASS = "urn:content-classes:calendarmessage"
_SENSITIVITY = {"PUBLIC": "0", "PRIVATE": "2", "CONFIDENTIAL": "3"}


def global_object_id(uid: str) -> str:
    """The base64 ``GlobalObjId`` of an event UID (the vCal-Uid form of MS-OXOCAL)."""
    data = b"vCal-Uid" + struct.pack("<I", 1) + uid.encode() + b"\x00"
    # Class id, instance date (YH YL M D: none), creation time, reserved, size, data.
    blob = _GLOBAL_ID_HEAD + bytes(4) + bytes(8) + bytes(8) + struct.pack("<I", len(data))
    return base64.b64encode(blob + data).decode()


def _when(line: ContentLine) -> tuple[datetime, bool]:
    # Imported here: eas_pim imports this module for its mail properties.
    from .eas_pim import ical_datetime

    return ical_datetime(line)


def _long(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def meeting_request_element(calendar: str) -> Element | None:
    """The ``email:MeetingRequest`` of a meeting request's iCalendar object, or None when
    it holds no event with a start, or its times cannot be read (the message is then shown
    as the plain message it also is)."""
    lines: dict[str, ContentLine] = {}
    inside = False
    for line in parse(calendar):
        if line.name == "BEGIN" and line.value.strip().upper() == "VEVENT":
            inside = True
        elif line.name == "END" and line.value.strip().upper() == "VEVENT":
            break
        elif inside:
            lines.setdefault(line.name, line)
    if "DTSTART" not in lines:
        return None
    try:
        start, all_day = _when(lines["DTSTART"])
        end = _when(lines["DTEND"])[0] if "DTEND" in lines else start + timedelta(days=all_day)
        stamp = _when(lines["DTSTAMP"])[0] if "DTSTAMP" in lines else datetime.now(UTC)
    except (ValueError, OverflowError):
        return None
    organizer = lines["ORGANIZER"].value.split(":", 1)[-1] if "ORGANIZER" in lines else ""
    rsvp = any(
        (line.param("RSVP") or "").upper() == "TRUE"
        for line in parse(calendar)
        if line.name == "ATTENDEE"
    )
    sensitivity = lines["CLASS"].value.strip().upper() if "CLASS" in lines else "PUBLIC"
    transparent = "TRANSP" in lines and lines["TRANSP"].value.strip().upper() == "TRANSPARENT"
    children: list[Element | str | bytes] = [
        Element("AllDayEvent", EMAIL, ["1" if all_day else "0"]),
        Element("StartTime", EMAIL, [_long(start)]),
        Element("DtStamp", EMAIL, [_long(stamp)]),
        Element("EndTime", EMAIL, [_long(end)]),
        Element("InstanceType", EMAIL, ["0"]),
    ]
    if "LOCATION" in lines:
        children.append(Element("Location", EMAIL, [lines["LOCATION"].value]))
    if organizer:
        children.append(Element("Organizer", EMAIL, [organizer]))
    children += [
        Element("ResponseRequested", EMAIL, ["1" if rsvp else "0"]),
        Element("Sensitivity", EMAIL, [_SENSITIVITY.get(sensitivity, "0")]),
        Element("BusyStatus", EMAIL, ["0" if transparent else "2"]),
        Element("TimeZone", EMAIL, [base64.b64encode(bytes(172)).decode()]),
    ]
    if "UID" in lines:
        children.append(Element("GlobalObjId", EMAIL, [global_object_id(lines["UID"].value)]))
    return Element("MeetingRequest", EMAIL, children)
