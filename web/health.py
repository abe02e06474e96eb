"""``GET /healthz``: liveness and version, for load balancers and monitoring.

It touches no database: a health check that queues behind real work would report a busy
service as dead. Liveness here means the store's writer actor is running.
"""

from __future__ import annotations

import time

from quart import Blueprint, Response, json

from .context import service

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> Response:
    context = service()
    alive = context.store.alive
    body = {
        "status": "ok" if alive else "failing",
        "version": context.version,
        "uptime_seconds": round(time.monotonic() - context.started_at, 3),
    }
    return Response(json.dumps(body), status=200 if alive else 503, content_type="application/json")
