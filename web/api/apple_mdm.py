"""``/api/v1``: Apple MDM enrolment profiles and a device's enrolment."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from engine import apple_mdm as domain
from engine.errors import NotFound
from engine.principals import Principal

from ..apple_mdm import profile_response
from ..context import service
from .operations import operation
from .schema import array, boolean, component, enum, nullable, obj, string, timestamp

blueprint = Blueprint("api_apple_mdm", __name__)

_PROFILE = string(
    description="A CMS-signed (DER) configuration profile: the MDM payload, the device's "
    "identity (PKCS#12) and the service's root certificate. It holds a private key: keep it "
    "from anyone but the device."
)

ENROLMENT = component(
    "AppleMdmEnrolment",
    obj(
        {
            "device_id": string(),
            "enrolment": nullable(
                obj(
                    {
                        "enrolment_id": string(description="UDID, or EnrollmentID"),
                        "user_enrolment": boolean(),
                        "state": enum("authenticated", "enrolled", "checked_out"),
                        "topic": string(),
                        "push_token_state": enum("none", "good", "refused"),
                        "push_token_refused_reason": nullable(string()),
                        "awaiting_configuration": boolean(),
                        "has_unlock_token": boolean(),
                        "has_bootstrap_token": boolean(),
                        "last_push_at": nullable(timestamp()),
                        "enrolled_at": nullable(timestamp()),
                        "user_channels": array(
                            obj(
                                {
                                    "user_id": string(),
                                    "short_name": nullable(string()),
                                    "state": string(),
                                },
                                "user_id",
                                "short_name",
                                "state",
                            )
                        ),
                    },
                    "enrolment_id",
                    "user_enrolment",
                    "state",
                    "topic",
                    "push_token_state",
                    "push_token_refused_reason",
                    "awaiting_configuration",
                    "has_unlock_token",
                    "has_bootstrap_token",
                    "last_push_at",
                    "enrolled_at",
                    "user_channels",
                )
            ),
        },
        "device_id",
        "enrolment",
    ),
)


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/apple-mdm/enrolment-profile",
    summary="An enrolment profile for a new Apple device (managers with the devices right; "
    "a device owner's is for a device of their own)",
    tag="apple_mdm",
    content_type="application/x-apple-aspen-config",
    description="Each download carries a new device identity issued by the service's CA. "
    "Needs the organisation's APNS certificate (Configuration → Services → Apple MDM).",
    responses={200: _PROFILE},
)
async def enrolment_profile(who: Principal, organisation: str) -> Response:
    mdm = service().apple_mdm
    if mdm is None:
        raise NotFound("Apple MDM is not running")
    return profile_response(await domain.enrolment_profile(mdm, who, organisation))


@operation(
    blueprint,
    "GET",
    "/organisations/{organisation}/devices/{device}/apple-mdm",
    summary="A device's Apple MDM enrolment: channels, push token state (never the tokens)",
    tag="apple_mdm",
    responses={200: ENROLMENT},
)
async def device_enrolment(who: Principal, organisation: str, device: str) -> dict[str, Any]:
    return await domain.enrolment_of(service().store, who, organisation, device)
