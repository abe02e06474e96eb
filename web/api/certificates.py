"""``/api/v1``: certificates."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("api_certificates", __name__)
