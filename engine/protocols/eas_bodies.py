"""Item bodies as the device asks for them (MS-ASAIRS 2.2.2.9 Body, 2.2.2.12 BodyPreference,
2.2.2.11 BodyPartPreference), sans-IO.

A device names, in a Sync collection's ``Options``, an ItemOperations ``Fetch``'s
``Options`` or a Search's ``Options``, the body types it takes: 1 plain text, 2 HTML,
3 RTF (not offered here), 4 MIME (mail only, and only when ``airsync:MIMESupport`` lets
it: 2 for every message, 1 for S/MIME messages). Each preference may bound the data
(``TruncationSize``, in bytes, cut on a character boundary), ask for all of it or nothing
(``AllOrNone``) and, from protocol 14.0, a plain-text ``Preview`` of up to 255 characters.
The body goes out as MIME when the device asked for it and may have it, else as the item's
native type when asked for, else as HTML, else as plain text; contacts, events, tasks and
notes have plain text only (bounded as the first preference says). The preferences of a
Sync collection hold for the device's later Syncs of the folder that name none (MS-ASAIRS
2.2.2.12). ``EstimatedDataSize`` is always the whole body's size, ``Truncated`` says
whether ``Data`` holds less. A 12.1 device gets no ``Preview`` (the element is 14.0's);
``BodyPartPreference`` (14.1) is answered with an HTML ``BodyPart`` of a message.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from email import message_from_string
from email.message import Message
from email.policy import SMTP, compat32

from .activesync import INVALID_XML, EasError, child_text, el, integer
from .activesync_tables import AIRSYNC, AIRSYNCBASE
from .wbxml import Element

PLAIN, HTML, RTF, MIME = 1, 2, 3, 4
#: The longest Preview MS-ASAIRS allows.
MAX_PREVIEW = 255
_MAX_SIZE = 4_294_967_295


@dataclass(frozen=True)
class BodyPreference:
    """One ``BodyPreference`` (or ``BodyPartPreference``) of a request."""

    type: int
    truncation_size: int | None = None
    all_or_none: bool = False
    preview: int = 0


@dataclass(frozen=True)
class BodyPreferences:
    """What a request's options say about bodies, and the protocol version asking."""

    version: str
    bodies: tuple[BodyPreference, ...] = ()
    parts: tuple[BodyPreference, ...] = ()
    mime_support: int = 0

    @property
    def at_least_14(self) -> bool:
        return float(self.version) >= 14.0


@dataclass(frozen=True)
class Content:
    """The body of an item in each type the service can give it in."""

    plain: str
    html: str | None = None
    mime: str | None = None
    native: int = PLAIN
    signed: bool = False

    def of(self, wanted: int) -> str | None:
        if wanted == PLAIN:
            return self.plain
        if wanted == HTML:
            return self.html
        if wanted == MIME:
            return self.mime
        return None


def _preference(found: Element, version: str) -> BodyPreference:
    kind = integer(child_text(found, "Type"), "Type", 1, 4)
    if kind is None:
        raise EasError(f"{found.tag} without Type", INVALID_XML)
    size = integer(child_text(found, "TruncationSize"), "TruncationSize", 0, _MAX_SIZE)
    all_or_none = child_text(found, "AllOrNone", "0") == "1"
    preview = integer(child_text(found, "Preview"), "Preview", 0, MAX_PREVIEW) or 0
    if float(version) < 14.0:
        preview = 0  # Preview is an element of 14.0 and later
    return BodyPreference(kind, size, all_or_none, preview)


def preferences_of(
    parent: Element | None, version: str, item_class: str | None = None
) -> BodyPreferences | None:
    """The body preferences of a request element that holds ``Options`` (a Sync Collection,
    an ItemOperations Fetch, a Search Store) or is itself the ``Options``; None when it says
    nothing about bodies. Of several ``Options`` (one per class from 14.0) the one for
    ``item_class``, else the one without a ``Class``, counts."""
    if parent is None:
        return None
    options = (
        [parent]
        if parent.tag == "Options"
        else [c for c in parent.elements() if c.tag == "Options"]
    )
    chosen = None
    for candidate in options:
        given = child_text(candidate, "Class")
        if given is None or (item_class is not None and given == item_class):
            chosen = candidate
            if given is not None:
                break
    if chosen is None:
        return None
    bodies = tuple(
        _preference(c, version)
        for c in chosen.elements()
        if c.tag == "BodyPreference" and c.ns == AIRSYNCBASE
    )
    parts = tuple(
        _preference(c, version)
        for c in chosen.elements()
        if c.tag == "BodyPartPreference" and c.ns == AIRSYNCBASE
    )
    mime = integer(
        next(
            (c.text for c in chosen.elements() if c.tag == "MIMESupport" and c.ns == AIRSYNC), None
        ),
        "MIMESupport",
        0,
        2,
    )
    if not bodies and not parts and mime is None:
        return None
    return BodyPreferences(version, bodies, parts if float(version) >= 14.1 else (), mime or 0)


