"""Windows enrolments per second (MS-MDE2 discovery → policy → enrolment), end to end.

What it measures
    ``emm init`` makes an installation in a temporary directory; before the service starts,
    the store gets one organisation and N device owners (one password, hashed once). ``emm
    serve`` then runs as a subprocess on free loopback ports (plain HTTP). The simulator
    (``bench/windows_sim.py``) first makes N RSA-2048 keys, timed on their own (on a real
    device this is the device's work, not the service's), then N enrolments run with C at a
    time, each as a different owner on its own simulated machine: the discovery probe and
    ``Discover``, ``GetPolicies`` and ``RequestSecurityToken`` with a PKCS#10 (4 HTTP
    requests), each answer checked (the certificate chains to the root the provisioning
    document installs). Afterwards the database must hold N enrolments.
    Reported: enrolments/s, latency p50/p99 of one whole enrolment, the service's CPU
    seconds per enrolment, and the simulator's key generation per key.

Why
    A fleet rollout enrols many Windows machines in a morning. The service's work per
    enrolment is dominated by checking the owner's password twice (scrypt, N=2^14, for
    GetPolicies and for RequestSecurityToken, as OnPremise sends it with both) and signing
    one certificate with the 3072-bit CA key; this shows what that costs.

Target
    None fixed.

Run: ``.venv/bin/python -m bench.windows_enrol [--enrolments 200] [--concurrency 8]``
"""

from __future__ import annotations

import argparse
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
from engine.organisations import NewOrganisation, create_organisation
from engine.passwords import hash_password
from engine.principals import AccountKind
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
from .windows_sim import SimulatedWindows, timed_keys

ORGANISATION = "bench"
PASSWORD = "bench owner password"


async def _seed(database: Path, owners: int) -> list[str]:
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
        at = format_time(datetime.now(UTC))
        password_hash = await trio.to_thread.run_sync(hash_password, PASSWORD)
        rows: list[dict[str, Any]] = [
            {
                "id": new_id(),
                "organisation_id": organisation["id"],
                "login": f"owner-{n:05d}",
                "kind": AccountKind.USER.value,
                "password_hash": password_hash,
                "rights": "[]",
                "created_at": at,
                "updated_at": at,
            }
            for n in range(owners)
        ]
        await store.write(_insert_rows, "accounts", rows)
    return [row["login"] for row in rows]


async def _enrol_all(
    base_url: str, logins: list[str], keys: list[Any], concurrency: int
) -> list[float]:
    latencies: list[float] = []
    limiter = trio.CapacityLimiter(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(login: str, key: Any) -> None:
            async with limiter:
                device = SimulatedWindows(client, base_url, device_name=login.upper())
                started = time.perf_counter()
                await device.enrol(f"{login}@{ORGANISATION}", PASSWORD, key=key)
                latencies.append(time.perf_counter() - started)

        async with trio.open_nursery() as nursery:
            for login, key in zip(logins, keys, strict=True):
                nursery.start_soon(one, login, key)
    return latencies


def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="emm-bench-") as directory:
        work = Path(directory)
        config = init_service(work / "data")
        database = load_bootstrap(config).database.path
        logins = trio.run(_seed, database, args.enrolments)
        keys, key_seconds = timed_keys(args.enrolments)
        with running_service(config, work) as server:
            cpu_before = cpu_seconds(server.pid)
            started = time.perf_counter()
            latencies = trio.run(_enrol_all, server.url("http"), logins, keys, args.concurrency)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(server.pid) - cpu_before
        with sqlite3.connect(database) as conn:
            enrolled = conn.execute("SELECT count(*) FROM windows_enrolments").fetchone()[0]
    if enrolled != args.enrolments:
        raise SystemExit(f"expected {args.enrolments} enrolments, found {enrolled}")
    p50, p99 = percentiles(latencies, 50, 99)
    print_table(
        f"Windows enrolments ({environment()})",
        ["what", "value"],
        [
            ["enrolments", str(args.enrolments)],
            ["concurrency", str(args.concurrency)],
            ["enrolments/s (service, keys made beforehand)", f"{args.enrolments / elapsed:.1f}"],
            ["enrolment latency p50 ms", f"{p50 * 1000:.0f}"],
            ["enrolment latency p99 ms", f"{p99 * 1000:.0f}"],
            ["service CPU ms per enrolment", f"{cpu / args.enrolments * 1000:.1f}"],
            [
                "simulator RSA-2048 key generation ms per key",
                f"{key_seconds / len(keys) * 1000:.1f}",
            ],
            [
                "enrolments/s including key generation (one device after another)",
                f"{args.enrolments / (elapsed + key_seconds):.1f}",
            ],
        ],
        notes=[f"rows in windows_enrolments afterwards: {enrolled}"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--enrolments", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    measure(args)


if __name__ == "__main__":
    main()
