"""The ActiveSync tests' world: an organisation, its user and inventory devices in the
running service's database, an httpx client, and the test client of the device."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.eas_client import EasClient
from engine.audit import audit_event
from engine.ids import new_id
from engine.service_settings import change_organisation_unit
from engine.timestamps import now

from .conftest import RunningService
from .omads_world import PASSWORD, DsWorld, database, make_world

TABLES = ("pim_items", "pim_id_map", "eas_devices", "eas_folder_states", "devices", "commands")


@dataclass
class EasWorld:
    ds: DsWorld
    http: httpx.AsyncClient

    @property
    def running(self) -> RunningService:
        return self.ds.running

    def add_device(
        self, device_id: str, *, state: str = "enrolled", owner: str | None = None
    ) -> str:
        row_id = new_id()
        at = now()
        with database(self.running) as conn:
            conn.execute(
                "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
                " state, udid, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 'ios', 'eas', ?, ?, ?, ?)",
                (
                    row_id,
                    self.ds.organisation_id,
                    owner or self.ds.owner_id,
                    device_id,
                    state,
                    device_id,
                    at,
                    at,
                ),
            )
        return row_id

    def client(self, device_id: str, **kwargs: object) -> EasClient:
        return EasClient(
            self.http,
            kwargs.pop("user", "acme\\alice"),  # type: ignore[arg-type]
            kwargs.pop("password", PASSWORD),
            device_id,
            **kwargs,
        )  # type: ignore[arg-type]

    def settings(self, **values: object) -> None:
        with database(self.running) as conn:
            conn.execute(
                "INSERT INTO eas_settings (organisation_id, settings, revision, updated_at)"
                " VALUES (?, ?, 1, ?) ON CONFLICT (organisation_id) DO UPDATE SET"
                " settings = excluded.settings, revision = revision + 1",
                (self.ds.organisation_id, json.dumps(values), now()),
            )

    def service(self, **overrides: object) -> None:
        """Configuration → Services → Exchange ActiveSync of the organisation, as the API
        would change it (the domain's unit, run on the test's own connection)."""
        with database(self.running) as conn:
            change_organisation_unit(
                conn,
                self.ds.organisation_id,
                "eas",
                {"use_system_wide": False, "overrides": dict(overrides), "clear": []},
                None,
                audit_event(
                    None, "settings.organisation_changed", organisation_id=self.ds.organisation_id
                ),
            )

    def counts(self) -> dict[str, int]:
        with database(self.running) as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}

    def queue_command(self, device_row: str, kind: str) -> str:
        command_id = new_id()
        at = now()
        with database(self.running) as conn:
            conn.execute(
                "INSERT INTO commands (id, organisation_id, device_id, kind, state, owner_id,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (command_id, self.ds.organisation_id, device_row, kind, self.ds.owner_id, at, at),
            )
        return command_id


@asynccontextmanager
async def eas_world(running: RunningService, root: Path) -> AsyncIterator[EasWorld]:
    async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
        yield EasWorld(make_world(running, root), http)


async def ready(world: EasWorld, device_id: str, **kwargs: object) -> EasClient:
    world.add_device(device_id)
    client = world.client(device_id, **kwargs)
    await client.provision()
    await client.folder_sync()
    return client
