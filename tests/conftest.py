"""Fixtures that start the real service: a real SQLite file, Hypercorn on loopback ports."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from engine.config import Bootstrap
from engine.setup import initialise
from web.service import run_service

NEW_PASSWORD = "a long enough secret"


@dataclass
class RunningService:
    bootstrap: Bootstrap
    http_url: str
    https_url: str
    supervisor_password: str

    @property
    def ca_file(self) -> str:
        return str(self.bootstrap.tls.ca_certificate)

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.http_url, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningService]:
    installation = await initialise(
        tmp_path / "data",
        public_url="https://localhost:8443",
        http=["127.0.0.1:0"],
        https=["127.0.0.1:0"],
    )
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(run_service, installation.bootstrap))
        urls = {address.scheme: address.url for address in bound}
        yield RunningService(
            installation.bootstrap,
            urls["http"],
            urls["https"],
            installation.supervisor_password,
        )
        nursery.cancel_scope.cancel()


async def supervisor_token(client: httpx.AsyncClient, one_time_password: str) -> str:
    """Sign in as the supervisor, trading the one-time password for a real one."""
    first = await client.post(
        "/api/v1/auth/token", json={"login": "supervisor", "password": one_time_password}
    )
    assert first.status_code == 201, first.text
    changed = await client.post(
        "/api/v1/auth/password",
        json={"current_password": one_time_password, "new_password": NEW_PASSWORD},
        headers={"Authorization": f"Bearer {first.json()['token']}"},
    )
    assert changed.status_code == 200, changed.text
    return changed.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
