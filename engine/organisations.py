"""Organisations: the tenants of the service.

An organisation's code id is typed at login and shown in the client app, so it is checked
once at creation and never changes. Organisations are created by the supervisor or by a
master/vendor admin, who then looks after them; the first manager account is created with
the organisation, so that somebody can sign in to it straight away.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

import trio

from .audit import audit_event
from .auth import check_password_rules
from .errors import AlreadyExists, Invalid, NotFound, refuse_unknown
from .ids import new_id
from .passwords import hash_password
from .principals import (
    ALL_RIGHTS,
    AccountKind,
    Principal,
    Right,
    require_kind,
    require_organisation_access,
    require_organisation_view,
    require_right,
)
from .store import Conflict, Store
from .store.accounts import account_by_id, insert_account, revoke_organisation_tokens
from .store.audit import insert_event
from .store.organisations import (
    delete_organisation,
    insert_organisation,
    list_organisations,
    organisation_by_code,
    organisation_by_id,
    update_organisation as update_organisation_row,
)
from .timestamps import now

CODE_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{1,31}")

#: Feature switches an organisation's vendor turns on or off.
FEATURES = (
    "contacts_sync",
    "calendar_sync",
    "tasks_sync",
    "notes_sync",
    "mail_sync",
    "location_tracking",
    "applications",
)
#: Members of an organisation that its supervisor or vendor may change (never the code).
EDITABLE = (
    "short_name",
    "long_name",
    "licences",
    "devices_per_user",
    "subscription_expires",
    "features",
    "active",
    "vendor",
)


@dataclass(frozen=True)
class NewOrganisation:
    code: str
    short_name: str
    long_name: str = ""
    licences: int = 0
    devices_per_user: int | None = None
    subscription_expires: str | None = None
    first_manager_login: str = "admin"
    first_manager_password: str | None = None

    def check(self) -> None:
        if not CODE_PATTERN.fullmatch(self.code):
            raise Invalid(
                "code: 2 to 32 characters, lower-case letters, digits and '-', "
                "starting with a letter or digit",
                field="code",
            )
        if not self.short_name.strip():
            raise Invalid("short_name must not be empty", field="short_name")
        if self.licences < 0:
            raise Invalid("licences cannot be negative", field="licences")
        if self.devices_per_user is not None and self.devices_per_user < 1:
            raise Invalid("devices_per_user must be at least 1", field="devices_per_user")
        if self.first_manager_password is not None:
            check_password_rules(self.first_manager_password)


def public(row: dict[str, Any]) -> dict[str, Any]:
    """An organisation as the API shows it."""
    return {
        "id": row["id"],
        "code": row["code"],
        "short_name": row["short_name"],
        "long_name": row["long_name"],
        "licences": row["licences"],
        "devices_per_user": row["devices_per_user"],
        "subscription_expires": row["subscription_expires"],
        "features": _features(row["features"]),
        "active": bool(row["active"]),
        "vendor": row["vendor_id"],
        "created_at": row["created_at"],
    }


def _features(stored: str) -> dict[str, bool]:
    """All features, on unless switched off (new features default to on)."""
    values = json.loads(stored or "{}")
    return {name: bool(values.get(name, True)) for name in FEATURES}


async def create_organisation(
    store: Store, principal: Principal, new: NewOrganisation
) -> dict[str, Any]:
    require_kind(principal, AccountKind.SUPERVISOR, AccountKind.VENDOR)
    new.check()
    at = now()
    organisation = {
        "id": new_id(),
        "code": new.code,
        "short_name": new.short_name.strip(),
        "long_name": new.long_name.strip(),
        "licences": new.licences,
        "devices_per_user": new.devices_per_user,
        "subscription_expires": new.subscription_expires,
        "vendor_id": principal.account_id if principal.kind is AccountKind.VENDOR else None,
        "created_at": at,
        "updated_at": at,
    }
    manager = None
    if new.first_manager_password is not None:
        manager = {
            "id": new_id(),
            "organisation_id": organisation["id"],
            "login": new.first_manager_login,
            "kind": AccountKind.MANAGER.value,
            "password_hash": await trio.to_thread.run_sync(
                hash_password, new.first_manager_password
            ),
            "rights": json.dumps(sorted(ALL_RIGHTS)),
            "created_at": at,
            "updated_at": at,
        }
    event = audit_event(
        principal,
        "organisation.created",
        organisation_id=organisation["id"],
        target_type="organisation",
        target_id=organisation["id"],
        details={"code": new.code, "first_manager": new.first_manager_login if manager else None},
    )
    try:
        await store.write(_insert, organisation, manager, event)
    except Conflict:
        raise AlreadyExists(f"an organisation with code {new.code!r} exists already") from None
    return public(organisation | {"active": 1, "features": "{}"})


def _insert(
    conn: sqlite3.Connection,
    organisation: dict[str, Any],
    manager: dict[str, Any] | None,
    event: dict[str, Any],
) -> None:
    insert_organisation(conn, organisation)
    if manager is not None:
        insert_account(conn, manager)
    insert_event(conn, event)


async def get_organisation(store: Store, principal: Principal, key: str) -> dict[str, Any]:
    """By id or by code id."""
    return public(await visible_organisation(store, principal, key))


async def organisations_of(store: Store, principal: Principal) -> list[dict[str, Any]]:
    if principal.kind is AccountKind.SUPERVISOR:
        rows = await store.read(list_organisations, None)
    elif principal.kind is AccountKind.VENDOR:
        rows = await store.read(list_organisations, principal.account_id)
    else:
        assert principal.organisation_id is not None
        row = await store.read(organisation_by_id, principal.organisation_id)
        rows = [row] if row else []
    return [public(row) for row in rows]


async def visible_organisation(store: Store, principal: Principal, key: str) -> dict[str, Any]:
    """The organisation by id or code, if ``principal`` may see it (else NotFound)."""
    row = await store.read(organisation_by_id, key) or await store.read(organisation_by_code, key)
    if row is None:
        raise NotFound("no such organisation")
    require_organisation_access(principal, row["id"], row["vendor_id"])
    return row


async def readable_organisation(store: Store, principal: Principal, key: str) -> dict[str, Any]:
    """The organisation, for reading things of all of it (managers, system accounts)."""
    row = await visible_organisation(store, principal, key)
    require_organisation_view(principal)
    return row


async def changeable_organisation(
    store: Store, principal: Principal, key: str, right: Right
) -> dict[str, Any]:
    """The organisation, for a change that takes ``right``."""
    row = await visible_organisation(store, principal, key)
    require_right(principal, right)
    return row


async def update_organisation(
    store: Store, principal: Principal, key: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change an organisation's values (not its code); deactivating it stops its logins."""
    row = await visible_organisation(store, principal, key)
    require_kind(principal, AccountKind.SUPERVISOR, AccountKind.VENDOR)
    refuse_unknown(changes, EDITABLE)
    values = dict(changes)
    if "features" in values:
        bad = set(values["features"]) - set(FEATURES)
        if bad:
            raise Invalid(f"unknown feature {sorted(bad)[0]}", field="features")
        values["features"] = json.dumps(_features(row["features"]) | values["features"])
    if "active" in values:
        values["active"] = int(values["active"])
    if "vendor" in values:
        values["vendor_id"] = await _vendor_id(store, principal, values.pop("vendor"))
    NewOrganisation(
        code=row["code"],
        short_name=values.get("short_name", row["short_name"]),
        licences=values.get("licences", row["licences"]),
        devices_per_user=values.get("devices_per_user", row["devices_per_user"]),
    ).check()
    values["updated_at"] = now()
    event = audit_event(
        principal,
        "organisation.changed",
        organisation_id=row["id"],
        target_type="organisation",
        target_id=row["id"],
        details=changes,
    )
    await store.write(_update, row["id"], values, event)
    return public(row | values)


