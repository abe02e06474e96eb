"""Exchange ActiveSync look-ups: Search (MS-ASCMD 2.2.1.16), Find (2.2.1.2, protocol 16.1)
and ResolveRecipients (2.2.1.15).

The Global Address List is the caller's own organisation's active users and resources
(:mod:`engine.store.activesync_search`): display name, email address, alias (the login),
first and last name, company (the organisation); no pictures (a requested ``Picture`` is
answered 173 NoPicture). A mailbox query is ``FreeText`` matched, word by word and without
regard to case, against the subject, addresses and text of the owner's stored messages in
their default folders, optionally within one folder (more than ``MAX_WORDS`` distinct words
is Search's "too complex", 8, and Find's invalid request, 2); results carry the message's
properties with its body as the request's ``BodyPreference`` asks. ``DocumentLibrary`` has
no libraries behind it: 16.x does not know the store (Store status 2), earlier versions are
denied access (5).

ResolveRecipients resolves each distinct ``To`` (at most 100, more is status 5) against the
GAL: one match is status 1, several are suggestions (2, or 3 when ``MaxAmbiguousRecipients``,
at most 100, or ``MAX_RECIPIENTS`` in all cuts them short, ``RecipientCount`` then telling
how many there are), none is 4. The service keeps no S/MIME certificates, so a
``CertificateRetrieval`` of 2 or 3 is answered 7 (no valid certificate) for each resolved
recipient. ``Availability`` is the recipient's free/busy from their calendar in the PIM
store, one digit per 30 minutes (0 free, 1 tentative, 2 busy, 4 no data), worked out once
per account; recurring events count by their first occurrence only, events whose times
cannot be read not at all.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_string
from email.policy import compat32
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from .activesync_items import FOLDER_KINDS, folders_for
from .activesync_mail import Answer, long_id
from .protocols import activesync as eas, eas_bodies, eas_pim
from .protocols.activesync import EasError, child_text, el
from .protocols.activesync_tables import (
    AIRSYNC,
    EMAIL,
    EMAIL2,
    FIND,
    GAL,
    ITEM_OPERATIONS,
    RESOLVE_RECIPIENTS,
    SEARCH,
)
from .protocols.contentline import parse
from .protocols.wbxml import Element
from .store import activesync as eas_db, activesync_search as db, pim as pim_db

if TYPE_CHECKING:
    from .activesync import Backend, Caller, EasCall

#: The most results one request returns, and the most messages a mailbox query scans.
MAX_RESULTS = 100
MAX_SCANNED = 5000
#: The most distinct words a mailbox query matches (more: Search's "too complex", status 8).
MAX_WORDS = 20
NO_PICTURE = "173"

# --------------------------------------------------------------------------- shared


def parse_range(text: str | None, default: str = "0-99") -> tuple[int, int] | None:
    """A ``Range`` (``m-n``, m <= n), or None when malformed."""
    match = re.fullmatch(r"\s*(\d{1,9})-(\d{1,9})\s*", text or default)
    if match is None:
        return None
    low, high = int(match.group(1)), int(match.group(2))
    return (low, min(high, low + MAX_RESULTS - 1)) if low <= high else None


def _split_name(name: str) -> tuple[str, str]:
    first, _, last = name.strip().rpartition(" ")
    return (first, last) if first else ("", last)


def gal_properties(entry: dict[str, Any], picture: bool) -> list[Element]:
    """The GAL properties of an entry, in the GAL code page's order."""
    name = entry["display_name"] or entry["login"]
    first, last = _split_name(entry["display_name"] or "")
    values = [
        ("DisplayName", name),
        ("Company", entry["organisation_long_name"] or entry["organisation_name"]),
        ("Alias", entry["login"]),
        ("FirstName", first),
        ("LastName", last),
        ("EmailAddress", entry["email"] or ""),
    ]
    out = [el(GAL, tag, value) for tag, value in values if value]
    if picture:
        out.append(el(GAL, "Picture", el(GAL, "Status", NO_PICTURE)))
    return out


def _words(text: str) -> list[str]:
    """The distinct words of a FreeText, without regard to case."""
    return list(dict.fromkeys(w.lower() for w in text.split() if w))


