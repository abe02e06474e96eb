"""``/api/v1``: commands."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("api_commands", __name__)
