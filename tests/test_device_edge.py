"""The device edge: device routes beneath Quart keep the guarantees Quart gave them."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.actors import MailboxFull
from engine.errors import AlreadyExists, Throttled
from engine.service_settings import Deployment
from engine.store import open_sqlite_store, sqlite as sqlite_store
from web import device_edge
from web.context import ServiceContext
from web.device_edge import DeviceEdge, DeviceRoute, EdgeRequest, EdgeResponse


def _refuse(status: int, reason: str) -> EdgeResponse:
    return EdgeResponse(status, json.dumps({"refused": reason}).encode(), "application/json")


async def _echo(request: EdgeRequest) -> EdgeResponse:
    if request.body == b"busy":
        raise MailboxFull("full")
    if request.body == b"bug":
        raise RuntimeError("a bug")
    if request.body == b"limit":
        raise AlreadyExists("the licences are used up")
    if request.body == b"again":
        raise Throttled("too many attempts", retry_after=7)
    answer = {
        "body": request.body.decode(),
        "type": request.media_type,
        "client": request.client_address(),
    }
    return EdgeResponse(200, json.dumps(answer).encode(), "application/json", (("X-Seen", "1"),))


class _Quart:
    """Stands for the Quart app: records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _call(
    edge: DeviceEdge, path: str, chunks: list[bytes], method: str = "POST", *, ends: bool = True
) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", b"application/json; charset=utf-8")],
        "client": ("127.0.0.1", 5000),
    }
    pending = [
        {"type": "http.request", "body": chunk, "more_body": not ends or n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await edge(scope, receive, send)
    if not sent:
        return 0, {}, b""
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def edge_and_quart() -> tuple[DeviceEdge, _Quart]:
    context = ServiceContext(
        None,  # type: ignore[arg-type]
        Deployment("https://localhost"),
        "test",
        time.monotonic(),
    )
    quart = _Quart()
    route = DeviceRoute("/device", frozenset({"POST"}), _echo, _refuse, max_body=10)
    return DeviceEdge(quart, context, [route]), quart


async def test_the_route_gets_the_whole_body_and_its_answer_is_sent(
    edge_and_quart: tuple[DeviceEdge, _Quart],
) -> None:
    edge, quart = edge_and_quart
    status, headers, body = await _call(edge, "/device", [b"ab", b"cd"])
    assert status == 200
    assert json.loads(body) == {"body": "abcd", "type": "application/json", "client": "127.0.0.1"}
    assert headers["content-length"] == str(len(body))
    assert headers["x-seen"] == "1"
    assert headers["server-timing"].startswith("app;dur=")
    assert quart.paths == []


async def test_other_paths_go_to_quart(edge_and_quart: tuple[DeviceEdge, _Quart]) -> None:
    edge, quart = edge_and_quart
    status, _, _ = await _call(edge, "/device/other", [b""])
    assert status == 204
    assert quart.paths == ["/device/other"]


async def test_refusals_are_in_the_protocols_format(
    edge_and_quart: tuple[DeviceEdge, _Quart],
) -> None:
    edge, _ = edge_and_quart
    status, headers, body = await _call(edge, "/device", [b"12345", b"678901"])
    assert (status, json.loads(body)) == (413, {"refused": "the body is larger than 10 bytes"})
    status, headers, body = await _call(edge, "/device", [b""], method="GET")
    assert status == 405 and headers["allow"] == "OPTIONS, POST"
    assert json.loads(body) == {"refused": "GET is not allowed here"}
    status, _, body = await _call(edge, "/device", [b"busy"])
    assert status == 503 and "busy" in json.loads(body)["refused"]
    status, _, body = await _call(edge, "/device", [b"bug"])
    assert status == 500 and "a bug" not in body.decode()
    status, _, body = await _call(edge, "/device", [b"limit"])
    assert (status, json.loads(body)) == (409, {"refused": "the licences are used up"})
    status, headers, _ = await _call(edge, "/device", [b"again"])
    assert status == 429 and headers["retry-after"] == "7"
    status, headers, body = await _call(edge, "/device", [b""], method="OPTIONS")
    assert (status, headers["allow"], body) == (204, "OPTIONS, POST", b"")


async def test_a_body_that_does_not_arrive_in_time_is_408(
    edge_and_quart: tuple[DeviceEdge, _Quart], monkeypatch: pytest.MonkeyPatch
) -> None:
    edge, _ = edge_and_quart
    monkeypatch.setattr(device_edge, "BODY_SECONDS", 0.05)
    scope = {"type": "http", "method": "POST", "path": "/device", "headers": []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await edge(scope, receive, send)
    assert sent[0]["status"] == 408


async def test_a_client_that_leaves_mid_body_is_not_handled() -> None:
    handled: list[bytes] = []

    async def handler(request: EdgeRequest) -> EdgeResponse:
        handled.append(request.body)
        return EdgeResponse(200)

    context = ServiceContext(
        None,  # type: ignore[arg-type]
        Deployment("https://localhost"),
        "test",
        time.monotonic(),
    )
    edge = DeviceEdge(
        _Quart(), context, [DeviceRoute("/d", frozenset({"POST"}), handler, _refuse, 99)]
    )
    status, _, _ = await _call(edge, "/d", [b"part"], ends=False)  # then the client is gone
    assert handled == [] and status == 0  # nothing handled, nothing sent
    await _call(edge, "/d", [b"part"])
    assert handled == [b"part"]


async def test_a_point_lookup_runs_at_once_and_waits_in_a_thread_when_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def count(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]

    async with open_sqlite_store(tmp_path / "db.sqlite3") as store:
        expected = await store.read(count)
        assert await store.lookup(count) == expected > 0
        real_read = sqlite_store._read
        calls: list[str] = []

        def busy_once(conn: sqlite3.Connection, unit: Any, args: tuple[Any, ...]) -> Any:
            calls.append(threading.current_thread().name)
            if len(calls) == 1:
                error = sqlite3.OperationalError("database is locked")
                error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
                raise error
            return real_read(conn, unit, args)

        monkeypatch.setattr(sqlite_store, "_read", busy_once)
        assert await store.lookup(count) == expected
        main = threading.current_thread().name
        assert calls[0] == main and calls[1] != main  # at once, then in a worker thread