def _message_text(data: str) -> str:
    """What a free-text query is matched against: subject, addresses and plain text."""
    message = message_from_string(data, policy=compat32)
    heads = " ".join(str(message.get(h, "")) for h in ("Subject", "From", "To", "Cc"))
    parts = message.walk() if message.is_multipart() else [message]
    texts = []
    for part in parts:
        if part.get_content_maintype() == "text":
            texts.append(eas_bodies.part_text(part))
    return (heads + " " + " ".join(texts)).lower()


@dataclass(frozen=True)
class MailQuery:
    """A mailbox query of Search or Find."""

    words: tuple[str, ...]
    folder: str | None
    range: tuple[int, int]
    #: ``GreaterThan``/``LessThan`` on ``email:DateReceived`` (exclusive bounds).
    after: datetime | None = None
    before: datetime | None = None
    #: An ``airsync:Class`` other than Email: nothing a mailbox holds matches.
    other_class: bool = False

    def received_within(self, data: str, stored_at: str) -> bool:
        if self.after is None and self.before is None:
            return True
        received = _received(data) or datetime.fromisoformat(stored_at).astimezone(UTC)
        return (self.after is None or received > self.after) and (
            self.before is None or received < self.before
        )


def _received(data: str) -> datetime | None:
    """When a stored message was sent (its Date), in UTC; None without a Date."""
    header = message_from_string(data, policy=compat32).get("Date")
    try:
        moment = parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _mail_folders(caller: Caller, folder: str | None) -> dict[str, str] | None:
    """The mail folders searched (ServerId -> kind); None when ``folder`` is unknown."""
    known = {sid for sid, _, _ in folders_for(caller.features)}
    mail = {
        sid: kind for sid, kind in FOLDER_KINDS.items() if eas_pim.is_mail(kind) and sid in known
    }
    if folder is None:
        return mail  # type: ignore[return-value]
    if folder not in known:
        return None
    return {folder: mail[folder]} if folder in mail else {}


def mailbox_unit(
    conn: sqlite3.Connection, caller: Caller, folders: dict[str, str], query: MailQuery
) -> tuple[list[tuple[str, dict[str, Any], str]], int]:
    """The owner's messages matching every word, newest first, within the range: (folder,
    item, device ServerId) of each, and how many match."""
    by_kind = {kind: sid for sid, kind in folders.items()}
    rows = db.mail_candidates(
        conn, caller.account["id"], list(by_kind), list(query.words), MAX_SCANNED
    )
    if query.other_class:
        rows = []
    matches = [
        r
        for r in rows
        if all(w in _message_text(r["data"] or "") for w in query.words)
        and query.received_within(r["data"] or "", r["updated_at"])
    ]
    low, high = query.range
    chosen = matches[low : high + 1]
    out = []
    for row in chosen:
        ids = eas_db.server_ids_of_items(
            conn, caller.device["id"], row["collection_id"], [row["id"]]
        )
        out.append((by_kind[row["kind"]], row, ids.get(row["id"], str(row["id"]))))
    return out, len(matches)


def gal_unit(
    conn: sqlite3.Connection, organisation_id: str, text: str, wanted: tuple[int, int]
) -> tuple[list[dict[str, Any]], int]:
    low, high = wanted
    rows, total = db.gal_matches(conn, organisation_id, text, high + 1)
    return rows[low:], total


# --------------------------------------------------------------------------- Search


def _store_answer(status: int, *children: Element) -> Element:
    return el(
        SEARCH,
        "Search",
        el(SEARCH, "Status", "1"),
        el(SEARCH, "Response", el(SEARCH, "Store", el(SEARCH, "Status", str(status)), *children)),
    )


