"""The device inventory: an organisation's devices, their owners, state and licences.

Only devices in the inventory may use the management and sync services. A device's life:

``created`` (entered by a manager, with an installation code for its owner) → ``enrolled``
(the protocol completed enrolment) → possibly ``inactive`` (switched off by a manager; it
cannot connect, keeps its queued commands, and frees its licence) → ``removed``.

**Removal keeps the row as a tombstone** in state ``removed`` rather than deleting it:
commands, installation codes and audit events keep pointing at a real row, and a device
that calls in afterwards can be told it was removed (and unenrol) instead of looking like
an unknown device. Removal cancels the device's undelivered commands, takes it out of its
groups, revokes its codes and lets its owner go, all in one write; from then on the
inventory, the API and the protocols no longer see it.

**Licences.** An organisation's ``licences`` is its number of active device licences:
devices in state created or enrolled hold one (inactive and removed ones do not).
``licences = 0`` means *not limited*: it is what an organisation has until its vendor sets a
number (the column cannot be empty), and a service that refused every device by default
would be unusable; vendors who sell licences set the number they sold. ``devices_per_user``
(None: not limited) caps the active devices one owner may have. Creating or re-activating a
device, or giving an active device to another owner, beyond either limit is refused with
:class:`LicenceLimit` (409 Conflict: the request is fine, the organisation's state is not;
it succeeds once a licence is freed). The counting and the insert share one write unit, so
concurrent creations cannot overshoot.

**Who.** Every manager and system account sees the whole inventory; changing it takes the
``devices`` right. Device owners (user accounts) see only their own devices (another's
device is "not found") and change nothing here. Managers own no devices: an owner is always
a user account of the same organisation.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from .accounts import PHONE_PATTERN
from .audit import audit_event
from .errors import AlreadyExists, Invalid, NotFound, refuse_unknown
from .ids import new_id
from .installation_codes import Purpose, code_row, insert_new_code, public as public_code
from .listing import ListQuery, ListSpec, Page
from .organisations import changeable_organisation, visible_organisation
from .principals import AccountKind, Principal, Right, owner_scope
from .store import Store, devices as inventory
from .store.accounts import account_in
from .store.audit import insert_event
from .store.organisations import organisation_by_id
from .store.rows import Row
from .timestamps import now

PLATFORMS = ("android", "ios", "ipados", "macos", "tvos", "windows", "other")
PROTOCOLS = ("wsdm", "apple_mdm", "oma_dm", "oma_ds", "eas", "microsoft_edm")
#: Protocols that only some platforms speak; the others are spoken by any platform.
_PROTOCOL_PLATFORMS = {
    "apple_mdm": frozenset({"ios", "ipados", "macos", "tvos"}),
    "microsoft_edm": frozenset({"windows"}),
}
STATES = ("created", "enrolled", "inactive", inventory.REMOVED)
#: What a manager may set: ``active`` brings an inactive device back.
SETTABLE_STATES = ("active", "inactive")
#: Members of a device a manager may change (the rest comes from the device itself).
EDITABLE = ("name", "owner", "phone_number", "state")

LIST = ListSpec(
    sortable=tuple(inventory.DEVICE_COLUMNS),
    filterable=tuple(inventory.DEVICE_COLUMNS),
    default_sort="name",
)


class LicenceLimit(AlreadyExists):
    """All licences of the organisation (or all devices one owner may have) are in use.

    A conflict with the organisation's state, not a wrong value: answered as 409.
    """


@dataclass(frozen=True)
class NewDevice:
    name: str
    platform: str
    protocol: str
    owner: str | None = None
    imei: str | None = None
    serial_number: str | None = None
    udid: str | None = None
    model: str | None = None
    os_version: str | None = None
    phone_number: str | None = None

    def check(self) -> None:
        if not self.name.strip():
            raise Invalid("name must not be empty", field="name")
        if self.platform not in PLATFORMS:
            raise Invalid(f"platform must be one of {', '.join(PLATFORMS)}", field="platform")
        if self.protocol not in PROTOCOLS:
            raise Invalid(f"protocol must be one of {', '.join(PROTOCOLS)}", field="protocol")
        _check_phone_number(self.phone_number)
        speakers = _PROTOCOL_PLATFORMS.get(self.protocol)
        if speakers is not None and self.platform not in speakers:
            raise Invalid(
                f"{self.protocol} is spoken by {', '.join(sorted(speakers))} devices only",
                field="protocol",
            )


def _check_phone_number(number: str | None) -> None:
    if number is not None and not PHONE_PATTERN.fullmatch(number):
        raise Invalid(
            "phone_number: digits, spaces and ()./-, may start with +", field="phone_number"
        )


def _owner(row: Row) -> dict[str, str] | None:
    if row["owner_id"] is None:
        return None
    return {"id": row["owner_id"], "login": row["owner_login"]}


def summary(row: Row) -> dict[str, Any]:
    """A device as lists show it (``row`` from the inventory, with ``owner_login``)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "platform": row["platform"],
        "protocol": row["protocol"],
        "state": row["state"],
        "owner": _owner(row),
        "imei": row["imei"],
        "serial_number": row["serial_number"],
        "udid": row["udid"],
        "model": row["model"],
        "os_version": row["os_version"],
        "phone_number": row["phone_number"],
        "compliant": None if row["compliant"] is None else bool(row["compliant"]),
        "enrolled_at": row["enrolled_at"],
        "last_seen_at": row["last_seen_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def detail(row: Row, groups: list[Row]) -> dict[str, Any]:
    """A device with what the device reported (inventory) and its groups."""
    return summary(row) | {
        "inventory": json.loads(row["inventory"] or "{}"),
        "groups": [{"id": group["id"], "name": group["name"]} for group in groups],
    }


def may_connect(device: Row, organisation: Row) -> bool:
    """Whether the protocols let this device in: inactive and removed devices, and devices
    of inactive organisations, cannot connect."""
    return device["state"] in inventory.ACTIVE_STATES and bool(organisation["active"])


# --------------------------------------------------------------------------- rules in units


def _check_owner(conn: sqlite3.Connection, organisation_id: str, owner_id: str) -> None:
    account = account_in(conn, organisation_id, owner_id)
    if account is None or account["kind"] != AccountKind.USER:
        # Managers own no devices (a manager with a phone has a separate user account).
        raise Invalid("owner must be a user account of this organisation", field="owner")


def check_room(
    conn: sqlite3.Connection,
    organisation_id: str,
    owner_id: str | None,
    *,
    new_licence: bool,
) -> None:
    """Refuse one more active device beyond the licences or the owner's allowance.

    ``new_licence``: the device takes a licence it did not hold (created or re-activated);
    False when an active device only changes owner.
    """
    organisation = organisation_by_id(conn, organisation_id)
    assert organisation is not None  # visible a moment ago; removal needs an inactive one
    licences = organisation["licences"]
    if new_licence and licences and inventory.active_devices(conn, organisation_id) >= licences:
        raise LicenceLimit(f"all {licences} device licences of the organisation are in use")
    per_user = organisation["devices_per_user"]
    if (
        owner_id is not None
        and per_user is not None
        and inventory.active_devices(conn, organisation_id, owner_id=owner_id) >= per_user
    ):
        raise LicenceLimit(f"the owner has the {per_user} active devices allowed per user")


def _device(conn: sqlite3.Connection, organisation_id: str, device_id: str) -> Row:
    row = inventory.inventory_device_in(conn, organisation_id, device_id)
    if row is None:
        raise NotFound("no such device")
    return row


def _detail_of(conn: sqlite3.Connection, organisation_id: str, device_id: str) -> dict[str, Any]:
    return detail(
        _device(conn, organisation_id, device_id), inventory.groups_of_device(conn, device_id)
    )


# --------------------------------------------------------------------------- operations


async def list_devices(
    store: Store, principal: Principal, organisation: str, query: ListQuery
) -> Page:
    """The inventory; a device owner's list holds only their own devices."""
    org = await visible_organisation(store, principal, organisation)
    owner = owner_scope(principal)
    query = query.checked(LIST)
    rows, total = await store.read(inventory.devices_page, org["id"], query, owner)
    return Page([summary(row) for row in rows], total, query.limit, query.offset)


async def get_device(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> dict[str, Any]:
    org = await visible_organisation(store, principal, organisation)
    owner = owner_scope(principal)
    device = await store.read(_visible_detail, org["id"], device_id, owner)
    if device is None:
        raise NotFound("no such device")
    return device


def _visible_detail(
    conn: sqlite3.Connection, organisation_id: str, device_id: str, owner: str | None
) -> dict[str, Any] | None:
    row = inventory.inventory_device_in(conn, organisation_id, device_id)
    if row is None or (owner is not None and row["owner_id"] != owner):
        return None
    return detail(row, inventory.groups_of_device(conn, device_id))


async def create_device(
    store: Store, principal: Principal, organisation: str, new: NewDevice
) -> dict[str, Any]:
    """Enter a device in the inventory, with the installation code that will enrol it.

    The answer carries the code, so that it can be given to the owner.
    """
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    new.check()
    at = now()
    device = {
        "id": new_id(),
        "organisation_id": org["id"],
        "owner_id": new.owner,
        "name": new.name.strip(),
        "platform": new.platform,
        "protocol": new.protocol,
        "state": "created",
        "imei": new.imei,
        "serial_number": new.serial_number,
        "udid": new.udid,
        "model": new.model,
        "os_version": new.os_version,
        "phone_number": new.phone_number,
        "created_at": at,
        "updated_at": at,
    }
    code = code_row(principal, org["id"], Purpose.ENROL_DEVICE, device_id=device["id"])
    created, code = await store.write(_create, principal, device, code)
    return created | {"installation_code": public_code(code)}


def _create(
    conn: sqlite3.Connection, principal: Principal, device: Row, code: Row
) -> tuple[dict[str, Any], Row]:
    org_id = device["organisation_id"]
    if device["owner_id"] is not None:
        _check_owner(conn, org_id, device["owner_id"])
    check_room(conn, org_id, device["owner_id"], new_licence=True)
    inventory.insert_device(conn, device)
    insert_event(
        conn,
        audit_event(
            principal,
            "device.created",
            organisation_id=org_id,
            target_type="device",
            target_id=device["id"],
            details={
                "name": device["name"],
                "platform": device["platform"],
                "protocol": device["protocol"],
                "owner": device["owner_id"],
            },
        ),
    )
    code = insert_new_code(conn, principal, code)
    return _detail_of(conn, org_id, device["id"]), code


async def update_device(
    store: Store, principal: Principal, organisation: str, device_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Rename, give to another owner (or none), change the phone number, (de)activate."""
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    refuse_unknown(changes, EDITABLE)
    if "name" in changes and not str(changes["name"]).strip():
        raise Invalid("name must not be empty", field="name")
    if "phone_number" in changes:
        _check_phone_number(changes["phone_number"])
    if "state" in changes and changes["state"] not in SETTABLE_STATES:
        raise Invalid(f"state must be one of {', '.join(SETTABLE_STATES)}", field="state")
    return await store.write(_update, principal, org["id"], device_id, changes)


def _update(
    conn: sqlite3.Connection,
    principal: Principal,
    org_id: str,
    device_id: str,
    changes: dict[str, Any],
) -> dict[str, Any]:
    row = _device(conn, org_id, device_id)
    if not changes:
        return detail(row, inventory.groups_of_device(conn, device_id))  # nothing to record
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = changes["name"].strip()
    if "phone_number" in changes:
        values["phone_number"] = changes["phone_number"]
    owner = row["owner_id"]
    if "owner" in changes:
        owner = values["owner_id"] = changes["owner"]
        if owner is not None:
            _check_owner(conn, org_id, owner)
    state = row["state"]
    if changes.get("state") == "inactive":
        state = "inactive"
    elif changes.get("state") == "active" and state == "inactive":
        state = "enrolled" if row["enrolled_at"] else "created"
    values["state"] = state
    reactivated = row["state"] == "inactive" and state != "inactive"
    new_owner = owner is not None and owner != row["owner_id"]
    if state != "inactive" and (reactivated or new_owner):
        check_room(conn, org_id, owner, new_licence=reactivated)
    values["updated_at"] = now()
    inventory.update_device(conn, device_id, values)
    insert_event(
        conn,
        audit_event(
            principal,
            "device.changed",
            organisation_id=org_id,
            target_type="device",
            target_id=device_id,
            # The state asked for ("active") and the one it became ("created"...).
            details=(changes | {"state": state}) if "state" in changes else changes,
        ),
    )
    return _detail_of(conn, org_id, device_id)


async def remove_device(
    store: Store, principal: Principal, organisation: str, device_id: str
) -> None:
    """Remove a device from the inventory (see the module's note on tombstones)."""
    org = await changeable_organisation(store, principal, organisation, Right.DEVICES)
    await store.write(_remove, principal, org["id"], device_id)


def _remove(conn: sqlite3.Connection, principal: Principal, org_id: str, device_id: str) -> None:
    row = _device(conn, org_id, device_id)
    touched = inventory.retire_device(conn, device_id, now())
    insert_event(
        conn,
        audit_event(
            principal,
            "device.removed",
            organisation_id=org_id,
            target_type="device",
            target_id=device_id,
            details={"name": row["name"], "owner": row["owner_id"], **touched},
        ),
    )
