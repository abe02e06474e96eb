"""Device groups: named sets of an organisation's devices.

Groups are what compliance rule sets, applications and bulk commands are aimed at, so a
group only ever holds devices of its own organisation, and a removed device leaves its
groups. Group names are unique within an organisation (they are picked from lists).

Managers and system accounts see groups; changing them, or who is in them, takes the
``devices`` right. Device owners do not see groups.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from .audit import audit_event
from .devices import LIST as DEVICE_LIST, summary as device_summary
from .errors import AlreadyExists, Invalid, NotFound, refuse_unknown
from .ids import new_id
from .listing import ListQuery, ListSpec, Page
from .organisations import changeable_organisation, readable_organisation
from .principals import Principal, Right
from .store import Conflict, Store, devices as inventory
from .store.audit import insert_event, insert_with_event
from .store.rows import Row
from .timestamps import now

LIST = ListSpec(
    sortable=tuple(inventory.GROUP_COLUMNS),
    filterable=("name", "description"),
    default_sort="name",
)
EDITABLE = ("name", "description")


@dataclass(frozen=True)
class NewGroup:
    name: str
    description: str = ""

    def check(self) -> None:
        if not self.name.strip():
            raise Invalid("name must not be empty", field="name")


def public(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "devices": row["device_count"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _taken(name: str) -> AlreadyExists:
    return AlreadyExists(f"a device group named {name!r} exists already")


def _group(conn: sqlite3.Connection, organisation_id: str, group_id: str) -> Row:
    row = inventory.group_in(conn, organisation_id, group_id)
    if row is None:
        raise NotFound("no such device group")
    return row


def _event(principal: Principal, action: str, row: Row, **details: Any) -> dict[str, Any]:
    return audit_event(
        principal,
        action,
        organisation_id=row["organisation_id"],
        target_type="device_group",
        target_id=row["id"],
        details={"name": row["name"], **details},
    )


# --------------------------------------------------------------------------- groups


async def list_groups(
    store: Store, principal: Principal, organisation: str, query: ListQuery
) -> Page:
    org = await readable_organisation(store, principal, organisation)
    query = query.checked(LIST)
    rows, total = await store.read(inventory.groups_page, org["id"], query)
    return Page([public(row) for row in rows], total, query.limit, query.offset)


async def get_group(
    store: Store, principal: Principal, organisation: str, group_id: str
) -> dict[str, Any]:
    org = await readable_organisation(store, principal, organisation)
    row = await store.read(inventory.group_in, org["id"], group_id)
    if row is None:
        raise NotFound("no such device group")
    return public(row)


async def create_group(
    store: Store, principal: Principal, organisation: str, new: NewGroup
) -> dict[str, Any]:
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    new.check()
    at = now()
    group = {
        "id": new_id(),
        "organisation_id": org["id"],
        "name": new.name.strip(),
        "description": new.description.strip(),
        "created_at": at,
        "updated_at": at,
    }
    try:
        await store.write(
            insert_with_event,
            "device_groups",
            group,
            _event(principal, "device_group.created", group),
        )
    except Conflict:
        raise _taken(group["name"]) from None
    return public(group | {"device_count": 0})


async def update_group(
    store: Store, principal: Principal, organisation: str, group_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    refuse_unknown(changes, EDITABLE)
    values = {name: str(value).strip() for name, value in changes.items()}
    if "name" in values:
        NewGroup(values["name"]).check()
    values["updated_at"] = now()
    try:
        return public(await store.write(_update, principal, org["id"], group_id, values))
    except Conflict:
        raise _taken(values["name"]) from None


def _update(
    conn: sqlite3.Connection,
    principal: Principal,
    org_id: str,
    group_id: str,
    values: dict[str, Any],
) -> Row:
    row = _group(conn, org_id, group_id)
    changed = {name: value for name, value in values.items() if name != "updated_at"}
    if not changed:
        return row  # nothing to record
    inventory.update_group(conn, group_id, values)
    insert_event(conn, _event(principal, "device_group.changed", row, changes=changed))
    return row | values


async def remove_group(
    store: Store, principal: Principal, organisation: str, group_id: str
) -> None:
    """Remove a group; its devices stay in the inventory."""
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    await store.write(_remove, principal, org["id"], group_id)


def _remove(conn: sqlite3.Connection, principal: Principal, org_id: str, group_id: str) -> None:
    row = _group(conn, org_id, group_id)
    members = inventory.delete_group(conn, group_id)
    insert_event(conn, _event(principal, "device_group.removed", row, devices=members))


# --------------------------------------------------------------------------- members


async def list_members(
    store: Store, principal: Principal, organisation: str, group_id: str, query: ListQuery
) -> Page:
    """The group's devices, listed, sorted and filtered like the inventory."""
    org = await readable_organisation(store, principal, organisation)
    query = query.checked(DEVICE_LIST)
    found = await store.read(_members, org["id"], group_id, query)
    if found is None:
        raise NotFound("no such device group")
    rows, total = found
    return Page([device_summary(row) for row in rows], total, query.limit, query.offset)


def _members(
    conn: sqlite3.Connection, org_id: str, group_id: str, query: ListQuery
) -> tuple[list[Row], int] | None:
    if inventory.group_in(conn, org_id, group_id) is None:
        return None
    return inventory.devices_page(conn, org_id, query, None, group_id)


async def add_device(
    store: Store, principal: Principal, organisation: str, group_id: str, device_id: str
) -> bool:
    """Put a device in a group; True if it was not there yet (adding twice is no change)."""
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    return await store.write(_membership, principal, org["id"], group_id, device_id, True)


async def remove_device(
    store: Store, principal: Principal, organisation: str, group_id: str, device_id: str
) -> bool:
    """Take a device out of a group; True if it was in it (taking it out twice is no change)."""
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    return await store.write(_membership, principal, org["id"], group_id, device_id, False)


def _membership(
    conn: sqlite3.Connection,
    principal: Principal,
    org_id: str,
    group_id: str,
    device_id: str,
    member: bool,
) -> bool:
    """Both ids must name things of this organisation (another's device: not found)."""
    group = _group(conn, org_id, group_id)
    device = inventory.inventory_device_in(conn, org_id, device_id)
    if device is None:
        raise NotFound("no such device")
    if member:
        changed = inventory.add_member(conn, org_id, group_id, device_id, now())
    else:
        changed = inventory.remove_member(conn, group_id, device_id)
    if changed:
        action = "device_group.device_added" if member else "device_group.device_removed"
        insert_event(
            conn, _event(principal, action, group, device=device_id, device_name=device["name"])
        )
    return changed