async def _vendor_id(store: Store, principal: Principal, vendor: str | None) -> str | None:
    """Which vendor admin looks after the organisation: the supervisor decides."""
    require_kind(principal, AccountKind.SUPERVISOR)
    if vendor is None:
        return None
    account = await store.read(account_by_id, vendor)
    if account is None or account["kind"] != AccountKind.VENDOR:
        raise Invalid("vendor must be the id of a vendor admin account", field="vendor")
    return vendor


def _update(
    conn: sqlite3.Connection, organisation_id: str, values: dict[str, Any], event: dict[str, Any]
) -> None:
    update_organisation_row(conn, organisation_id, values)
    if values.get("active") == 0:
        # Deactivation ends every session of the organisation at once.
        revoke_organisation_tokens(conn, organisation_id, values["updated_at"])
    insert_event(conn, event)


async def remove_organisation(store: Store, principal: Principal, key: str) -> None:
    """Remove an organisation and all it owns; only an inactive one, as a safety catch."""
    row = await visible_organisation(store, principal, key)
    require_kind(principal, AccountKind.SUPERVISOR, AccountKind.VENDOR)
    if row["active"]:
        raise Invalid("deactivate the organisation before removing it", field="active")
    event = audit_event(
        principal,
        "organisation.removed",
        organisation_id=None,
        target_type="organisation",
        target_id=row["id"],
        details={"code": row["code"]},
    )
    await store.write(_remove, row["id"], event)


def _remove(conn: sqlite3.Connection, organisation_id: str, event: dict[str, Any]) -> None:
    delete_organisation(conn, organisation_id)
    insert_event(conn, event)
