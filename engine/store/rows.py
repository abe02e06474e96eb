"""Small helpers shared by the store's units of work."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

Row = dict[str, Any]


def one(cursor: sqlite3.Cursor) -> Row | None:
    row = cursor.fetchone()
    return dict(row) if row is not None else None


def many(cursor: Iterable[sqlite3.Row]) -> list[Row]:
    return [dict(row) for row in cursor]


def insert(conn: sqlite3.Connection, table: str, values: Mapping[str, Any]) -> None:
    """INSERT one row; ``table`` and the keys come from code, never from a request."""
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", dict(values))


def update(conn: sqlite3.Connection, table: str, row_id: str, values: Mapping[str, Any]) -> int:
    """UPDATE one row by id; returns how many rows changed (0 or 1)."""
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    cursor = conn.execute(
        f"UPDATE {table} SET {assignments} WHERE id = :id", {**values, "id": row_id}
    )
    return cursor.rowcount
