"""The OpenAPI document is valid, lists exactly the routes that exist, and its samples work."""

from __future__ import annotations

import copy
import json
import sqlite3
from typing import Any

import httpx
import jsonschema
from openapi_spec_validator import validate as validate_spec

from web.api.operations import PREFIX
from web.wsdm import PREFIX as WSDM_PREFIX

from .conftest import RunningService, bearer, supervisor_token
from .world import PARAM, World, operations

#: The organisation the declared examples name, and its first manager's password.
SAMPLE_ORGANISATION = "acme"
SAMPLE_PASSWORD = "correct horse battery"


async def fetch_document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(f"{PREFIX}/openapi.json")  # no token needed
    assert response.status_code == 200
    return response.json()


def check_response(doc: dict[str, Any], op: dict[str, Any], response: httpx.Response) -> None:
    """The answer matches the schema the document declares for its status (independently
    of the service's own validator: this is the ``jsonschema`` package)."""
    declared = op["responses"].get(str(response.status_code))
    assert declared is not None, f"undeclared status {response.status_code}: {response.text}"
    content = declared.get("content")
    if content is None:
        assert response.content == b""
        return
    ((media, spec),) = content.items()
    assert response.headers["content-type"].split(";")[0] == media
    if media == "application/json":
        schema = {**spec["schema"], "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(response.json())


async def test_the_document_is_valid_openapi_3_1(running: RunningService) -> None:
    async with running.client() as client:
        doc = await fetch_document(client)
    validate_spec(doc)
    assert doc["openapi"].startswith("3.1")
    for _, _, op in operations(doc):
        assert op["summary"] and op["responses"]


async def test_the_document_lists_exactly_the_routes_the_service_has(
    running: RunningService,
) -> None:
    from web.app import create_app  # the same app the service runs

    app = create_app(None)  # type: ignore[arg-type]  # routes only, nothing is served
    served = {
        (method, PARAM.sub("{param}", rule.rule.replace("<", "{").replace(">", "}")))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(PREFIX)
        # WSDM's device routes answer devices in WSDM's own JSON (docs/wsdm.md), not accounts.
        and not rule.rule.startswith(WSDM_PREFIX)
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    async with running.client() as client:
        doc = await fetch_document(client)
    documented = {
        (method, PARAM.sub("{param}", PREFIX + path)) for method, path, _ in operations(doc)
    }
    assert served == documented


def audit_count(running: RunningService) -> int:
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        return conn.execute("SELECT count(*) FROM audit_events").fetchone()[0]


def audit_since(running: RunningService, count: int) -> list[tuple[str, str, str]]:
    with sqlite3.connect(running.bootstrap.database.path) as conn:
        rows = conn.execute("SELECT actor, action, at FROM audit_events ORDER BY rowid").fetchall()
    return rows[count:]


def sample_order(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """Creating samples first, each after what it needs; then the others; removals last,
    deepest paths first (an organisation's removal very last)."""
    creators = world.creators()
    ops = operations(world.doc)
    creating = [entry for entry in ops if entry[0] == "POST" and entry[1] in creators]
    others = [e for e in ops if e not in creating and e[0] != "DELETE"]
    removals = sorted(
        (e for e in ops if e[0] == "DELETE"), key=lambda e: -e[1].count("/") - e[1].count("{")
    )

    def needs(entry: tuple[str, str, dict[str, Any]]) -> set[str]:
        example = json.dumps(entry[2].get("requestBody", {}))
        return {p for p in PARAM.findall(entry[1] + example) if p in creators.values()}

    ordered: list[tuple[str, str, dict[str, Any]]] = []
    made: set[str] = set()
    while creating:
        ready = [e for e in creating if needs(e) <= made] or creating[:1]
        for entry in ready:
            creating.remove(entry)
            ordered.append(entry)
            made.add(creators[entry[1]])
    return ordered + others + removals


async def test_every_sample_request_succeeds_and_answers_as_documented(
    running: RunningService,
) -> None:
    async with running.client() as client:
        doc = await fetch_document(client)
        supervisor = await supervisor_token(client, running.supervisor_password)
        world = World(client, supervisor, doc)
        sample = await world.organisation(SAMPLE_ORGANISATION, SAMPLE_PASSWORD)
        # Removals act on things of their own organisation, so that they do not take away
        # what other samples use.
        doomed = await world.organisation("doomed")
        creators = world.creators()
        for method, path, op in sample_order(world):
            org = doomed if method == "DELETE" else sample
            if path == "/organisations/{organisation}" and method == "DELETE":
                deactivated = await client.patch(
                    f"{PREFIX}/organisations/doomed", json={"active": False}, headers=world.auth
                )
                assert deactivated.status_code == 200
            url = PREFIX + await world.fill(org, path)
            if method == "DELETE" and world.operation("PUT", path):
                # Removing a membership needs one: put it there first.
                put = await client.put(url, headers=world.auth)
                assert put.status_code < 300, put.text
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            payload = None
            if body is not None:
                assert "example" in body, f"{method} {path} declares no example body"
                payload = await world.fill_example(org, copy.deepcopy(body["example"]))
            # Sign-in samples act as the sample organisation's manager; the rest as supervisor.
            token = supervisor
            if op["tags"] == ["auth"] and op.get("security") != []:
                token = await world.sign_in(SAMPLE_ORGANISATION, SAMPLE_PASSWORD)
            seen = audit_count(running)
            response = await client.request(method, url, json=payload, headers=bearer(token))
            assert response.status_code < 300, (method, path, payload, response.text)
            check_response(doc, op, response)
            if method != "GET":  # every change is in the audit log: who, what, when
                events = audit_since(running, seen)
                assert events, f"{method} {path} changed something without an audit event"
                for actor, action, at in events:
                    assert actor and action and at, (method, path, events)
            if method == "POST" and path in creators:
                world.record(org, creators[path], response.json())
            if path == "/auth/password":  # the sample changed the password: change it back
                await client.post(
                    f"{PREFIX}/auth/password",
                    json={
                        "current_password": payload["new_password"],
                        "new_password": SAMPLE_PASSWORD,
                    },
                    headers=bearer(response.json()["token"]),
                )
