"""The REST API at ``/api/v1``: JSON in and out, bearer tokens, problem+json errors."""

from __future__ import annotations

from quart import Blueprint

from . import auth, organisations, settings

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
blueprint.register_blueprint(auth.blueprint)
blueprint.register_blueprint(organisations.blueprint)
blueprint.register_blueprint(settings.blueprint)
