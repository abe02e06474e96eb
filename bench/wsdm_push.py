"""XMPP push to WSDM devices through a real Prosody: latency of one wake-up, and a wake-up
to every device at once.

What it measures
    A loopback Prosody (``tests/prosody.py``: the configuration the tests use) and ``emm
    init`` in a temporary directory, with the service's XMPP account in the bootstrap file.
    Before the service starts, the database gets one organisation (with its first manager)
    and N enrolled WSDM devices; each device's XMPP account is created on Prosody with the
    same XEP-0133 ad-hoc command the service uses at enrolment (by this bench, many at a
    time). Then ``emm serve`` runs as a subprocess, and the device simulator connects all N
    devices to Prosody (slixmpp clients on one asyncio loop in one thread of this process).

    * latency: K times, one after the other, a lock is queued for one device through the
      REST API (``POST .../devices/{device}/commands``, as a manager) and the time from
      sending that request to the device's client receiving the wake-up is taken;
    * fan-out: one bulk lock to all N devices (``POST .../commands`` with every device id),
      timed from sending the request until every device has received its wake-up.

Why
    Push is what makes management immediate while devices connect only every hour.

Target
    none fixed; p99 of one wake-up well under a second, and the fan-out rate, show what a
    push to everyone costs.

Run: ``.venv/bin/python -m bench.wsdm_push [--devices 1000] [--samples 200]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench.wsdm_sim import PushListeners, SimulatedDevice
from engine.actors.xmpp import ServiceClient, XmppAccount
from engine.config import load_bootstrap
from engine.ids import new_id
from engine.organisations import NewOrganisation, create_organisation
from engine.principals import AccountKind, Principal
from engine.store import open_sqlite_store
from engine.timestamps import now

from .common import environment, exit_on_sigterm, percentiles, print_table, running_service
from .healthz import init_service
from .prosody import SERVICE_PASSWORD, Prosody

ORGANISATION = "bench"
MANAGER_PASSWORD = "bench manager password"
DEVICE_PASSWORD = "bench device password"


async def seed(database: Path, count: int, domain: str) -> list[SimulatedDevice]:
    """The organisation and its manager (as the API makes them), N enrolled WSDM devices."""
    async with open_sqlite_store(database) as store:
        row = await store.read(
            lambda conn: conn.execute(
                "SELECT id, login FROM accounts WHERE kind = 'supervisor'"
            ).fetchone()
        )
        supervisor = Principal(row["id"], row["login"], AccountKind.SUPERVISOR, None)
        organisation = await create_organisation(
            store,
            supervisor,
            NewOrganisation(
                code=ORGANISATION,
                short_name="Bench",
                licences=0,
                first_manager_login="admin",
                first_manager_password=MANAGER_PASSWORD,
            ),
        )
    org_id, at = organisation["id"], now()
    devices = [SimulatedDevice(f"d{n}", new_id()) for n in range(count)]
    for device in devices:
        device.push = {"jid": f"{device.device_id}@{domain}", "password": DEVICE_PASSWORD}
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.executemany(
            "INSERT INTO devices (id, organisation_id, name, platform, protocol, state,"
            " enrolled_at, created_at, updated_at)"
            " VALUES (?, ?, ?, 'android', 'wsdm', 'enrolled', ?, ?, ?)",
            [(d.device_id, org_id, d.name, at, at, at) for d in devices],
        )
        conn.executemany(
            "INSERT INTO wsdm_devices (device_id, organisation_id, token_hash, push_jid,"
            " enrolled_at) VALUES (?, ?, ?, ?, ?)",
            [(d.device_id, org_id, new_id(), d.push["jid"], at) for d in devices],  # type: ignore[index]
        )
    return devices


async def create_accounts(prosody: Prosody, devices: list[SimulatedDevice]) -> float:
    """Every device's XMPP account, 32 ad-hoc commands in flight; returns the seconds taken.

    Runs on an asyncio loop in its own thread, like the service's notifier."""
    listeners = PushListeners("127.0.0.1", prosody.port)  # only for its asyncio thread
    account = XmppAccount(prosody.service_jid, SERVICE_PASSWORD, "127.0.0.1", prosody.port)

    async def run() -> float:
        client = ServiceClient(account, max_backoff=1.0)
        client.start()
        await client.online_event.wait()
        started = time.perf_counter()
        pending = iter(devices)

        async def worker() -> None:
            for device in pending:
                assert device.push is not None
                await client.create_account(device.push["jid"], DEVICE_PASSWORD)

        await asyncio.gather(*(worker() for _ in range(32)))
        seconds = time.perf_counter() - started
        closing = client.close()
        if closing is not None:
            await asyncio.wait_for(closing, 2)
        return seconds

    try:
        return await listeners.thread.call(run)
    finally:
        await listeners.thread.stop()