def _mail_query_of(query: Element, options: Element | None) -> tuple[MailQuery | None, int]:
    """The mailbox query of a Search ``Query``: its And's Class, CollectionId, FreeText and
    GreaterThan/LessThan of ``email:DateReceived``."""
    folder = None
    words: list[str] = []
    bounds: dict[str, datetime] = {}
    other_class = False
    stack = [query]
    while stack:
        node = stack.pop()
        for child in node.elements():
            if child.tag == "CollectionId" and child.ns == AIRSYNC:
                folder = child.text
            elif child.tag == "Class" and child.ns == AIRSYNC:
                other_class = other_class or child.text.strip() != "Email"
            elif child.tag == "FreeText":
                words += _words(child.text)
            elif child.tag in ("GreaterThan", "LessThan"):
                value = _when(child_text(child, "Value"))
                if value is None or child.find("DateReceived") is None:
                    return None, 2
                bounds[child.tag] = value
            elif child.tag in ("And", "Or"):
                stack.append(child)
    wanted = parse_range(child_text(options, "Range") if options is not None else None)
    words = list(dict.fromkeys(words))
    if wanted is None or not words:
        return None, 2
    if len(words) > MAX_WORDS:
        return None, 8
    return (
        MailQuery(
            tuple(words),
            folder,
            wanted,
            after=bounds.get("GreaterThan"),
            before=bounds.get("LessThan"),
            other_class=other_class,
        ),
        1,
    )


async def search(backend: Backend, call: EasCall, caller: Caller) -> Answer:
    if call.body is None:
        raise EasError("Search needs a body", eas.INVALID_XML)
    root = eas.expect_root(call.body, SEARCH, "Search")
    store = eas.require(root, "Store")
    name = (child_text(store, "Name", "") or "").strip()
    query = store.find("Query")
    options = store.find("Options")
    if name == "DocumentLibrary":
        return _store_answer(2 if call.query.version_number >= 16.0 else 5)
    if query is None or name not in ("GAL", "Mailbox"):
        return _store_answer(2)
    if name == "GAL":
        wanted = parse_range(child_text(options, "Range") if options is not None else None)
        text = query.text.strip()
        if wanted is None or not text:
            return _store_answer(2)
        picture = options is not None and options.find("Picture") is not None
        rows, total = await backend.store.read(
            gal_unit, caller.account["organisation_id"], text, wanted
        )
        results = [
            el(SEARCH, "Result", el(SEARCH, "Properties", *gal_properties(r, picture)))
            for r in rows
        ]
        return _store_answer(1, *_ranged(results, wanted[0], total))
    mail_query, status = _mail_query_of(query, options)
    if mail_query is None:
        return _store_answer(status)
    folders = _mail_folders(caller, mail_query.folder)
    if folders is None:
        return _store_answer(11)  # FolderSync required: the folder is not the device's
    found, total = await backend.store.read(mailbox_unit, caller, folders, mail_query)
    bodies = eas_bodies.preferences_of(options, call.query.version, "Email")
    results = []
    for folder, row, _ in found:
        try:
            data = eas_pim.application_data(FOLDER_KINDS[folder] or "", row["data"] or "", bodies)
        except eas_pim.UNREADABLE:
            continue  # a message that cannot be shown is left out
        results.append(
            el(
                SEARCH,
                "Result",
                el(AIRSYNC, "Class", "Email"),
                el(SEARCH, "LongId", long_id(folder, row["id"])),
                el(AIRSYNC, "CollectionId", folder),
                Element("Properties", SEARCH, data.children),
            )
        )
    return _store_answer(1, *_ranged(results, mail_query.range[0], total))


def _ranged(results: list[Element], low: int, total: int, ns: str = SEARCH) -> list[Element]:
    """Results with the Range they cover and the Total; an empty Result when none."""
    if not results:
        return [el(ns, "Result"), el(ns, "Total", "0")] if ns == SEARCH else []
    return [
        *results,
        el(ns, "Range", f"{low}-{low + len(results) - 1}"),
        el(ns, "Total", str(total)),
    ]


# --------------------------------------------------------------------------- Find


def _find_answer(status: int, response: Element | None = None) -> Element:
    return el(FIND, "Find", el(FIND, "Status", str(status)), response)


def _has_attachments(stored: str) -> bool:
    message = message_from_string(stored, policy=compat32)
    return any(
        part.get_content_disposition() == "attachment"
        or part.get_content_type() == "message/rfc822"
        for part in message.walk()
    )


