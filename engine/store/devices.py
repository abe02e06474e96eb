"""Units of work on the device inventory, device groups and installation codes.

A removed device stays as a row in state ``removed`` (a tombstone): commands, installation
codes and audit events keep pointing at something, and a device that still calls in can be
told it was removed rather than that it is unknown. Every look-up here therefore says
whether it sees removed devices; the inventory never does.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..listing import ListQuery
from .listing import select_page
from .rows import Row, insert, many, one, update

#: Device states that hold a licence.
ACTIVE_STATES = ("created", "enrolled")
REMOVED = "removed"

# The inventory as lists show it: each device with its owner's login, and the compliance
# flag as the words the API uses (a text filter can then find "false" or "unknown").
_INVENTORY = """(
    SELECT devices.*, accounts.login AS owner_login,
           CASE devices.compliant WHEN 1 THEN 'true' WHEN 0 THEN 'false' ELSE 'unknown' END
               AS compliance
    FROM devices LEFT JOIN accounts ON accounts.id = devices.owner_id
) AS inventory"""

#: List fields of the inventory → SQL.
DEVICE_COLUMNS = {
    "name": "name",
    "platform": "platform",
    "protocol": "protocol",
    "state": "state",
    "model": "model",
    "os_version": "os_version",
    "imei": "imei",
    "serial_number": "serial_number",
    "phone_number": "phone_number",
    "owner": "owner_login",
    "last_seen_at": "last_seen_at",
    "enrolled_at": "enrolled_at",
    "created_at": "created_at",
    "compliant": "compliance",
}
GROUP_COLUMNS = {
    "name": "name",
    "description": "description",
    "created_at": "created_at",
    "devices": "device_count",
}
CODE_COLUMNS = {
    "purpose": "purpose",
    "code": "code",
    "device": "device_id",
    "account": "account_id",
    "expires_at": "expires_at",
    "last_used_at": "last_used_at",
    "times_used": "times_used",
    "created_at": "created_at",
}

# --------------------------------------------------------------------------- devices


def insert_device(conn: sqlite3.Connection, device: dict[str, Any]) -> None:
    insert(conn, "devices", device)


def update_device(conn: sqlite3.Connection, device_id: str, values: dict[str, Any]) -> int:
    return update(conn, "devices", device_id, values)


def device_in(conn: sqlite3.Connection, organisation_id: str, device_id: str) -> Row | None:
    """A device of the inventory (not removed) with its owner's login; else None."""
    return one(
        conn.execute(
            f"SELECT * FROM {_INVENTORY} WHERE id = ? AND organisation_id = ? AND state != ?",
            (device_id, organisation_id, REMOVED),
        )
    )


def device_by_id(conn: sqlite3.Connection, device_id: str) -> Row | None:
    """Any device, removed ones included (for the protocols, which know no organisation)."""
    return one(conn.execute("SELECT * FROM devices WHERE id = ?", (device_id,)))


def devices_page(
    conn: sqlite3.Connection,
    organisation_id: str,
    query: ListQuery,
    owner_id: str | None = None,
    group_id: str | None = None,
) -> tuple[list[Row], int]:
    """One page of the inventory, optionally one owner's devices or one group's members."""
    where = ["organisation_id = ?", "state != ?"]
    args: list[Any] = [organisation_id, REMOVED]
    if owner_id is not None:
        where.append("owner_id = ?")
        args.append(owner_id)
    if group_id is not None:
        where.append("id IN (SELECT device_id FROM device_group_members WHERE group_id = ?)")
        args.append(group_id)
    return select_page(
        conn, table=_INVENTORY, columns=DEVICE_COLUMNS, where=where, args=args, query=query
    )


def active_devices(
    conn: sqlite3.Connection, organisation_id: str, *, owner_id: str | None = None
) -> int:
    """Devices holding a licence, in the organisation or of one owner."""
    marks = ", ".join("?" for _ in ACTIVE_STATES)
    sql = f"SELECT count(*) FROM devices WHERE organisation_id = ? AND state IN ({marks})"
    args: list[Any] = [organisation_id, *ACTIVE_STATES]
    if owner_id is not None:
        sql += " AND owner_id = ?"
        args.append(owner_id)
    return conn.execute(sql, args).fetchone()[0]


def groups_of_device(conn: sqlite3.Connection, device_id: str) -> list[Row]:
    return many(
        conn.execute(
            "SELECT g.id, g.name FROM device_groups g"
            " JOIN device_group_members m ON m.group_id = g.id"
            " WHERE m.device_id = ? ORDER BY g.name, g.id",
            (device_id,),
        )
    )


