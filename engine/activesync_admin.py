"""What managers see and set of Exchange ActiveSync: the organisation's ActiveSync settings
(the device policy sent in Provision, the Ping heartbeat bounds, enrolment at first
contact) and each ActiveSync device's state (policy key, wipe, folders, last sync), with
the folders its owner made (FolderCreate) beside the default ones.

Reading needs only sight of the organisation (every manager sees all of it; a device owner
sees their own devices); changing the settings needs the configuration right. A change
takes the settings' next revision, so every device is told 143 (PolicyRefresh) and
provisions again; the change and its audit event commit together.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .activesync import check_settings, settings_from_row
from .activesync_items import hierarchy
from .audit import audit_event
from .devices import get_device
from .organisations import visible_organisation
from .principals import Principal, Right, require_right
from .store import Store, activesync as db, pim as pim_db
from .store.audit import insert_event
from .timestamps import now


async def organisation_settings(
    store: Store, principal: Principal, organisation: str
) -> dict[str, Any]:
    org = await visible_organisation(store, principal, organisation)
    row = await store.read(db.settings_of, org["id"])
    settings = settings_from_row(row)
    return {"organisation": org["code"], "revision": settings.revision, "settings": settings.values}


async def change_settings(
    store: Store, principal: Principal, organisation: str, changes: dict[str, Any]
) -> dict[str, Any]:
    org = await visible_organisation(store, principal, organisation)
    require_right(principal, Right.CONFIGURATION)
    checked = check_settings(changes)
    event = audit_event(
        principal,
        "activesync.settings_changed",
        organisation_id=org["id"],
        target_type="organisation",
        target_id=org["id"],
        details=checked,
    )
    await store.write(_change_unit, org["id"], checked, event)
    return await organisation_settings(store, principal, organisation)


def _change_unit(
    conn: sqlite3.Connection, organisation_id: str, checked: dict[str, Any], event: dict[str, Any]
) -> None:
    row = db.settings_of(conn, organisation_id)
    stored = json.loads(row["settings"]) if row else {}
    db.put_settings(conn, organisation_id, json.dumps(stored | checked), now())
    insert_event(conn, event)


async def device_state(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> dict[str, Any]:
    """The device's ActiveSync state; ``enrolled`` false if it never spoke ActiveSync."""
    device = await get_device(store, principal, organisation, device_id)
    return await store.read(_state_unit, device["id"])


def _state_unit(conn: sqlite3.Connection, device_id: str) -> dict[str, Any]:
    row = db.eas_device(conn, device_id)
    if row is None:
        return {"enrolled": False, "policy": "none", "folders": [], "user_folders": []}
    settings = settings_from_row(db.settings_of(conn, row["organisation_id"]))
    if row["wiped_at"]:
        policy = "wiped"
    elif row["wipe_command_id"] and not row["wiped_at"]:
        policy = "wipe pending"
    elif not row["policy_key"]:
        policy = "not provisioned"
    elif row["policy_revision"] != settings.revision:
        policy = "outdated"
    else:
        policy = "current"
    syncs = {s["datastore"]: s for s in pim_db.sync_states_of_device(conn, device_id)}
    features = pim_db.features_of_organisation(conn, device_id)
    shown = {f.server_id: f for f in hierarchy(conn, row["account_id"], features)}
    folders = []
    for state in db.folder_states(conn, device_id):
        sync = syncs.get(f"eas:{state['folder']}")
        folder = shown.get(state["folder"])
        folders.append(
            {
                "id": state["folder"],
                "name": folder.name if folder else state["folder"],
                "type": folder.type if folder else None,
                "sync_key": str(state["sync_key"]),
                "items_on_device": sync["device_items"] if sync else 0,
                "items": sync["items"] if sync else 0,
                "last_sync_at": sync["last_sync_at"] if sync else None,
            }
        )
    return {
        "enrolled": True,
        "eas_device_id": row["eas_device_id"],
        "device_type": row["device_type"],
        "protocol_version": row["protocol_version"],
        "policy": policy,
        "provisioned_at": row["provisioned_at"],
        "wipe": row["wipe_kind"],
        "wipe_sent_at": row["wipe_sent_at"],
        "wiped_at": row["wiped_at"],
        "heartbeat": row["heartbeat"],
        "last_command": row["last_command"],
        "last_seen_at": row["last_seen_at"],
        "last_sync_at": row["last_sync_at"],
        "device_information": json.loads(row["device_information"] or "{}"),
        "folders": folders,
        "user_folders": [
            {
                "id": folder.server_id,
                "name": folder.name,
                "type": folder.type,
                "parent_id": folder.parent_id,
                "items": pim_db.count_live_items(conn, folder.server_id),
            }
            for folder in shown.values()
            if not folder.default
        ],
    }