def _find_mail_properties(data: Element, stored: str) -> list[Element]:
    """Find's properties of a message (MS-ASCMD 2.2.3.139.1) from its ApplicationData."""
    props = {(c.ns, c.tag): c for c in data.elements()}
    out: list[Element] = []
    for ns, tag in ((EMAIL, "Subject"), (EMAIL, "DateReceived"), (EMAIL, "DisplayTo")):
        if (ns, tag) in props:
            out.append(props[(ns, tag)])
    cc = props.get((EMAIL, "Cc"))
    if cc is not None:
        out.append(el(FIND, "DisplayCc", cc.text))
    for ns, tag in ((EMAIL, "Importance"), (EMAIL, "Read")):
        if (ns, tag) in props:
            out.append(props[(ns, tag)])
    out.append(el(EMAIL2, "IsDraft", "0"))
    body = next((c for c in data.elements() if c.tag == "Body"), None)
    text = child_text(body, "Data", "") if body is not None else ""
    out.append(el(FIND, "Preview", " ".join((text or "").split())[: eas_bodies.MAX_PREVIEW]))
    out.append(el(FIND, "HasAttachments", "1" if _has_attachments(stored) else "0"))
    if (EMAIL, "From") in props:
        out.append(props[(EMAIL, "From")])
    return out


async def find(backend: Backend, call: EasCall, caller: Caller) -> Answer:
    if call.query.version != "16.1":
        return eas.COMMAND_NOT_SUPPORTED
    if call.body is None:
        raise EasError("Find needs a body", eas.INVALID_XML)
    root = eas.expect_root(call.body, FIND, "Find")
    execute = root.find("ExecuteSearch")
    if child_text(root, "SearchId") is None or execute is None:
        return _find_answer(2)
    criterion = execute.find("MailBoxSearchCriterion") or execute.find("GalSearchCriterion")
    if criterion is None:
        return _find_answer(2)
    query = criterion.find("Query")
    options = criterion.find("Options")
    range_text = child_text(options, "Range") if options is not None else None
    wanted = parse_range(range_text)
    if query is None or wanted is None:
        return _find_answer(2)
    if wanted[0] != 0:
        return _find_answer(1, el(FIND, "Response", el(FIND, "Status", "4")))
    if criterion.tag == "GalSearchCriterion":
        text = (child_text(query, "FreeText") or query.text).strip()
        if not text:
            return _find_answer(2)
        picture = options is not None and options.find("Picture") is not None
        rows, total = await backend.store.read(
            gal_unit, caller.account["organisation_id"], text, wanted
        )
        results = [
            el(FIND, "Result", el(FIND, "Properties", *gal_properties(r, picture))) for r in rows
        ]
        store = "GAL"
    else:
        words = _words(child_text(query, "FreeText", "") or "")
        folder = next(
            (c.text for c in query.elements() if c.tag == "CollectionId" and c.ns == AIRSYNC),
            None,
        )
        if not words or len(words) > MAX_WORDS:
            return _find_answer(2)
        folders = _mail_folders(caller, folder)
        if folders is None:
            return _find_answer(3)
        found, total = await backend.store.read(
            mailbox_unit, caller, folders, MailQuery(tuple(words), folder, wanted)
        )
        results = []
        for found_folder, row, server_id in found:
            try:
                data = eas_pim.application_data(FOLDER_KINDS[found_folder] or "", row["data"] or "")
            except eas_pim.UNREADABLE:
                continue  # a message that cannot be shown is left out
            results.append(
                el(
                    FIND,
                    "Result",
                    el(AIRSYNC, "Class", "Email"),
                    el(AIRSYNC, "ServerId", server_id),
                    el(AIRSYNC, "CollectionId", found_folder),
                    el(FIND, "Properties", *_find_mail_properties(data, row["data"] or "")),
                )
            )
        store = "Mailbox"
    response = el(
        FIND,
        "Response",
        el(ITEM_OPERATIONS, "Store", store),
        el(FIND, "Status", "1"),
        *results,
        *(
            [el(FIND, "Range", f"0-{len(results) - 1}"), el(FIND, "Total", str(total))]
            if results
            else [el(FIND, "Total", "0")]
        ),
    )
    return _find_answer(1, response)


