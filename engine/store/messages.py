"""Units of work on the messages an organisation broadcasts to its device owners."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..listing import ListQuery
from .listing import select_page
from .rows import Row, insert, many, one

#: List fields and their columns (of :data:`_WITH_AUTHOR`).
MESSAGE_COLUMNS = {
    "title": "title",
    "severity": "severity",
    "valid_from": "valid_from",
    "valid_until": "valid_until",
    "created_at": "created_at",
}

#: Messages with their author's login (None once the author's account is removed).
_WITH_AUTHOR = """(
    SELECT messages.*, accounts.login AS created_by_login
    FROM messages LEFT JOIN accounts ON accounts.id = messages.created_by
) AS messages_with_authors"""


def insert_message(
    conn: sqlite3.Connection, message: dict[str, Any], group_ids: Sequence[str]
) -> None:
    """A message and, for a group audience, the groups it is for."""
    insert(conn, "messages", message)
    conn.executemany(
        "INSERT INTO message_groups (message_id, group_id, organisation_id) VALUES (?, ?, ?)",
        [(message["id"], group_id, message["organisation_id"]) for group_id in group_ids],
    )


def message_in(conn: sqlite3.Connection, organisation_id: str, message_id: str) -> Row | None:
    """A message of this organisation (another's: None), with its author's login."""
    return one(
        conn.execute(
            f"SELECT * FROM {_WITH_AUTHOR} WHERE id = ? AND organisation_id = ?",
            (message_id, organisation_id),
        )
    )


def messages_page(
    conn: sqlite3.Connection, organisation_id: str, query: ListQuery
) -> tuple[list[Row], int]:
    return select_page(
        conn,
        table=_WITH_AUTHOR,
        columns=MESSAGE_COLUMNS,
        where=["organisation_id = ?"],
        args=[organisation_id],
        query=query,
    )


def audience_groups(conn: sqlite3.Connection, message_ids: Sequence[str]) -> dict[str, list[Row]]:
    """The device groups each message is for, by message id, by group name."""
    found: dict[str, list[Row]] = {message_id: [] for message_id in message_ids}
    if not message_ids:
        return found
    marks = ", ".join("?" for _ in message_ids)
    rows = many(
        conn.execute(
            "SELECT mg.message_id, g.id, g.name FROM message_groups mg"
            " JOIN device_groups g ON g.id = mg.group_id"
            f" WHERE mg.message_id IN ({marks}) ORDER BY g.name, g.id",
            list(message_ids),
        )
    )
    for row in rows:
        found[row.pop("message_id")].append(row)
    return found


def withdraw_message(conn: sqlite3.Connection, message_id: str, at: str) -> bool:
    """Withdraw a message; False if it was withdrawn already (the first time stays)."""
    cursor = conn.execute(
        "UPDATE messages SET withdrawn_at = ? WHERE id = ? AND withdrawn_at IS NULL",
        (at, message_id),
    )
    return cursor.rowcount == 1


def current_for_owner(
    conn: sqlite3.Connection, organisation_id: str, owner_id: str, at: str
) -> list[Row]:
    """Messages of the organisation valid at ``at`` whose audience includes ``owner_id``,
    the latest to become valid first.

    The owner must be a user account of the organisation: every one of them is in the
    audience "all"; a group audience holds the owners of the devices in its groups.
    """
    return many(
        conn.execute(
            """SELECT m.* FROM messages m
            WHERE m.organisation_id = :org
              AND m.withdrawn_at IS NULL
              AND m.valid_from <= :at
              AND (m.valid_until IS NULL OR m.valid_until > :at)
              AND EXISTS (
                  SELECT 1 FROM accounts a
                  WHERE a.id = :owner AND a.organisation_id = :org AND a.kind = 'user')
              AND (m.audience = 'all' OR EXISTS (
                  SELECT 1 FROM message_groups mg
                  JOIN device_group_members dgm ON dgm.group_id = mg.group_id
                  JOIN devices d ON d.id = dgm.device_id
                  WHERE mg.message_id = m.id AND d.owner_id = :owner))
            ORDER BY m.valid_from DESC, m.created_at DESC, m.id DESC""",
            {"org": organisation_id, "owner": owner_id, "at": at},
        )
    )
