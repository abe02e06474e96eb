"""The portals: the admin portal (supervisor, vendor admins, managers) and the self-service
portal (device owners), server-rendered, on the same domain operations as the REST API."""

from __future__ import annotations

from quart import Blueprint

from . import (
    activesync,
    apple_mdm,
    auth,
    inventory,
    messages,
    omadm,
    omads,
    organisations,
    people,
    wsdm,
)
from .session import csrf_token

blueprint = Blueprint("portal", __name__)
for module in (
    auth,
    organisations,
    inventory,
    people,
    messages,
    wsdm,
    apple_mdm,
    omadm,
    omads,
    activesync,
):
    module.register(blueprint)


@blueprint.record_once
def _globals(state: object) -> None:
    # A global, so macros imported without context still see the session's CSRF token.
    state.app.jinja_env.globals["portal_csrf_token"] = csrf_token  # type: ignore[attr-defined]