# --------------------------------------------------------------------------- ResolveRecipients

#: The MergedFreeBusy digits.
FREE, TENTATIVE, BUSY, NO_DATA = "0", "1", "2", "4"
SLOT = timedelta(minutes=30)
#: The most ``To`` a request may hold (MS-ASCMD 2.2.3.183: 1...100; more is status 5).
MAX_TO = 100
#: The most Recipients one response holds, over all its ``To``: each ``To``'s suggestions
#: are cut short (status 3, RecipientCount telling how many there are) once they are given.
MAX_RECIPIENTS = 500
#: The longest free/busy span answered (MS-ASCMD leaves it to the server).
MAX_SPAN = timedelta(days=42)


def _busy_time(text: str) -> tuple[datetime, datetime, str] | None:
    """An event's start, end and free/busy digit; None when it leaves its owner free or its
    times cannot be read."""
    begin = finish = None
    state = BUSY
    inside = False
    try:
        for line in parse(text):
            if line.name == "BEGIN" and line.value.upper() == "VEVENT":
                inside = True
            elif line.name == "END" and line.value.upper() == "VEVENT":
                break
            elif not inside:
                continue
            elif line.name == "DTSTART":
                begin = eas_pim.ical_datetime(line)[0]
            elif line.name == "DTEND":
                finish = eas_pim.ical_datetime(line)[0]
            elif line.name == "TRANSP" and line.value.strip().upper() == "TRANSPARENT":
                state = FREE
            elif line.name == "STATUS" and line.value.strip().upper() == "TENTATIVE":
                state = TENTATIVE
    except (ValueError, OverflowError):
        return None
    if begin is None or state == FREE:
        return None
    return begin, finish or begin, state


