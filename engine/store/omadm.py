"""Units of work of OMA DM: the per-device management tree and each device's DM state.

The management tree kept here is a snapshot: the last known value of every node the service
read from the device or wrote to it, with its format, type, where it came from (``device``
when read or reported, ``server`` when written and acknowledged) and when.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from .rows import Row, many, one

#: At most this many nodes are kept per device (a hostile client cannot fill the disk).
MAX_NODES_PER_DEVICE = 5000
#: The longest node value kept in the snapshot (larger values are cut and marked).
MAX_VALUE = 64 * 1024


def oma_dm_devices_with_id(conn: sqlite3.Connection, dm_id: str) -> list[Row]:
    """OMA DM devices whose IMEI, serial number or UDID is the client's DevId (the SyncHdr
    Source, ``IMEI:...`` or bare), with their owner and organisation."""
    bare = dm_id.split(":", 1)[1] if dm_id[:5].upper() in ("IMEI:", "MEID:") else dm_id
    return many(
        conn.execute(
            """SELECT d.*, a.login AS owner_login, a.active AS owner_active,
                      a.kind AS owner_kind, a.password_hash AS owner_password_hash,
                      o.code AS organisation_code, o.active AS organisation_active
               FROM devices d
               JOIN organisations o ON o.id = d.organisation_id
               LEFT JOIN accounts a ON a.id = d.owner_id
               WHERE d.protocol = 'oma_dm'
                 AND (d.imei IN (?, ?) OR d.serial_number = ? OR d.udid = ?)""",
            (dm_id, bare, dm_id, dm_id),
        )
    )


def peer(conn: sqlite3.Connection, device_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM omadm_peers WHERE device_id = ?", (device_id,)))


def put_peer(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    """Insert or update the DM state of ``values['device_id']`` (only the given columns)."""
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    updates = ", ".join(f"{name} = excluded.{name}" for name in values if name != "device_id")
    conn.execute(
        f"INSERT INTO omadm_peers ({columns}) VALUES ({marks})"
        f" ON CONFLICT (device_id) DO UPDATE SET {updates}",
        values,
    )


def put_nodes(
    conn: sqlite3.Connection,
    device_id: str,
    organisation_id: str,
    nodes: Iterable[tuple[str, str | None, str | None, str | None]],
    source: str,
    at: str,
) -> int:
    """Record node values ``(uri, value, format, type)``; returns how many were kept."""
    count = conn.execute(
        "SELECT count(*) FROM omadm_nodes WHERE device_id = ?", (device_id,)
    ).fetchone()[0]
    kept = 0
    for uri, value, fmt, kind in nodes:
        if value is not None and len(value) > MAX_VALUE:
            value = value[:MAX_VALUE]
        cursor = conn.execute(
            "UPDATE omadm_nodes SET value = ?, format = ?, type = ?, source = ?, updated_at = ?"
            " WHERE device_id = ? AND uri = ?",
            (value, fmt, kind, source, at, device_id, uri),
        )
        if cursor.rowcount == 0:
            if count >= MAX_NODES_PER_DEVICE:
                continue
            conn.execute(
                "INSERT INTO omadm_nodes (device_id, organisation_id, uri, value, format, type,"
                " source, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id, organisation_id, uri[:1024], value, fmt, kind, source, at),
            )
            count += 1
        kept += 1
    return kept


def delete_nodes(conn: sqlite3.Connection, device_id: str, uris: Iterable[str]) -> None:
    """Forget nodes (and what lies below them) the server deleted."""
    for uri in uris:
        conn.execute(
            "DELETE FROM omadm_nodes WHERE device_id = ? AND (uri = ? OR substr(uri, 1, ?) = ?)",
            (device_id, uri, len(uri) + 1, uri + "/"),
        )


def nodes_of(conn: sqlite3.Connection, device_id: str) -> list[Row]:
    return many(
        conn.execute(
            "SELECT uri, value, format, type, source, updated_at FROM omadm_nodes"
            " WHERE device_id = ? ORDER BY uri",
            (device_id,),
        )
    )


def count_nodes(conn: sqlite3.Connection, device_id: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM omadm_nodes WHERE device_id = ?", (device_id,)
    ).fetchone()[0]


def insert_setting(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    conn.execute(f"INSERT INTO omadm_settings ({columns}) VALUES ({marks})", values)


def settings_of(
    conn: sqlite3.Connection, device_id: str, states: tuple[str, ...] | None = None
) -> list[Row]:
    """A device's settings, oldest first (only those in ``states`` when given)."""
    if states is None:
        return many(
            conn.execute(
                "SELECT * FROM omadm_settings WHERE device_id = ? ORDER BY created_at, id",
                (device_id,),
            )
        )
    marks = ", ".join("?" for _ in states)
    return many(
        conn.execute(
            f"SELECT * FROM omadm_settings WHERE device_id = ? AND state IN ({marks})"
            " ORDER BY created_at, id",
            (device_id, *states),
        )
    )


def update_setting(conn: sqlite3.Connection, setting_id: str, values: dict[str, Any]) -> int:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    return conn.execute(
        f"UPDATE omadm_settings SET {assignments} WHERE id = :id", {**values, "id": setting_id}
    ).rowcount
