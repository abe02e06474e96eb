"""Units of work of the PIM store: collections, items with versions, sync states, id maps.

An item row holds the item's latest state and the collection's change number of its last
change; a deleted item stays as a tombstone (``deleted = 1``, no data). "Changes after N" is
then one range scan on ``(collection_id, version)``, deletions included, for any number of
devices (and later Exchange ActiveSync) reading the same collection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from .rows import Row, insert, many, one

# --------------------------------------------------------------------------- collections


def collection_of(conn: sqlite3.Connection, account_id: str, kind: str) -> Row | None:
    """The account's default collection of ``kind`` (the one OMA DS synchronises)."""
    return one(
        conn.execute(
            "SELECT * FROM pim_collections WHERE account_id = ? AND kind = ? AND is_default = 1",
            (account_id, kind),
        )
    )


def folder_collections(conn: sqlite3.Connection, account_id: str) -> list[Row]:
    """The account's live collections that are folders of its own (not a default one)."""
    return many(
        conn.execute(
            "SELECT * FROM pim_collections WHERE account_id = ? AND is_default = 0"
            " AND deleted_at IS NULL ORDER BY id",
            (account_id,),
        )
    )


def folder_collection(conn: sqlite3.Connection, account_id: str, collection_id: str) -> Row | None:
    """One live folder of the account's own, by id."""
    return one(
        conn.execute(
            "SELECT * FROM pim_collections WHERE id = ? AND account_id = ? AND is_default = 0"
            " AND deleted_at IS NULL",
            (collection_id, account_id),
        )
    )


def update_collection(conn: sqlite3.Connection, collection_id: str, values: dict[str, Any]) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    conn.execute(
        f"UPDATE pim_collections SET {assignments} WHERE id = :id", {**values, "id": collection_id}
    )


def insert_collection(conn: sqlite3.Connection, collection: dict[str, Any]) -> None:
    insert(conn, "pim_collections", collection)


def collections_of_account(conn: sqlite3.Connection, account_id: str) -> list[Row]:
    return many(
        conn.execute(
            "SELECT * FROM pim_collections WHERE account_id = ? ORDER BY kind", (account_id,)
        )
    )


def next_version(conn: sqlite3.Connection, collection_id: str) -> int:
    """Take the collection's next change number."""
    row = conn.execute(
        "UPDATE pim_collections SET version = version + 1 WHERE id = ? RETURNING version",
        (collection_id,),
    ).fetchone()
    return int(row[0])


def collection_version(conn: sqlite3.Connection, collection_id: str) -> int:
    row = conn.execute(
        "SELECT version FROM pim_collections WHERE id = ?", (collection_id,)
    ).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------- items

_ITEM = "id, version, origin, content_type, data, uid, fingerprint, deleted, updated_at"


def item_in(conn: sqlite3.Connection, collection_id: str, item_id: int) -> Row | None:
    return one(
        conn.execute(
            f"SELECT {_ITEM} FROM pim_items WHERE id = ? AND collection_id = ?",
            (item_id, collection_id),
        )
    )


def insert_item(conn: sqlite3.Connection, item: dict[str, Any]) -> int:
    insert(conn, "pim_items", item)
    return int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])


def update_item(conn: sqlite3.Connection, item_id: int, values: dict[str, Any]) -> None:
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    conn.execute(f"UPDATE pim_items SET {assignments} WHERE id = :id", {**values, "id": item_id})


def live_item_matching(
    conn: sqlite3.Connection,
    collection_id: str,
    fingerprint: str,
    uid: str | None,
    exclude: Iterable[int],
) -> Row | None:
    """A live item with this content (or this UID) that is not among ``exclude``."""
    excluded = set(exclude)
    for column, value in (("fingerprint", fingerprint), ("uid", uid)):
        if value is None:
            continue
        for row in conn.execute(
            f"SELECT {_ITEM} FROM pim_items WHERE collection_id = ? AND {column} = ?"
            " AND deleted = 0 ORDER BY id",
            (collection_id, value),
        ):
            if row["id"] not in excluded:
                return dict(row)
    return None


def changes_after(
    conn: sqlite3.Connection, collection_id: str, version: int, device_id: str | None
) -> list[Row]:
    """Items changed after ``version`` by anyone but ``device_id``, tombstones included."""
    return many(
        conn.execute(
            f"SELECT {_ITEM} FROM pim_items WHERE collection_id = ? AND version > ?"
            " AND (origin IS NULL OR origin != ?) ORDER BY version",
            (collection_id, version, device_id or ""),
        )
    )


