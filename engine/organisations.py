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
from .errors import AlreadyExists, Invalid, NotFound
from .ids import new_id
from .passwords import hash_password
from .principals import AccountKind, Principal, require_kind, require_organisation_access
from .store import Conflict, Store
from .store.accounts import insert_account
from .store.audit import insert_event
from .store.organisations import (
    insert_organisation,
    list_organisations,
    organisation_by_code,
    organisation_by_id,
)
from .timestamps import now

CODE_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{1,31}")
MANAGER_RIGHTS = ("all",)


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
        "active": bool(row["active"]),
        "created_at": row["created_at"],
    }


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
            "rights": json.dumps(MANAGER_RIGHTS),
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
    return public(organisation | {"active": 1})


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
    row = await store.read(organisation_by_id, key) or await store.read(organisation_by_code, key)
    if row is None:
        raise NotFound("no such organisation")
    require_organisation_access(principal, row["id"], row["vendor_id"])
    return public(row)


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
