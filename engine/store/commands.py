"""Units of work on commands, and the little they need to know about devices and groups.

Devices and groups belong to other areas; only what commands need of them is read here
(an organisation's device ids, their owner and state, group membership), straight from
their tables, so that queueing stays one unit of work.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..listing import ListQuery
from .listing import select_page
from .rows import Row, many, one

#: List fields → SQL columns of ``commands``.
COMMAND_COLUMNS = {
    "kind": "kind",
    "state": "state",
    "device_id": "device_id",
    "batch_id": "batch_id",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
#: Ids per ``IN (...)`` list: far below every backend's limit on bound parameters.
_CHUNK = 500
_INSERT = (
    "INSERT INTO commands (id, organisation_id, device_id, owner_id, kind, parameters, state,"
    " created_by, created_at, updated_at, batch_id) VALUES (:id, :organisation_id, :device_id,"
    " :owner_id, :kind, :parameters, :state, :created_by, :created_at, :updated_at, :batch_id)"
)


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _marks(values: Sequence[str]) -> str:
    return ", ".join("?" * len(values))


# --------------------------------------------------------------------------- devices, groups


def device_in(conn: sqlite3.Connection, organisation_id: str, device_id: str) -> Row | None:
    """A device of this organisation only (owner, state, protocol): another's id finds nothing."""
    return one(
        conn.execute(
            "SELECT id, organisation_id, owner_id, state, protocol FROM devices"
            " WHERE id = ? AND organisation_id = ?",
            (device_id, organisation_id),
        )
    )


def devices_in(
    conn: sqlite3.Connection, organisation_id: str, device_ids: Sequence[str]
) -> list[Row]:
    """Those of ``device_ids`` that are devices of this organisation (owner, state, protocol)."""
    rows: list[Row] = []
    for chunk in _chunks(device_ids):
        rows += many(
            conn.execute(
                "SELECT id, owner_id, state, protocol FROM devices"
                f" WHERE organisation_id = ? AND id IN ({_marks(chunk)})",
                [organisation_id, *chunk],
            )
        )
    return rows


def groups_in(conn: sqlite3.Connection, organisation_id: str, group_ids: Sequence[str]) -> set[str]:
    """Those of ``group_ids`` that are device groups of this organisation."""
    found: set[str] = set()
    for chunk in _chunks(group_ids):
        found.update(
            row[0]
            for row in conn.execute(
                "SELECT id FROM device_groups"
                f" WHERE organisation_id = ? AND id IN ({_marks(chunk)})",
                [organisation_id, *chunk],
            )
        )
    return found


def devices_of_groups(
    conn: sqlite3.Connection, organisation_id: str, group_ids: Sequence[str]
) -> list[Row]:
    """The devices in these groups, each once, with owner, state, protocol."""
    rows: list[Row] = []
    for chunk in _chunks(group_ids):
        rows += many(
            conn.execute(
                "SELECT DISTINCT d.id, d.owner_id, d.state, d.protocol FROM device_group_members m"
                " JOIN devices d ON d.id = m.device_id AND d.organisation_id = m.organisation_id"
                f" WHERE m.organisation_id = ? AND m.group_id IN ({_marks(chunk)})",
                [organisation_id, *chunk],
            )
        )
    return rows


# --------------------------------------------------------------------------- commands


def insert_commands(conn: sqlite3.Connection, commands: Iterable[dict[str, Any]]) -> None:
    """Insert many commands with one prepared statement (a bulk command is thousands).

    Each carries ``owner_id``: its device's owner at this moment (None if it has none).
    """
    conn.executemany(_INSERT, commands)


def command_by_id(conn: sqlite3.Connection, command_id: str) -> Row | None:
    """For protocol code, which knows the command from its device, not from a principal."""
    return one(conn.execute("SELECT * FROM commands WHERE id = ?", (command_id,)))


def command_in(conn: sqlite3.Connection, organisation_id: str, command_id: str) -> Row | None:
    """A command of this organisation only; ``device_owner_id`` is its device's owner now,
    which may no longer be the ``owner_id`` it was queued for."""
    return one(
        conn.execute(
            "SELECT c.*, d.owner_id AS device_owner_id FROM commands c"
            " JOIN devices d ON d.id = c.device_id"
            " WHERE c.id = ? AND c.organisation_id = ?",
            (command_id, organisation_id),
        )
    )


def change_state(
    conn: sqlite3.Connection, command_id: str, expected_state: str, values: dict[str, Any]
) -> int:
    """Move a command on only if it is still in ``expected_state``; returns rows changed.

    The condition makes a transition safe even where two writers could race (PostgreSQL).
    """
    assignments = ", ".join(f"{name} = :{name}" for name in values)
    cursor = conn.execute(
        f"UPDATE commands SET {assignments} WHERE id = :id AND state = :expected_state",
        {**values, "id": command_id, "expected_state": expected_state},
    )
    return cursor.rowcount


def commands_of_device(
    conn: sqlite3.Connection, device_id: str, states: Sequence[str], limit: int = -1
) -> list[Row]:
    """A device's commands in these states, oldest first (the order they were given); the
    first ``limit`` of them when it is not -1."""
    return many(
        conn.execute(
            f"SELECT * FROM commands WHERE device_id = ? AND state IN ({_marks(states)})"
            " ORDER BY created_at, id LIMIT ?",
            [device_id, *states, limit],
        )
    )


def commands_page(
    conn: sqlite3.Connection,
    organisation_id: str,
    query: ListQuery,
    device_id: str | None = None,
    owner_id: str | None = None,
) -> tuple[list[Row], int]:
    """One page of an organisation's commands; of one device; queued for one owner.

    ``owner_id`` selects the commands queued while that account owned their device, not
    those of the devices it owns now. (Positional, like every unit's arguments:
    ``Store.read`` passes no keywords.)
    """
    where = ["organisation_id = ?"]
    args: list[Any] = [organisation_id]
    if device_id is not None:
        where.append("device_id = ?")
        args.append(device_id)
    if owner_id is not None:
        where.append("owner_id = ?")
        args.append(owner_id)
    return select_page(
        conn, table="commands", columns=COMMAND_COLUMNS, where=where, args=args, query=query
    )


def batch_summary(conn: sqlite3.Connection, organisation_id: str, batch_id: str) -> list[Row]:
    """Per state of one batch: its kind, how many, and when the batch was made."""
    return many(
        conn.execute(
            "SELECT state, kind, count(*) AS count, min(created_at) AS created_at FROM commands"
            " WHERE batch_id = ? AND organisation_id = ? GROUP BY state, kind",
            (batch_id, organisation_id),
        )
    )
