"""Units of work of WSDM: device tokens, push identities, check-ins, locations, schedules."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .rows import Row, many, one

# --------------------------------------------------------------------------- enrolment


def put_enrolment(conn: sqlite3.Connection, row: Row) -> None:
    """Record (or replace, on re-enrolment) a device's WSDM side with a fresh token hash."""
    conn.execute(
        "INSERT INTO wsdm_devices (device_id, organisation_id, token_hash, push_jid,"
        " enrolled_at, enrolment_id, enrolled_with) VALUES (:device_id, :organisation_id,"
        " :token_hash, :push_jid, :enrolled_at, :enrolment_id, :enrolled_with)"
        " ON CONFLICT (device_id) DO UPDATE SET token_hash = :token_hash,"
        " organisation_id = :organisation_id, push_jid = :push_jid, enrolled_at = :enrolled_at,"
        " enrolment_id = :enrolment_id, enrolled_with = :enrolled_with,"
        " last_checkin_at = NULL, last_checkin_id = NULL, checkins = 0,"
        " configuration_hash = NULL, overdue_since = NULL, unenrolled_at = NULL",
        row,
    )


def device_by_token(conn: sqlite3.Connection, token_hash: str) -> Row | None:
    """The device a token belongs to, with what decides whether it may connect."""
    return one(
        conn.execute(
            "SELECT w.device_id, w.organisation_id, w.unenrolled_at, w.push_jid,"
            " w.last_checkin_id, d.state, d.owner_id, o.active AS organisation_active,"
            " o.code AS organisation_code"
            " FROM wsdm_devices w JOIN devices d ON d.id = w.device_id"
            " JOIN organisations o ON o.id = w.organisation_id"
            " WHERE w.token_hash = ?",
            (token_hash,),
        )
    )


