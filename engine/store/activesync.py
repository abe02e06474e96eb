"""Units of work of Exchange ActiveSync: its devices, folder sync states and settings.

Items themselves live in the PIM store (``engine.store.pim``) shared with OMA DS; what an
ActiveSync device holds of a collection is recorded there too (``pim_id_map`` with the
item's ServerId as the device's id, ``pim_sync_states`` for the device page), so a change
from any protocol reaches every device by the same change numbers.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .rows import Row, insert, many, one


def device_for_eas_id(conn: sqlite3.Connection, account_id: str, eas_device_id: str) -> Row | None:
    """The account's inventory device an ActiveSync DeviceId names (seen before, or its
    UDID, IMEI or serial number), with its organisation's state and features."""
    return one(
        conn.execute(
            """SELECT d.*, o.active AS organisation_active, o.features AS organisation_features
               FROM devices d JOIN organisations o ON o.id = d.organisation_id
               WHERE d.owner_id = :account AND (
                   d.id IN (SELECT device_id FROM eas_devices
                            WHERE account_id = :account AND eas_device_id = :eas)
                   OR d.udid = :eas OR d.imei = :eas OR d.serial_number = :eas)
               ORDER BY d.id IN (SELECT device_id FROM eas_devices WHERE eas_device_id = :eas)
                   DESC, d.created_at DESC LIMIT 1""",
            {"account": account_id, "eas": eas_device_id},
        )
    )


