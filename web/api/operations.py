"""Declaring REST operations: one declaration routes, authenticates, validates and documents.

Every route of ``/api/v1`` is declared with :func:`operation`. The declaration says who may
call it (``auth``), what body it takes (a schema, checked before the handler runs), what it
answers, and which list parameters it accepts; the OpenAPI document is generated from the
same declarations (``web/api/openapi.py``), and the isolation tests enumerate them, so a new
route is documented and tested by construction.

Handlers receive the authenticated principal as ``who`` (unless ``auth="none"``), the
checked body as ``body``, and the list query as ``query``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from quart import Blueprint, request

from engine.errors import Invalid
from engine.listing import ListQuery, ListSpec
from engine.organisations import visible_organisation

from ..context import service
from ..requests import json_object, principal
from .schema import Schema, validate

PREFIX = "/api/v1"

#: "bearer": a full session; "password-change": also a one-time-password session; "none".
Auth = Literal["bearer", "password-change", "none"]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI form, under PREFIX: "/organisations/{organisation}"
    summary: str
    tag: str
    auth: Auth
    body: Schema | None
    responses: dict[int, Schema | None]
    listing: ListSpec | None
    query: dict[str, Schema] = field(default_factory=dict)
    content_type: str = "application/json"
    description: str = ""
    #: A request body that works on a fresh organisation (documentation and tests use it).
    example: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


OPERATIONS: list[Operation] = []

_PARAM = re.compile(r"{(\w+)}")


def operation(
    blueprint: Blueprint,
    method: str,
    path: str,
    *,
    summary: str,
    tag: str,
    responses: dict[int, Schema | None],
    body: Schema | None = None,
    auth: Auth = "bearer",
    listing: ListSpec | None = None,
    query: dict[str, Schema] | None = None,
    content_type: str = "application/json",
    description: str = "",
    example: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    op = Operation(
        method.upper(),
        path,
        summary,
        tag,
        auth,
        body,
        responses,
        listing,
        query or {},
        content_type,
        description,
        example,
    )
    if body is not None and example is not None:
        validate(example, body)  # a wrong example is a bug in the declaration
    OPERATIONS.append(op)

    def decorate(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(handler)
        async def route(**params: Any) -> Any:
            if auth != "none":
                params["who"] = await principal(password_change=auth == "password-change")
                if "organisation" in params:
                    # Another organisation's routes are "not found" before anything of the
                    # request is even looked at.
                    await visible_organisation(
                        service().store, params["who"], params["organisation"]
                    )
            if body is not None:
                data = await json_object()
                validate(data, body)
                params["body"] = data
            if listing is not None:
                params["query"] = list_query(listing)
            for name, schema in op.query.items():
                params[name] = query_value(name, schema)
            return await handler(**params)

        blueprint.add_url_rule(
            _PARAM.sub(r"<\1>", path),  # the parent blueprint adds PREFIX
            endpoint=f"{op.method.lower()}_{handler.__name__}",
            view_func=route,
            methods=[op.method],
        )
        return handler

    return decorate


def list_query(spec: ListSpec) -> ListQuery:
    """``limit``, ``offset``, ``sort`` (``-field`` for descending), ``filter[field]``."""
    args = request.args
    sort = args.get("sort") or None
    descending = False
    if sort and sort.startswith("-"):
        sort, descending = sort[1:], True
    filters = tuple(
        (key[len("filter[") : -1], value)
        for key, value in args.items(multi=True)
        if key.startswith("filter[") and key.endswith("]") and value
    )
    return ListQuery(
        limit=_int_arg("limit", 50),
        offset=_int_arg("offset", 0),
        sort=sort,
        descending=descending,
        filters=filters,
    ).checked(spec)


def _int_arg(name: str, default: int) -> int:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"{name} must be a whole number", field=name) from None


def query_value(name: str, schema: Schema) -> Any:
    """A declared query parameter, converted to the schema's type and checked."""
    text = request.args.get(name)
    if text is None:
        return schema.get("default")
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    value: Any = text
    if "integer" in kinds:
        value = _int_arg(name, 0)
    elif "boolean" in kinds:
        if text not in ("true", "false"):
            raise Invalid(f"{name} must be true or false", field=name)
        value = text == "true"
    validate(value, schema, name)
    return value
