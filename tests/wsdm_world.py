"""The running service for WSDM tests, with or without a real Prosody for push."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.prosody import SERVICE_PASSWORD, Prosody
from bench.wsdm_sim import Simulator
from engine.config import Xmpp
from engine.setup import initialise
from web.service import run_service

from .conftest import RunningService, bearer, supervisor_token

API = "/api/v1"
MANAGER_PASSWORD = "manager password 1"


@dataclass
class WsdmService:
    running: RunningService
    client: httpx.AsyncClient
    simulator: Simulator
    supervisor: dict[str, str]
    prosody: Prosody | None = None

    async def organisation(self, code: str) -> dict[str, str]:
        """A fresh organisation; the headers of its first manager."""
        created = await self.client.post(
            f"{API}/organisations",
            json={"code": code, "short_name": code, "first_manager_password": MANAGER_PASSWORD},
            headers=self.supervisor,
        )
        assert created.status_code == 201, created.text
        token = await self.client.post(
            f"{API}/auth/token",
            json={"organisation": code, "login": "admin", "password": MANAGER_PASSWORD},
        )
        assert token.status_code == 201, token.text
        return bearer(token.json()["token"])

    async def new_device(
        self, org: str, manager: dict[str, str], name: str = "phone", protocol: str = "wsdm"
    ) -> tuple[str, str]:
        """A device in the inventory: (device id, its installation code)."""
        created = await self.client.post(
            f"{API}/organisations/{org}/devices",
            json={"name": name, "platform": "android", "protocol": protocol},
            headers=manager,
        )
        assert created.status_code == 201, created.text
        body = created.json()
        return body["id"], body["installation_code"]["code"]

    async def queue(
        self,
        org: str,
        manager: dict[str, str],
        device_id: str,
        kind: str,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        queued = await self.client.post(
            f"{API}/organisations/{org}/devices/{device_id}/commands",
            json={"kind": kind, "parameters": parameters or {}},
            headers=manager,
        )
        assert queued.status_code == 201, queued.text
        return queued.json()["id"]

    async def command(self, org: str, manager: dict[str, str], command_id: str) -> dict[str, Any]:
        got = await self.client.get(
            f"{API}/organisations/{org}/commands/{command_id}", headers=manager
        )
        assert got.status_code == 200, got.text
        return got.json()


@asynccontextmanager
async def wsdm_service(
    tmp_path: Path, prosody: Prosody | None = None
) -> AsyncIterator[WsdmService]:
    """The real service on loopback; its XMPP notifier logs in to ``prosody`` if given."""
    installation = await initialise(
        tmp_path / "data",
        public_url="https://localhost:8443",
        http=["127.0.0.1:0"],
        https=["127.0.0.1:0"],
    )
    bootstrap = installation.bootstrap
    if prosody is not None:
        bootstrap = dataclasses.replace(
            bootstrap,
            xmpp=Xmpp(
                jid=prosody.service_jid,
                password=SERVICE_PASSWORD,
                host="127.0.0.1",
                port=prosody.port,
            ),
        )
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(run_service, bootstrap))
        urls = {address.scheme: address.url for address in bound}
        running = RunningService(
            bootstrap, urls["http"], urls["https"], installation.supervisor_password
        )
        async with running.client() as client:
            supervisor = bearer(await supervisor_token(client, running.supervisor_password))
            yield WsdmService(running, client, Simulator(client), supervisor, prosody)
        nursery.cancel_scope.cancel()
