"""JSON Schema (the 2020-12 dialect OpenAPI 3.1 uses): builders and a strict validator.

The same schema object documents an operation in ``/api/v1/openapi.json`` and checks the
request body that operation receives, so the document cannot drift from what the routes
accept. Only the keywords the API uses are supported; an unsupported keyword is a
programming error and fails loudly at validation time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from engine.errors import Invalid

Schema = dict[str, Any]

#: Named schemas, published under ``components/schemas`` and referenced with ``$ref``.
COMPONENTS: dict[str, Schema] = {}

_KNOWN = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "minimum",
    "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "format",
    "description", "$ref", "examples", "default", "readOnly", "uniqueItems", "const",
}  # fmt: skip


def component(name: str, schema: Schema) -> Schema:
    """Register ``schema`` as a named component; returns a ``$ref`` to it."""
    if name in COMPONENTS and COMPONENTS[name] != schema:
        raise ValueError(f"schema component {name} defined twice, differently")
    COMPONENTS[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: Mapping[str, Schema], *required: str, extra: bool = False) -> Schema:
    """An object with these members; unknown members are refused unless ``extra``."""
    schema: Schema = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


def page_of(items: Schema) -> Schema:
    """One page of a list (engine.listing.Page.as_json)."""
    return obj(
        {"items": array(items), "total": integer(), "limit": integer(), "offset": integer()},
        "items",
        "total",
        "limit",
        "offset",
    )


def record(members: Mapping[str, Schema]) -> Schema:
    """An object whose members are all always present (the shape of API answers)."""
    return obj(members, *members)


def mapping(values: Schema, *, description: str | None = None) -> Schema:
    """An object used as a dictionary: any keys, each value matching ``values``."""
    return _with({"type": "object", "additionalProperties": values}, description)


def string(*, description: str | None = None, **keywords: Any) -> Schema:
    return _with({"type": "string", **keywords}, description)


#: What an INTEGER column holds comfortably; larger whole numbers are refused up front.
MAX_INTEGER = 2**31 - 1


def integer(*, description: str | None = None, **keywords: Any) -> Schema:
    keywords.setdefault("maximum", MAX_INTEGER)
    return _with({"type": "integer", **keywords}, description)


def boolean(*, description: str | None = None) -> Schema:
    return _with({"type": "boolean"}, description)


def array(items: Schema, *, description: str | None = None, **keywords: Any) -> Schema:
    return _with({"type": "array", "items": items, **keywords}, description)


def nullable(schema: Schema) -> Schema:
    """``schema`` or JSON null (OpenAPI 3.1 spells it as a type list)."""
    result = dict(schema)
    kind = result.get("type")
    if kind is None:
        raise ValueError("nullable() needs a schema with a type")
    result["type"] = [*(kind if isinstance(kind, list) else [kind]), "null"]
    return result


def enum(*values: str, description: str | None = None) -> Schema:
    return _with({"type": "string", "enum": list(values)}, description)


def timestamp(*, description: str | None = None) -> Schema:
    return string(format="date-time", description=description)


def _with(schema: Schema, description: str | None) -> Schema:
    if description:
        schema["description"] = description
    return schema


# --------------------------------------------------------------------------- validation

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_matches(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False  # JSON true is not 1
    return isinstance(value, _TYPES[kind])


def resolve(schema: Schema) -> Schema:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return COMPONENTS[ref.rsplit("/", 1)[1]]


def validate(value: Any, schema: Schema, where: str = "") -> None:
    """Raise :class:`Invalid` naming the first member of ``value`` that ``schema`` refuses."""
    schema = resolve(schema)
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"unsupported schema keywords: {sorted(unknown)}")
    name = where or "body"

    def refuse(problem: str) -> Invalid:
        return Invalid(f"{name}: {problem}", field=where or None)

    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_type_matches(value, kind) for kind in kinds):
            raise refuse(f"expected {' or '.join(kinds)}")
    if value is None:
        return
    if "const" in schema and value != schema["const"]:
        raise refuse(f"must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise refuse(f"must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise refuse(f"at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise refuse(f"at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise refuse(f"does not match {schema['pattern']}")
        if schema.get("format") == "date-time":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise refuse("expected an RFC 3339 date-time") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise refuse(f"at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise refuse(f"at most {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise refuse(f"at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise refuse(f"at most {schema['maxItems']} items")
        if schema.get("uniqueItems") and len({repr(v) for v in value}) != len(value):
            raise refuse("items must be unique")
        if "items" in schema:
            for index, item in enumerate(value):
                validate(item, schema["items"], f"{name}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for required in schema.get("required", ()):
            if required not in value:
                path = f"{where}.{required}" if where else required
                raise Invalid(f"{path}: required", field=path)
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if key in properties:
                validate(item, properties[key], path)
            elif extra is False:
                raise Invalid(f"{path}: unknown member", field=path)
            elif isinstance(extra, dict):
                validate(item, extra, path)
