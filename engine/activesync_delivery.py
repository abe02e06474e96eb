"""Local delivery of the mail ActiveSync devices send: the sender's Sent Items copy and a copy
in the Inbox of every recipient of the sender's own organisation, in one write unit.

There is no mail transport yet: a recipient is delivered to when their address is, exactly,
the e-mail address of an active user or resource of the sender's organisation (as the GAL
finds them, :func:`engine.store.activesync_search.gal_entry_by_email`); anyone else — another
organisation's people included, whatever their address — gets nothing. To, Cc and Bcc are
delivered alike, each recipient once; the delivered copy has no Bcc header (RFC 5322 3.6.3),
so no recipient learns who was blind-copied, while the sender's Sent Items copy keeps it.
A delivered message is unread (``eas_pim.READ_HEADER``); the store's Read and Flag headers a
sender may have put in are taken off first. Its From is the sender's own address, whatever
the device wrote; a message nested too deep or too large for all its copies is refused.
"""

from __future__ import annotations

import sqlite3
from email import message_from_string
from email.policy import compat32
from email.utils import formataddr, getaddresses
from typing import TYPE_CHECKING

from .pim import collection_unit, facts_of
from .protocols import eas_pim
from .protocols.activesync import EasError
from .protocols.eas_compose import INVALID_MIME
from .store import pim as pim_db
from .store.activesync_search import gal_entry_by_email
from .timestamps import now

if TYPE_CHECKING:
    from .activesync import Caller

#: Recipients a message is delivered to at most (a bound on one write unit's work).
MAX_RECIPIENTS = 500
#: Bytes one send may write in all, its Sent copy and every delivered one.
MAX_DELIVERY_BYTES = 64 * 1024 * 1024
#: Multipart nesting a message may have (renderers walk it; real mail nests a few levels).
MAX_MIME_DEPTH = 32
#: ComposeMail statuses (MS-ASCMD 2.2.2.x common status codes).
SEND_QUOTA_EXCEEDED = 115


def store_message_unit(
    conn: sqlite3.Connection, organisation_id: str, account_id: str, kind: str, text: str
) -> str:
    """Keep a message in the account's default folder of ``kind`` as the service's change
    (every device of the account gets it); the collection's id."""
    collection = collection_unit(conn, organisation_id, account_id, kind)
    facts = facts_of(kind, text, "message/rfc822")
    at = now()
    pim_db.insert_item(
        conn,
        {
            "collection_id": collection["id"],
            "organisation_id": organisation_id,
            "version": pim_db.next_version(conn, collection["id"]),
            "origin": None,
            "content_type": facts.content_type,
            "data": text,
            "uid": None,
            "fingerprint": facts.fingerprint,
            "deleted": 0,
            "created_at": at,
            "updated_at": at,
        },
    )
    return str(collection["id"])


def recipients(text: str) -> list[str]:
    """The addresses of the message's To, Cc and Bcc, each once, in order."""
    message = message_from_string(text, policy=compat32)
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name) or []]
    seen: dict[str, str] = {}
    for _, address in getaddresses(values):
        if "@" in address:
            seen.setdefault(address.strip().lower(), address.strip())
    return list(seen.values())[:MAX_RECIPIENTS]


def local_accounts(conn: sqlite3.Connection, organisation_id: str, text: str) -> list[str]:
    """The accounts of the organisation the message is addressed to, each once."""
    found: list[str] = []
    for address in recipients(text):
        entry = gal_entry_by_email(conn, organisation_id, address)
        if entry is not None and entry["id"] not in found:
            found.append(entry["id"])
    return found


def from_caller(text: str, caller: Caller) -> str:
    """The message as the caller sends it: its From is the caller's own address, whatever
    the device wrote (nobody sends as a colleague), and it has no Sender. The message
    starts with its header: leading blank or folded lines would join the first field."""
    bare = eas_pim.drop_headers(text.lstrip(" \t\r\n"), ("From", "Sender"))
    address = caller.account.get("email")
    if not address:
        return bare
    newline = "\r\n" if "\r\n" in bare else "\n"
    name = caller.account.get("display_name") or ""
    return f"From: {formataddr((name, address))}{newline}{bare}"


def _check_size(text: str, copies: int) -> None:
    if _depth(text) > MAX_MIME_DEPTH:
        raise EasError(f"MIME parts nested deeper than {MAX_MIME_DEPTH}", INVALID_MIME)
    if len(text.encode()) * max(copies, 1) > MAX_DELIVERY_BYTES:
        raise EasError("the message is too large for its recipients", SEND_QUOTA_EXCEEDED)


def _depth(text: str) -> int:
    """How deep the message's multipart parts nest, counted without recursion."""
    deepest = 0
    pending = [(message_from_string(text, policy=compat32), 1)]
    while pending:
        part, depth = pending.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_MIME_DEPTH and part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                pending.extend((child, depth + 1) for child in payload)
    return deepest


def send_unit(conn: sqlite3.Connection, caller: Caller, text: str, save: bool) -> list[str]:
    """Send a message: keep it in the sender's Sent Items when asked (``save``) and deliver
    it to the Inbox of its recipients of the sender's organisation; the collections that
    changed (their parked Pings are woken). Refused (:class:`EasError`, nothing kept) when
    its parts nest too deep, or when all its copies together would exceed
    :data:`MAX_DELIVERY_BYTES`."""
    organisation_id = caller.device["organisation_id"]
    message = from_caller(eas_pim.without_state(text), caller)
    accounts = local_accounts(conn, organisation_id, message)
    _check_size(message, len(accounts) + int(save))
    changed: list[str] = []
    if save:
        changed.append(
            store_message_unit(conn, organisation_id, caller.account["id"], "sent_mail", message)
        )
    delivered = eas_pim.with_state(eas_pim.drop_headers(message, ("Bcc",)), False, [])
    for account_id in accounts:
        collection_id = store_message_unit(
            conn, organisation_id, account_id, "inbox_mail", delivered
        )
        if collection_id not in changed:
            changed.append(collection_id)
    return changed