def retire_device(conn: sqlite3.Connection, device_id: str, at: str) -> dict[str, int]:
    """Make a device a tombstone: nothing may reach it any more.

    Commands not yet done are cancelled (so no protocol delivers them), it leaves its
    groups, its unused installation codes are revoked, and its owner is let go so that the
    owner's account can be removed later. Returns how many of each were touched.
    """
    commands = conn.execute(
        "UPDATE commands SET state = 'cancelled', updated_at = ?, completed_at = ?"
        " WHERE device_id = ? AND state IN ('queued', 'sent')",
        (at, at, device_id),
    ).rowcount
    groups = conn.execute(
        "DELETE FROM device_group_members WHERE device_id = ?", (device_id,)
    ).rowcount
    codes = conn.execute(
        "UPDATE installation_codes SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
        (at, device_id),
    ).rowcount
    update_device(conn, device_id, {"state": REMOVED, "owner_id": None, "updated_at": at})
    return {"commands_cancelled": commands, "groups_left": groups, "codes_revoked": codes}


# --------------------------------------------------------------------------- groups

_GROUPS = """(
    SELECT device_groups.*,
           (SELECT count(*) FROM device_group_members m WHERE m.group_id = device_groups.id)
               AS device_count
    FROM device_groups
) AS groups_with_counts"""


def insert_group(conn: sqlite3.Connection, group: dict[str, Any]) -> None:
    insert(conn, "device_groups", group)


def update_group(conn: sqlite3.Connection, group_id: str, values: dict[str, Any]) -> int:
    return update(conn, "device_groups", group_id, values)


def group_in(conn: sqlite3.Connection, organisation_id: str, group_id: str) -> Row | None:
    """A group of this organisation, with how many devices it holds."""
    return one(
        conn.execute(
            f"SELECT * FROM {_GROUPS} WHERE id = ? AND organisation_id = ?",
            (group_id, organisation_id),
        )
    )


def groups_page(
    conn: sqlite3.Connection, organisation_id: str, query: ListQuery
) -> tuple[list[Row], int]:
    return select_page(
        conn,
        table=_GROUPS,
        columns=GROUP_COLUMNS,
        where=["organisation_id = ?"],
        args=[organisation_id],
        query=query,
    )


def delete_group(conn: sqlite3.Connection, group_id: str) -> int:
    """Remove a group and its memberships (the devices stay); returns how many left it."""
    members = conn.execute(
        "DELETE FROM device_group_members WHERE group_id = ?", (group_id,)
    ).rowcount
    conn.execute("DELETE FROM device_groups WHERE id = ?", (group_id,))
    return members


def add_member(
    conn: sqlite3.Connection, organisation_id: str, group_id: str, device_id: str, at: str
) -> bool:
    """Put a device in a group; False if it was there already."""
    cursor = conn.execute(
        "INSERT INTO device_group_members (group_id, device_id, organisation_id, added_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (group_id, device_id) DO NOTHING",
        (group_id, device_id, organisation_id, at),
    )
    return cursor.rowcount == 1


def remove_member(conn: sqlite3.Connection, group_id: str, device_id: str) -> bool:
    """Take a device out of a group; False if it was not in it."""
    cursor = conn.execute(
        "DELETE FROM device_group_members WHERE group_id = ? AND device_id = ?",
        (group_id, device_id),
    )
    return cursor.rowcount == 1


# --------------------------------------------------------------------------- codes


def insert_code(conn: sqlite3.Connection, code: dict[str, Any]) -> None:
    insert(conn, "installation_codes", code)


def code_in(conn: sqlite3.Connection, organisation_id: str, code_id: str) -> Row | None:
    """A code of this organisation that is not revoked."""
    return one(
        conn.execute(
            "SELECT * FROM installation_codes"
            " WHERE id = ? AND organisation_id = ? AND revoked_at IS NULL",
            (code_id, organisation_id),
        )
    )


def code_by_text(conn: sqlite3.Connection, text: str) -> Row | None:
    """A code as typed (codes are unique service-wide), revoked ones included."""
    return one(conn.execute("SELECT * FROM installation_codes WHERE code = ?", (text,)))


def codes_page(
    conn: sqlite3.Connection,
    organisation_id: str,
    query: ListQuery,
    holder_id: str | None = None,
) -> tuple[list[Row], int]:
    """Codes not revoked; with ``holder_id``, only those for that account or its devices."""
    where = ["organisation_id = ?", "revoked_at IS NULL"]
    args: list[Any] = [organisation_id]
    if holder_id is not None:
        where.append("(account_id = ? OR device_id IN (SELECT id FROM devices WHERE owner_id = ?))")
        args += [holder_id, holder_id]
    return select_page(
        conn,
        table="installation_codes",
        columns=CODE_COLUMNS,
        where=where,
        args=args,
        query=query,
    )


def revoke_code(conn: sqlite3.Connection, code_id: str, at: str) -> int:
    return conn.execute(
        "UPDATE installation_codes SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (at, code_id),
    ).rowcount


def count_use(conn: sqlite3.Connection, code_id: str, at: str) -> int:
    """Count one use, unless that would pass the usage limit; returns 1 if counted."""
    return conn.execute(
        "UPDATE installation_codes SET times_used = times_used + 1, last_used_at = ?"
        " WHERE id = ? AND revoked_at IS NULL"
        " AND (usage_limit IS NULL OR times_used < usage_limit)",
        (at, code_id),
    ).rowcount
