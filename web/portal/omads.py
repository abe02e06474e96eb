"""Portal: a device's OMA DS datastores on its page (admin portal and My devices), and the
refresh request, on the same domain operations as ``web/api/omads.py``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, url_for

from engine import pim
from engine.errors import Forbidden, NotFound
from engine.principals import Principal

from ..context import service
from .pages import action, done

_REFRESH = "/organisations/{organisation}/devices/{device}/datastores/refresh"
_LABELS = {"contacts": "Contacts", "calendar": "Calendar", "tasks": "Tasks", "notes": "Notes"}


async def datastores_of(who: Principal, organisation: str, device: str) -> list[dict[str, Any]]:
    """For the device pages' partial: the datastores, or none for whoever may not see them."""
    try:
        rows = await pim.device_datastores(service().store, who, organisation, device)
    except (NotFound, Forbidden):
        return []
    return [row | {"label": _LABELS[row["kind"]]} for row in rows]


def _kinds(form: Any) -> list[str] | None:
    chosen = [kind for kind in form.getlist("kinds") if kind in pim.KINDS]
    return chosen or None


def register(blueprint: Blueprint) -> None:
    @blueprint.record_once
    def _globals(state: Any) -> None:
        state.app.jinja_env.globals["omads_datastores"] = datastores_of

    @action(
        blueprint,
        "/admin/o/<organisation>/devices/<device>/datastores/refresh",
        api=("POST", _REFRESH),
    )
    async def datastores_refresh(
        who: Principal, form: Any, organisation: str, device: str
    ) -> Response:
        await pim.request_refresh(service().store, who, organisation, device, _kinds(form))
        return done(
            url_for("portal.device_page", organisation=organisation, device=device),
            "The device's next sync compares all items (slow sync).",
        )

    @action(blueprint, "/my/devices/<device>/datastores/refresh", api=("POST", _REFRESH))
    async def my_datastores_refresh(who: Principal, form: Any, device: str) -> Response:
        if who.organisation_id is None:
            raise Forbidden("the self-service portal is for device owners")
        await pim.request_refresh(service().store, who, who.organisation_id, device, _kinds(form))
        return done(
            url_for("portal.my_device", device=device),
            "Your device's next sync compares all items (slow sync).",
        )
