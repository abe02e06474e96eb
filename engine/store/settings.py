"""Units of work on service settings (system-wide and per organisation)."""

from __future__ import annotations

import sqlite3

from .base import Conflict
from .rows import Row, one

SYSTEM = "system"


def settings_of(conn: sqlite3.Connection, owner: str) -> Row | None:
    return one(conn.execute("SELECT * FROM service_settings WHERE owner = ?", (owner,)))


def put_settings(
    conn: sqlite3.Connection,
    owner: str,
    settings: str,
    at: str,
    expected_revision: int | None = None,
) -> int:
    """Store a settings document; returns its new revision.

    With ``expected_revision`` the write only succeeds if nobody else changed the document
    since that revision was read (optimistic concurrency, as with HTTP ``If-Match``).
    """
    current = settings_of(conn, owner)
    revision = current["revision"] if current else 0
    if expected_revision is not None and expected_revision != revision:
        raise Conflict(f"settings of {owner} are at revision {revision}, not {expected_revision}")
    organisation_id = None if owner == SYSTEM else owner
    conn.execute(
        """INSERT INTO service_settings (owner, organisation_id, settings, revision, updated_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (owner) DO UPDATE SET settings = excluded.settings,
               revision = excluded.revision, updated_at = excluded.updated_at""",
        (owner, organisation_id, settings, revision + 1, at),
    )
    return revision + 1