# --------------------------------------------------------------------------- content


def part_text(part: Message) -> str:
    """The text of a MIME part: decoded from its transfer encoding and charset, or as it
    stands when it is unencoded (a stored message is text already: 8-bit UTF-8 survives)."""
    encoding = (part.get("Content-Transfer-Encoding") or "").strip().lower()
    payload = part.get_payload()
    if encoding in ("", "7bit", "8bit", "binary") and isinstance(payload, str):
        return payload
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def html_of_text(text: str) -> str:
    """Plain text as a small HTML document (for a device that takes HTML only)."""
    escaped = html.escape(text).replace("\r\n", "\n").replace("\n", "<br>\n")
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        f"</head><body>{escaped}</body></html>"
    )


def mime_of(stored: str) -> str:
    """A stored message as an RFC 5322 message with CRLF line ends, re-serialised by the
    ``email`` package (what was stored may have bare LFs)."""
    message = message_from_string(stored, policy=SMTP)
    return message.as_string(policy=SMTP)


def mail_content(stored: str, plain: str) -> Content:
    """The body types of a stored message: its text part, its HTML part (or the text as
    HTML), the message itself."""
    message = message_from_string(stored, policy=compat32)
    parts = list(message.walk()) if message.is_multipart() else [message]
    html_part = next((p for p in parts if p.get_content_type() == "text/html"), None)
    signed = message.get_content_type() in ("multipart/signed", "application/pkcs7-mime")
    return Content(
        plain=plain,
        html=part_text(html_part) if html_part is not None else html_of_text(plain),
        mime=mime_of(stored),
        native=HTML if html_part is not None else PLAIN,
        signed=signed,
    )


# --------------------------------------------------------------------------- shaping


def _cut(data: str, size: int) -> str:
    """At most ``size`` bytes of UTF-8, never half a character."""
    return data.encode()[:size].decode("utf-8", "ignore")


def _preview(plain: str, length: int) -> str:
    return " ".join(plain.split())[:length]


def _choose(content: Content, preferences: BodyPreferences, mail: bool) -> BodyPreference:
    """The preference answered: MIME when asked for and allowed (the device takes the
    message whole), else the native type if asked for, else HTML, else plain text."""
    usable: list[BodyPreference] = []
    for preference in preferences.bodies:
        if preference.type == MIME:
            if not mail or not (
                preferences.mime_support == 2 or (preferences.mime_support == 1 and content.signed)
            ):
                continue
        elif preference.type == RTF or (preference.type == HTML and not mail):
            continue
        usable.append(preference)
    for wanted in (MIME, content.native, HTML, PLAIN):
        found = next((p for p in usable if p.type == wanted), None)
        if found is not None:
            return found
    # Nothing asked for can be given (HTML of a contact, say): plain text, bounded as asked.
    first = preferences.bodies[0] if preferences.bodies else BodyPreference(PLAIN)
    return replace(first, type=PLAIN)


def body(
    content: Content, preference: BodyPreference, at_least_14: bool, tag: str = "Body"
) -> Element:
    """An ``airsyncbase:Body`` (or ``BodyPart``) of ``content`` shaped by ``preference``."""
    data = content.of(preference.type) or ""
    size = len(data.encode())
    children: list[Element | str | bytes | None] = []
    if tag == "BodyPart":
        children.append(el(AIRSYNCBASE, "Status", "1"))
    children += [
        el(AIRSYNCBASE, "Type", str(preference.type)),
        el(AIRSYNCBASE, "EstimatedDataSize", str(size)),
    ]
    limit = preference.truncation_size
    if limit is not None and size > limit:
        children.append(el(AIRSYNCBASE, "Truncated", "1"))
        if not preference.all_or_none:
            children.append(el(AIRSYNCBASE, "Data", _cut(data, limit)))
    else:
        if tag == "BodyPart" or limit is not None:
            children.append(el(AIRSYNCBASE, "Truncated", "0"))
        children.append(el(AIRSYNCBASE, "Data", data))
    if preference.preview and at_least_14:
        children.append(el(AIRSYNCBASE, "Preview", _preview(content.plain, preference.preview)))
    return el(AIRSYNCBASE, tag, *children)


def shape(
    children: list[Element], content: Content, preferences: BodyPreferences, mail: bool
) -> list[Element]:
    """An item's properties with its ``Body`` shaped by the preferences (and a ``BodyPart``
    after it for a message when the device asked for one)."""
    out: list[Element] = []
    for child in children:
        if child.tag == "Body" and child.ns == AIRSYNCBASE:
            if preferences.bodies or not preferences.parts:
                chosen = _choose(content, preferences, mail)
                out.append(body(content, chosen, preferences.at_least_14))
            if mail and preferences.parts:
                part = next((p for p in preferences.parts if p.type == HTML), None)
                if part is not None:
                    out.append(body(content, part, True, "BodyPart"))
            continue
        out.append(child)
    return out
