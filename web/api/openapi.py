"""``/api/v1/openapi.json``: the OpenAPI 3.1 document, generated from the declared operations."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from engine import __version__

from .operations import OPERATIONS, PREFIX, Operation, operation
from .schema import COMPONENTS, Schema, component, integer, obj, string

blueprint = Blueprint("api_openapi", __name__)

PROBLEM = component(
    "Problem",
    obj(
        {
            "type": string(),
            "title": string(),
            "status": integer(),
            "detail": string(),
            "field": string(description="the request member or parameter at fault"),
        },
        "title",
        "status",
        extra=True,
    ),
)

_ERRORS = {
    400: "malformed request",
    401: "missing, invalid or revoked token",
    403: "not allowed for this account",
    404: "no such thing (or not visible to this account)",
    409: "conflicts with an existing thing",
    412: "changed since it was read (If-Match)",
    413: "request body too large",
    415: "body must be application/json",
    422: "invalid values",
    429: "too many attempts; see Retry-After",
    503: "busy; see Retry-After",
}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_names(op.path)
    ]
    if op.listing is not None:
        spec = op.listing
        params += [
            {"name": "limit", "in": "query", "schema": integer(minimum=1, maximum=500)},
            {"name": "offset", "in": "query", "schema": integer(minimum=0)},
            {
                "name": "sort",
                "in": "query",
                "description": "a field name; prefix '-' for descending",
                "schema": {
                    "type": "string",
                    "enum": [*spec.sortable, *(f"-{f}" for f in spec.sortable)],
                },
            },
        ]
        params += [
            {
                "name": f"filter[{name}]",
                "in": "query",
                "description": f"case-insensitive substring of {name}",
                "schema": {"type": "string"},
            }
            for name in spec.filterable
        ]
    params += [{"name": name, "in": "query", "schema": schema} for name, schema in op.query.items()]
    return params


def _operation_id(op: Operation) -> str:
    words = [w.strip("{}").replace(".", "_").replace("-", "_") for w in op.path.split("/") if w]
    return "_".join([op.method.lower(), *words])


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _response(status: int, schema: Schema | None, content_type: str) -> dict[str, Any]:
    if schema is None:
        return {"description": "no content" if status == 204 else "done"}
    return {"description": "done", "content": {content_type: {"schema": schema}}}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "operationId": _operation_id(op),
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _parameters(op),
            "responses": {
                str(status): _response(status, schema, op.content_type)
                for status, schema in op.responses.items()
            }
            | {
                "default": {
                    "description": "an error: " + "; ".join(f"{k} {v}" for k, v in _ERRORS.items()),
                    "content": {"application/problem+json": {"schema": PROBLEM}},
                }
            },
        }
        if op.description:
            entry["description"] = op.description
        if op.auth == "none":
            entry["security"] = []
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": op.body}
                    | ({"example": op.example} if op.example is not None else {})
                },
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "EMM service REST API",
            "version": __version__,
            "description": "Everything the Web UI can do. JSON in and out; errors are "
            "application/problem+json (RFC 9457); lists take limit, offset, sort and "
            "filter[field].",
        },
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": dict(COMPONENTS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@operation(
    blueprint,
    "GET",
    "/openapi.json",
    summary="This document",
    tag="meta",
    auth="none",
    responses={200: {"type": "object"}},
)
async def openapi() -> dict[str, Any]:
    return document()