def eas_device(conn: sqlite3.Connection, device_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM eas_devices WHERE device_id = ?", (device_id,)))


def insert_eas_device(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    insert(conn, "eas_devices", values)


def update_eas_device(conn: sqlite3.Connection, device_id: str, values: dict[str, Any]) -> int:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    return conn.execute(
        f"UPDATE eas_devices SET {assignments} WHERE device_id = :device_id",
        {**values, "device_id": device_id},
    ).rowcount


def eas_devices_of_organisation(conn: sqlite3.Connection, organisation_id: str) -> list[Row]:
    return many(
        conn.execute(
            "SELECT * FROM eas_devices WHERE organisation_id = ? ORDER BY created_at",
            (organisation_id,),
        )
    )


# --------------------------------------------------------------------------- settings


def settings_of(conn: sqlite3.Connection, organisation_id: str) -> Row | None:
    return one(
        conn.execute("SELECT * FROM eas_settings WHERE organisation_id = ?", (organisation_id,))
    )


def put_settings(conn: sqlite3.Connection, organisation_id: str, settings: str, at: str) -> int:
    """Store the settings and take the next revision (devices provision again)."""
    row = conn.execute(
        "INSERT INTO eas_settings (organisation_id, settings, revision, updated_at)"
        " VALUES (?, ?, 1, ?) ON CONFLICT (organisation_id) DO UPDATE SET"
        " settings = excluded.settings, revision = revision + 1, updated_at = excluded.updated_at"
        " RETURNING revision",
        (organisation_id, settings, at),
    ).fetchone()
    return int(row[0])


# --------------------------------------------------------------------------- folder states


def folder_state(conn: sqlite3.Connection, device_id: str, folder: str) -> Row | None:
    return one(
        conn.execute(
            "SELECT * FROM eas_folder_states WHERE device_id = ? AND folder = ?",
            (device_id, folder),
        )
    )


def folder_states(conn: sqlite3.Connection, device_id: str) -> list[Row]:
    return many(
        conn.execute(
            "SELECT * FROM eas_folder_states WHERE device_id = ? ORDER BY folder", (device_id,)
        )
    )


def put_folder_state(conn: sqlite3.Connection, state: dict[str, Any]) -> None:
    columns = ", ".join(state)
    marks = ", ".join(f":{name}" for name in state)
    updates = ", ".join(
        f"{name} = excluded.{name}" for name in state if name not in ("device_id", "folder")
    )
    conn.execute(
        f"INSERT INTO eas_folder_states ({columns}) VALUES ({marks})"
        f" ON CONFLICT (device_id, folder) DO UPDATE SET {updates}",
        state,
    )


def forget_folder_states(conn: sqlite3.Connection, device_id: str) -> None:
    conn.execute("DELETE FROM eas_folder_states WHERE device_id = ?", (device_id,))


def forget_folder_state(conn: sqlite3.Connection, device_id: str, folder: str) -> None:
    conn.execute(
        "DELETE FROM eas_folder_states WHERE device_id = ? AND folder = ?", (device_id, folder)
    )


# --------------------------------------------------------------------------- commands


def pending_wipe(conn: sqlite3.Connection, device_id: str) -> Row | None:
    """The oldest wipe queued or sent to the device and not answered yet."""
    return one(
        conn.execute(
            "SELECT * FROM commands WHERE device_id = ? AND state IN ('queued', 'sent')"
            " AND kind IN ('wipe', 'enterprise_wipe') ORDER BY created_at LIMIT 1",
            (device_id,),
        )
    )


def undeliverable_commands(conn: sqlite3.Connection, device_id: str) -> list[Row]:
    """Commands queued for the device that ActiveSync has no way to carry out (all but the
    wipes)."""
    return many(
        conn.execute(
            "SELECT * FROM commands WHERE device_id = ? AND state = 'queued'"
            " AND kind NOT IN ('wipe', 'enterprise_wipe') ORDER BY created_at",
            (device_id,),
        )
    )


# --------------------------------------------------------------------------- change watch


def collection_versions(conn: sqlite3.Connection, collection_ids: list[str]) -> dict[str, int]:
    """The current change number of each collection (for Pings parked on them)."""
    found: dict[str, int] = {}
    for start in range(0, len(collection_ids), 500):
        chunk = collection_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT id, version FROM pim_collections WHERE id IN ({marks})", chunk
        ):
            found[row[0]] = int(row[1])
    return found


_FOR_DEVICE = (
    "collection_id = :collection AND version > :version"
    " AND (origin IS NULL OR origin != :device OR version <= :reset)"
)


def changes_page(
    conn: sqlite3.Connection,
    collection_id: str,
    version: int,
    device_id: str,
    reset_version: int,
    limit: int,
) -> list[Row]:
    """The next ``limit`` changes after ``version`` the device has not made itself (its own
    items from before it started over included), tombstones too, in change order."""
    return many(
        conn.execute(
            "SELECT id, version, data, deleted FROM pim_items"
            f" WHERE {_FOR_DEVICE} ORDER BY version LIMIT :limit",
            {
                "collection": collection_id,
                "version": version,
                "device": device_id,
                "reset": reset_version,
                "limit": limit,
            },
        )
    )


def count_changes_after(
    conn: sqlite3.Connection, collection_id: str, version: int, device_id: str, reset_version: int
) -> int:
    """How many changes :func:`changes_page` would list (GetItemEstimate, Ping)."""
    return int(
        conn.execute(
            f"SELECT count(*) FROM pim_items WHERE {_FOR_DEVICE}",
            {
                "collection": collection_id,
                "version": version,
                "device": device_id,
                "reset": reset_version,
            },
        ).fetchone()[0]
    )


# --------------------------------------------------------------------------- client ids

#: The prefix of the id-map rows that remember a device's ClientIds (``client:<SyncKey>:<id>``)
#: beside the item's ServerId, so an Add resent under the same SyncKey maps to the same item.
CLIENT_PREFIX = "client:"


def client_luid(sync_key: int, client_id: str) -> str:
    return f"{CLIENT_PREFIX}{sync_key}:{client_id}"


def put_client_mapping(
    conn: sqlite3.Connection, device_id: str, collection_id: str, luid: str, item_id: int
) -> None:
    """Remember the ClientId of an Add beside the item's ServerId (a second row of the item)."""
    conn.execute(
        "INSERT INTO pim_id_map (device_id, collection_id, luid, item_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device_id, collection_id, luid) DO UPDATE SET item_id = excluded.item_id",
        (device_id, collection_id, luid, item_id),
    )


def forget_client_mappings(
    conn: sqlite3.Connection, device_id: str, collection_id: str, sync_key: int
) -> None:
    """Forget the ClientIds of every SyncKey but ``sync_key``: once the device syncs with a
    newer key, the Adds of older ones can no longer be resent."""
    conn.execute(
        "DELETE FROM pim_id_map WHERE device_id = ? AND collection_id = ?"
        " AND substr(luid, 1, ?) = ? AND substr(luid, 1, ?) != ?",
        (
            device_id,
            collection_id,
            len(CLIENT_PREFIX),
            CLIENT_PREFIX,
            len(client_luid(sync_key, "")),
            client_luid(sync_key, ""),
        ),
    )


def server_ids_of_items(
    conn: sqlite3.Connection, device_id: str, collection_id: str, item_ids: list[int]
) -> dict[int, str]:
    """The ServerIds the device knows items by (its ClientId rows left out)."""
    found: dict[int, str] = {}
    for start in range(0, len(item_ids), 500):
        chunk = item_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            "SELECT item_id, luid FROM pim_id_map WHERE device_id = ? AND collection_id = ?"
            f" AND item_id IN ({marks}) AND substr(luid, 1, ?) != ?",
            (device_id, collection_id, *chunk, len(CLIENT_PREFIX), CLIENT_PREFIX),
        ):
            found[int(row[0])] = row[1]
    return found


def account_with_organisation(conn: sqlite3.Connection, account_id: str) -> Row | None:
    """An account with its organisation's state and features."""
    return one(
        conn.execute(
            "SELECT a.*, o.active AS organisation_active, o.features AS organisation_features"
            " FROM accounts a JOIN organisations o ON o.id = a.organisation_id WHERE a.id = ?",
            (account_id,),
        )
    )
