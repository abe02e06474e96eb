"""Configuration → Services as domain operations.

The supervisor edits the system-wide values; an organisation keeps *Use system-wide
settings* on per service or overrides single values. Every change is a read-modify-write
done inside one unit of work on the store's writer, so two admins editing at once cannot
lose each other's changes, and a stale ``expected_revision`` (HTTP ``If-Match``) is refused.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .audit import audit_event
from .config.services import (
    SERVICES,
    OrganisationSettings,
    SettingsError,
    SystemSettings,
    apply_organisation_change,
    apply_system_change,
    effective_with_sources,
)
from .errors import Invalid, NotFound, Stale
from .organisations import visible_organisation
from .principals import (
    Principal,
    Right,
    require_right,
    require_supervisor,
)
from .store import Conflict, Store
from .store.audit import insert_event
from .store.certificates import certificate_usable_by
from .store.settings import SYSTEM, put_settings, settings_of
from .timestamps import now

_EMPTY_DOCUMENT = {"version": 1, "services": {}}


@dataclass(frozen=True)
class Deployment:
    """The facts of this installation that default settings derive from."""

    public_url: str
    xmpp_server: str | None = None


def _system(row: Mapping[str, Any] | None, deployment: Deployment) -> SystemSettings:
    return SystemSettings.from_json(
        json.loads(row["settings"]) if row else _EMPTY_DOCUMENT,
        public_url=deployment.public_url,
        xmpp_server=deployment.xmpp_server,
    )


def _organisation(row: Mapping[str, Any] | None) -> OrganisationSettings:
    if row is None:
        return OrganisationSettings()
    return OrganisationSettings.from_json(json.loads(row["settings"]))


def _revision(row: Mapping[str, Any] | None) -> int:
    return row["revision"] if row else 0


def _invalid(exc: SettingsError) -> Invalid:
    where = ".".join(part for part in (exc.service, exc.field) if part)
    return Invalid(str(exc), field=where or None)


def _check_service(service: str) -> None:
    if service not in SERVICES:
        raise NotFound(f"no such service: {service}")


async def system_settings(
    store: Store, principal: Principal, deployment: Deployment
) -> dict[str, Any]:
    """The system-wide values with each service's field descriptions (supervisor only)."""
    require_supervisor(principal)
    row = await store.read(settings_of, SYSTEM)
    effective = effective_with_sources(_system(row, deployment), None)
    return {
        "revision": _revision(row),
        "services": {
            service: {
                **SERVICES[service].describe(),
                "values": {name: sourced.value for name, sourced in values.items()},
            }
            for service, values in effective.items()
        },
    }


async def change_system_settings(
    store: Store,
    principal: Principal,
    deployment: Deployment,
    service: str,
    values: Mapping[str, object],
    *,
    expected_revision: int | None = None,
) -> dict[str, Any]:
    require_supervisor(principal)
    _check_service(service)
    event = audit_event(
        principal,
        "settings.system_changed",
        organisation_id=None,
        target_type="service",
        target_id=service,
        details={"values": dict(values)},
    )
    try:
        await store.write(
            change_system_unit, deployment, service, dict(values), expected_revision, event
        )
    except SettingsError as exc:
        raise _invalid(exc) from None
    except Conflict as exc:
        raise Stale(str(exc)) from None
    return await system_settings(store, principal, deployment)


def _check_certificates(
    conn: sqlite3.Connection, organisation_id: str | None, service: str, values: Mapping[str, Any]
) -> None:
    """A setting may name only a certificate its scope may use (never another
    organisation's): the settings model alone cannot know whose an id is."""
    certificate_id = values.get("apns_certificate") if service == "apple_mdm" else None
    if certificate_id is not None and not certificate_usable_by(
        conn, str(certificate_id), organisation_id, "apns"
    ):
        raise SettingsError(service, "apns_certificate", "no such APNS certificate here")


