"""Exchange ActiveSync without the service: the request line (both encodings), the WBXML
code pages (cross-checked with Debian's libwbxml), the EASProvisionDoc, the conversion of
items between ActiveSync properties and vCard/iCalendar/text, and the Ping board."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from engine.actors import Reply
from engine.actors.eas_pings import PingBoard
from engine.protocols import activesync as eas, eas_pim
from engine.protocols.activesync import EasError, child_text, el
from engine.protocols.activesync_tables import (
    AIRSYNC,
    AIRSYNCBASE,
    CALENDAR,
    CONTACTS,
    PAGES,
    PROVISION,
    TASKS,
)
from engine.protocols.contentline import parse
from engine.wakeups import Waiting

# What libwbxml calls the tags whose MS-ASWBXML name it spells differently (its older or
# prefixed names; same tokens), and the tokens it does not know (16.x tags, Find).
LIBWBXML_NAMES = {
    (1, 0x7): "AssistantTelephoneNumber",
    (1, 0xD): "BusinessCity",
    (1, 0xE): "BusinessCountry",
    (1, 0xF): "BusinessPostalCode",
    (1, 0x10): "BusinessState",
    (1, 0x11): "BusinessStreet",
    (1, 0x21): "HomeCity",
    (1, 0x22): "HomeCountry",
    (1, 0x23): "HomePostalCode",
    (1, 0x24): "HomeState",
    (1, 0x25): "HomeStreet",
    (1, 0x2D): "OtherCity",
    (1, 0x2E): "OtherCountry",
    (1, 0x2F): "OtherPostalCode",
    (1, 0x30): "OtherState",
    (1, 0x31): "OtherStreet",
    (2, 0x9): "AttOId",
    (2, 0x19): "Reply-To",
    (2, 0x1D): "DTStamp",
    (2, 0x29): "Recurrence_Type",
    (2, 0x2A): "Recurrence_Until",
    (2, 0x2B): "Recurrence_Occurrences",
    (2, 0x2C): "Recurrence_Interval",
    (2, 0x2D): "Recurrence_DayOfWeek",
    (2, 0x2E): "Recurrence_DayOfMonth",
    (2, 0x2F): "Recurrence_WeekOfMonth",
    (2, 0x30): "Recurrence_MonthOfYear",
    (2, 0x3B): "FlagStatus",
    (4, 0x9): "Attendee_Email",
    (4, 0xA): "Attendee_Name",
    (4, 0x10): "Compressed_RTF",
    (4, 0x11): "DTStamp",
    (4, 0x15): "Exception_Deleted",
    (4, 0x16): "Exception_StartTime",
    (4, 0x19): "Organizer_Email",
    (4, 0x1A): "Organizer_Name",
    (4, 0x1C): "Recurrence_Type",
    (4, 0x1D): "Recurrence_Until",
    (4, 0x1E): "Recurrence_Occurrences",
    (4, 0x1F): "Recurrence_Interval",
    (4, 0x20): "Recurrence_DayOfWeek",
    (4, 0x21): "Recurrence_DayOfMonth",
    (4, 0x22): "Recurrence_WeekOfMonth",
    (4, 0x23): "Recurrence_MonthOfYear",
    (4, 0x29): "Attendee_Status",
    (4, 0x2A): "Attendee_Type",
    (9, 0xD): "UTCDueDate",
    (9, 0x10): "Recurrence_Type",
    (9, 0x11): "Recurrence_Start",
    (9, 0x12): "Recurrence_Until",
    (9, 0x13): "Recurrence_Occurrences",
    (9, 0x14): "Recurrence_Interval",
    (9, 0x15): "Recurrence_DayOfMonth",
    (9, 0x16): "Recurrence_DayOfWeek",
    (9, 0x17): "Recurrence_WeekOfMonth",
    (9, 0x18): "Recurrence_MonthOfYear",
    (9, 0x19): "Recurrence_Regenerate",
    (9, 0x1A): "Recurrence_DeadOccur",
    (9, 0x1F): "UTCStartDate",
    (14, 0x10): "DeviceEncryptionEnabled",
    (18, 0x2B): "ihsManagementInformation",
    (21, 0x10): "MIME",
    (24, 0x12): "RMOwner",
    (24, 0x18): "RemoveRightsManagementDistribution",
}
LIBWBXML_UNKNOWN = {
    (8, 0x13),
    (8, 0x14),
    (14, 0x3B),
    (25, 0x5),
    (25, 0x6),
    (25, 0x7),
    (25, 0x8),
    (25, 0x9),
    (25, 0xA),
    (25, 0xB),
    (25, 0xC),
    (25, 0xD),
    (25, 0xE),
    (25, 0x11),
    (25, 0x12),
    (25, 0x13),
    (25, 0x14),
    (25, 0x15),
    (25, 0x16),
    (25, 0x17),
    (25, 0x18),
    (25, 0x19),
    (25, 0x20),
    (25, 0x21),
    (25, 0x22),
}


def test_base64_query_of_ms_ashttp_example() -> None:
    # MS-ASHTTP 2.2.1.1.1.1: the example equivalent to
    # Cmd=Sync&DeviceId=v140Device&DeviceType=SmartPhone with protocol version 14.0.
    query = eas.parse_request_line("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l", {})
    assert (query.command, query.device_id, query.device_type, query.version) == (
        "Sync",
        "v140Device",
        "SmartPhone",
        "14.0",
    )
    assert query.policy_key is None and not query.before_14


def test_base64_query_with_policy_key_and_parameters() -> None:
    raw = (
        bytes((161, 9))
        + b"\x09\x04"
        + b"\x05PHONE"
        + b"\x04"
        + (3141).to_bytes(4, "little")
        + b"\x06iPhone"
        + b"\x08\x05alice"
        + b"\x01\x08contacts"
    )
    query = eas.parse_request_line(base64.b64encode(raw).decode(), {})
    assert query.command == "FolderSync" and query.version == "16.1"
    assert query.policy_key == "3141" and query.user == "alice"
    assert query.parameters == {"CollectionId": "contacts"}


def test_plain_query_takes_version_and_policy_key_from_headers() -> None:
    query = eas.parse_request_line(
        "Cmd=Ping&User=acme%5Calice&DeviceId=ABC123&DeviceType=iPhone",
        {"MS-ASProtocolVersion": "12.1", "X-MS-PolicyKey": "77"},
    )
    assert (query.command, query.user, query.policy_key) == ("Ping", "acme\\alice", "77")
    assert query.before_14


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("Cmd=Sync&User=a&DeviceType=x", {"MS-ASProtocolVersion": "14.1"}, 108),
        ("Cmd=Sync&User=a&DeviceId=d", {"MS-ASProtocolVersion": "14.1"}, 109),
        ("Cmd=Sync&User=a&DeviceId=d&DeviceType=x", {"MS-ASProtocolVersion": "2.5"}, 138),
        ("Cmd=Launch&User=a&DeviceId=d&DeviceType=x", {"MS-ASProtocolVersion": "14.1"}, 137),
        ("%%%", {}, 101),
        (base64.b64encode(b"\x8c\x00\x09").decode(), {}, 101),
        (base64.b64encode(b"\x8c\x63\x09\x04\x01a\x00\x01b").decode(), {}, 137),
    ],
)
def test_bad_request_lines(query: str, headers: dict[str, str], status: int) -> None:
    with pytest.raises(EasError) as refused:
        eas.parse_request_line(query, headers)
    assert refused.value.status == status


def test_wbxml_header_and_round_trip() -> None:
    root = el(
        AIRSYNC,
        "Sync",
        el(
            AIRSYNC,
            "Collections",
            el(
                AIRSYNC,
                "Collection",
                el(AIRSYNC, "SyncKey", "1"),
                el(AIRSYNC, "CollectionId", "contacts"),
                el(
                    AIRSYNC,
                    "ApplicationData",
                    el(CONTACTS, "FirstName", "Ada"),
                    el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Type", "1")),
                ),
            ),
        ),
    )
    data = eas.encode(root)
    # WBXML 1.3, public id 1 (unknown), UTF-8 (106), empty string table; Sync = 0x45.
    assert data[:5] == b"\x03\x01\x6a\x00\x45"
    assert eas.decode(data) == root


@pytest.mark.parametrize(
    "data", [b"", b"\x03", b"\x03\x01\x6a\x00\x45\x5c\x03abc", b"\x03\x01\x6a\x00\x00\x63\x45\x01"]
)
def test_malformed_wbxml_is_refused_with_status_102(data: bytes) -> None:
    with pytest.raises(EasError) as refused:
        eas.decode(data)
    assert refused.value.status == eas.INVALID_WBXML


@pytest.mark.parametrize(
    "data",
    [
        b"\x03\x01\x6a\x04abc\x00\x45\x01",  # a string table of four bytes
        b"\x03\x00\x00\x6a\x04abc\x00\x45\x01",  # public id by string, table index 0
        b"\x03\x01\x6a\x81\x00" + bytes(128) + b"\x45\x01",  # multi-byte length
    ],
)
def test_wbxml_with_a_string_table_is_refused(data: bytes) -> None:
    """ActiveSync never uses a string table; the generic decoder would accept these."""
    with pytest.raises(EasError) as refused:
        eas.decode(data)
    assert refused.value.status == eas.INVALID_WBXML and "string table" in str(refused.value)


@pytest.mark.skipif(shutil.which("wbxml2xml") is None, reason="needs libwbxml2-utils")
def test_code_pages_agree_with_libwbxml(tmp_path: Path) -> None:
    """Every token of every page, encoded here, decoded by Debian's wbxml2xml."""
    disagreements = []
    for page, (_, tags) in PAGES.items():
        for token, tag in sorted(tags.items()):
            source, target = tmp_path / "in.wbxml", tmp_path / "out.xml"
            source.write_bytes(eas.encode(el(AIRSYNC, "Sync", el(PAGES[page][0], tag, "x"))))
            subprocess.run(
                ["wbxml2xml", "-l", "ACTIVESYNC", "-o", str(target), str(source)],
                check=True,
                capture_output=True,
            )
            name = etree.QName(etree.parse(str(target)).getroot()[0]).localname
            target.unlink()
            if name == "unknown":
                assert (page, token) in LIBWBXML_UNKNOWN, (page, hex(token), tag)
            elif name != LIBWBXML_NAMES.get((page, token), tag):
                disagreements.append((page, hex(token), tag, name))
    assert disagreements == []


