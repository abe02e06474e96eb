"""ActiveSync item properties to and from the PIM store's item formats, sans-IO.

The PIM store keeps every item as the text a sync client sent (vCard for contacts,
iCalendar for events and tasks, plain text for notes), so that OMA DS and ActiveSync
devices of the same owner share one truth. This module maps the properties of MS-ASCNTC
(contacts), MS-ASCAL (calendar), MS-ASTASK (tasks) and MS-ASNOTE (notes) onto those
formats and back. Properties ActiveSync has no element for survive an ActiveSync change:
:func:`to_store` keeps the stored item's other lines (``keep``).

Dates: ActiveSync sends ``2027-01-01T10:00:00.000Z`` (tasks, birthdays) or the compact
``20270101T100000Z`` (calendar); the store gets iCalendar's UTC form.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from email import message_from_string
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.policy import SMTP, compat32, default as email_default
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import eas_bodies, eas_compose, eas_meetings
from .activesync import INVALID_CONTENT, EasError, child_text, el
from .activesync_tables import (
    AIRSYNC,
    AIRSYNCBASE,
    CALENDAR,
    CONTACTS,
    CONTACTS2,
    EMAIL,
    EMAIL2,
    NOTES,
    PAGES,
    TASKS,
)
from .contentline import ContentLine, decoded_value, fold, parse, unfold
from .wbxml import Element

#: The store's kind of each ActiveSync class and back.
CLASSES = {
    "contacts": "Contacts",
    "calendar": "Calendar",
    "tasks": "Tasks",
    "notes": "Notes",
    "sent_mail": "Email",
    "inbox_mail": "Email",
    "drafts_mail": "Email",
    "deleted_mail": "Email",
}
#: The store's kinds that hold messages (RFC 5322 text): Inbox, Drafts, Deleted Items and
#: Sent Items (and the owner's own mail folders, which hold ``sent_mail``).
MAIL_KINDS = ("inbox_mail", "drafts_mail", "deleted_mail", "sent_mail")
#: A TIME_ZONE_INFORMATION of 172 zero bytes: UTC without daylight saving (MS-ASDTYPE 2.7.4).
UTC_TIMEZONE = base64.b64encode(bytes(172)).decode()

# --------------------------------------------------------------------------- text helpers


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value.replace("\r\n", "\n"))
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append("\n" if following in "nN" else following)
        else:
            out.append(char)
    return "".join(out)


def _components(value: str, count: int) -> list[str]:
    """Split a structured value (``N``, ``ADR``, ``ORG``) at unescaped semicolons."""
    parts = re.split(r"(?<!\\);", value)
    parts += [""] * (count - len(parts))
    return [_unescape(p) for p in parts[:count]]


def _lines(text: str) -> str:
    return "".join(fold(line) + "\r\n" for line in text.split("\r\n") if line)


def _body(parent: Element) -> str | None:
    """The plain text of an ``airsyncbase:Body`` (or the old ``Body`` of the class)."""
    body = parent.find("Body")
    if body is None:
        return None
    if body.ns == AIRSYNCBASE:
        return child_text(body, "Data", "") or ""
    return body.text


def _body_element(text: str | None) -> Element | None:
    if not text:
        return None
    return el(
        AIRSYNCBASE,
        "Body",
        el(AIRSYNCBASE, "Type", "1"),
        el(AIRSYNCBASE, "EstimatedDataSize", str(len(text.encode()))),
        el(AIRSYNCBASE, "Data", text),
    )


def eas_datetime(value: str) -> datetime:
    """An ActiveSync date and time (either form) as an aware UTC datetime."""
    text = value.strip().replace("-", "").replace(":", "")
    text = text.split(".")[0].rstrip("Z")
    try:
        return datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise EasError(f"{value!r} is not an ActiveSync date and time", INVALID_CONTENT) from None


def _long(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _compact(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def ical_datetime(line: ContentLine) -> tuple[datetime, bool]:
    """An iCalendar DATE or DATE-TIME (UTC, floating or with TZID) and whether it is a date."""
    value = line.value.strip()
    if line.param("VALUE") == "DATE" or len(value) == 8:
        day = datetime.strptime(value[:8], "%Y%m%d")
        return day.replace(tzinfo=UTC), True
    moment = datetime.strptime(value.rstrip("Z")[:15], "%Y%m%dT%H%M%S")
    if value.endswith("Z"):
        return moment.replace(tzinfo=UTC), False
    tzid = line.param("TZID")
    try:
        zone = ZoneInfo(tzid) if tzid else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return moment.replace(tzinfo=zone).astimezone(UTC), False


# --------------------------------------------------------------------------- contacts

_PHONES = (
    ("MobilePhoneNumber", CONTACTS, "CELL"),
    ("HomePhoneNumber", CONTACTS, "HOME,VOICE"),
    ("Home2PhoneNumber", CONTACTS, "HOME"),
    ("BusinessPhoneNumber", CONTACTS, "WORK,VOICE"),
    ("Business2PhoneNumber", CONTACTS, "WORK"),
    ("BusinessFaxNumber", CONTACTS, "WORK,FAX"),
    ("HomeFaxNumber", CONTACTS, "HOME,FAX"),
    ("PagerNumber", CONTACTS, "PAGER"),
    ("CarPhoneNumber", CONTACTS, "CAR"),
    ("RadioPhoneNumber", CONTACTS, "X-RADIO"),
    ("AssistantPhoneNumber", CONTACTS, "X-ASSISTANT"),
    ("CompanyMainPhone", CONTACTS2, "X-COMPANY"),
    ("MMS", CONTACTS2, "MSG"),
)
_ADDRESSES = (("Business", "WORK"), ("Home", "HOME"), ("Other", "OTHER"))
_ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country")
#: vCard properties this mapping writes; the others of a stored card are kept.
_CONTACT_PROPERTIES = frozenset(
    {
        "FN",
        "N",
        "TEL",
        "EMAIL",
        "ORG",
        "TITLE",
        "ADR",
        "BDAY",
        "URL",
        "NOTE",
        "NICKNAME",
        "CATEGORIES",
        "PHOTO",
        "X-ANNIVERSARY",
        "X-SPOUSE",
        "X-ASSISTANT",
        "X-MANAGER",
        "ROLE",
        "X-OFFICE",
        "X-IM",
        "IMPP",
        "VERSION",
        "BEGIN",
        "END",
        "X-FILE-AS",
    }
)


def _types(line: ContentLine) -> set[str]:
    found: set[str] = set()
    for key, value in line.params:
        if key == "TYPE":
            found.update(t.strip().upper() for t in value.split(","))
    return found


def _phone_element(types: set[str], taken: set[str]) -> tuple[str, str] | None:
    """The first free ActiveSync phone element whose vCard types fit ``types``."""
    for name, ns, wanted in _PHONES:
        if name in taken:
            continue
        want = set(wanted.split(",")) - {"VOICE"}
        if want <= types or (not types - {"VOICE", "PREF"} and name == "HomePhoneNumber"):
            return name, ns
    for name in ("Home2PhoneNumber", "Business2PhoneNumber", "HomePhoneNumber"):
        if name not in taken:
            return name, CONTACTS
    return None


def contact_to_eas(text: str) -> list[Element]:
    """The Contacts (and Contacts2) properties of a vCard, in schema order."""
    props: dict[str, tuple[str, str | list[str]]] = {}
    emails: list[str] = []
    categories: list[str] = []
    note = None
    for line in parse(text):
        value = decoded_value(line)
        if line.name == "N":
            last, first, middle, title, suffix = _components(value, 5)
            for name, part in (
                ("LastName", last),
                ("FirstName", first),
                ("MiddleName", middle),
                ("Title", title),
                ("Suffix", suffix),
            ):
                if part:
                    props[name] = (CONTACTS, part)
        elif line.name == "FN" and _unescape(value):
            props.setdefault("FileAs", (CONTACTS, _unescape(value)))
        elif line.name == "TEL" and value.strip():
            found = _phone_element(_types(line), set(props))
            if found:
                props[found[0]] = (found[1], value.strip())
        elif line.name == "EMAIL" and value.strip() and len(emails) < 3:
            emails.append(value.strip())
        elif line.name == "ORG":
            company, department = _components(value, 2)
            if company:
                props["CompanyName"] = (CONTACTS, company)
            if department:
                props["Department"] = (CONTACTS, department)
        elif line.name == "TITLE" and value:
            props["JobTitle"] = (CONTACTS, _unescape(value))
        elif line.name == "ADR":
            types = _types(line)
            kind = "Business" if "WORK" in types else "Other" if "OTHER" in types else "Home"
            _, _, street, city, state, postal, country = _components(value, 7)
            for part, part_value in zip(
                _ADDRESS_PARTS, (street, city, state, postal, country), strict=True
            ):
                if part_value:
                    props[f"{kind}Address{part}"] = (CONTACTS, part_value)
        elif line.name == "BDAY" and value.strip():
            props["Birthday"] = (CONTACTS, _vcard_date(value))
        elif line.name == "X-ANNIVERSARY" and value.strip():
            props["Anniversary"] = (CONTACTS, _vcard_date(value))
        elif line.name == "URL" and value:
            props["WebPage"] = (CONTACTS, value.strip())
        elif line.name == "NOTE" and value:
            note = _unescape(value)
        elif line.name == "NICKNAME" and value:
            props["NickName"] = (CONTACTS2, _unescape(value))
        elif line.name == "X-SPOUSE" and value:
            props["Spouse"] = (CONTACTS, _unescape(value))
        elif line.name == "X-MANAGER" and value:
            props["ManagerName"] = (CONTACTS2, _unescape(value))
        elif line.name == "CATEGORIES" and value:
            categories += [_unescape(c) for c in re.split(r"(?<!\\),", value) if c]
        elif (
            line.name == "PHOTO"
            and value
            and (line.param("ENCODING") or "").upper() in ("B", "BASE64")
        ):
            props["Picture"] = (CONTACTS, value.strip())
    for index, address in enumerate(emails, 1):
        props[f"Email{index}Address"] = (CONTACTS, address)
    if categories:
        props["Categories"] = (CONTACTS, categories)
    order = _CONTACT_ORDER
    out: list[Element] = []
    for name in sorted(props, key=lambda n: order.get((props[n][0], n), 999)):
        ns, value = props[name]
        if isinstance(value, list):
            out.append(el(ns, name, *(el(ns, "Category", c) for c in value)))
        else:
            out.append(el(ns, name, value))
    body = _body_element(note)
    if body is not None:
        out.insert(0, body)
    return out


def _order(ns: str) -> dict[tuple[str, str], int]:
    """Schema order of a page's elements: the order of their tokens."""
    for page, (namespace, tags) in PAGES.items():
        if namespace == ns:
            return {(ns, tag): page * 256 + token for token, tag in tags.items()}
    return {}