def live_items(conn: sqlite3.Connection, collection_id: str) -> list[Row]:
    return many(
        conn.execute(
            f"SELECT {_ITEM} FROM pim_items WHERE collection_id = ? AND deleted = 0 ORDER BY id",
            (collection_id,),
        )
    )


def delete_live_items(
    conn: sqlite3.Connection, collection_id: str, origin: str | None, at: str
) -> int:
    """Leave a tombstone of every live item, each under its own change number (so a page of
    changes never splits one number), as a deletion by ``origin``."""
    deleted = 0
    for item_id in live_item_ids(conn, collection_id):
        update_item(
            conn,
            item_id,
            {
                "version": next_version(conn, collection_id),
                "origin": origin,
                "data": None,
                "deleted": 1,
                "updated_at": at,
            },
        )
        deleted += 1
    return deleted


def live_item_ids(conn: sqlite3.Connection, collection_id: str) -> list[int]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT id FROM pim_items WHERE collection_id = ? AND deleted = 0", (collection_id,)
        )
    ]


def count_live_items(conn: sqlite3.Connection, collection_id: str) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM pim_items WHERE collection_id = ? AND deleted = 0",
            (collection_id,),
        ).fetchone()[0]
    )


# --------------------------------------------------------------------------- id map


def id_map(conn: sqlite3.Connection, device_id: str, collection_id: str) -> dict[str, int]:
    return {
        row[0]: row[1]
        for row in conn.execute(
            "SELECT luid, item_id FROM pim_id_map WHERE device_id = ? AND collection_id = ?",
            (device_id, collection_id),
        )
    }


def mapped_item(
    conn: sqlite3.Connection, device_id: str, collection_id: str, luid: str
) -> int | None:
    row = conn.execute(
        "SELECT item_id FROM pim_id_map WHERE device_id = ? AND collection_id = ? AND luid = ?",
        (device_id, collection_id, luid),
    ).fetchone()
    return int(row[0]) if row else None


def luids_of_items(
    conn: sqlite3.Connection, device_id: str, collection_id: str, item_ids: list[int]
) -> dict[int, str]:
    found: dict[int, str] = {}
    for start in range(0, len(item_ids), 500):
        chunk = item_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            "SELECT item_id, luid FROM pim_id_map WHERE device_id = ? AND collection_id = ?"
            f" AND item_id IN ({marks})",
            (device_id, collection_id, *chunk),
        ):
            found[int(row[0])] = row[1]
    return found


def put_mapping(
    conn: sqlite3.Connection, device_id: str, collection_id: str, luid: str, item_id: int
) -> None:
    """Map ``luid`` to ``item_id``; an item has one LUID per device."""
    conn.execute(
        "DELETE FROM pim_id_map WHERE device_id = ? AND collection_id = ? AND item_id = ?",
        (device_id, collection_id, item_id),
    )
    conn.execute(
        "INSERT INTO pim_id_map (device_id, collection_id, luid, item_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device_id, collection_id, luid) DO UPDATE SET item_id = excluded.item_id",
        (device_id, collection_id, luid, item_id),
    )


def drop_mapping_of_item(
    conn: sqlite3.Connection, device_id: str, collection_id: str, item_id: int
) -> None:
    conn.execute(
        "DELETE FROM pim_id_map WHERE device_id = ? AND collection_id = ? AND item_id = ?",
        (device_id, collection_id, item_id),
    )


def drop_mapping(conn: sqlite3.Connection, device_id: str, collection_id: str, luid: str) -> None:
    conn.execute(
        "DELETE FROM pim_id_map WHERE device_id = ? AND collection_id = ? AND luid = ?",
        (device_id, collection_id, luid),
    )


def clear_mappings(conn: sqlite3.Connection, device_id: str, collection_id: str) -> None:
    conn.execute(
        "DELETE FROM pim_id_map WHERE device_id = ? AND collection_id = ?",
        (device_id, collection_id),
    )


# --------------------------------------------------------------------------- sync states


def sync_state(conn: sqlite3.Connection, device_id: str, collection_id: str) -> Row | None:
    return one(
        conn.execute(
            "SELECT * FROM pim_sync_states WHERE device_id = ? AND collection_id = ?",
            (device_id, collection_id),
        )
    )


