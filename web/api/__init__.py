"""The REST API at ``/api/v1``: JSON in and out, bearer tokens, problem+json errors.

Every route is declared with :func:`.operations.operation`, which also documents it in
``/api/v1/openapi.json``.
"""

from __future__ import annotations

from quart import Blueprint

from . import (
    accounts,
    activesync,
    apple_mdm,
    audit,
    auth,
    certificates,
    commands,
    devices,
    messages,
    omadm,
    omads,
    openapi,
    organisations,
    settings,
    wsdm,
)
from .operations import PREFIX

blueprint = Blueprint("api", __name__, url_prefix=PREFIX)
for module in (
    auth,
    organisations,
    accounts,
    devices,
    commands,
    messages,
    omadm,
    omads,
    settings,
    certificates,
    apple_mdm,
    audit,
    activesync,
    wsdm,
    openapi,
):
    blueprint.register_blueprint(module.blueprint)