def test_pages_are_the_twenty_six_of_ms_aswbxml() -> None:
    assert sorted(PAGES) == list(range(26))
    assert PAGES[25][1][0x05] == "Find" and PAGES[14][1][0x3B] == "AccountOnlyRemoteWipe"
    assert PAGES[0][1][0x29] == "HeartbeatInterval" and PAGES[13][1][0x08] == "HeartbeatInterval"


def test_provision_doc_from_policy() -> None:
    doc = eas.provision_doc(
        {
            "passcode_required": True,
            "min_passcode_length": 6,
            "camera_allowed": False,
            "max_attachment_size": None,
        }
    )
    assert doc.ns == PROVISION
    tags = [child.tag for child in doc.elements()]
    assert tags[:3] == [
        "DevicePasswordEnabled",
        "AlphanumericDevicePasswordRequired",
        "PasswordRecoveryEnabled",
    ]
    assert child_text(doc, "MinDevicePasswordLength") == "6"
    assert child_text(doc, "AllowCamera") == "0"
    assert doc.find("MaxAttachmentSize").children == []  # type: ignore[union-attr]
    eas.encode(el(PROVISION, "Provision", doc))  # every tag has a token


# --------------------------------------------------------------------------- items

CARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ada Lovelace\r\nN:Lovelace;Ada;Augusta;Lady;\r\n"
    "TEL;TYPE=CELL:+44 7700 900123\r\nTEL;TYPE=WORK,VOICE:+44 20 7946 0000\r\n"
    "EMAIL;TYPE=INTERNET:ada@example.org\r\nORG:Analytical Engines;Research\r\n"
    "TITLE:Programmer\r\nADR;TYPE=HOME:;;12 St James\\, Square;London;;SW1Y 4JH;UK\r\n"
    "BDAY:1815-12-10\r\nNOTE:First\\nprogrammer\r\nX-CUSTOM:kept\r\nEND:VCARD\r\n"
)


