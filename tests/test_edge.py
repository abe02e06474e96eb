"""At the HTTP edge, a full mailbox is 503 with Retry-After and a crash is a clean 500."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from quart import Blueprint

from engine.actors import RestartPolicy, start_listener
from engine.service_settings import Deployment
from engine.store import open_sqlite_store
from web import edge
from web.app import create_app
from web.context import ServiceContext
from web.edge import ask_device_session


class Parked:
    """A device session whose requests wait until released, or crash on request."""

    release = trio.Event()

    def __init__(self, key: str) -> None:
        self.key = key

    async def handle(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("bug in protocol code")
        await Parked.release.wait()
        return {"device": self.key, "echo": message}

    async def close(self) -> None:
        pass


async def test_full_session_mailbox_is_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Parked.release = trio.Event()
    route = Blueprint("test_protocol", __name__)

    @route.post("/test-protocol/<device>/<message>")
    async def device_request(device: str, message: str) -> dict[str, Any]:
        return await ask_device_session("test", device, message)

    async with open_sqlite_store(tmp_path / "db.sqlite3") as store, trio.open_nursery() as nursery:
        listener = await start_listener(
            nursery, "test", Parked, session_capacity=1, policy=RestartPolicy(max_restarts=0)
        )
        context = ServiceContext(store, Deployment("https://localhost"), "test", time.monotonic())
        context.listeners["test"] = listener
        app = create_app(context)
        app.register_blueprint(route)
        client = app.test_client()
        statuses: dict[str, int] = {}

        async def call(message: str, device: str = "d1") -> None:
            response = await client.post(f"/test-protocol/{device}/{message}")
            statuses[message] = response.status_code
            if response.status_code == 503:
                statuses["retry-after"] = int(response.headers["Retry-After"])

        async with trio.open_nursery() as requests:
            requests.start_soon(call, "first")  # being handled
            await trio.testing.wait_all_tasks_blocked()
            requests.start_soon(call, "second")  # waiting in the session's mailbox
            await trio.testing.wait_all_tasks_blocked()
            await call("third")  # no room: shed, not queued
            assert statuses == {"third": 503, "retry-after": 1}
            await call("crash", device="d2")  # another device's bug...
            assert statuses["crash"] == 500
            # A session that does not answer within the deadline is as good as busy.
            monkeypatch.setattr(edge, "DEVICE_REQUEST_DEADLINE", 0.2)
            await call("slow", device="d3")
            assert statuses["slow"] == 503
            Parked.release.set()  # ...while d1's requests complete normally
        assert statuses["first"] == statuses["second"] == 200
        nursery.cancel_scope.cancel()
