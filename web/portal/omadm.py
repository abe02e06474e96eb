"""Portal: the OMA DM part of a device page (management tree snapshot, DM state).

The device page includes ``portal/omadm/_device.html`` for devices that speak OMA DM; the
partial reads the snapshot through :func:`engine.omadm.device_tree` (the same domain
operation as ``GET .../devices/{device}/omadm-tree``), made available to templates here.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import omadm as domain
from engine.principals import Principal

from ..context import service


async def omadm_tree(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    return await domain.device_tree(service().store, who, organisation, device)


def register(blueprint: Blueprint) -> None:
    @blueprint.record_once
    def _globals(state: Any) -> None:
        state.app.jinja_env.globals["omadm_tree"] = omadm_tree
