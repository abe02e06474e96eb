"""Units of work on uploaded certificates (the APNS push certificate)."""

from __future__ import annotations

import sqlite3
from typing import Any

from .rows import Row, insert, one


def insert_certificate(conn: sqlite3.Connection, certificate: dict[str, Any]) -> None:
    insert(conn, "certificates", certificate)


def certificate_usable_by(
    conn: sqlite3.Connection, certificate_id: str, organisation_id: str | None, purpose: str
) -> Row | None:
    """A certificate the organisation may use: its own or a system-wide one.

    ``organisation_id`` None: system-wide certificates only. Another organisation's
    certificate is never found, whatever id a setting names.
    """
    if organisation_id is None:
        cursor = conn.execute(
            "SELECT * FROM certificates WHERE id = ? AND purpose = ? AND organisation_id IS NULL",
            (certificate_id, purpose),
        )
    else:
        cursor = conn.execute(
            "SELECT * FROM certificates WHERE id = ? AND purpose = ?"
            " AND (organisation_id = ? OR organisation_id IS NULL)",
            (certificate_id, purpose, organisation_id),
        )
    return one(cursor)
