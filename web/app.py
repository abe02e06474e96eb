"""The Quart-trio application: every HTTP route of the service, on one app."""

from __future__ import annotations

import time

from quart import Response, g
from quart_trio import QuartTrio

from . import (
    activesync,
    api,
    apple_mdm,
    health,
    omadm,
    omads,
    portal,
    problems,
    windows_enrolment,
    wsdm,
)
from .context import ServiceContext
from .device_edge import DeviceEdge


def create_app(context: ServiceContext, *, max_body: int = 16 * 1024 * 1024) -> QuartTrio:
    # The import name fixes where templates and static files are found (web/), whatever the
    # working directory.
    app = QuartTrio(__name__, static_folder="static", template_folder="templates")
    app.config.update(
        MAX_CONTENT_LENGTH=max_body,
        # Responses say exactly what they are; nothing is sniffed or reordered.
        JSON_SORT_KEYS=False,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    app.extensions["emm"] = context
    problems.register(app)

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def server_timing(response: Response) -> Response:
        # Time spent in the application, so clients and benchmarks can tell the service's
        # share of a request's latency from the network's (W3C Server Timing).
        started = getattr(g, "started", None)
        if started is not None:
            elapsed = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed:.2f}"
        return response

    app.register_blueprint(health.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(portal.blueprint)
    app.register_blueprint(windows_enrolment.blueprint)
    app.register_blueprint(apple_mdm.blueprint)
    app.register_blueprint(activesync.blueprint)
    return app


def create_service_app(context: ServiceContext, *, max_body: int) -> DeviceEdge:
    """What Hypercorn serves: the device protocols' hot routes beneath Quart
    (``web/device_edge.py``), every other request to the Quart app."""
    app = create_app(context, max_body=max_body)
    return DeviceEdge(app, context, (*wsdm.ROUTES, *apple_mdm.ROUTES, *omads.ROUTES, *omadm.ROUTES))
