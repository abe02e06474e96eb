"""Exchange ActiveSync in the admin portal: the organisation's ActiveSync settings and
device policy (a form doing what ``PATCH /organisations/{organisation}/activesync`` does),
and the ActiveSync state shown on an ActiveSync device's page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quart import Blueprint, Response, url_for

from engine import activesync_admin as domain
from engine.activesync import DEFAULT_SETTINGS
from engine.errors import Invalid
from engine.organisations import visible_organisation
from engine.principals import AccountKind, Principal
from engine.protocols.activesync import PROVISION_DOC

from ..context import service
from .pages import action, done, page, render
from .session import session_principal

ADMINS = (AccountKind.MANAGER, AccountKind.SUPERVISOR, AccountKind.VENDOR)
#: Each setting with the label the form shows, in the form's order.
LABELS: dict[str, str] = {
    "require_provisioning": "Devices must accept the policy (Provision) before they sync",
    "max_ping_folders": "Most folders one Ping may watch",
    "passcode_required": "Passcode required",
    "min_passcode_length": "Minimum passcode length",
    "alphanumeric_required": "Alphanumeric passcode required",
    "min_complex_characters": "Minimum character groups in the passcode",
    "simple_passcode_allowed": "Simple passcodes (1111, 1234) allowed",
    "max_failed_attempts": "Failed attempts before the device wipes itself",
    "max_inactivity_seconds": "Inactivity before the device locks (seconds)",
    "passcode_expiration_days": "Passcode expires after (days, empty: never)",
    "passcode_history": "Passcodes remembered",
    "encryption_required": "Device encryption required",
    "storage_card_encryption": "Storage card encryption required",
    "camera_allowed": "Camera allowed",
}
_NUMBERS = {
    name
    for name, default in [*DEFAULT_SETTINGS.items(), *((n, d) for _, n, d in PROVISION_DOC)]
    if not isinstance(default, bool)
}


def _changes(form: Mapping[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name, label in LABELS.items():
        if name in _NUMBERS:
            text = str(form.get(name, "")).strip()
            if not text:
                changes[name] = None
                continue
            try:
                changes[name] = int(text)
            except ValueError:
                raise Invalid(f"{label} must be a whole number", field=name) from None
        else:
            changes[name] = form.get(name) == "on"
    return changes


async def device_state(organisation: str, device: Mapping[str, Any]) -> dict[str, Any] | None:
    """For the device page: the ActiveSync state of the device shown (or None)."""
    if device.get("protocol") != "eas":
        return None
    who = await session_principal()
    return await domain.device_state(service().store, who, organisation, device["id"])


def register(blueprint: Blueprint) -> None:
    @blueprint.record_once
    def _globals(state: Any) -> None:
        state.app.jinja_env.globals["activesync_state"] = device_state

    @page(blueprint, "/admin/o/<organisation>/activesync", kinds=ADMINS)
    async def activesync_settings(who: Principal, organisation: str) -> Response:
        org = await visible_organisation(service().store, who, organisation)
        current = await domain.organisation_settings(service().store, who, organisation)
        return await render(
            "portal/activesync/settings.html",
            who,
            organisation=org,
            current=current,
            labels=LABELS,
            numbers=_NUMBERS,
        )

    @action(
        blueprint,
        "/admin/o/<organisation>/activesync",
        api=("PATCH", "/organisations/{organisation}/activesync"),
    )
    async def activesync_settings_change(who: Principal, form: Any, organisation: str) -> Response:
        await domain.change_settings(service().store, who, organisation, _changes(form))
        return done(
            url_for("portal.activesync_settings", organisation=organisation),
            "ActiveSync settings saved; devices apply the policy when they next connect.",
        )
