"""``/api/v1``: devices."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("api_devices", __name__)