async def measure(
    url: str, prosody: Prosody, devices: list[SimulatedDevice], samples: int
) -> tuple[list[float], float, float]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        token = await client.post(
            "/api/v1/auth/token",
            json={"organisation": ORGANISATION, "login": "admin", "password": MANAGER_PASSWORD},
        )
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"
        listeners = PushListeners("127.0.0.1", prosody.port)
        try:
            started = time.perf_counter()
            with trio.fail_after(600):
                await listeners.listen(devices)
            online = time.perf_counter() - started
            print(f"{len(devices):,} devices online in {online:.1f} s", file=sys.stderr)
            latencies = []
            for n in range(samples):
                device = devices[n % len(devices)]
                sent = time.monotonic()
                queued = await client.post(
                    f"/api/v1/organisations/{ORGANISATION}/devices/{device.device_id}/commands",
                    json={"kind": "lock"},
                )
                assert queued.status_code == 201, queued.text
                with trio.fail_after(10):
                    async for woken in listeners.wakes:
                        if woken is device:
                            break
                latencies.append((device.woken_at[-1] - sent) * 1000)
            before = {d.device_id: d.pushes for d in devices}
            sent = time.monotonic()
            bulk = await client.post(
                f"/api/v1/organisations/{ORGANISATION}/commands",
                json={"kind": "lock", "device_ids": [d.device_id for d in devices]},
            )
            assert bulk.status_code in (200, 201), bulk.text
            waiting = {d.device_id for d in devices}
            with trio.fail_after(300):
                async for woken in listeners.wakes:
                    if woken.pushes > before[woken.device_id]:
                        waiting.discard(woken.device_id)
                    if not waiting:
                        break
            fan_out = time.monotonic() - sent
        finally:
            await listeners.aclose()
    return latencies, fan_out, online


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200, help="single wake-ups timed")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="emm-bench-") as work:
        prosody = Prosody.configure(Path(work) / "prosody")
        prosody.start()
        try:
            config = init_service(Path(work) / "data")
            with config.open("a") as toml:
                toml.write(
                    f'\n[xmpp]\njid = "{prosody.service_jid}"\npassword = "{SERVICE_PASSWORD}"\n'
                    f'host = "127.0.0.1"\nport = {prosody.port}\n'
                )
            devices = trio.run(
                seed, load_bootstrap(config).database.path, args.devices, prosody.domain
            )
            accounts = trio.run(create_accounts, prosody, devices)
            with running_service(config, Path(work)) as server:
                latencies, fan_out, online = trio.run(
                    measure, server.url("http"), prosody, devices, args.samples
                )
        finally:
            prosody.stop()
    p50, p99 = percentiles(latencies, 50, 99)
    print_table(
        f"WSDM push through Prosody, {args.devices:,} devices ({environment()})",
        ["measure", "count", "p50 ms", "p99 ms", "seconds", "per s"],
        [
            [
                "one wake-up (REST queue -> device)",
                f"{len(latencies)}",
                f"{p50:.1f}",
                f"{p99:.1f}",
                "",
                "",
            ],
            [
                "bulk lock -> every device woken",
                f"{args.devices:,}",
                "",
                "",
                f"{fan_out:.2f}",
                f"{args.devices / fan_out:,.0f}",
            ],
            [
                "XMPP accounts created (XEP-0133)",
                f"{args.devices:,}",
                "",
                "",
                f"{accounts:.1f}",
                f"{args.devices / accounts:,.0f}",
            ],
            [
                "devices logged in to Prosody",
                f"{args.devices:,}",
                "",
                "",
                f"{online:.1f}",
                f"{args.devices / online:,.0f}",
            ],
        ],
        ["(service, Prosody and all device clients on the same machine)"],
    )


if __name__ == "__main__":
    main()
