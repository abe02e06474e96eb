"""Messages an organisation broadcasts to its device owners.

Device owners read them in the self-service portal (``/my/devices``), through the REST API
(``GET /me/messages``) and in the client app: the WSDM protocol delivers them with
:func:`current_messages_for`, which is why that function takes the owner as plain ids rather
than a signed-in principal.

- **Audience**: every device owner (user account) of the organisation, or the owners of the
  devices in chosen device groups, as the groups stand when the message is read (a device
  joining a group brings its owner the group's current messages; a removed group leaves
  the audiences that named it, so a message whose groups are all gone reaches nobody).
- **Validity**: a message is shown from ``valid_from`` (default: when it is posted) until
  ``valid_until`` (optional, exclusive) unless it is withdrawn first. Withdrawal is final
  and keeps the message for the record; withdrawing twice changes nothing.
- **Text**: the body is plain text, never markup: every reader escapes it and keeps its
  line breaks. Line breaks are stored as ``\\n``.

**Who.** Every manager and system account of the organisation sees all of its messages.
Posting and withdrawing take the ``commands`` right: a message to device owners is
helpdesk work of the same kind as the ``message`` command to a device (which that right
already covers), so a helpdesk-only manager can warn everyone of an outage without being
allowed to change accounts or the inventory. Device owners only read the messages that are
current for them, and never another organisation's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from .audit import audit_event
from .errors import Invalid, NotFound
from .ids import new_id
from .listing import ListQuery, ListSpec, Page
from .organisations import changeable_organisation, readable_organisation
from .principals import AccountKind, Principal, Right
from .store import Store, messages as board
from .store.audit import insert_event
from .store.devices import group_in
from .store.rows import Row
from .timestamps import format_time, now, parse_time

SEVERITIES = ("info", "warning", "urgent")
AUDIENCES = ("all", "groups")
#: What a message is at a given moment (computed, not stored).
STATES = ("scheduled", "current", "expired", "withdrawn")
MAX_TITLE = 120
MAX_BODY = 4000
MAX_GROUPS = 100
#: The right that posts and withdraws messages (see the module's docstring).
RIGHT = Right.COMMANDS

LIST = ListSpec(
    sortable=tuple(board.MESSAGE_COLUMNS),
    filterable=("title", "severity"),
    default_sort="created_at",
    default_descending=True,
)


def _instant(text: str, field: str) -> str:
    """A date and time as the service stores it (UTC text); no zone given means UTC."""
    try:
        moment = parse_time(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or beyond the year 9999 in UTC
        raise Invalid(f"{field}: expected a date and time (ISO 8601)", field=field) from None
    if moment.year < 2000:
        # Stored times compare as text, which needs four-digit years.
        raise Invalid(f"{field}: not before the year 2000", field=field)
    return format_time(moment)


@dataclass(frozen=True)
class NewMessage:
    title: str
    body: str = ""
    severity: str = "info"
    audience: str = "all"
    groups: Sequence[str] = ()
    valid_from: str | None = None
    valid_until: str | None = None

    def checked(self, at: str) -> NewMessage:
        """The message as it is stored, posted at ``at``; refuses what cannot be shown."""
        title = self.title.strip()
        if not 1 <= len(title) <= MAX_TITLE:
            raise Invalid(f"title: 1 to {MAX_TITLE} characters", field="title")
        if "\n" in title or "\r" in title:
            raise Invalid("title: one line", field="title")
        body = self.body.replace("\r\n", "\n").replace("\r", "\n").strip()
        if len(body) > MAX_BODY:
            raise Invalid(f"body: at most {MAX_BODY} characters", field="body")
        if self.severity not in SEVERITIES:
            raise Invalid(f"severity: one of {', '.join(SEVERITIES)}", field="severity")
        if self.audience not in AUDIENCES:
            raise Invalid(f"audience: one of {', '.join(AUDIENCES)}", field="audience")
        groups = tuple(dict.fromkeys(self.groups))
        if self.audience == "groups" and not groups:
            raise Invalid("groups: choose at least one device group", field="groups")
        if self.audience == "all" and groups:
            raise Invalid("groups: only for the audience 'groups'", field="groups")
        if len(groups) > MAX_GROUPS:
            raise Invalid(f"groups: at most {MAX_GROUPS}", field="groups")
        valid_from = _instant(self.valid_from, "valid_from") if self.valid_from else at
        valid_until = None
        if self.valid_until:
            valid_until = _instant(self.valid_until, "valid_until")
            if valid_until <= valid_from:
                raise Invalid("valid_until: after valid_from", field="valid_until")
            if valid_until <= at:
                raise Invalid("valid_until: in the future", field="valid_until")
        return NewMessage(
            title, body, self.severity, self.audience, groups, valid_from, valid_until
        )


def state_of(row: Row, at: str) -> str:
    if row["withdrawn_at"] is not None:
        return "withdrawn"
    if row["valid_from"] > at:
        return "scheduled"
    if row["valid_until"] is not None and row["valid_until"] <= at:
        return "expired"
    return "current"


def public(row: Row, groups: Sequence[Row], at: str) -> dict[str, Any]:
    """A message as managers see it: with its audience, author and state at ``at``."""
    author = row["created_by"]
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "severity": row["severity"],
        "audience": row["audience"],
        "groups": [{"id": group["id"], "name": group["name"]} for group in groups],
        "valid_from": row["valid_from"],
        "valid_until": row["valid_until"],
        "state": state_of(row, at),
        "created_by": {"id": author, "login": row["created_by_login"]} if author else None,
        "created_at": row["created_at"],
        "withdrawn_at": row["withdrawn_at"],
    }


def owner_view(row: Row) -> dict[str, Any]:
    """A message as its readers see it: nothing of who else it is for, nor who wrote it."""
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "severity": row["severity"],
        "valid_from": row["valid_from"],
        "valid_until": row["valid_until"],
        "created_at": row["created_at"],
    }


def _message(conn: sqlite3.Connection, org_id: str, message_id: str) -> Row:
    row = board.message_in(conn, org_id, message_id)
    if row is None:
        raise NotFound("no such message")
    return row


def _event(principal: Principal, action: str, row: Row, **details: Any) -> dict[str, Any]:
    return audit_event(
        principal,
        action,
        organisation_id=row["organisation_id"],
        target_type="message",
        target_id=row["id"],
        details={"title": row["title"], **details},
    )


# --------------------------------------------------------------------------- managers


async def list_messages(
    store: Store, principal: Principal, organisation: str, query: ListQuery
) -> Page:
    """All messages of the organisation, newest first unless sorted otherwise."""
    # Device owners read theirs with my_messages.
    org = await readable_organisation(store, principal, organisation)
    query = query.checked(LIST)
    rows, total, groups = await store.read(_page, org["id"], query)
    at = now()
    items = [public(row, groups[row["id"]], at) for row in rows]
    return Page(items, total, query.limit, query.offset)


def _page(
    conn: sqlite3.Connection, org_id: str, query: ListQuery
) -> tuple[list[Row], int, dict[str, list[Row]]]:
    rows, total = board.messages_page(conn, org_id, query)
    return rows, total, board.audience_groups(conn, [row["id"] for row in rows])


async def get_message(
    store: Store, principal: Principal, organisation: str, message_id: str
) -> dict[str, Any]:
    org = await readable_organisation(store, principal, organisation)
    row, groups = await store.read(_one, org["id"], message_id)
    return public(row, groups, now())


def _one(conn: sqlite3.Connection, org_id: str, message_id: str) -> tuple[Row, list[Row]]:
    row = _message(conn, org_id, message_id)
    return row, board.audience_groups(conn, [message_id])[message_id]


async def post_message(
    store: Store, principal: Principal, organisation: str, new: NewMessage
) -> dict[str, Any]:
    org = await changeable_organisation(store, principal, organisation, RIGHT)
    at = now()
    new = new.checked(at)
    message = {
        "id": new_id(),
        "organisation_id": org["id"],
        "title": new.title,
        "body": new.body,
        "severity": new.severity,
        "audience": new.audience,
        "valid_from": new.valid_from,
        "valid_until": new.valid_until,
        "created_by": principal.account_id,
        "created_at": at,
        "withdrawn_at": None,
    }
    groups = await store.write(_post, principal, message, new.groups)
    return public(message | {"created_by_login": principal.login}, groups, at)


def _post(
    conn: sqlite3.Connection, principal: Principal, message: Row, group_ids: Sequence[str]
) -> list[Row]:
    """Insert the message; every group must be one of its organisation (else: no such)."""
    groups = []
    for group_id in group_ids:
        group = group_in(conn, message["organisation_id"], group_id)
        if group is None:
            raise Invalid(f"groups: no such device group {group_id}", field="groups")
        groups.append(group)
    board.insert_message(conn, message, group_ids)
    details = {
        "severity": message["severity"],
        "audience": message["audience"],
        "groups": list(group_ids),
        "valid_from": message["valid_from"],
        "valid_until": message["valid_until"],
    }
    insert_event(conn, _event(principal, "message.posted", message, **details))
    return sorted(groups, key=lambda group: (group["name"], group["id"]))


async def withdraw_message(
    store: Store, principal: Principal, organisation: str, message_id: str
) -> dict[str, Any]:
    """Stop showing a message; it stays listed (withdrawn) for the record."""
    org = await changeable_organisation(store, principal, organisation, RIGHT)
    at = now()
    row, groups = await store.write(_withdraw, principal, org["id"], message_id, at)
    return public(row, groups, at)


def _withdraw(
    conn: sqlite3.Connection, principal: Principal, org_id: str, message_id: str, at: str
) -> tuple[Row, list[Row]]:
    row, groups = _one(conn, org_id, message_id)
    if board.withdraw_message(conn, message_id, at):
        insert_event(conn, _event(principal, "message.withdrawn", row))
        row = row | {"withdrawn_at": at}
    return row, groups


# --------------------------------------------------------------------------- readers


async def current_messages_for(
    store: Store, organisation_id: str, owner_account_id: str, at: str
) -> list[dict[str, Any]]:
    """The messages a device owner is shown at ``at`` (ISO 8601), the latest to become
    valid first: of the owner's organisation, for an audience that includes the owner,
    within their validity and not withdrawn. An account that is not a device owner of
    ``organisation_id`` is shown none.

    The protocols call this for the owner of the device that connects (they have no
    signed-in principal); the REST API and the portal use :func:`my_messages`.
    """
    rows = await store.read(
        board.current_for_owner, organisation_id, owner_account_id, _instant(at, "at")
    )
    return [owner_view(row) for row in rows]


async def my_messages(store: Store, principal: Principal) -> list[dict[str, Any]]:
    """The messages the signed-in account is shown now as a device owner; accounts that own
    no devices (managers, system accounts) are shown none."""
    if principal.kind is not AccountKind.USER or principal.organisation_id is None:
        return []
    return await current_messages_for(store, principal.organisation_id, principal.account_id, now())
