"""Units of work on the audit log; events are written in the same unit as the change."""

from __future__ import annotations

import sqlite3
from typing import Any

from .rows import Row, insert, many


def insert_event(conn: sqlite3.Connection, event: dict[str, Any]) -> None:
    insert(conn, "audit_events", event)


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
