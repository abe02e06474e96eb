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
from .listing import like_pattern, select_page
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

#: List fields of the inventory → SQL on ``devices d`` (the owner's login is looked up).
DEVICE_COLUMNS = {
    "name": "d.name",
    "platform": "d.platform",
    "protocol": "d.protocol",
    "state": "d.state",
    "model": "d.model",
    "os_version": "d.os_version",
    "imei": "d.imei",
    "serial_number": "d.serial_number",
    "phone_number": "d.phone_number",
    "owner": "(SELECT login FROM accounts WHERE accounts.id = d.owner_id)",
    "last_seen_at": "d.last_seen_at",
    "enrolled_at": "d.enrolled_at",
    "created_at": "d.created_at",
    "compliant": "CASE d.compliant WHEN 1 THEN 'true' WHEN 0 THEN 'false' ELSE 'unknown' END",
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


def inventory_device_in(
    conn: sqlite3.Connection, organisation_id: str, device_id: str
) -> Row | None:
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
    """One page of the inventory, optionally one owner's devices or one group's members.

    Counting and paging run on ``devices`` alone; only the page's own rows are then read
    with their owner's login.
    """
    owner_filter = any(name == "owner" for name, _ in query.filters)
    # With an owner filter the matching accounts are few: reach their devices through the
    # owner index, not by walking the whole organisation (unary plus: no index for this term).
    where = ["+d.organisation_id = ?" if owner_filter else "d.organisation_id = ?", "d.state != ?"]
    args: list[Any] = [organisation_id, REMOVED]
    if owner_id is not None:
        where.append("d.owner_id = ?")
        args.append(owner_id)
    if group_id is not None:
        where.append("d.id IN (SELECT device_id FROM device_group_members WHERE group_id = ?)")
        args.append(group_id)
    for name, text in query.filters:
        if name == "owner":
            where.append(
                "d.owner_id IN (SELECT id FROM accounts WHERE organisation_id = ?"
                " AND login LIKE ? ESCAPE '\\')"
            )
            args += [organisation_id, like_pattern(text)]
        else:
            where.append(f"{DEVICE_COLUMNS[name]} LIKE ? ESCAPE '\\'")
            args.append(like_pattern(text))
    clause = " AND ".join(where)
    order = "DESC" if query.descending else "ASC"
    sort = DEVICE_COLUMNS[query.sort or "name"]
    paging = [query.limit, query.offset]
    if query.filters:
        # A filter reads every candidate row anyway: count and page in that one pass, and
        # sort the matches rather than walk the sort index (unary plus) for a few of them.
        # The candidates are read in table order (rowid IN ...), not index order: sequential
        # pages instead of one random read per device.
        scan = (
            clause if owner_filter else clause.replace("d.organisation_id = ?", _IN_TABLE_ORDER, 1)
        )
        scan_args = args if owner_filter else [organisation_id, *args]
        rows = conn.execute(
            f"SELECT d.id, count(*) OVER () FROM devices d WHERE {scan}"
            f" ORDER BY +{sort} {order}, d.id {order} LIMIT ? OFFSET ?",
            [*scan_args, *paging],
        ).fetchall()
        ids = [row[0] for row in rows]
        total = rows[0][1] if rows else _count(conn, clause, args)
    else:
        # Unfiltered: count and page from the covering sort indexes, no row reads.
        total = _count(conn, clause, args)
        ids = [
            row[0]
            for row in conn.execute(
                f"SELECT d.id FROM devices d WHERE {clause}"
                f" ORDER BY {sort} {order}, d.id {order} LIMIT ? OFFSET ?",
                [*args, *paging],
            )
        ]
    if not ids:
        return [], total
    marks = ", ".join("?" for _ in ids)
    found = {
        row["id"]: row
        for row in many(conn.execute(f"SELECT * FROM {_INVENTORY} WHERE id IN ({marks})", ids))
    }
    return [found[i] for i in ids], total


_IN_TABLE_ORDER = (
    "+d.organisation_id = ? AND d.rowid IN (SELECT rowid FROM devices WHERE organisation_id = ?)"
)


def _count(conn: sqlite3.Connection, clause: str, args: list[Any]) -> int:
    return conn.execute(f"SELECT count(*) FROM devices d WHERE {clause}", args).fetchone()[0]


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
