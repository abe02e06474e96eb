"""Messages composed on the service's side, sans-IO: SmartReply and SmartForward (MS-ASCMD
2.2.1.18, 2.2.1.19) and the meeting replies of MeetingResponse (MS-ASCMD 2.2.1.11,
iTIP/iMIP of RFC 5546 and RFC 6047).

A device sends only what its user wrote; unless it says ``ReplaceMime`` the service adds
the original: a reply quotes the original's text under the new text (and names the
original in ``In-Reply-To`` and ``References``), a forward carries the original whole as a
``message/rfc822`` attachment. Everything is built with Python's ``email`` package, so
what is stored is a well-formed RFC 5322 message with CRLF line ends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_string
from email.message import EmailMessage, Message
from email.policy import SMTP, compat32
from email.utils import format_datetime, getaddresses, make_msgid

from .activesync import EasError
from .contentline import unfold
from .eas_bodies import part_text

#: MS-ASCMD common statuses of ComposeMail commands.
INVALID_COMBINATION_OF_IDS = 105
INVALID_MIME = 107
MESSAGE_HAS_NO_RECIPIENT = 119
ITEM_NOT_FOUND = 150


def parse(text: str) -> EmailMessage:
    """A message a device sent; refused (107 InvalidMIME) when it has no header at all."""
    message = message_from_string(text, _class=EmailMessage, policy=SMTP)
    if not message.keys():
        raise EasError("the message is not MIME", INVALID_MIME)
    return message


def recipients(message: Message) -> list[str]:
    """The addresses of To, Cc and Bcc."""
    values = [str(v) for h in ("To", "Cc", "Bcc") for v in message.get_all(h, [])]
    return [address for _, address in getaddresses(values) if address]


def _plain_text(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    for part in parts:
        if part.get_content_type() == "text/plain" and not part.get_filename():
            return part_text(part)
    return ""


def _quoted(original: Message) -> str:
    sender = original.get("From", "")
    when = original.get("Date", "")
    head = f"On {when}, {sender} wrote:" if when else f"{sender} wrote:"
    lines = _plain_text(original).replace("\r\n", "\n").rstrip("\n").split("\n")
    return head + "\n" + "\n".join(f"> {line}" if line else ">" for line in lines) + "\n"


def _stamp(message: EmailMessage) -> None:
    if "Date" not in message:
        message["Date"] = format_datetime(datetime.now(UTC))
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid()
    if "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"


def _append_text(message: EmailMessage, addition: str) -> None:
    """Append text to the message's first plain-text part (a multipart message without
    one gets it as an inline part; an HTML-only message stays as it is)."""
    parts = list(message.walk()) if message.is_multipart() else [message]
    target = next(
        (p for p in parts if p.get_content_type() == "text/plain" and not p.get_filename()),
        None,
    )
    if target is None:
        if message.is_multipart():
            message.add_attachment(addition, subtype="plain", disposition="inline")
        return
    joined = _plain_text(target).rstrip("\r\n") + "\n\n" + addition
    target.set_content(joined)  # type: ignore[attr-defined]  # parts of an EmailMessage


def _as_text(message: EmailMessage) -> str:
    return message.as_string(policy=SMTP)


def reply(new: str, original: str, replace_mime: bool) -> str:
    """SmartReply: the device's message with the original quoted (unless ``ReplaceMime``)."""
    message = parse(new)
    source = message_from_string(original, policy=compat32)
    if not replace_mime:
        _append_text(message, _quoted(source))
    parent = source.get("Message-ID")
    if parent:
        if "In-Reply-To" not in message:
            message["In-Reply-To"] = parent
        if "References" not in message:
            references = source.get("References", "")
            message["References"] = f"{references} {parent}".strip()
    _stamp(message)
    return _as_text(message)


def forward(
    new: str, original: str, replace_mime: bool, forwardees: tuple[tuple[str, str], ...] = ()
) -> str:
    """SmartForward: the device's message with the original attached as ``message/rfc822``
    (unless ``ReplaceMime``); 16.x ``Forwardees`` not yet among the recipients join To."""
    message = parse(new)
    if not replace_mime:
        source = message_from_string(original, _class=EmailMessage, policy=SMTP)
        if not message.is_multipart():
            if "Content-Type" not in message:  # make_mixed moves only Content-* headers
                message.set_content(_plain_text(message))
            message.make_mixed()
        message.add_attachment(source)
    present = {a.lower() for a in recipients(message)}
    extra = [
        f'"{name}" <{email}>' if name else email
        for name, email in forwardees
        if email and email.lower() not in present
    ]
    if extra:
        existing = message.get("To")
        del message["To"]
        message["To"] = ", ".join(([str(existing)] if existing else []) + extra)
    _stamp(message)
    return _as_text(message)