def merged_free_busy(events: list[str], start: datetime, end: datetime) -> str:
    """One digit per 30 minutes from ``start`` to ``end`` out of iCalendar events. An event
    marks the slots it overlaps, found by arithmetic (the first slot it starts in, the slot
    after the one it ends in), counted per digit, so the work is events plus slots."""
    slots = max(1, -(-int((end - start).total_seconds()) // int(SLOT.total_seconds())))
    # Per digit, +1 where an event's slots begin and -1 after they end.
    marks = {TENTATIVE: [0] * (slots + 1), BUSY: [0] * (slots + 1)}
    for text in events:
        busy = _busy_time(text)
        if busy is None:
            continue
        begin, finish, state = busy
        first = max(0, (begin - start) // SLOT)  # slot i overlaps: begin < its end
        after = min(slots, -((start - finish) // SLOT))  # ... and finish > its start
        if first < after:
            marks[state][first] += 1
            marks[state][after] -= 1
    digits = []
    tentative = busy_count = 0
    for index in range(slots):
        tentative += marks[TENTATIVE][index]
        busy_count += marks[BUSY][index]
        digits.append(BUSY if busy_count else TENTATIVE if tentative else FREE)
    return "".join(digits)


def _gal_resolve_unit(
    conn: sqlite3.Connection,
    organisation_id: str,
    names: list[str],
    limit: int,
    span: tuple[datetime, datetime] | None,
) -> list[tuple[list[dict[str, Any]], int, dict[str, str]]]:
    """Per name: the GAL entries suggested (an exact address first), how many match, and
    the free/busy of a unique match (worked out once per account, however often named)."""
    out = []
    free_busy_of: dict[str, str] = {}
    for name in names:
        text = name.strip()
        address = re.search(r"<([^>]+)>", text)
        exact = db.gal_entry_by_email(conn, organisation_id, address.group(1) if address else text)
        if exact is not None:
            rows, total = [exact], 1
        else:
            rows, total = db.gal_matches(conn, organisation_id, text, limit) if text else ([], 0)
        free_busy: dict[str, str] = {}
        if span is not None and total == 1:
            account_id = rows[0]["id"]
            if account_id not in free_busy_of:
                calendar = pim_db.collection_of(conn, account_id, "calendar")
                events = (
                    [r["data"] or "" for r in pim_db.live_items(conn, calendar["id"])]
                    if calendar
                    else []
                )
                free_busy_of[account_id] = merged_free_busy(events, *span)
            free_busy[account_id] = free_busy_of[account_id]
        out.append((rows, total, free_busy))
    return out


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return eas_pim.eas_datetime(text)
    except EasError:
        return None


async def resolve_recipients(backend: Backend, call: EasCall, caller: Caller) -> Answer:
    if call.body is None:
        raise EasError("ResolveRecipients needs a body", eas.INVALID_XML)
    root = eas.expect_root(call.body, RESOLVE_RECIPIENTS, "ResolveRecipients")
    names = [c.text for c in root.elements() if c.tag == "To"]
    options = root.find("Options")

    def option(tag: str, parent: Element | None = options) -> str | None:
        return child_text(parent, tag) if parent is not None else None

    def refused() -> Element:
        return el(RESOLVE_RECIPIENTS, "ResolveRecipients", el(RESOLVE_RECIPIENTS, "Status", "5"))

    try:
        retrieval = eas.integer(option("CertificateRetrieval"), "CertificateRetrieval", 1, 3) or 1
        ambiguous = eas.integer(option("MaxAmbiguousRecipients"), "MaxAmbiguousRecipients", 0, 9999)
    except EasError:
        return refused()
    availability = options.find("Availability") if options is not None else None
    picture = options is not None and options.find("Picture") is not None
    span = None
    if availability is not None:
        start = _when(option("StartTime", availability))
        end = _when(option("EndTime", availability))
        if start is None or end is None or end <= start or end - start > MAX_SPAN:
            return refused()
        span = (start, end)
    if not names or len(names) > MAX_TO:
        return refused()
    names = list(dict.fromkeys(names))  # a name given twice is resolved and answered once
    cap = MAX_RESULTS if ambiguous is None else min(ambiguous, MAX_RESULTS)
    resolved = await backend.store.read(
        _gal_resolve_unit, caller.account["organisation_id"], names, max(cap, 1) + 1, span
    )
    responses = []
    room = MAX_RECIPIENTS
    for name, (rows, total, free_busy) in zip(names, resolved, strict=True):
        if total == 0:
            status, shown = 4, []
        elif total == 1:
            status, shown = 1, rows
        else:
            shown = rows[: min(cap, max(room, 0))]
            status = 2 if total <= len(shown) else 3
        room -= len(shown)
        recipients = []
        for row in shown:
            children: list[Element | str | bytes | None] = [
                el(RESOLVE_RECIPIENTS, "Type", "1"),
                el(RESOLVE_RECIPIENTS, "DisplayName", row["display_name"] or row["login"]),
                el(RESOLVE_RECIPIENTS, "EmailAddress", row["email"] or ""),
            ]
            if status == 1 and row["id"] in free_busy:
                children.append(
                    el(
                        RESOLVE_RECIPIENTS,
                        "Availability",
                        el(RESOLVE_RECIPIENTS, "Status", "1"),
                        el(RESOLVE_RECIPIENTS, "MergedFreeBusy", free_busy[row["id"]]),
                    )
                )
            if status == 1 and picture:
                children.append(
                    el(
                        RESOLVE_RECIPIENTS,
                        "Picture",
                        el(RESOLVE_RECIPIENTS, "Status", NO_PICTURE),
                    )
                )
            if status == 1 and retrieval in (2, 3):
                children.append(
                    el(
                        RESOLVE_RECIPIENTS,
                        "Certificates",
                        el(RESOLVE_RECIPIENTS, "Status", "7"),
                        el(RESOLVE_RECIPIENTS, "CertificateCount", "0"),
                    )
                )
            recipients.append(el(RESOLVE_RECIPIENTS, "Recipient", *children))
        responses.append(
            el(
                RESOLVE_RECIPIENTS,
                "Response",
                el(RESOLVE_RECIPIENTS, "To", name),
                el(RESOLVE_RECIPIENTS, "Status", str(status)),
                el(RESOLVE_RECIPIENTS, "RecipientCount", str(total)) if total else None,
                *recipients,
            )
        )
    return el(
        RESOLVE_RECIPIENTS,
        "ResolveRecipients",
        el(RESOLVE_RECIPIENTS, "Status", "1"),
        *responses,
    )
