"""iCalendar 2.0 (RFC 5545) and vCalendar 1.0: what synchronisation needs of events and tasks.

As with contacts (:mod:`.vcard`), items are stored as received; this module tells whether
two items mean the same (:func:`fingerprint`), their UID and last modification (for slow-sync
matching and "newest wins"), and converts between the two versions for a device that only
accepts the other (:func:`convert`: VERSION, vCalendar's ``AALARM``/``DALARM`` are left as they
are; the properties both share are written the same).
"""

from __future__ import annotations

from .contentline import digest, fold, normalised, parse
from .vcard import compact_stamp

TYPE_20 = "text/calendar"
TYPE_10 = "text/x-vcalendar"

#: Rewritten by clients on every save, no part of the item's meaning.
_VOLATILE = frozenset(
    {"VERSION", "PRODID", "DTSTAMP", "LAST-MODIFIED", "CREATED", "DCREATED", "UID", "SEQUENCE"}
)


def version(text: str) -> str:
    for line in parse(text):
        if line.name == "VERSION":
            return line.value.strip()
    return "2.0"


def content_type(text: str) -> str:
    return TYPE_10 if version(text) == "1.0" else TYPE_20


def fingerprint(text: str) -> str:
    lines = parse(text)
    summary = next((line.value for line in lines if line.name == "SUMMARY"), None)
    # Some clients fill an absent DESCRIPTION with the SUMMARY: a repetition means nothing.
    lines = [line for line in lines if not (line.name == "DESCRIPTION" and line.value == summary)]
    return digest(normalised(lines, ignore=_VOLATILE))


def uid(text: str) -> str | None:
    lines = parse(text)
    # A recurring event's detached instances share the UID; RECURRENCE-ID tells them apart.
    found = next((line.value.strip() for line in lines if line.name == "UID"), None)
    recurrence = next((line.value.strip() for line in lines if line.name == "RECURRENCE-ID"), "")
    if not found:
        return None
    return f"{found}/{recurrence}" if recurrence else found


def revision(text: str) -> str | None:
    """LAST-MODIFIED (else DTSTAMP) as a sortable UTC stamp, or None."""
    stamps = {line.name: line.value for line in parse(text)}
    value = stamps.get("LAST-MODIFIED") or stamps.get("DTSTAMP")
    return compact_stamp(value) if value else None


def convert(text: str, target_version: str) -> str:
    """The item as iCalendar 2.0 or vCalendar 1.0 (``target_version`` "2.0" or "1.0")."""
    if version(text) == target_version:
        return text
    out: list[str] = []
    for line in parse(text):
        if line.name == "VERSION":
            out.append(f"VERSION:{target_version}")
            continue
        params = "".join(f";{key}={value}" for key, value in line.params)
        out.append(fold(f"{line.name}{params}:{line.value}"))
    return "\r\n".join(out) + "\r\n"
