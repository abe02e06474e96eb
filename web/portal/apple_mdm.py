"""Portal pages of Apple MDM: enrolment profile downloads for managers and device owners.

The profile itself is the REST API's (``GET /organisations/{organisation}/apple-mdm/
enrolment-profile``); these pages serve the same download from a signed-in portal session.
Device pages include ``portal/apple_mdm/_device.html`` (how to enrol an Apple device) and
My devices includes ``portal/apple_mdm/_my_devices.html`` (the owner's own download).
"""

from __future__ import annotations

from quart import Blueprint, Response

from engine import apple_mdm as domain
from engine.errors import Forbidden, NotFound
from engine.principals import AccountKind, Principal

from ..apple_mdm import profile_response
from ..context import service
from .pages import page

ADMINS = (AccountKind.MANAGER, AccountKind.SUPERVISOR, AccountKind.VENDOR)
OWNERS = (AccountKind.USER,)


def _mdm() -> domain.AppleMdm:
    mdm = service().apple_mdm
    if mdm is None:
        raise NotFound("Apple MDM is not running")
    return mdm


def register(blueprint: Blueprint) -> None:
    @page(blueprint, "/admin/o/<organisation>/apple-mdm/enrol.mobileconfig", kinds=ADMINS)
    async def apple_mdm_profile(who: Principal, organisation: str) -> Response:
        """A profile for a new device of the organisation (each download a new identity)."""
        return profile_response(await domain.enrolment_profile(_mdm(), who, organisation))

    @page(blueprint, "/my/apple-mdm/enrol.mobileconfig", kinds=OWNERS)
    async def my_apple_mdm_profile(who: Principal) -> Response:
        """A device owner's profile: the device it enrols will be theirs."""
        if who.organisation_id is None:
            raise Forbidden("the self-service portal is for device owners")
        return profile_response(await domain.enrolment_profile(_mdm(), who, who.organisation_id))
