"""Errors as RFC 9457 ``application/problem+json``, mapped in one place.

Routes raise domain errors (or let the runtime's backpressure errors through); the handlers
registered here turn each into one status code and a body that says what went wrong without
leaking internals.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import Quart, Response, json
from werkzeug.exceptions import HTTPException

from engine.actors import ActorError, MailboxFull
from engine.errors import (
    AlreadyExists,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    Stale,
    Throttled,
    Unauthenticated,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Seconds a client is told to wait when the service sheds load.
RETRY_AFTER_BUSY = 1

_STATUS: list[tuple[type[DomainError], int, str]] = [
    (Unauthenticated, 401, "Unauthenticated"),
    (Forbidden, 403, "Forbidden"),
    (NotFound, 404, "Not Found"),
    (AlreadyExists, 409, "Conflict"),
    (Stale, 412, "Precondition Failed"),
    (Invalid, 422, "Unprocessable Content"),
    (Throttled, 429, "Too Many Requests"),
]


class BadRequest(Exception):
    """The request itself is malformed (not JSON, wrong content type...)."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = Response(json.dumps(body), status=status, content_type=PROBLEM_JSON)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="emm"'
    return response


def domain_status(exc: DomainError) -> tuple[int, str]:
    """The HTTP status and title answering a domain error."""
    for kind, status, title in _STATUS:
        if isinstance(exc, kind):
            return status, title
    return 400, "Bad Request"


def register(app: Quart) -> None:
    @app.errorhandler(DomainError)
    async def domain_error(exc: DomainError) -> Response:
        status, title = domain_status(exc)
        extra: dict[str, Any] = {}
        if isinstance(exc, Invalid) and exc.field:
            extra["field"] = exc.field
        response = problem(status, title, str(exc), **extra)
        if isinstance(exc, Throttled):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(BadRequest)
    async def bad_request(exc: BadRequest) -> Response:
        return problem(exc.status, "Bad Request" if exc.status == 400 else "Unsupported", str(exc))

    @app.errorhandler(MailboxFull)
    @app.errorhandler(trio.TooSlowError)
    async def busy(exc: Exception) -> Response:
        response = problem(503, "Service Unavailable", "the service is busy; try again shortly")
        response.headers["Retry-After"] = str(RETRY_AFTER_BUSY)
        return response

    @app.errorhandler(ActorError)
    async def actor_error(exc: ActorError) -> Response:
        log.error("request failed inside the service: %r", exc)
        return problem(500, "Internal Server Error", "the request could not be completed")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        response = problem(code, exc.name, exc.description if code < 500 else None)
        if code == 405 and exc.get_headers():
            for name, value in exc.get_headers():
                if name.lower() == "allow":
                    response.headers["Allow"] = value
        return response