def put_sync_state(conn: sqlite3.Connection, state: dict[str, Any]) -> None:
    columns = ", ".join(state)
    marks = ", ".join(f":{name}" for name in state)
    updates = ", ".join(
        f"{name} = excluded.{name}" for name in state if name not in ("device_id", "collection_id")
    )
    conn.execute(
        f"INSERT INTO pim_sync_states ({columns}) VALUES ({marks})"
        f" ON CONFLICT (device_id, collection_id) DO UPDATE SET {updates}",
        state,
    )


def sync_states_of_device(conn: sqlite3.Connection, device_id: str) -> list[Row]:
    """The device's datastores with their collection's kind and live item count."""
    return many(
        conn.execute(
            """SELECT s.*, c.kind, c.display_name,
                   (SELECT count(*) FROM pim_items i
                     WHERE i.collection_id = s.collection_id AND i.deleted = 0) AS items,
                   (SELECT count(*) FROM pim_id_map m
                     WHERE m.device_id = s.device_id AND m.collection_id = s.collection_id)
                     AS device_items
               FROM pim_sync_states s JOIN pim_collections c ON c.id = s.collection_id
               WHERE s.device_id = ? ORDER BY c.kind""",
            (device_id,),
        )
    )


def request_refresh(conn: sqlite3.Connection, device_id: str, kinds: list[str]) -> int:
    marks = ", ".join("?" * len(kinds))
    return conn.execute(
        "UPDATE pim_sync_states SET refresh_requested = 1 WHERE device_id = ? AND collection_id"
        f" IN (SELECT id FROM pim_collections WHERE kind IN ({marks}))",
        (device_id, *kinds),
    ).rowcount


def organisation_of_device(conn: sqlite3.Connection, device_id: str) -> str | None:
    row = conn.execute("SELECT organisation_id FROM devices WHERE id = ?", (device_id,)).fetchone()
    return row[0] if row else None


def features_of_organisation(conn: sqlite3.Connection, device_id: str) -> dict[str, bool]:
    """The feature switches of the device's organisation (absent: on)."""
    row = conn.execute(
        "SELECT o.features FROM organisations o JOIN devices d ON d.organisation_id = o.id"
        " WHERE d.id = ?",
        (device_id,),
    ).fetchone()
    return {name: bool(value) for name, value in json.loads(row[0] if row else "{}").items()}


# --------------------------------------------------------------------------- peers


def peer(conn: sqlite3.Connection, device_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM pim_peers WHERE device_id = ?", (device_id,)))


def put_peer(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    updates = ", ".join(f"{name} = excluded.{name}" for name in values if name != "device_id")
    conn.execute(
        f"INSERT INTO pim_peers ({columns}) VALUES ({marks})"
        f" ON CONFLICT (device_id) DO UPDATE SET {updates}",
        values,
    )


def credential_of(conn: sqlite3.Connection, account_id: str) -> Row | None:
    return one(conn.execute("SELECT * FROM pim_credentials WHERE account_id = ?", (account_id,)))


def put_credential(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO pim_credentials (account_id, organisation_id, username, digest, updated_at)"
        " VALUES (:account_id, :organisation_id, :username, :digest, :updated_at)"
        " ON CONFLICT (account_id) DO UPDATE SET username = excluded.username,"
        " digest = excluded.digest, updated_at = excluded.updated_at",
        values,
    )


def devices_with_sync_id(conn: sqlite3.Connection, sync_id: str) -> list[Row]:
    """Inventory devices whose IMEI, serial number or UDID is the client's device id, with
    their owner's login and their organisation's code, features and state."""
    bare = sync_id.split(":", 1)[1] if sync_id[:5].upper() == "IMEI:" else sync_id
    return many(
        conn.execute(
            """SELECT d.*, a.login AS owner_login, a.active AS owner_active,
                      a.kind AS owner_kind, a.password_hash AS owner_password_hash,
                      a.updated_at AS owner_updated_at,
                      o.code AS organisation_code, o.features AS organisation_features,
                      o.active AS organisation_active
               FROM devices d
               JOIN organisations o ON o.id = d.organisation_id
               LEFT JOIN accounts a ON a.id = d.owner_id
               WHERE d.imei IN (?, ?) OR d.serial_number = ? OR d.udid = ?""",
            (sync_id, bare, sync_id, sync_id),
        )
    )
