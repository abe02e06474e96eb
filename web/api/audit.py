"""``/api/v1``: audit."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("api_audit", __name__)
