"""A world of organisations and their things, built from the API's own OpenAPI document.

For every path parameter (``{account}``, ``{device}``...) the collection that creates such
things is found in the document (``POST X`` where ``GET X/{param}`` exists) and its
declared example body is posted. Strings in an example of the form ``{param}`` are replaced
by the id of a thing of that kind in the same organisation. So a route added to the API is
reachable by the tests that enumerate routes without anyone writing fixtures for it.
"""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from .conftest import bearer

PARAM = re.compile(r"{(\w+)}")

#: Parameters whose things are made by a route that does not follow the collection rule,
#: with the member of the answer that holds the id.
SPECIAL_CREATORS: dict[str, tuple[str, str]] = {
    "command": ("/organisations/{organisation}/devices/{device}/commands", "id"),
    "batch": ("/organisations/{organisation}/commands", "batch_id"),
}
#: Path parameters that name something other than a thing (e.g. a service of the settings).
FIXED_VALUES: dict[str, str] = {"service_name": "oma_dm"}

MANAGER_PASSWORD = "manager password 1"


@dataclass
class Organisation:
    code: str
    id: str
    manager_token: str
    things: dict[str, str] = field(default_factory=dict)


class World:
    def __init__(self, client: httpx.AsyncClient, supervisor_token: str, doc: dict[str, Any]):
        self.client = client
        self.auth = bearer(supervisor_token)
        self.doc = doc
        self.system_things: dict[str, str] = {}

    async def organisation(self, code: str, password: str = MANAGER_PASSWORD) -> Organisation:
        created = await self.client.post(
            "/api/v1/organisations",
            json={
                "code": code,
                "short_name": code,
                "licences": 1000,
                "first_manager_password": password,
            },
            headers=self.auth,
        )
        assert created.status_code == 201, created.text
        return Organisation(code, created.json()["id"], await self.sign_in(code, password))

    async def sign_in(self, code: str, password: str, login: str = "admin") -> str:
        token = await self.client.post(
            "/api/v1/auth/token",
            json={"organisation": code, "login": login, "password": password},
        )
        assert token.status_code == 201, token.text
        return token.json()["token"]

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        return self.doc["paths"].get(path, {}).get(method.lower())

    def creator(self, param: str) -> tuple[str, str]:
        if param in SPECIAL_CREATORS:
            return SPECIAL_CREATORS[param]
        for path in self.doc["paths"]:
            if path.endswith("/{" + param + "}") and self.operation("GET", path):
                collection = path[: -len(param) - 3]
                if self.operation("POST", collection):
                    return collection, "id"
        raise LookupError(f"no route creates a {{{param}}}")

    async def thing(self, org: Organisation | None, param: str) -> str:
        """The id of a thing of kind ``param`` in ``org`` (None: system-wide), made once."""
        if param == "organisation":
            assert org is not None
            return org.code
        if param in FIXED_VALUES:
            return FIXED_VALUES[param]
        collection, key = self.creator(param)
        if "{organisation}" not in collection:
            org = None  # a system-wide thing (e.g. a vendor admin), made once
        things = org.things if org is not None else self.system_things
        if param not in things:
            path = await self.fill(org, collection)
            op = self.operation("POST", collection)
            assert op is not None
            example = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            body = await self.fill_example(org, copy.deepcopy(example.get("example", {})))
            response = await self.client.post(f"/api/v1{path}", json=body, headers=self.auth)
            assert response.status_code in (200, 201), (collection, body, response.text)
            things[param] = response.json()[key]
        return things[param]

    def record(self, org: Organisation | None, param: str, answer: dict[str, Any]) -> None:
        """Keep a thing made by someone else's request (e.g. a sample) as the world's own."""
        collection, key = self.creator(param)
        things = (
            org.things
            if org is not None and "{organisation}" in collection
            else (self.system_things)
        )
        things.setdefault(param, answer[key])

    def creators(self) -> dict[str, str]:
        """Collection path -> the parameter its POST creates."""
        params = {p for path in self.doc["paths"] for p in PARAM.findall(path)}
        found = {}
        for param in params - {"organisation", *FIXED_VALUES}:
            with contextlib.suppress(LookupError):  # thing() reports it when it is needed
                found[self.creator(param)[0]] = param
        return found

    async def fill(self, org: Organisation | None, path: str) -> str:
        for param in PARAM.findall(path):
            path = path.replace("{" + param + "}", await self.thing(org, param), 1)
        return path

    async def fill_example(self, org: Organisation | None, value: Any) -> Any:
        if isinstance(value, str):
            match = PARAM.fullmatch(value)
            return await self.thing(org, match.group(1)) if match else value
        if isinstance(value, list):
            return [await self.fill_example(org, item) for item in value]
        if isinstance(value, dict):
            return {key: await self.fill_example(org, item) for key, item in value.items()}
        return value


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    ]
