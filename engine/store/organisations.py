"""Units of work on organisations."""

from __future__ import annotations

import sqlite3
from typing import Any

from .rows import Row, insert, many, one, update


def insert_organisation(conn: sqlite3.Connection, organisation: dict[str, Any]) -> None:
    insert(conn, "organisations", organisation)


def update_organisation(
    conn: sqlite3.Connection, organisation_id: str, values: dict[str, Any]
) -> int:
    return update(conn, "organisations", organisation_id, values)


def organisation_by_id(conn: sqlite3.Connection, organisation_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM organisations WHERE id = ?", (organisation_id,)))


def organisation_by_code(conn: sqlite3.Connection, code: str) -> Row | None:
    return one(conn.execute("SELECT * FROM organisations WHERE code = ?", (code,)))


def list_organisations(conn: sqlite3.Connection, vendor_id: str | None) -> list[Row]:
    """All organisations, or those one vendor admin looks after."""
    if vendor_id is None:
        return many(conn.execute("SELECT * FROM organisations ORDER BY code"))
    return many(
        conn.execute("SELECT * FROM organisations WHERE vendor_id = ? ORDER BY code", (vendor_id,))
    )


#: Tables holding an organisation's rows, children before parents.
_OWNED_TABLES = (
    "commands",
    "device_group_members",
    "device_groups",
    "installation_codes",
    "api_tokens",
    "certificates",
    "service_settings",
    "devices",
    "accounts",
    "account_templates",
)


def delete_organisation(conn: sqlite3.Connection, organisation_id: str) -> None:
    """Remove an organisation and everything it owns (its audit events stay)."""
    for table in _OWNED_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE organisation_id = ?", (organisation_id,))
    conn.execute("DELETE FROM organisations WHERE id = ?", (organisation_id,))
