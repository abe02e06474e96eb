"""Units of work on Apple MDM identities and enrolments (device and user channels)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .rows import Row, insert, many, one, update

ENROLLED = "enrolled"
AUTHENTICATED = "authenticated"
CHECKED_OUT = "checked_out"


def insert_identity(conn: sqlite3.Connection, identity: dict[str, Any]) -> None:
    insert(conn, "apple_mdm_identities", identity)


def identity_by_fingerprint(conn: sqlite3.Connection, fingerprint: str) -> Row | None:
    return one(
        conn.execute("SELECT * FROM apple_mdm_identities WHERE fingerprint = ?", (fingerprint,))
    )


def bind_identity(conn: sqlite3.Connection, fingerprint: str, enrolment_id: str) -> None:
    conn.execute(
        "UPDATE apple_mdm_identities SET enrolment_id = ? WHERE fingerprint = ?",
        (enrolment_id, fingerprint),
    )


def enrolment_by_id(conn: sqlite3.Connection, enrolment_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM apple_mdm_enrolments WHERE id = ?", (enrolment_id,)))


def channel_by_id(
    conn: sqlite3.Connection, enrolment_id: str
) -> tuple[Row, Row | None, Row | None] | None:
    """A channel with what decides whether it may connect, in one statement (a device's
    every message asks): the enrolment (every column), its device (``id``, ``state``) and
    its organisation (``code``, ``active``), each of those two None if its row is gone."""
    row = conn.execute(
        "SELECT d.id, d.state, o.code, o.active, e.* FROM apple_mdm_enrolments e"
        " LEFT JOIN devices d ON d.id = e.device_id"
        " LEFT JOIN organisations o ON o.id = e.organisation_id"
        " WHERE e.id = ?",
        (enrolment_id,),
    ).fetchone()
    if row is None:
        return None
    device_id, device_state, code, active = row[:4]
    enrolment = dict(zip(row.keys()[4:], row[4:], strict=True))
    device = {"id": device_id, "state": device_state} if device_id is not None else None
    organisation = {"code": code, "active": active} if code is not None else None
    return enrolment, device, organisation


def insert_enrolment(conn: sqlite3.Connection, enrolment: dict[str, Any]) -> None:
    insert(conn, "apple_mdm_enrolments", enrolment)


def update_enrolment(conn: sqlite3.Connection, enrolment_id: str, values: dict[str, Any]) -> int:
    return update(conn, "apple_mdm_enrolments", enrolment_id, values)


def delete_user_channels(conn: sqlite3.Connection, device_channel: str) -> int:
    return conn.execute(
        "DELETE FROM apple_mdm_enrolments WHERE parent_id = ?", (device_channel,)
    ).rowcount


def enrolment_of_device(conn: sqlite3.Connection, device_id: str) -> Row | None:
    """The device channel of an inventory device (the newest, if it enrolled again)."""
    return one(
        conn.execute(
            "SELECT * FROM apple_mdm_enrolments WHERE device_id = ? AND parent_id IS NULL"
            " ORDER BY created_at DESC LIMIT 1",
            (device_id,),
        )
    )


def push_targets(conn: sqlite3.Connection, device_ids: Sequence[str]) -> list[Row]:
    """Device channels of these devices that may be pushed: enrolled, with a good token,
    of a device that may connect."""
    rows: list[Row] = []
    for start in range(0, len(device_ids), 500):
        chunk = device_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows += many(
            conn.execute(
                "SELECT e.id, e.organisation_id, e.device_id, e.push_token, e.push_magic,"
                " e.topic FROM apple_mdm_enrolments e"
                " JOIN devices d ON d.id = e.device_id"
                " JOIN organisations o ON o.id = e.organisation_id"
                f" WHERE e.device_id IN ({marks}) AND e.parent_id IS NULL"
                " AND e.state = 'enrolled' AND e.push_token IS NOT NULL"
                " AND e.token_bad_at IS NULL AND d.state IN ('created', 'enrolled')"
                " AND o.active = 1",
                list(chunk),
            )
        )
    return rows


def scheduled_targets(conn: sqlite3.Connection, organisation_id: str, before: str) -> list[str]:
    """Devices of an organisation not pushed since ``before`` (scheduled notifications)."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT device_id FROM apple_mdm_enrolments WHERE organisation_id = ?"
            " AND parent_id IS NULL AND state = 'enrolled' AND push_token IS NOT NULL"
            " AND token_bad_at IS NULL AND (last_push_at IS NULL OR last_push_at < ?)",
            (organisation_id, before),
        )
    ]


def organisations_with_enrolments(conn: sqlite3.Connection) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT organisation_id FROM apple_mdm_enrolments WHERE state = 'enrolled'"
        )
    ]


def mark_token_bad(
    conn: sqlite3.Connection, enrolment_id: str, token: str, reason: str, at: str
) -> int:
    """Only the token APNs refused: a TokenUpdate meanwhile brought a new one."""
    return conn.execute(
        "UPDATE apple_mdm_enrolments SET token_bad_at = ?, token_bad_reason = ?, updated_at = ?"
        " WHERE id = ? AND push_token = ? AND token_bad_at IS NULL",
        (at, reason, at, enrolment_id, token),
    ).rowcount


def record_pushes(conn: sqlite3.Connection, enrolment_ids: Sequence[str], at: str) -> None:
    conn.executemany(
        "UPDATE apple_mdm_enrolments SET last_push_at = ? WHERE id = ?",
        [(at, enrolment_id) for enrolment_id in enrolment_ids],
    )


def certificate_by_id(conn: sqlite3.Connection, certificate_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM certificates WHERE id = ?", (certificate_id,)))


def user_channels_of(conn: sqlite3.Connection, device_channel: str) -> list[Row]:
    """The user channels of a device channel, by user id."""
    return many(
        conn.execute(
            "SELECT user_id, user_short_name, state FROM apple_mdm_enrolments"
            " WHERE parent_id = ? ORDER BY user_id",
            (device_channel,),
        )
    )
