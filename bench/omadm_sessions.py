"""OMA DM sessions per second across many devices, end to end over HTTP.

What it measures
    ``emm init`` makes an installation in a temporary directory; before the service starts,
    the store gets one organisation, one device owner and N plain OMA DM devices (Android,
    by IMEI), each with the state of a device that has authenticated before (its owner's
    MD5 digest and a current nonce, its DM account bootstrapped with the server's
    credentials and a current server nonce) and one queued ``lock`` command. ``emm serve``
    then runs as a subprocess on free loopback ports (plain HTTP), and the simulator
    (``bench/omadm_sim.py``) holds S sessions, C at a time, each as a different device
    (round robin over the N devices): MD5 authentication with the nonce of the previous
    session, the server's MD5 credential on each of its messages checked by the device
    (which gives the next server nonce), then three round trips: package 1 (Alert 1201,
    DevInfo) → ten inventory Gets (DevInfo and DevDetail); the Results → the lock (LAWMO
    Exec); its Status → the end of the session. That is 11 management commands per session.
    Afterwards every lock must be acknowledged and every device's tree must hold what it
    reported.
    Reported: sessions/s, latency p50/p99 of one whole session, HTTP round trips/s, the
    service's CPU per session.

Why
    Devices poll at their connection interval; 10,000 devices at a one-hour interval are
    about 3 sessions/s on average, but a push to all of them (or the top of the hour) brings
    them at once. **Target: at least 300 sessions/s** on this machine.

Simulator
    ``--client raw`` (the default) lends each of the C workers one bare keep-alive HTTP/1.1
    connection (``bench/http1.py``); ``--client httpx`` shares one httpx pool, whose CPU per
    session is four times the service's and, on two cores, caps the rate it can show.

Run: ``.venv/bin/python -m bench.omadm_sessions [--devices 10000] [--sessions 10000]
[--concurrency 64] [--wbxml] [--client raw|httpx]``
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from engine.config import load_bootstrap
from engine.ids import new_id
from engine.omadm_credentials import SERVER_ID, ServerSecrets
from engine.organisations import NewOrganisation, create_organisation
from engine.passwords import hash_password
from engine.pki import CertificateAuthority
from engine.principals import AccountKind
from engine.protocols import omadm as dm, omadm_dmacc as dmacc
from engine.store import open_sqlite_store
from engine.timestamps import format_time

from .common import (
    cpu_seconds,
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    running_service,
)
from .device_list import MANAGER_LOGIN, MANAGER_PASSWORD, _insert_rows, _supervisor
from .healthz import init_service
from .http1 import KeepAliveClient
from .omadm_sim import DmClient, plain_tree

ORGANISATION = "bench"
OWNER = "owner"
PASSWORD = "bench owner password"
BATCH = 2000


def imei(n: int) -> str:
    return f"35{n:013d}"


async def _seed(database: Path, devices: int, server: ServerSecrets) -> list[str]:
    """The store's devices (and the ids, in IMEI order, for the devices' DM accounts)."""
    every: list[str] = []
    async with open_sqlite_store(database) as store:
        supervisor = await store.read(_supervisor)
        organisation = await create_organisation(
            store,
            supervisor,
            NewOrganisation(
                code=ORGANISATION,
                short_name="Bench Ltd",
                licences=0,
                first_manager_login=MANAGER_LOGIN,
                first_manager_password=MANAGER_PASSWORD,
            ),
        )
        org = organisation["id"]
        at = format_time(datetime.now(UTC))
        owner = new_id()
        password_hash = await trio.to_thread.run_sync(hash_password, PASSWORD)
        account = {
            "id": owner,
            "organisation_id": org,
            "login": OWNER,
            "kind": AccountKind.USER.value,
            "password_hash": password_hash,
            "rights": "[]",
            "created_at": at,
            "updated_at": at,
        }
        await store.write(_insert_rows, "accounts", [account])
        digest = dm.user_digest(OWNER, PASSWORD)
        for start in range(0, devices, BATCH):
            numbers = range(start, min(devices, start + BATCH))
            ids = [new_id() for _ in numbers]
            rows: list[dict[str, Any]] = [
                {
                    "id": device,
                    "organisation_id": org,
                    "owner_id": owner,
                    "name": f"phone {n}",
                    "platform": "android",
                    "protocol": "oma_dm",
                    "state": "enrolled",
                    "imei": imei(n),
                    "created_at": at,
                    "updated_at": at,
                }
                for n, device in zip(numbers, ids, strict=True)
            ]
            peers = [
                {
                    "device_id": device,
                    "organisation_id": org,
                    "username": OWNER,
                    "digest": digest,
                    "nonce": _nonce(n),
                    "server_nonce": _server_nonce(n),
                    "bootstrapped_at": at,
                    "updated_at": at,
                }
                for n, device in zip(numbers, ids, strict=True)
            ]
            commands = [
                {
                    "id": new_id(),
                    "organisation_id": org,
                    "device_id": device,
                    "owner_id": owner,
                    "kind": "lock",
                    "parameters": "{}",
                    "state": "queued",
                    "created_at": at,
                    "updated_at": at,
                }
                for device in ids
            ]
            await store.write(_insert_rows, "devices", rows)
            await store.write(_insert_rows, "omadm_peers", peers)
            await store.write(_insert_rows, "commands", commands)
            every += ids
    return every


def _nonce(n: int) -> str:
    return dm.md5_b64(f"seed nonce {n}".encode())


def _server_nonce(n: int) -> str:
    return dm.md5_b64(f"seed server nonce {n}".encode())


def _dm_account(n: int, device_id: str, url: str, server: ServerSecrets) -> dict[str, str]:
    """The DM account a bootstrap left on device ``n`` (see engine.protocols.omadm_dmacc)."""
    root = f"{dmacc.DMACC}/{SERVER_ID}"
    auth = f"{root}/AppAuth/{dmacc.SRVCRED}"
    return {
        f"{root}/ServerID": SERVER_ID,
        f"{root}/AppAddr/1/Addr": url,
        f"{auth}/AAuthLevel": dmacc.SRVCRED,
        f"{auth}/AAuthType": dmacc.DIGEST,
        f"{auth}/AAuthName": SERVER_ID,
        f"{auth}/AAuthSecret": server.password(device_id),
        f"{auth}/AAuthData": _server_nonce(n),
    }


async def _sessions(
    url: str,
    devices: int,
    sessions: int,
    concurrency: int,
    wbxml: bool,
    accounts: list[dict[str, str]],
    raw: bool,
) -> tuple[list[float], int, int, int]:
    latencies: list[float] = []
    round_trips = commands = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with (
        httpx.AsyncClient(timeout=120, limits=limits) as http,
        contextlib.AsyncExitStack() as connections,
    ):
        clients = [
            DmClient(
                http,
                url,
                f"IMEI:{imei(n)}",
                OWNER,
                PASSWORD,
                wbxml=wbxml,
                auth=dm.AUTH_MD5,
                nonce=_nonce(n),
                tree=plain_tree(f"IMEI:{imei(n)}") | accounts[n],
            )
            for n in range(min(devices, sessions))
        ]
        queue = list(range(sessions))
        send, receive = trio.open_memory_channel[int](sessions)
        for number in queue:
            send.send_nowait(number)
        send.close()

        async def worker() -> None:
            nonlocal round_trips, commands
            # --client raw: one bare keep-alive connection per worker, lent to its sessions.
            own = await connections.enter_async_context(KeepAliveClient(url)) if raw else None
            async for number in receive:
                client = clients[number % len(clients)]
                if own is not None:
                    client.http = own
                before_rt, before_cmd = client.round_trips, client.commands_seen
                started = time.perf_counter()
                await client.session()
                latencies.append(time.perf_counter() - started)
                round_trips += client.round_trips - before_rt
                commands += client.commands_seen - before_cmd

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    trusted = sum(c.server_verdicts.count(dm.AUTHENTICATION_ACCEPTED) for c in clients)
    return latencies, round_trips, commands, trusted


def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="emm-bench-") as directory:
        work = Path(directory)
        config = init_service(work / "data")
        bootstrap = load_bootstrap(config)
        secrets = ServerSecrets.of(
            CertificateAuthority.load(bootstrap.tls.ca_certificate, bootstrap.tls.ca_private_key)
        )
        ids = trio.run(_seed, bootstrap.database.path, args.devices, secrets)
        database = bootstrap.database.path
        with running_service(config, work) as server:
            url = server.url("http") + "/omadm"
            count = min(args.devices, args.sessions)
            accounts = [_dm_account(n, ids[n], url, secrets) for n in range(count)]
            cpu_before = cpu_seconds(server.pid)
            own_before = time.process_time()
            started = time.perf_counter()
            latencies, round_trips, commands, trusted = trio.run(
                _sessions,
                url,
                args.devices,
                args.sessions,
                args.concurrency,
                args.wbxml,
                accounts,
                args.client == "raw",
            )
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(server.pid) - cpu_before
            simulator_cpu = time.process_time() - own_before
        with sqlite3.connect(database) as conn:
            locked = conn.execute(
                "SELECT count(*) FROM commands WHERE state = 'acknowledged'"
            ).fetchone()[0]
            nodes = conn.execute("SELECT count(*) FROM omadm_nodes").fetchone()[0]
    expected = min(args.devices, args.sessions)
    if locked != expected:
        raise SystemExit(f"expected {expected} acknowledged locks, found {locked}")
    if trusted != args.sessions:
        raise SystemExit(f"the devices authenticated the server in {trusted} sessions only")
    p50, p99 = percentiles(latencies, 50, 99)
    print_table(
        f"OMA DM sessions ({environment()})",
        ["what", "value"],
        [
            ["devices", str(args.devices)],
            ["sessions", str(args.sessions)],
            ["encoding", "WBXML" if args.wbxml else "XML"],
            ["client", args.client],
            ["concurrency", str(args.concurrency)],
            ["sessions/s", f"{args.sessions / elapsed:.1f}"],
            ["HTTP round trips per session", f"{round_trips / args.sessions:.2f}"],
            ["management commands per session", f"{commands / args.sessions:.2f}"],
            ["round trips/s", f"{round_trips / elapsed:.0f}"],
            ["session latency p50 ms", f"{p50 * 1000:.0f}"],
            ["session latency p99 ms", f"{p99 * 1000:.0f}"],
            ["service CPU ms per session", f"{cpu / args.sessions * 1000:.2f}"],
            ["service CPU %", f"{100 * cpu / elapsed:.0f}"],
            ["simulator CPU ms per session", f"{simulator_cpu / args.sessions * 1000:.2f}"],
            ["simulator CPU %", f"{100 * simulator_cpu / elapsed:.0f}"],
        ],
        notes=[
            "target: at least 300 sessions/s",
            f"acknowledged locks: {locked}; tree nodes stored: {nodes}",
            f"sessions whose server credentials the device checked and took: {trusted}",
            "the simulator runs on the same machine and takes its share of the CPUs"
            " (CPU % 100 = one core busy)",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--wbxml", action="store_true")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="bare HTTP/1.1 (bench.http1), or httpx, whose pool costs the simulator more CPU",
    )
    args = parser.parse_args(argv)
    exit_on_sigterm()
    measure(args)


if __name__ == "__main__":
    main()
