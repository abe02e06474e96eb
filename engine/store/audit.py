"""Units of work on the audit log; events are written in the same unit as the change."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from ..listing import ListQuery
from .listing import select_page
from .rows import Row, insert, many


def insert_event(conn: sqlite3.Connection, event: dict[str, Any]) -> None:
    insert(conn, "audit_events", event)


def insert_with_event(
    conn: sqlite3.Connection, table: str, row: Mapping[str, Any], event: dict[str, Any]
) -> None:
    """Insert ``row`` into ``table`` with the audit event that records it, in one unit.

    The write of most "create" operations; ``table`` comes from code, never from a request.
    """
    insert(conn, table, row)
    insert_event(conn, event)


def events_of(conn: sqlite3.Connection, organisation_id: str | None, limit: int) -> list[Row]:
    """Newest first; ``None`` means the system-wide events (no organisation)."""
    if organisation_id is None:
        cursor = conn.execute(
            "SELECT * FROM audit_events WHERE organisation_id IS NULL ORDER BY at DESC, id DESC"
            " LIMIT ?",
            (limit,),
        )
    else:
        cursor = conn.execute(
            "SELECT * FROM audit_events WHERE organisation_id = ? ORDER BY at DESC, id DESC"
            " LIMIT ?",
            (organisation_id, limit),
        )
    return many(cursor)


#: List fields → SQL columns of ``audit_events``.
AUDIT_COLUMNS = {
    "at": "at",
    "action": "action",
    "actor": "actor",
    "target_type": "target_type",
    "target_id": "target_id",
}


def events_page(
    conn: sqlite3.Connection,
    organisation_id: str | None,
    query: ListQuery,
    since: str | None = None,
    until: str | None = None,
    after: tuple[str, str] | None = None,
) -> tuple[list[Row], int]:
    """One page of an organisation's events (``None``: the system-wide ones).

    ``since`` ≤ ``at`` < ``until``. ``after`` (``at``, ``id`` of the last row seen) continues
    a long read by key rather than by offset, so an export of many pages stays cheap per
    page; it needs ``query`` sorted by ``at``.
    """
    where = ["organisation_id IS NULL" if organisation_id is None else "organisation_id = ?"]
    args: list[Any] = [] if organisation_id is None else [organisation_id]
    if since is not None:
        where.append("at >= ?")
        args.append(since)
    if until is not None:
        where.append("at < ?")
        args.append(until)
    if after is not None:
        beyond = "<" if query.descending else ">"
        where.append(f"(at {beyond} ? OR (at = ? AND id {beyond} ?))")
        args += [after[0], after[0], after[1]]
    return select_page(
        conn, table="audit_events", columns=AUDIT_COLUMNS, where=where, args=args, query=query
    )