def _props(text: str) -> set[str]:
    return {f"{line.name}:{line.value}" for line in parse(text)} - {"VERSION:3.0"}


def test_contact_round_trip_keeps_what_activesync_cannot_hold() -> None:
    data = eas_pim.application_data("contacts", CARD)
    assert child_text(data, "FirstName") == "Ada"
    assert child_text(data, "MobilePhoneNumber") == "+44 7700 900123"
    assert child_text(data, "BusinessPhoneNumber") == "+44 20 7946 0000"
    assert child_text(data, "HomeAddressStreet") == "12 St James, Square"
    assert child_text(data, "Birthday") == "1815-12-10T00:00:00.000Z"
    assert child_text(data.find("Body"), "Data") == "First\nprogrammer"  # type: ignore[arg-type]
    eas.encode(el(AIRSYNC, "Sync", data))
    back = eas_pim.item_text("contacts", data, keep=CARD)
    assert "X-CUSTOM:kept" in back
    for wanted in (
        "N:Lovelace;Ada;Augusta;Lady;",
        "TEL;TYPE=CELL:+44 7700 900123",
        "ORG:Analytical Engines;Research",
        "BDAY:1815-12-10",
        "NOTE:First\\nprogrammer",
        "ADR;TYPE=HOME:;;12 St James\\, Square;London;;SW1Y 4JH;UK",
        "EMAIL;TYPE=INTERNET:ada@example.org",
    ):
        assert wanted in back


EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:ev-1\r\n"
    "DTSTART;TZID=Europe/London:20270701T100000\r\nDTEND;TZID=Europe/London:20270701T113000\r\n"
    "SUMMARY:Planning\r\nLOCATION:Room 4\r\nRRULE:FREQ=WEEKLY;COUNT=4;BYDAY=MO,WE\r\n"
    "X-KEEP:yes\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def test_event_round_trip_in_utc() -> None:
    data = eas_pim.application_data("calendar", EVENT)
    assert child_text(data, "StartTime") == "20270701T090000Z"  # BST is UTC+1
    assert child_text(data, "EndTime") == "20270701T103000Z"
    assert child_text(data, "UID") == "ev-1" and child_text(data, "AllDayEvent") == "0"
    recurrence = data.find("Recurrence")
    assert recurrence is not None and recurrence.ns == CALENDAR
    assert child_text(recurrence, "Type") == "1" and child_text(recurrence, "DayOfWeek") == "10"
    eas.encode(el(AIRSYNC, "Sync", data))
    back = eas_pim.item_text("calendar", data, keep=EVENT)
    for wanted in (
        "UID:ev-1",
        "DTSTART:20270701T090000Z",
        "SUMMARY:Planning",
        "LOCATION:Room 4",
        "X-KEEP:yes",
    ):
        assert wanted in back
    assert "RRULE:FREQ=WEEKLY;COUNT=4;BYDAY=MO,WE" in back


def test_all_day_event() -> None:
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:d\r\nDTSTART;VALUE=DATE:"
        "20270101\r\nSUMMARY:Holiday\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    data = eas_pim.application_data("calendar", text)
    assert child_text(data, "AllDayEvent") == "1"
    assert (child_text(data, "StartTime"), child_text(data, "EndTime")) == (
        "20270101T000000Z",
        "20270102T000000Z",
    )
    assert "DTSTART;VALUE=DATE:20270101" in eas_pim.item_text("calendar", data)


def test_task_and_note() -> None:
    todo = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t-1\r\nSUMMARY:File taxes\r\n"
        "DUE:20270131T170000Z\r\nPRIORITY:1\r\nSTATUS:COMPLETED\r\n"
        "COMPLETED:20270120T080000Z\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    )
    data = eas_pim.application_data("tasks", todo)
    assert child_text(data, "Subject") == "File taxes"
    assert child_text(data, "UtcDueDate") == "2027-01-31T17:00:00.000Z"
    assert (child_text(data, "Complete"), child_text(data, "Importance")) == ("1", "2")
    assert data.find("Subject").ns == TASKS  # type: ignore[union-attr]
    back = eas_pim.item_text("tasks", data, keep=todo)
    for wanted in ("UID:t-1", "DUE:20270131T170000Z", "STATUS:COMPLETED", "PRIORITY:1"):
        assert wanted in back
    note = eas_pim.application_data("notes", "Shopping\nmilk\neggs\n")
    assert child_text(note, "Subject") == "Shopping"
    assert eas_pim.item_text("notes", note) == "Shopping\nmilk\neggs\n"


def test_unreadable_dates_are_refused() -> None:
    data = el(AIRSYNC, "ApplicationData", el(CALENDAR, "StartTime", "next tuesday"))
    with pytest.raises(EasError):
        eas_pim.item_text("calendar", data)


# --------------------------------------------------------------------------- Ping board


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _board() -> tuple[PingBoard, Clock]:
    clock = Clock()
    return PingBoard(lambda kind, folders, old, sync: (kind, list(folders)), clock), clock


def test_board_answers_on_change_expiry_wake_and_replacement() -> None:
    board, clock = _board()
    slots = [Reply() for _ in range(4)]
    board.park("k1", "d1", "a1", {"c1": ("contacts", 5)}, 60, slots[0], False)
    board.park(
        "k2", "d2", "a1", {"c1": ("contacts", 7), "c2": ("calendar", 1)}, 30, slots[1], False
    )
    board.changed("c1", exclude="d2")
    assert slots[0]._result.unwrap() == ("changes", ["contacts"])  # type: ignore[union-attr]
    assert not slots[1].settled and len(board) == 1
    board.versions({"c1": 7, "c2": 1})  # nothing newer than seen
    assert not slots[1].settled
    board.versions({"c2": 2})
    assert slots[1]._result.unwrap() == ("changes", ["calendar"])  # type: ignore[union-attr]
    board.park("k3", "d3", "a2", {"c3": ("notes", 0)}, 10, slots[2], False)
    clock.now = 9.9
    board.expire()
    assert not slots[2].settled
    clock.now = 10.0
    board.expire()
    assert slots[2]._result.unwrap() == ("expired", [])  # type: ignore[union-attr]
    board.park("k4", "d4", "a2", {"c3": ("notes", 0)}, 10, slots[3], False)
    replacement = Reply()
    board.park("k4", "d4", "a2", {"c3": ("notes", 0)}, 10, replacement, False)
    assert slots[3]._result.unwrap() == ("expired", [])  # type: ignore[union-attr]
    board.wake([Waiting("o", "d4", "apple_mdm"), Waiting("o", "d4", "eas")])
    assert replacement.settled and len(board) == 0
    assert board.by_collection == {} and board.by_device == {}
