"""Units of work on sign-in attempts, counted per sign-in name (existing account or not)."""

from __future__ import annotations

import sqlite3

from .rows import Row, one


def attempts_of(conn: sqlite3.Connection, name: str) -> Row | None:
    return one(conn.execute("SELECT * FROM sign_in_attempts WHERE name = ?", (name,)))


def put_attempts(
    conn: sqlite3.Connection, name: str, failures: int, locked_until: str | None, at: str
) -> None:
    conn.execute(
        """INSERT INTO sign_in_attempts (name, failures, locked_until, updated_at)
           VALUES (?, ?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET failures = excluded.failures,
               locked_until = excluded.locked_until, updated_at = excluded.updated_at""",
        (name, failures, locked_until, at),
    )


def clear_attempts(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM sign_in_attempts WHERE name = ?", (name,))


def forget_attempts_before(conn: sqlite3.Connection, before: str) -> None:
    conn.execute("DELETE FROM sign_in_attempts WHERE updated_at < ?", (before,))
