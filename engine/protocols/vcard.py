"""vCard 2.1 and 3.0 (RFC 2426): what synchronisation needs to know about a contact.

The service keeps a contact as the device sent it. It needs to know (1) whether two contacts
mean the same (:func:`fingerprint`, used to recognise items in a slow sync and to skip
no-op conflicts), (2) the contact's UID and revision (:func:`uid`, :func:`revision`, for
matching and "newest wins"), and (3) how to hand it to a device that only accepts the other
version (:func:`convert`).
"""

from __future__ import annotations

import re

from .contentline import ContentLine, decoded_value, digest, fold, normalised, parse

TYPE_21 = "text/x-vcard"
TYPE_30 = "text/vcard"

#: Rewritten by clients on every save, no part of the contact's meaning.
_VOLATILE = frozenset({"VERSION", "PRODID", "REV", "X-EVOLUTION-FILE-AS", "UID", "BEGIN", "END"})


def version(text: str) -> str:
    for line in parse(text):
        if line.name == "VERSION":
            return line.value.strip()
    return "2.1"


def content_type(text: str) -> str:
    return TYPE_30 if version(text) in ("3.0", "4.0") else TYPE_21


def fingerprint(text: str) -> str:
    return digest(normalised(parse(text), ignore=_VOLATILE))


def uid(text: str) -> str | None:
    for line in parse(text):
        if line.name == "UID" and line.value.strip():
            return line.value.strip()
    return None


def revision(text: str) -> str | None:
    """REV as a sortable UTC stamp (``YYYYMMDDTHHMMSSZ``), or None."""
    for line in parse(text):
        if line.name == "REV":
            return compact_stamp(line.value)
    return None


def compact_stamp(value: str) -> str | None:
    digits = re.sub(r"[^0-9T]", "", value.strip().upper())
    if len(digits) < 8:
        return None
    return (digits + "T000000")[:15] if "T" not in digits else digits[:15]


def convert(text: str, target_version: str) -> str:
    """The contact in vCard ``target_version`` ("2.1" or "3.0"); same text if already so."""
    if version(text) == target_version:
        return text
    out = ["BEGIN:VCARD", f"VERSION:{target_version}"]
    for line in parse(text):
        if line.name in ("BEGIN", "END", "VERSION"):
            continue
        out.append(fold(_convert_line(line, target_version)))
    out.append("END:VCARD")
    return "\r\n".join(out) + "\r\n"


def _convert_line(line: ContentLine, target_version: str) -> str:
    value = decoded_value(line)
    params: list[str] = []
    types: list[str] = []
    for key, param_value in line.params:
        if key in ("ENCODING", "CHARSET"):
            if key == "ENCODING" and param_value.upper() in ("B", "BASE64"):
                params.append("ENCODING=" + ("b" if target_version == "3.0" else "BASE64"))
            continue
        if key == "TYPE":
            types.extend(t for t in param_value.split(",") if t)
        else:
            params.append(f"{key}={param_value}")
    if types:
        if target_version == "3.0":
            params.append("TYPE=" + ",".join(types))
        else:
            params.extend(types)
    if target_version == "2.1" and any(ord(char) > 127 for char in value):
        params.append("CHARSET=UTF-8")
    return ";".join([line.name, *params]) + ":" + value
