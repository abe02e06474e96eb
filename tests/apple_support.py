"""What the Apple MDM tests share: a stand-in Apple PKI, the APNs test server, the service.

``apple_service`` runs the real service (as ``conftest.running`` does) with its ``[apns]``
section pointing at an :class:`~bench.apns_server.ApnsTestServer` on loopback, and an
organisation whose APNS certificate (issued by the test's "Apple" CA, subject UID
``com.apple.mgmt.External.<uuid>``) was uploaded through the REST API.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from bench.apns_server import ApnsTestServer, ApplePki
from bench.apple_sim import SimulatedDevice, read_profile
from engine.config.bootstrap import Apns
from engine.setup import initialise
from web.service import run_service

from .conftest import RunningService, bearer, supervisor_token
from .test_api_commands import API, Org, database, new_organisation

PEM = serialization.Encoding.PEM
NOW = dt.datetime.now(dt.UTC)


@dataclass
class AppleService:
    running: RunningService
    apns: ApnsTestServer
    pki: ApplePki
    client: httpx.AsyncClient
    supervisor: dict[str, str]
    org: Org

    async def profile(self, org: Org | None = None, headers: dict[str, str] | None = None) -> bytes:
        org = org or self.org
        response = await self.client.get(
            f"{API}/organisations/{org.code}/apple-mdm/enrolment-profile",
            headers=headers or org.admin,
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-apple-aspen-config"
        return response.content

    async def device(self, **kwargs: object) -> SimulatedDevice:
        """A simulated device enrolled with a fresh profile of the organisation."""
        device = SimulatedDevice(read_profile(await self.profile()), self.running.http_url)
        for name, value in kwargs.items():
            setattr(device, name, value)
        await device.enrol(self.client)
        return device

    def device_id(self, device: SimulatedDevice) -> str:
        with database(self.running) as conn:
            row = conn.execute(
                "SELECT device_id FROM apple_mdm_enrolments WHERE id = ?", (device.udid,)
            ).fetchone()
        assert row is not None
        return str(row[0])

    async def queue(self, device_id: str, kind: str, **parameters: object) -> str:
        response = await self.client.post(
            f"{API}/organisations/{self.org.code}/devices/{device_id}/commands",
            json={"kind": kind, "parameters": parameters},
            headers=self.org.admin,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def command(self, command_id: str) -> dict[str, object]:
        response = await self.client.get(
            f"{API}/organisations/{self.org.code}/commands/{command_id}", headers=self.org.admin
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


async def upload_push_certificate(
    client: httpx.AsyncClient, org: Org, pki: ApplePki
) -> dict[str, object]:
    response = await client.post(
        f"{API}/organisations/{org.code}/config/apns-certificate",
        json={"pem": pki.push_pem},
        headers=org.admin,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(name="apple")
async def apple_fixture(tmp_path: Path) -> AsyncIterator[AppleService]:
    pki = ApplePki.create(tmp_path / "apple")
    apns = ApnsTestServer(pki.server_file, pki.server_key_file, pki.ca_file)
    installation = await initialise(
        tmp_path / "data",
        public_url="https://localhost:8443",
        http=["127.0.0.1:0"],
        https=["127.0.0.1:0"],
    )
    async with trio.open_nursery() as nursery:
        apns_url = await nursery.start(apns.run)
        bootstrap = dataclasses.replace(
            installation.bootstrap, apns=Apns(base_url=apns_url, ca_certificate=pki.ca_file)
        )
        bound = await nursery.start(partial(run_service, bootstrap))
        urls = {address.scheme: address.url for address in bound}
        running = RunningService(
            bootstrap, urls["http"], urls["https"], installation.supervisor_password
        )
        async with running.client() as client:
            supervisor = bearer(await supervisor_token(client, running.supervisor_password))
            org = await new_organisation(client, supervisor, "apple-org")
            await upload_push_certificate(client, org, pki)
            yield AppleService(running, apns, pki, client, supervisor, org)
        nursery.cancel_scope.cancel()