_CONTACT_ORDER = _order(CONTACTS) | _order(CONTACTS2)


def _vcard_date(value: str) -> str:
    """A vCard date (``1980-05-06``, ``19800506``) as ActiveSync's date and time."""
    digits = value.strip().replace("-", "")[:8]
    try:
        day = datetime.strptime(digits, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return value.strip()
    return _long(day)


def contact_from_eas(data: Element, keep: str | None = None) -> str:
    """A vCard 3.0 of an ``ApplicationData`` of class Contacts."""
    get = {child.tag: child for child in data.elements()}

    def text(name: str) -> str:
        found = get.get(name)
        return found.text.strip() if found is not None else ""

    lines = ["BEGIN:VCARD", "VERSION:3.0"]
    name_parts = [text(n) for n in ("LastName", "FirstName", "MiddleName", "Title", "Suffix")]
    full = (
        text("FileAs")
        or " ".join(
            p
            for p in (
                text("Title"),
                text("FirstName"),
                text("MiddleName"),
                text("LastName"),
                text("Suffix"),
            )
            if p
        )
        or text("CompanyName")
        or text("Email1Address")
    )
    lines.append(f"FN:{_escape(full)}")
    lines.append("N:" + ";".join(_escape(p) for p in name_parts))
    for name, _, types in _PHONES:
        if text(name):
            lines.append(f"TEL;TYPE={types}:{text(name)}")
    for index in (1, 2, 3):
        address = text(f"Email{index}Address")
        if address:
            match = re.search(r"<([^>]+)>", address)
            lines.append(f"EMAIL;TYPE=INTERNET:{match.group(1) if match else address}")
    if text("CompanyName") or text("Department"):
        lines.append(f"ORG:{_escape(text('CompanyName'))};{_escape(text('Department'))}")
    if text("JobTitle"):
        lines.append(f"TITLE:{_escape(text('JobTitle'))}")
    for kind, vtype in _ADDRESSES:
        parts = [text(f"{kind}Address{part}") for part in _ADDRESS_PARTS]
        if any(parts):
            lines.append(f"ADR;TYPE={vtype}:;;" + ";".join(_escape(p) for p in parts))
    for name, prop in (("Birthday", "BDAY"), ("Anniversary", "X-ANNIVERSARY")):
        if text(name):
            lines.append(f"{prop}:{eas_datetime(text(name)).date().isoformat()}")
    if text("WebPage"):
        lines.append(f"URL:{text('WebPage')}")
    for name, prop in (
        ("NickName", "NICKNAME"),
        ("Spouse", "X-SPOUSE"),
        ("ManagerName", "X-MANAGER"),
    ):
        if text(name):
            lines.append(f"{prop}:{_escape(text(name))}")
    categories = get.get("Categories")
    if categories is not None and categories.elements():
        lines.append("CATEGORIES:" + ",".join(_escape(c.text) for c in categories.elements()))
    if text("Picture"):
        lines.append(f"PHOTO;ENCODING=b;TYPE=JPEG:{text('Picture')}")
    note = _body(data)
    if note:
        lines.append(f"NOTE:{_escape(note)}")
    if keep:
        lines += [raw for raw in unfold(keep) if _name_of(raw) not in _CONTACT_PROPERTIES]
    lines.append("END:VCARD")
    return _lines("\r\n".join(lines))


def _name_of(raw: str) -> str:
    head = re.split(r"[;:]", raw, maxsplit=1)[0].strip().upper()
    return head.rsplit(".", 1)[-1]


# --------------------------------------------------------------------------- calendar

_SENSITIVITY = {"PUBLIC": "0", "PRIVATE": "2", "CONFIDENTIAL": "3"}
_CLASS = {"0": "PUBLIC", "1": "PRIVATE", "2": "PRIVATE", "3": "CONFIDENTIAL"}
_FREQ = {"DAILY": "0", "WEEKLY": "1", "MONTHLY": "2", "YEARLY": "5"}
_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")  # DayOfWeek bits 1, 2, 4, ...
_EVENT_PROPERTIES = frozenset(
    {
        "UID",
        "DTSTART",
        "DTEND",
        "SUMMARY",
        "LOCATION",
        "DESCRIPTION",
        "CLASS",
        "TRANSP",
        "RRULE",
        "CATEGORIES",
        "DTSTAMP",
        "BEGIN",
        "END",
        "DURATION",
    }
)


def _component(text: str, name: str) -> tuple[list[ContentLine], list[str]]:
    """The lines of the first ``name`` component (without nested ones) and its raw lines."""
    lines: list[ContentLine] = []
    raw: list[str] = []
    depth = 0
    inside = False
    for raw_line in unfold(text):
        upper = raw_line.upper()
        if upper == f"BEGIN:{name}" and not inside:
            inside, depth = True, 0
            continue
        if not inside:
            continue
        if upper.startswith("BEGIN:"):
            depth += 1
        elif upper == f"END:{name}" and depth == 0:
            break
        elif upper.startswith("END:"):
            depth -= 1
            raw.append(raw_line)
            continue
        raw.append(raw_line)
        if depth == 0:
            lines.extend(parse(raw_line))
    return lines, raw


def _recurrence_to_eas(rule: str, ns: str) -> Element | None:
    parts = dict(p.split("=", 1) for p in rule.split(";") if "=" in p)
    kind = _FREQ.get(parts.get("FREQ", "").upper())
    if kind is None:
        return None
    children: list[Element] = []
    days = [d[-2:].upper() for d in parts.get("BYDAY", "").split(",") if d]
    if kind == "2" and days:
        kind = "3"
    if kind == "5" and days:
        kind = "6"
    children.append(el(ns, "Type", kind))
    if "UNTIL" in parts:
        until = parts["UNTIL"]
        if len(until) == 8:
            until += "T000000Z"
        children.append(el(ns, "Until", until if ns == CALENDAR else _long(eas_datetime(until))))
    if "COUNT" in parts:
        children.append(el(ns, "Occurrences", parts["COUNT"]))
    children.append(el(ns, "Interval", parts.get("INTERVAL", "1")))
    if days:
        mask = sum(1 << _DAYS.index(d) for d in days if d in _DAYS)
        children.append(el(ns, "DayOfWeek", str(mask)))
    if "BYMONTHDAY" in parts:
        children.append(el(ns, "DayOfMonth", parts["BYMONTHDAY"]))
    if "BYMONTH" in parts:
        children.append(el(ns, "MonthOfYear", parts["BYMONTH"]))
    return el(ns, "Recurrence", *children)


def _recurrence_from_eas(recurrence: Element) -> str:
    kind = child_text(recurrence, "Type", "0") or "0"
    freq = {
        "0": "DAILY",
        "1": "WEEKLY",
        "2": "MONTHLY",
        "3": "MONTHLY",
        "5": "YEARLY",
        "6": "YEARLY",
    }.get(kind, "DAILY")
    parts = [f"FREQ={freq}"]
    interval = child_text(recurrence, "Interval")
    if interval and interval != "1":
        parts.append(f"INTERVAL={interval}")
    if child_text(recurrence, "Occurrences"):
        parts.append(f"COUNT={child_text(recurrence, 'Occurrences')}")
    if child_text(recurrence, "Until"):
        parts.append(f"UNTIL={_compact(eas_datetime(child_text(recurrence, 'Until') or ''))}")
    mask = child_text(recurrence, "DayOfWeek")
    if mask and mask.isdigit():
        parts.append("BYDAY=" + ",".join(d for i, d in enumerate(_DAYS) if int(mask) >> i & 1))
    if child_text(recurrence, "DayOfMonth"):
        parts.append(f"BYMONTHDAY={child_text(recurrence, 'DayOfMonth')}")
    if child_text(recurrence, "MonthOfYear"):
        parts.append(f"BYMONTH={child_text(recurrence, 'MonthOfYear')}")
    return "RRULE:" + ";".join(parts)


def event_to_eas(text: str) -> list[Element]:
    """The Calendar properties of the first VEVENT of an iCalendar (times in UTC)."""
    lines, _ = _component(text, "VEVENT")
    by_name: dict[str, ContentLine] = {}
    for line in lines:
        by_name.setdefault(line.name, line)
    start, all_day = (
        ical_datetime(by_name["DTSTART"])
        if "DTSTART" in by_name
        else (datetime.now(UTC).replace(microsecond=0), False)
    )
    if "DTEND" in by_name:
        end, _ = ical_datetime(by_name["DTEND"])
    else:
        end = start + (timedelta(days=1) if all_day else timedelta(0))
    out = [
        el(CALENDAR, "TimeZone", UTC_TIMEZONE),
        el(CALENDAR, "AllDayEvent", "1" if all_day else "0"),
    ]
    description = decoded_value(by_name["DESCRIPTION"]) if "DESCRIPTION" in by_name else None
    body = _body_element(_unescape(description) if description else None)
    if body is not None:
        out.append(body)
    out.append(
        el(
            CALENDAR,
            "BusyStatus",
            "0" if by_name.get("TRANSP") and by_name["TRANSP"].value == "TRANSPARENT" else "2",
        )
    )
    if "CATEGORIES" in by_name:
        out.append(
            el(
                CALENDAR,
                "Categories",
                *(
                    el(CALENDAR, "Category", _unescape(c))
                    for c in re.split(r"(?<!\\),", by_name["CATEGORIES"].value)
                    if c
                ),
            )
        )
    stamp = datetime.now(UTC)
    out.append(el(CALENDAR, "DtStamp", _compact(stamp)))
    out.append(el(CALENDAR, "EndTime", _compact(end)))
    if "LOCATION" in by_name:
        out.append(el(CALENDAR, "Location", _unescape(decoded_value(by_name["LOCATION"]))))
    out.append(el(CALENDAR, "MeetingStatus", "0"))
    if "RRULE" in by_name:
        recurrence = _recurrence_to_eas(by_name["RRULE"].value, CALENDAR)
        if recurrence is not None:
            out.append(recurrence)
    cls = by_name["CLASS"].value.upper() if "CLASS" in by_name else "PUBLIC"
    out.append(el(CALENDAR, "Sensitivity", _SENSITIVITY.get(cls, "0")))
    if "SUMMARY" in by_name:
        out.append(el(CALENDAR, "Subject", _unescape(decoded_value(by_name["SUMMARY"]))))
    out.append(el(CALENDAR, "StartTime", _compact(start)))
    if "UID" in by_name:
        out.append(el(CALENDAR, "UID", by_name["UID"].value.strip()))
    return out


def event_from_eas(data: Element, keep: str | None = None) -> str:
    """An iCalendar 2.0 VEVENT of an ``ApplicationData`` of class Calendar."""

    def text(name: str) -> str:
        return (child_text(data, name, "") or "").strip()

    uid = text("UID") or text("ClientUid")
    if not uid and keep:
        found, _ = _component(keep, "VEVENT")
        uid = next((line.value for line in found if line.name == "UID"), "")
    start = eas_datetime(text("StartTime")) if text("StartTime") else datetime.now(UTC)
    end = eas_datetime(text("EndTime")) if text("EndTime") else start
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//EMM//ActiveSync//EN", "BEGIN:VEVENT"]
    if uid:
        lines.append(f"UID:{uid}")
    lines.append(f"DTSTAMP:{_compact(datetime.now(UTC))}")
    if text("AllDayEvent") == "1":
        lines.append(f"DTSTART;VALUE=DATE:{start.strftime('%Y%m%d')}")
        lines.append(f"DTEND;VALUE=DATE:{max(end, start + timedelta(days=1)).strftime('%Y%m%d')}")
    else:
        lines.append(f"DTSTART:{_compact(start)}")
        lines.append(f"DTEND:{_compact(end)}")
    if text("Subject"):
        lines.append(f"SUMMARY:{_escape(text('Subject'))}")
    location = data.find("Location")
    if location is not None:
        where = child_text(location, "DisplayName") if location.ns == AIRSYNCBASE else location.text
        if where:
            lines.append(f"LOCATION:{_escape(where)}")
    note = _body(data)
    if note:
        lines.append(f"DESCRIPTION:{_escape(note)}")
    if text("Sensitivity"):
        lines.append(f"CLASS:{_CLASS.get(text('Sensitivity'), 'PUBLIC')}")
    if text("BusyStatus") == "0":
        lines.append("TRANSP:TRANSPARENT")
    categories = data.find("Categories")
    if categories is not None and categories.elements():
        lines.append("CATEGORIES:" + ",".join(_escape(c.text) for c in categories.elements()))
    recurrence = data.find("Recurrence")
    if recurrence is not None:
        lines.append(_recurrence_from_eas(recurrence))
    if keep:
        _, raw = _component(keep, "VEVENT")
        lines += [r for r in raw if _name_of(r) not in _EVENT_PROPERTIES]
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return _lines("\r\n".join(lines))


# --------------------------------------------------------------------------- tasks

_TASK_PROPERTIES = frozenset(
    {
        "UID",
        "SUMMARY",
        "DESCRIPTION",
        "PRIORITY",
        "STATUS",
        "COMPLETED",
        "DUE",
        "DTSTART",
        "CLASS",
        "CATEGORIES",
        "RRULE",
        "DTSTAMP",
        "BEGIN",
        "END",
        "PERCENT-COMPLETE",
    }
)


def task_to_eas(text: str) -> list[Element]:
    """The Tasks properties of the first VTODO of an iCalendar."""
    lines, _ = _component(text, "VTODO")
    by_name: dict[str, ContentLine] = {}
    for line in lines:
        by_name.setdefault(line.name, line)
    out: list[Element] = []
    description = decoded_value(by_name["DESCRIPTION"]) if "DESCRIPTION" in by_name else None
    body = _body_element(_unescape(description) if description else None)
    if body is not None:
        out.append(body)
    if "CATEGORIES" in by_name:
        out.append(
            el(
                TASKS,
                "Categories",
                *(
                    el(TASKS, "Category", _unescape(c))
                    for c in re.split(r"(?<!\\),", by_name["CATEGORIES"].value)
                    if c
                ),
            )
        )
    done = "STATUS" in by_name and by_name["STATUS"].value.upper() == "COMPLETED"
    out.append(el(TASKS, "Complete", "1" if done else "0"))
    if done:
        completed = (
            ical_datetime(by_name["COMPLETED"])[0] if "COMPLETED" in by_name else datetime.now(UTC)
        )
        out.append(el(TASKS, "DateCompleted", _long(completed)))
    if "DUE" in by_name:
        due, _ = ical_datetime(by_name["DUE"])
        out.append(el(TASKS, "DueDate", _long(due)))
        out.append(el(TASKS, "UtcDueDate", _long(due)))
    priority = by_name["PRIORITY"].value.strip() if "PRIORITY" in by_name else "0"
    importance = "1"
    if priority.isdigit() and int(priority):
        importance = "2" if int(priority) <= 4 else "1" if int(priority) == 5 else "0"
    out.append(el(TASKS, "Importance", importance))
    if "RRULE" in by_name and "DTSTART" in by_name:
        recurrence = _recurrence_to_eas(by_name["RRULE"].value, TASKS)
        if recurrence is not None:
            start, _ = ical_datetime(by_name["DTSTART"])
            recurrence.children.insert(1, el(TASKS, "Start", _long(start)))
            out.append(recurrence)
    cls = by_name["CLASS"].value.upper() if "CLASS" in by_name else "PUBLIC"
    out.append(el(TASKS, "Sensitivity", _SENSITIVITY.get(cls, "0")))
    if "DTSTART" in by_name:
        start, _ = ical_datetime(by_name["DTSTART"])
        out.append(el(TASKS, "StartDate", _long(start)))
        out.append(el(TASKS, "UtcStartDate", _long(start)))
    out.append(
        el(
            TASKS,
            "Subject",
            _unescape(decoded_value(by_name["SUMMARY"])) if "SUMMARY" in by_name else "",
        )
    )
    return out


def task_from_eas(data: Element, keep: str | None = None) -> str:
    """An iCalendar 2.0 VTODO of an ``ApplicationData`` of class Tasks."""

    def text(name: str) -> str:
        return (child_text(data, name, "") or "").strip()

    uid = None
    if keep:
        found, _ = _component(keep, "VTODO")
        uid = next((line.value for line in found if line.name == "UID"), None)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//EMM//ActiveSync//EN", "BEGIN:VTODO"]
    if uid:
        lines.append(f"UID:{uid}")
    lines.append(f"SUMMARY:{_escape(text('Subject'))}")
    note = _body(data)
    if note:
        lines.append(f"DESCRIPTION:{_escape(note)}")
    due = text("UtcDueDate") or text("DueDate")
    if due:
        lines.append(f"DUE:{_compact(eas_datetime(due))}")
    start = text("UtcStartDate") or text("StartDate")
    if start:
        lines.append(f"DTSTART:{_compact(eas_datetime(start))}")
    if text("Complete") == "1":
        lines.append("STATUS:COMPLETED")
        if text("DateCompleted"):
            lines.append(f"COMPLETED:{_compact(eas_datetime(text('DateCompleted')))}")
    else:
        lines.append("STATUS:NEEDS-ACTION")
    importance = text("Importance")
    if importance in ("0", "2"):
        lines.append(f"PRIORITY:{'9' if importance == '0' else '1'}")
    if text("Sensitivity"):
        lines.append(f"CLASS:{_CLASS.get(text('Sensitivity'), 'PUBLIC')}")
    categories = data.find("Categories")
    if categories is not None and categories.elements():
        lines.append("CATEGORIES:" + ",".join(_escape(c.text) for c in categories.elements()))
    recurrence = data.find("Recurrence")
    if recurrence is not None:
        lines.append(_recurrence_from_eas(recurrence))
    if keep:
        _, raw = _component(keep, "VTODO")
        lines += [r for r in raw if _name_of(r) not in _TASK_PROPERTIES]
    lines += ["END:VTODO", "END:VCALENDAR"]
    return _lines("\r\n".join(lines))


# --------------------------------------------------------------------------- notes


def note_to_eas(text: str) -> list[Element]:
    """A plain-text note: its first line is the subject, the whole text the body."""
    body = text.replace("\r\n", "\n").strip("\n")
    subject = body.split("\n", 1)[0][:255]
    return [
        el(NOTES, "Subject", subject),
        _body_element(body)
        or el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Type", "1"), el(AIRSYNCBASE, "Data", "")),
        el(NOTES, "MessageClass", "IPN.StickyNote"),
    ]


def note_from_eas(data: Element, keep: str | None = None) -> str:
    subject = (child_text(data, "Subject", "") or "").strip()
    body = (_body(data) or "").replace("\r\n", "\n").strip("\n")
    if subject and not body.startswith(subject):
        body = f"{subject}\n{body}" if body else subject
    return body + "\n"


# --------------------------------------------------------------------------- mail


def _addresses(value: str | None) -> str:
    return ", ".join(
        f'"{name}" <{address}>' if name else address
        for name, address in getaddresses([value or ""])
        if address
    )


def _plain_text(message: Message) -> str:
    """The text/plain part of a message (or its first text part, tags and all)."""
    parts = message.walk() if message.is_multipart() else [message]
    texts = [part for part in parts if part.get_content_maintype() == "text"]
    chosen = next((p for p in texts if p.get_content_subtype() == "plain"), None)
    chosen = chosen or (texts[0] if texts else None)
    return eas_bodies.part_text(chosen) if chosen is not None else ""


def _has_html(message: Message) -> bool:
    return any(part.get_content_type() == "text/html" for part in message.walk())


#: Where the store keeps what a device may change of a message (MS-ASEMAIL: Read and Flag):
#: headers of the stored text, taken off again before the message is shown or sent.
READ_HEADER = "X-ActiveSync-Read"
FLAG_HEADER = "X-ActiveSync-Flag"
STATE_HEADERS = (READ_HEADER, FLAG_HEADER)
#: The Flag children kept (MS-ASEMAIL 2.2.2.34; FlagStatus is the Email page's ``Status``).
_FLAG_CHILDREN = {
    EMAIL: ("Status", "FlagType", "CompleteTime"),
    TASKS: (
        "StartDate",
        "UtcStartDate",
        "DueDate",
        "UtcDueDate",
        "DateCompleted",
        "ReminderSet",
        "ReminderTime",
        "Subject",
        "OrdinalDate",
        "SubOrdinalDate",
    ),
}
_IMPORTANCE = {"low": "0", "normal": "1", "high": "2"}
_NEWLINE = re.compile(r"\r?\n")


def _head(text: str) -> tuple[list[str], str, str]:
    """A message's header lines, the line ending it uses, and the rest (from the empty line
    that ends the header on)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    if text.startswith(("\r\n", "\n")):
        return [], newline, text
    found = re.search(r"\r?\n\r?\n", text)
    head, rest = (text, "") if found is None else (text[: found.start()], text[found.start() :])
    return _NEWLINE.split(head), newline, rest


def _fields(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Header fields (lower-case name, their lines with continuations)."""
    fields: list[tuple[str, list[str]]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and fields:
            fields[-1][1].append(line)
        else:
            fields.append((line.split(":", 1)[0].strip().lower(), [line]))
    return fields


def drop_headers(text: str, names: tuple[str, ...]) -> str:
    """The message without the header fields ``names`` (its other bytes untouched)."""
    lines, newline, rest = _head(text)
    dropped = {name.lower() for name in names}
    kept = [line for name, group in _fields(lines) if name not in dropped for line in group]
    return newline.join(kept) + rest


def header_value(text: str, name: str) -> str | None:
    """The (unfolded) value of the message's first ``name`` header field."""
    lines, _, _ = _head(text)
    for field_name, group in _fields(lines):
        if field_name == name.lower():
            return " ".join(part.strip() for part in group)[len(name) + 1 :].strip()
    return None


def without_state(text: str) -> str:
    """The message as it was sent: the store's Read and Flag headers taken off (also from
    what a device submits, so no sender can set them for a recipient)."""
    return drop_headers(text, STATE_HEADERS)


def mail_state(text: str) -> tuple[bool, list[tuple[str, str, str]]]:
    """Whether a stored message is read (unmarked: read, as sent messages are), and its
    Flag's children (namespace, tag, value); no children: not flagged."""
    read = header_value(text, READ_HEADER) != "0"
    flag: list[tuple[str, str, str]] = []
    for part in (header_value(text, FLAG_HEADER) or "").split():
        name, _, value = part.partition("=")
        ns, _, tag = name.partition(":")
        if tag in _FLAG_CHILDREN.get(ns, ()):
            flag.append((ns, tag, unquote(value)))
    return read, flag


def with_state(text: str, read: bool, flag: list[tuple[str, str, str]]) -> str:
    """The message with its Read and Flag stored as the store's headers."""
    # Leading blank or folded lines would continue the field put in front of them.
    bare = without_state(text).lstrip(" \t\r\n")
    newline = "\r\n" if "\r\n" in bare else "\n"
    fields = [f"{READ_HEADER}: {int(read)}"]
    if flag:
        values = " ".join(f"{ns}:{tag}={quote(value, safe='')}" for ns, tag, value in flag)
        fields.append(f"{FLAG_HEADER}: {values}")
    return newline.join(fields) + newline + bare


def _flag_of(found: Element) -> list[tuple[str, str, str]]:
    """The children of a device's ``email:Flag`` the store keeps (an empty Flag clears it)."""
    kept: list[tuple[str, str, str]] = []
    for child in found.elements():
        if child.tag in _FLAG_CHILDREN.get(child.ns, ()) and len(child.text) <= 256:
            kept.append((child.ns, child.tag, child.text.strip()))
    return kept[:16]


def _child(parent: Element, tag: str, ns: str) -> Element | None:
    return next((c for c in parent.elements() if c.tag == tag and c.ns == ns), None)


def mail_to_eas(text: str) -> list[Element]:
    """The Email properties (MS-ASEMAIL) of a stored RFC 5322 message, its body as text."""
    message = message_from_string(text, policy=compat32)
    read, flag = mail_state(text)
    try:
        sent = parsedate_to_datetime(message["Date"]) if message["Date"] else None
    except (TypeError, ValueError):
        sent = None
    sent = sent.astimezone(UTC) if sent and sent.tzinfo else datetime.now(UTC)
    to = _addresses(message["To"])
    names = [name or address for name, address in getaddresses([message["To"] or ""])]
    out = [el(EMAIL, "To", to)]
    if message["Cc"]:
        out.append(el(EMAIL, "Cc", _addresses(message["Cc"])))
    importance = _IMPORTANCE.get(str(message["Importance"] or "normal").strip().lower(), "1")
    out += [
        el(EMAIL, "From", _addresses(message["From"])),
        el(EMAIL, "Subject", str(make_header(decode_header(message["Subject"] or "")))),
        el(EMAIL, "DateReceived", _long(sent)),
        el(EMAIL, "DisplayTo", "; ".join(names)),
        el(EMAIL, "Importance", importance),
        el(EMAIL, "Read", "1" if read else "0"),
    ]
    body = _plain_text(message)
    out.append(
        _body_element(body)
        or el(AIRSYNCBASE, "Body", el(AIRSYNCBASE, "Type", "1"), el(AIRSYNCBASE, "Data", ""))
    )
    invitation = eas_compose.meeting_request(text)
    meeting = eas_meetings.meeting_request_element(invitation) if invitation else None
    out.append(el(EMAIL, "MessageClass", eas_meetings.MESSAGE_CLASS if meeting else "IPM.Note"))
    if meeting is not None:
        out.append(meeting)
    out.append(el(EMAIL, "InternetCPID", "65001"))
    if flag:
        out.append(el(EMAIL, "Flag", *(el(ns, tag, value) for ns, tag, value in flag)))
    out += [
        el(
            EMAIL,
            "ContentClass",
            eas_meetings.CONTENT_CLASS if meeting else "urn:content-classes:message",
        ),
        el(AIRSYNCBASE, "NativeBodyType", "2" if _has_html(message) else "1"),
    ]
    return out


def mail_from_eas(data: Element, keep: str | None = None) -> str:
    """A stored message stays as it was sent: a device changes only its Read and Flag
    (MS-ASEMAIL 3.1.5.3); a message is added by SendMail, never by Sync."""
    if keep is None:
        raise EasError("messages are added by SendMail, not by Sync", INVALID_CONTENT)
    read, flag = mail_state(keep)
    found = _child(data, "Read", EMAIL)
    if found is not None:
        read = found.text.strip() == "1"
    flagged = _child(data, "Flag", EMAIL)
    if flagged is not None:
        flag = _flag_of(flagged)
    return with_state(keep, read, flag)


def draft_to_eas(text: str) -> list[Element]:
    """A draft's Email properties, with its Bcc and IsDraft (Email2, protocol 16.0)."""
    out = mail_to_eas(text)
    bcc = message_from_string(text, policy=compat32)["Bcc"]
    if bcc:
        out.append(el(EMAIL2, "Bcc", _addresses(bcc)))
    out.append(el(EMAIL2, "IsDraft", "1"))
    return out


def draft_from_eas(data: Element, keep: str | None = None) -> str:
    """A draft (protocol 16.0, MS-ASEMAIL 3.1.5.3) as an RFC 5322 message: To, Cc, Bcc,
    Subject, Importance and the Body the device sent; in a Change, what it leaves out stays
    as it was (16.0 ghosts absent properties), and Read and Flag change as on any message."""
    try:
        message = (
            message_from_string(without_state(keep), policy=email_default)
            if keep is not None
            else EmailMessage()
        )
        for tag, ns in (("To", EMAIL), ("Cc", EMAIL), ("Bcc", EMAIL2), ("Subject", EMAIL)):
            found = _child(data, tag, ns)
            if found is not None:
                del message[tag]
                if found.text.strip():
                    message[tag] = found.text.strip()
        importance = _child(data, "Importance", EMAIL)
        if importance is not None:
            del message["Importance"]
            names = {value: name for name, value in _IMPORTANCE.items()}
            message["Importance"] = names.get(importance.text.strip(), "normal")
        body = _child(data, "Body", AIRSYNCBASE)
        if body is not None or keep is None:
            html = body is not None and child_text(body, "Type") == "2"
            content = (child_text(body, "Data", "") or "") if body is not None else ""
            message.set_content(content, subtype="html" if html else "plain")
        if message["Date"] is None:
            message["Date"] = format_datetime(datetime.now(UTC))
        text = message.as_string(policy=SMTP)
    except (ValueError, TypeError, LookupError, MessageError) as exc:
        raise EasError(f"the draft cannot be kept: {exc}", INVALID_CONTENT) from exc
    read, flag = mail_state(keep) if keep is not None else (True, [])
    flagged = _child(data, "Flag", EMAIL)
    if flagged is not None:
        flag = _flag_of(flagged)
    return with_state(text, read, flag)


# --------------------------------------------------------------------------- dispatch

_TO_EAS = {
    "sent_mail": mail_to_eas,
    "inbox_mail": mail_to_eas,
    "deleted_mail": mail_to_eas,
    "drafts_mail": draft_to_eas,
    "contacts": contact_to_eas,
    "calendar": event_to_eas,
    "tasks": task_to_eas,
    "notes": note_to_eas,
}
_FROM_EAS = {
    "sent_mail": mail_from_eas,
    "inbox_mail": mail_from_eas,
    "deleted_mail": mail_from_eas,
    "drafts_mail": draft_from_eas,
    "contacts": contact_from_eas,
    "calendar": event_from_eas,
    "tasks": task_from_eas,
    "notes": note_from_eas,
}
#: The content type the store is given for what an ActiveSync device sends.
CONTENT_TYPES = {
    "sent_mail": "message/rfc822",
    "inbox_mail": "message/rfc822",
    "drafts_mail": "message/rfc822",
    "deleted_mail": "message/rfc822",
    "contacts": "text/vcard",
    "calendar": "text/calendar",
    "tasks": "text/calendar",
    "notes": "text/plain",
}


def is_mail(kind: str | None) -> bool:
    """Whether the store's ``kind`` holds messages (Email class)."""
    return kind is not None and CLASSES.get(kind) == "Email"


def application_data(
    kind: str, text: str, bodies: eas_bodies.BodyPreferences | None = None
) -> Element:
    """``airsync:ApplicationData`` of a stored item, its body as ``bodies`` ask (else the
    whole body as plain text)."""
    children = list(_TO_EAS[kind](text))
    if bodies is not None:
        found = next((c for c in children if c.tag == "Body" and c.ns == AIRSYNCBASE), None)
        plain = (child_text(found, "Data", "") or "") if found is not None else ""
        mail = is_mail(kind)
        shown = without_state(text) if mail else text
        content = eas_bodies.mail_content(shown, plain) if mail else eas_bodies.Content(plain)
        children = eas_bodies.shape(children, content, bodies, mail)
    return Element("ApplicationData", AIRSYNC, children)


#: What :func:`application_data` raises for a stored item it cannot read (a malformed date,
#: one past the year 9999, a broken structure): such an item is left out, not answered 500.
UNREADABLE = (ValueError, KeyError, OverflowError, RecursionError)


def item_text(kind: str, data: Element, keep: str | None = None) -> str:
    """The store's text of an ``ApplicationData`` (``keep``: the stored item it changes)."""
    try:
        return _FROM_EAS[kind](data, keep)
    except (ValueError, KeyError) as exc:
        if isinstance(exc, EasError):
            raise
        raise EasError(f"the item cannot be read: {exc}", INVALID_CONTENT) from exc


# --------------------------------------------------------------------------- FilterType dates

#: The longest one step of each RRULE FREQ can take, to bound a series' last occurrence.
_FREQ_STEP = {
    "SECONDLY": timedelta(seconds=1),
    "MINUTELY": timedelta(minutes=1),
    "HOURLY": timedelta(hours=1),
    "DAILY": timedelta(days=1),
    "WEEKLY": timedelta(weeks=1),
    "MONTHLY": timedelta(days=31),
    "YEARLY": timedelta(days=366),
}


def dated(kind: str, text: str) -> tuple[datetime | None, bool]:
    """What Sync's FilterType (MS-ASCMD 2.2.3.68.2) weighs of a stored item: its date, and
    for tasks whether it is complete.

    - calendar: the end of its last occurrence (DTEND, else DTSTART and DURATION, else
      DTSTART, a day later for an all-day event); a series ends at its RRULE UNTIL, or after
      COUNT steps of its FREQ counted at their longest (a month as 31 days); a series
      without an end is None, as is an event without DTSTART (both are always sent);
    - mail: its Date header (None when absent or unreadable: always sent);
    - tasks: no date (None); complete when STATUS is COMPLETED or COMPLETED is set;
    - contacts and notes: (None, False).
    """
    if is_mail(kind):
        message = message_from_string(text, policy=compat32)
        try:
            sent = parsedate_to_datetime(message["Date"]) if message["Date"] else None
        except (TypeError, ValueError):
            return None, False
        if sent is None:
            return None, False
        return (sent.astimezone(UTC) if sent.tzinfo else sent.replace(tzinfo=UTC)), False
    if kind == "tasks":
        lines, _ = _component(text, "VTODO")
        names = {line.name: line for line in lines}
        status = names["STATUS"].value.strip().upper() if "STATUS" in names else ""
        return None, status == "COMPLETED" or "COMPLETED" in names
    if kind != "calendar":
        return None, False
    lines, _ = _component(text, "VEVENT")
    by_name: dict[str, ContentLine] = {}
    for line in lines:
        by_name.setdefault(line.name, line)
    if "DTSTART" not in by_name:
        return None, False
    try:
        start, all_day = ical_datetime(by_name["DTSTART"])
        if "DTEND" in by_name:
            end, _ = ical_datetime(by_name["DTEND"])
        else:
            end = start + (timedelta(days=1) if all_day else _duration(by_name.get("DURATION")))
    except (ValueError, OverflowError):
        return None, False
    if "RRULE" not in by_name:
        return end, False
    parts = dict(p.split("=", 1) for p in by_name["RRULE"].value.upper().split(";") if "=" in p)
    if "UNTIL" in parts:
        try:
            until = eas_datetime(
                parts["UNTIL"] if len(parts["UNTIL"]) > 8 else parts["UNTIL"] + "T235959Z"
            )
        except EasError:
            return None, False
        try:
            return max(end, until + (end - start)), False
        except OverflowError:  # past the year 9999: a series without end
            return None, False
    if "COUNT" in parts and parts["COUNT"].isdigit():
        step = _FREQ_STEP.get(parts.get("FREQ", ""), timedelta(days=366))
        try:
            interval = int(parts["INTERVAL"]) if parts.get("INTERVAL", "").isdigit() else 1
            return end + step * interval * max(int(parts["COUNT"]) - 1, 0), False
        except (OverflowError, ValueError):  # past the year 9999: a series without end
            return None, False
    return None, False


def _duration(line: ContentLine | None) -> timedelta:
    """An iCalendar DURATION (RFC 5545 3.3.6); zero when absent or unreadable."""
    if line is None:
        return timedelta(0)
    found = re.fullmatch(
        r"([+-]?)P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?",
        line.value.strip().upper(),
    )
    if found is None:
        return timedelta(0)
    sign, weeks, days, hours, minutes, seconds = found.groups()
    length = timedelta(
        weeks=int(weeks or 0),
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=int(seconds or 0),
    )
    return -length if sign == "-" else length