def wsdm_device(conn: sqlite3.Connection, device_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM wsdm_devices WHERE device_id = ?", (device_id,)))


def set_push_jid(conn: sqlite3.Connection, device_id: str, jid: str | None) -> None:
    conn.execute("UPDATE wsdm_devices SET push_jid = ? WHERE device_id = ?", (jid, device_id))


def replace_token(conn: sqlite3.Connection, device_id: str, token_hash: str) -> None:
    """A new token for the same enrolment: the previous one stops working."""
    conn.execute(
        "UPDATE wsdm_devices SET token_hash = ? WHERE device_id = ?", (token_hash, device_id)
    )


def enrolment_to_replay(
    conn: sqlite3.Connection, organisation_id: str, enrolment_id_hash: str, since: str
) -> Row | None:
    """The organisation's WSDM enrolment made since ``since`` with this enrolment id, if the
    device has not checked in since (it never got its token) and was not unenrolled; with
    what (code or account) it was made with."""
    return one(
        conn.execute(
            "SELECT device_id, enrolled_with FROM wsdm_devices"
            " WHERE organisation_id = ? AND enrolment_id = ? AND enrolled_at >= ?"
            " AND unenrolled_at IS NULL AND last_checkin_at IS NULL"
            " ORDER BY enrolled_at DESC LIMIT 1",
            (organisation_id, enrolment_id_hash, since),
        )
    )


def mark_unenrolled(conn: sqlite3.Connection, device_id: str, at: str) -> int:
    return conn.execute(
        "UPDATE wsdm_devices SET unenrolled_at = ? WHERE device_id = ? AND unenrolled_at IS NULL",
        (at, device_id),
    ).rowcount


# --------------------------------------------------------------------------- check-in


def record_check_in(
    conn: sqlite3.Connection, device_id: str, checkin_id: str, at: str, configuration_hash: str
) -> None:
    conn.execute(
        "UPDATE wsdm_devices SET last_checkin_at = ?, last_checkin_id = ?,"
        " checkins = checkins + 1, configuration_hash = ?, overdue_since = NULL"
        " WHERE device_id = ?",
        (at, checkin_id, configuration_hash, device_id),
    )


def store_device_report(conn: sqlite3.Connection, device_id: str, values: dict[str, Any]) -> None:
    """What a check-in changes on the inventory row (model, OS, inventory, last seen...)."""
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    conn.execute(f"UPDATE devices SET {assignments} WHERE id = :id", {**values, "id": device_id})


def insert_locations(conn: sqlite3.Connection, rows: Sequence[Row]) -> int:
    """Add reported locations; one already reported for that moment is kept as it was."""
    before = conn.total_changes
    conn.executemany(
        "INSERT INTO wsdm_locations (id, organisation_id, device_id, command_id, latitude,"
        " longitude, accuracy, recorded_at, received_at) VALUES (:id, :organisation_id,"
        " :device_id, :command_id, :latitude, :longitude, :accuracy, :recorded_at,"
        " :received_at) ON CONFLICT (device_id, recorded_at) DO NOTHING",
        rows,
    )
    return conn.total_changes - before


def locations_of_device(
    conn: sqlite3.Connection,
    organisation_id: str,
    device_id: str,
    limit: int,
    offset: int,
    command_owner: str | None = None,
) -> tuple[list[Row], int]:
    """A device's locations, newest first; with ``command_owner``, only those answering
    commands that account queued (the count and the page alike)."""
    where = "organisation_id = ? AND device_id = ?"
    args: list[Any] = [organisation_id, device_id]
    if command_owner is not None:
        where += " AND command_id IN (SELECT id FROM commands WHERE device_id = ? AND owner_id = ?)"
        args += [device_id, command_owner]
    total = conn.execute(f"SELECT count(*) FROM wsdm_locations WHERE {where}", args).fetchone()[0]
    rows = many(
        conn.execute(
            "SELECT latitude, longitude, accuracy, recorded_at, received_at, command_id"
            f" FROM wsdm_locations WHERE {where} ORDER BY recorded_at DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
    )
    return rows, total


# --------------------------------------------------------------------------- scheduler


def enrolled_devices_of(conn: sqlite3.Connection, organisation_id: str) -> list[str]:
    """Ids of the organisation's WSDM devices that are enrolled and have push."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT w.device_id FROM wsdm_devices w JOIN devices d ON d.id = w.device_id"
            " WHERE w.organisation_id = ? AND w.unenrolled_at IS NULL AND d.state = 'enrolled'"
            " AND w.push_jid IS NOT NULL",
            (organisation_id,),
        )
    ]


def wsdm_organisations(conn: sqlite3.Connection) -> list[str]:
    """Active organisations with at least one enrolled WSDM device."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT w.organisation_id FROM wsdm_devices w"
            " JOIN organisations o ON o.id = w.organisation_id"
            " WHERE w.unenrolled_at IS NULL AND o.active = 1"
        )
    ]


def mark_overdue(conn: sqlite3.Connection, organisation_id: str, before: str, at: str) -> int:
    """Flag the organisation's enrolled devices not seen since ``before`` (once each)."""
    return conn.execute(
        "UPDATE wsdm_devices SET overdue_since = ? WHERE organisation_id = ?"
        " AND unenrolled_at IS NULL AND overdue_since IS NULL"
        " AND coalesce(last_checkin_at, enrolled_at) < ?"
        " AND device_id IN (SELECT id FROM devices WHERE state = 'enrolled')",
        (at, organisation_id, before),
    ).rowcount


def claim_schedule(
    conn: sqlite3.Connection,
    name: str,
    organisation_id: str | None,
    now: str,
    next_due: str,
    node: str,
) -> bool:
    """Take the job ``name`` if it is due (or new), moving it to ``next_due``; True if
    this node got it. The check and the move are one statement: another node running the
    same claim at the same moment changes no row and gets False."""
    conn.execute(
        "INSERT INTO wsdm_schedules (name, organisation_id, due_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (name, organisation_id, now),
    )
    return (
        conn.execute(
            "UPDATE wsdm_schedules SET due_at = ?, claimed_by = ?, claimed_at = ?"
            " WHERE name = ? AND due_at <= ?",
            (next_due, node, now, name, now),
        ).rowcount
        == 1
    )


def schedule_of(conn: sqlite3.Connection, name: str) -> Row | None:
    return one(conn.execute("SELECT * FROM wsdm_schedules WHERE name = ?", (name,)))
