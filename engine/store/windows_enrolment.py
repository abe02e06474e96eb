"""Units of work on Windows enrolments (MS-MDE2) and the Federated sign-in tokens."""

from __future__ import annotations

import sqlite3
from typing import Any

from .rows import Row, insert, one

ENROLLED = "enrolled"
UNENROLMENT_REQUESTED = "unenrolment_requested"
UNENROLLED = "unenrolled"


def enrolment_of(conn: sqlite3.Connection, device_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM windows_enrolments WHERE device_id = ?", (device_id,)))


def enrolment_by_thumbprint(conn: sqlite3.Connection, thumbprint: str) -> Row | None:
    return one(
        conn.execute(
            "SELECT * FROM windows_enrolments WHERE certificate_thumbprint = ?", (thumbprint,)
        )
    )


def enrolment_by_hardware(
    conn: sqlite3.Connection, organisation_id: str, hardware_id: str
) -> Row | None:
    """The latest enrolment of this hardware in the organisation whose device still exists."""
    return one(
        conn.execute(
            "SELECT e.* FROM windows_enrolments e JOIN devices d ON d.id = e.device_id"
            " WHERE e.organisation_id = ? AND e.hardware_id = ? AND d.state != 'removed'"
            " ORDER BY e.enrolled_at DESC LIMIT 1",
            (organisation_id, hardware_id),
        )
    )


def waiting_windows_device(
    conn: sqlite3.Connection, organisation_id: str, owner_id: str
) -> Row | None:
    """The owner's oldest Windows device entered by a manager and never enrolled yet."""
    return one(
        conn.execute(
            "SELECT d.* FROM devices d WHERE d.organisation_id = ? AND d.owner_id = ?"
            " AND d.state = 'created' AND d.platform = 'windows'"
            " AND d.protocol IN ('oma_dm', 'microsoft_edm')"
            " AND NOT EXISTS (SELECT 1 FROM windows_enrolments e WHERE e.device_id = d.id)"
            " ORDER BY d.created_at, d.id LIMIT 1",
            (organisation_id, owner_id),
        )
    )


def put_enrolment(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    """Insert or replace the enrolment of ``values['device_id']`` (re-enrolment replaces)."""
    conn.execute("DELETE FROM windows_enrolments WHERE device_id = ?", (values["device_id"],))
    insert(conn, "windows_enrolments", values)


def update_enrolment(conn: sqlite3.Connection, device_id: str, values: dict[str, Any]) -> int:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    return conn.execute(
        f"UPDATE windows_enrolments SET {assignments} WHERE device_id = :device_id",
        {**values, "device_id": device_id},
    ).rowcount


def replace_certificate(
    conn: sqlite3.Connection, device_id: str, old_thumbprint: str, values: dict[str, Any]
) -> int:
    """Swap the certificate only if it is still the one renewed (0: someone renewed first)."""
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    return conn.execute(
        f"UPDATE windows_enrolments SET {assignments}"
        " WHERE device_id = :device_id AND certificate_thumbprint = :old AND state != :gone",
        {**values, "device_id": device_id, "old": old_thumbprint, "gone": UNENROLLED},
    ).rowcount


def insert_token(conn: sqlite3.Connection, token: dict[str, Any]) -> None:
    insert(conn, "windows_enrolment_tokens", token)


def token_by_hash(conn: sqlite3.Connection, token_hash: str, at: str) -> Row | None:
    """A sign-in token not yet expired, with its account's and organisation's state."""
    return one(
        conn.execute(
            "SELECT t.*, a.login, a.kind, a.active AS account_active,"
            " o.code AS organisation_code, o.active AS organisation_active"
            " FROM windows_enrolment_tokens t JOIN accounts a ON a.id = t.account_id"
            " JOIN organisations o ON o.id = t.organisation_id"
            " WHERE t.token_hash = ? AND t.expires_at > ?",
            (token_hash, at),
        )
    )


def use_token(conn: sqlite3.Connection, token_hash: str, at: str) -> int:
    """Use a token up (and forget expired ones); 1 if it was there and valid."""
    conn.execute("DELETE FROM windows_enrolment_tokens WHERE expires_at <= ?", (at,))
    return conn.execute(
        "DELETE FROM windows_enrolment_tokens WHERE token_hash = ?", (token_hash,)
    ).rowcount