def change_system_unit(
    conn: sqlite3.Connection,
    deployment: Deployment,
    service: str,
    values: dict[str, object],
    expected_revision: int | None,
    event: dict[str, Any],
) -> int:
    """The system-wide change as a unit; public for larger units (the APNS upload)."""
    _check_certificates(conn, None, service, values)
    row = settings_of(conn, SYSTEM)
    changed = apply_system_change(_system(row, deployment), service, values)
    revision = put_settings(conn, SYSTEM, json.dumps(changed.to_json()), now(), expected_revision)
    insert_event(conn, event)
    return revision


async def organisation_settings(
    store: Store, principal: Principal, deployment: Deployment, organisation: str
) -> dict[str, Any]:
    """Per service: the switch, the stored overrides, and what devices are told (and why)."""
    org = await visible_organisation(store, principal, organisation)
    system_row = await store.read(settings_of, SYSTEM)
    own_row = await store.read(settings_of, org["id"])
    own = _organisation(own_row)
    effective = effective_with_sources(_system(system_row, deployment), own)
    return {
        "organisation": org["code"],
        "revision": _revision(own_row),
        "services": {
            service: {
                "title": SERVICES[service].title,
                "use_system_wide": own.for_service(service).use_system_wide,
                "overrides": dict(own.for_service(service).overrides),
                "effective": {
                    name: {"value": sourced.value, "source": sourced.source}
                    for name, sourced in values.items()
                },
            }
            for service, values in effective.items()
        },
    }


async def change_organisation_settings(
    store: Store,
    principal: Principal,
    deployment: Deployment,
    organisation: str,
    service: str,
    *,
    use_system_wide: bool | None = None,
    overrides: Mapping[str, object] | None = None,
    clear: Iterable[str] = (),
    expected_revision: int | None = None,
) -> dict[str, Any]:
    org = await visible_organisation(store, principal, organisation)
    require_right(principal, Right.CONFIGURATION)
    _check_service(service)
    change = {
        "use_system_wide": use_system_wide,
        "overrides": dict(overrides or {}),
        "clear": list(clear),
    }
    event = audit_event(
        principal,
        "settings.organisation_changed",
        organisation_id=org["id"],
        target_type="service",
        target_id=service,
        details=change,
    )
    try:
        await store.write(
            change_organisation_unit, org["id"], service, change, expected_revision, event
        )
    except SettingsError as exc:
        raise _invalid(exc) from None
    except Conflict as exc:
        raise Stale(str(exc)) from None
    return await organisation_settings(store, principal, deployment, org["id"])


def change_organisation_unit(
    conn: sqlite3.Connection,
    organisation_id: str,
    service: str,
    change: dict[str, Any],
    expected_revision: int | None,
    event: dict[str, Any],
) -> int:
    """An organisation's change as a unit; public for larger units (the APNS upload)."""
    _check_certificates(conn, organisation_id, service, change["overrides"])
    changed = apply_organisation_change(
        _organisation(settings_of(conn, organisation_id)), service, **change
    )
    revision = put_settings(
        conn, organisation_id, json.dumps(changed.to_json()), now(), expected_revision
    )
    insert_event(conn, event)
    return revision


async def effective_settings_of(
    store: Store, deployment: Deployment, organisation_id: str | None
) -> dict[str, dict[str, Any]]:
    """What the devices of an organisation are told; for protocol code (no principal)."""
    return await store.read(effective_settings_unit, deployment, organisation_id)


def effective_settings_unit(
    conn: sqlite3.Connection, deployment: Deployment, organisation_id: str | None
) -> dict[str, dict[str, Any]]:
    """:func:`effective_settings_of` inside a unit of work (a check before a change)."""
    system_row = settings_of(conn, SYSTEM)
    own = _organisation(settings_of(conn, organisation_id)) if organisation_id else None
    effective = effective_with_sources(_system(system_row, deployment), own)
    return {
        service: {name: sourced.value for name, sourced in values.items()}
        for service, values in effective.items()
    }
