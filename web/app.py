"""The Quart-trio application: every HTTP route of the service, on one app."""

from __future__ import annotations

from quart_trio import QuartTrio

from . import api, health, problems
from .context import ServiceContext


def create_app(context: ServiceContext, *, max_body: int = 16 * 1024 * 1024) -> QuartTrio:
    app = QuartTrio("emm")
    app.config.update(
        MAX_CONTENT_LENGTH=max_body,
        # Responses say exactly what they are; nothing is sniffed or reordered.
        JSON_SORT_KEYS=False,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    app.extensions["emm"] = context
    problems.register(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(api.blueprint)
    return app
