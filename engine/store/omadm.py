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
    """Plain OMA DM devices whose IMEI, serial number or UDID is the client's DevId (the
    SyncHdr Source, ``IMEI:...`` or bare), with their owner and organisation.

    Windows devices speak OMA DM too, but only with the certificate their enrolment issued:
    a device of platform ``windows`` or with a Windows enrolment is never one of these (a
    certificate-less client must not drive it with its owner's password)."""
    bare = dm_id.split(":", 1)[1] if dm_id[:5].upper() in ("IMEI:", "MEID:") else dm_id
    return many(
        conn.execute(
            """SELECT d.*, a.login AS owner_login, a.active AS owner_active,
                      a.kind AS owner_kind, a.password_hash AS owner_password_hash,
                      o.code AS organisation_code, o.active AS organisation_active
               FROM devices d
               JOIN organisations o ON o.id = d.organisation_id
               LEFT JOIN accounts a ON a.id = d.owner_id
               WHERE d.protocol = 'oma_dm' AND d.platform <> 'windows'
                 AND NOT EXISTS (SELECT 1 FROM windows_enrolments w WHERE w.device_id = d.id)
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
) -> None:
    """Record node values ``(uri, value, format, type)``; new nodes beyond
    :data:`MAX_NODES_PER_DEVICE` are not kept."""
    rows = [
        (device_id, organisation_id, uri[:1024], _cut(value), fmt, kind, source, at)
        for uri, value, fmt, kind in nodes
    ]
    count = conn.execute(
        "SELECT count(*) FROM omadm_nodes WHERE device_id = ?", (device_id,)
    ).fetchone()[0]
    if count + len(rows) > MAX_NODES_PER_DEVICE:
        known = {
            row[0]
            for row in conn.execute("SELECT uri FROM omadm_nodes WHERE device_id = ?", (device_id,))
        }
        room = MAX_NODES_PER_DEVICE - count
        kept = []
        for row in rows:
            if row[2] in known or room > 0:
                room -= row[2] not in known
                known.add(row[2])
                kept.append(row)
        rows = kept
    conn.executemany(
        "INSERT INTO omadm_nodes (device_id, organisation_id, uri, value, format, type, source,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (device_id, uri) DO UPDATE SET value = excluded.value,"
        " format = excluded.format, type = excluded.type, source = excluded.source,"
        " updated_at = excluded.updated_at",
        rows,
    )


def _cut(value: str | None) -> str | None:
    return value[:MAX_VALUE] if value is not None and len(value) > MAX_VALUE else value


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