# --------------------------------------------------------------------------- meetings

#: MeetingResponse UserResponse values and the iCalendar PARTSTAT of each.
PARTSTAT = {1: "ACCEPTED", 2: "TENTATIVE", 3: "DECLINED"}
_VERB = {1: "Accepted", 2: "Tentative", 3: "Declined"}


def meeting_request(text: str) -> str | None:
    """The iCalendar object of a meeting request message (its ``text/calendar`` part with
    METHOD:REQUEST), or None when the message is no meeting request."""
    message = message_from_string(text, policy=compat32)
    for part in _own_parts(message):
        if part.get_content_type() != "text/calendar":
            continue
        calendar = part_text(part)
        lines = [line.upper() for line in unfold(calendar)]
        method = (part.get_param("method") or "").upper()
        if ("METHOD:REQUEST" in lines or method == "REQUEST") and "BEGIN:VEVENT" in lines:
            return calendar
    return None


def _own_parts(message: Message) -> list[Message]:
    """The message's parts, but not those of messages attached to it (a forwarded
    invitation is no invitation to the one who forwards it)."""
    if message.get_content_type() == "message/rfc822":
        return []
    if not message.is_multipart():
        return [message]
    found: list[Message] = []
    for part in message.get_payload():
        found += _own_parts(part)  # type: ignore[arg-type]
    return found


def with_response(calendar: str, attendee: str, response: int) -> str:
    """The event of ``calendar`` as the attendee's calendar keeps it: without the iTIP
    METHOD, with the attendee's PARTSTAT set to the response."""
    partstat = PARTSTAT[response]
    out: list[str] = []
    inside = found = False
    for line in unfold(calendar):
        upper = line.upper()
        if upper.startswith("METHOD:"):
            continue
        if upper == "BEGIN:VEVENT":
            inside = True
        if inside and upper.startswith("ATTENDEE") and ":" in line:
            head, _, value = line.partition(":")
            if attendee and value.lower().replace("mailto:", "").strip() == attendee.lower():
                params = [p for p in head.split(";")[1:] if not p.upper().startswith("PARTSTAT=")]
                line = ";".join(["ATTENDEE", *params, f"PARTSTAT={partstat}"]) + ":" + value
                found = True
        if upper == "END:VEVENT" and inside:
            if not found and attendee:
                out.append(f"ATTENDEE;PARTSTAT={partstat}:mailto:{attendee}")
                found = True
            inside = False
        out.append(line)
    return "".join(line + "\r\n" for line in out)


def organizer_of(calendar: str) -> str | None:
    for line in unfold(calendar):
        if line.upper().startswith("ORGANIZER") and ":" in line:
            return line.split(":", 1)[1].replace("mailto:", "").replace("MAILTO:", "").strip()
    return None


def _summary(calendar: str) -> str:
    for line in unfold(calendar):
        if line.upper().startswith("SUMMARY") and ":" in line:
            return line.split(":", 1)[1].replace("\\,", ",").replace("\\;", ";")
    return ""


def meeting_reply(calendar: str, attendee: str, response: int, note: str = "") -> str | None:
    """The iMIP REPLY an attendee sends the organiser (RFC 6047), or None without one."""
    organizer = organizer_of(calendar)
    if not organizer:
        return None
    lines = []
    inside = False
    for line in unfold(with_response(calendar, attendee, response)):
        upper = line.upper()
        if upper == "BEGIN:VEVENT":
            inside = True
        if inside and upper.startswith("ATTENDEE"):
            value = line.split(":", 1)[-1]
            if value.lower().replace("mailto:", "").strip() != attendee.lower():
                continue  # a REPLY names only the attendee who answers
        if upper == "END:VEVENT":
            inside = False
        lines.append(line)
    if lines and lines[0].upper() == "BEGIN:VCALENDAR":
        lines.insert(1, "METHOD:REPLY")
    message = EmailMessage(policy=SMTP)
    message["From"] = attendee
    message["To"] = organizer
    message["Subject"] = f"{_VERB[response]}: {_summary(calendar)}"
    message.set_content(note or f"{_VERB[response]}.")
    message.add_alternative(
        "".join(line + "\r\n" for line in lines), subtype="calendar", params={"method": "REPLY"}
    )
    _stamp(message)
    return _as_text(message)
