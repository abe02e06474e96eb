"""``/api/v1``: accounts."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("api_accounts", __name__)
