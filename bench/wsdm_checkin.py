"""WSDM check-ins of 10,000 simulated devices: the rate at full speed, the latency at 500/s.

What it measures
    ``emm init`` into a temporary directory; before the service starts, the database gets one
    organisation and N WSDM devices, enrolled (each with its device token's hash, as an
    enrolment leaves it), and a queued lock for every tenth device. Then ``emm serve`` runs
    as a subprocess on free loopback ports and the device simulator (``bench/wsdm_sim.py``,
    one ``httpx.AsyncClient`` with a connection pool, on Trio, in this process) makes every
    device check in once, with a full state report (OS, model, battery, storage, network,
    two applications), as fast as C concurrent clients can: each check-in authenticates the
    token, stores the inventory and answers with the device's commands (the lock, which the
    simulator then reports done with ``POST /results``, not counted as a check-in). Then it
    paces check-ins at R per second for S seconds, each started on schedule whether or not
    the earlier ones are done (an open loop, so a slow server shows as latency, not as a
    lower rate).

Why
    Devices check in at their connection interval: 10,000 devices every 10 minutes is only
    17 check-ins a second, but after an outage or a push to everyone they all come at once.

Target
    at least 1,000 check-ins/s at full speed; p99 under 100 ms at 500/s (this machine: the
    service and the simulator share its CPUs).

Concurrency
    Each check-in waits for its commit (``synchronous=FULL``), so the rate is at most
    clients / commit latency, whatever the CPU: on a disk busy with other work (fsync of
    100 ms) 64 clients cap it near 600/s while the service idles; ``--concurrency 256``
    then shows what the service does.

Run: ``.venv/bin/python -m bench.wsdm_checkin [--devices 10000] [--concurrency 64] [--rate 500]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench.wsdm_sim import WSDM, SimulatedDevice, Simulator
from engine.config import load_bootstrap
from engine.ids import new_id
from engine.timestamps import now

from .common import (
    cpu_seconds,
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    running_service,
    verdict,
)
from .healthz import init_service
from .http1 import HttpError, KeepAliveClient

_SERVER_TIMING = re.compile(r"\bapp;dur=([\d.]+)")


def seed(database: Path, count: int) -> list[SimulatedDevice]:
    """One organisation, ``count`` enrolled WSDM devices, a lock queued for every tenth."""
    at = now()
    org_id = new_id()
    devices = [
        SimulatedDevice(f"d{n}", new_id(), f"bench-device-token-{n:06d}") for n in range(count)
    ]
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(
            "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
            " VALUES (?, 'bench', 'Bench', ?, ?)",
            (org_id, at, at),
        )
        conn.executemany(
            "INSERT INTO devices (id, organisation_id, name, platform, protocol, state,"
            " enrolled_at, created_at, updated_at)"
            " VALUES (?, ?, ?, 'android', 'wsdm', 'enrolled', ?, ?, ?)",
            [(d.device_id, org_id, d.name, at, at, at) for d in devices],
        )
        conn.executemany(
            "INSERT INTO wsdm_devices (device_id, organisation_id, token_hash, enrolled_at)"
            " VALUES (?, ?, ?, ?)",
            [
                (d.device_id, org_id, hashlib.sha256(d.token.encode()).hexdigest(), at)
                for d in devices
            ],
        )
        conn.executemany(
            "INSERT INTO commands (id, organisation_id, device_id, kind, parameters, state,"
            " created_at, updated_at) VALUES (?, ?, ?, 'lock', '{}', 'queued', ?, ?)",
            [(new_id(), org_id, d.device_id, at, at) for d in devices[::10]],
        )
    return devices


class Posted:
    def __init__(self, status: int, server_timing: str, body: bytes) -> None:
        self.status, self.server_timing, self.body = status, server_timing, body


class HttpxPoster:
    """Check-ins through the simulator's ``httpx.AsyncClient`` (its connection pool)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Posted:
        response = await self.client.post(path, content=body, headers=headers)
        return Posted(
            response.status_code, response.headers.get("server-timing", ""), response.content
        )


class RawPoster:
    """Check-ins over bare HTTP/1.1 keep-alive connections (``bench.http1``), pooled:
    what the service costs without httpx's layers on the client side."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.idle: list[KeepAliveClient] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Posted:
        client = self.idle.pop() if self.idle else KeepAliveClient(self.base_url)
        try:
            response = await client.post(path, content=body, headers=headers)
        finally:
            self.idle.append(client)  # it reopens its connection when the server closed it
        return Posted(
            response.status_code, response.headers.get("server-timing", ""), response.content
        )


class Run:
    """Latencies of one phase, at the client and at the server."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.client_ms: list[float] = []
        self.server_ms: list[float] = []
        self.errors = 0
        #: What the first failed check-in got, printed under the table.
        self.first_error: str | None = None
        self.commands = 0
        self.seconds = 0.0
        self.cpu = 0.0
        self.client_cpu = 0.0

    def _failed(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

    async def check_in(
        self, simulator: Simulator, poster: HttpxPoster | RawPoster, device: SimulatedDevice
    ) -> None:
        device.checkins += 1
        body = json.dumps(simulator.check_in_body(device, f"{device.name}-{device.checkins}"))
        headers = device.auth | {"Content-Type": "application/json"}
        started = time.perf_counter()
        try:
            response = await poster.post(f"{WSDM}/checkin", body.encode(), headers)
        except (httpx.HTTPError, OSError, HttpError) as exc:
            self._failed(repr(exc))
            return
        self.client_ms.append((time.perf_counter() - started) * 1000)
        timing = _SERVER_TIMING.search(response.server_timing)
        if timing:
            self.server_ms.append(float(timing.group(1)))
        if response.status != 200:
            self._failed(f"{response.status} {response.body[:200]!r}")
            return
        answer = json.loads(response.body)
        if "configuration" in answer:
            device.configuration = answer["configuration"]
        if answer["commands"]:
            self.commands += len(answer["commands"])
            await simulator.execute_commands(device, answer["commands"])


async def full_speed(
    simulator: Simulator,
    poster: HttpxPoster | RawPoster,
    devices: list[SimulatedDevice],
    concurrency: int,
    pid: int,
) -> Run:
    run = Run(f"full speed, {concurrency} clients")
    queue = iter(devices)
    cpu, own = cpu_seconds(pid), cpu_seconds()
    started = time.perf_counter()

    async def worker() -> None:
        for device in queue:
            await run.check_in(simulator, poster, device)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    run.seconds = time.perf_counter() - started
    run.cpu = cpu_seconds(pid) - cpu
    run.client_cpu = cpu_seconds() - own
    return run


async def paced(
    simulator: Simulator,
    poster: HttpxPoster | RawPoster,
    devices: list[SimulatedDevice],
    rate: float,
    seconds: float,
    pid: int,
) -> Run:
    run = Run(f"paced at {rate:g}/s")
    total = int(rate * seconds)
    cpu, own = cpu_seconds(pid), cpu_seconds()
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(total):
            await trio.sleep_until(
                trio.current_time() + max(0.0, started + n / rate - time.perf_counter())
            )
            nursery.start_soon(run.check_in, simulator, poster, devices[n % len(devices)])
    run.seconds = time.perf_counter() - started
    run.cpu = cpu_seconds(pid) - cpu
    run.client_cpu = cpu_seconds() - own
    return run


async def drive(
    url: str, devices: list[SimulatedDevice], args: argparse.Namespace, pid: int
) -> list[Run]:
    """Both phases with the chosen client: ``httpx`` (the simulator's pool) or ``raw``."""
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        simulator = Simulator(client)
        poster: HttpxPoster | RawPoster = HttpxPoster(client)
        if args.client == "raw":
            poster = RawPoster(url)
        warm = Run("warm-up")
        for device in devices[:20]:
            await warm.check_in(simulator, poster, device)
        first = await full_speed(simulator, poster, devices, args.concurrency, pid)
        second = await paced(simulator, poster, devices, args.rate, args.seconds, pid)
    for run in (first, second):
        run.name += f" ({args.client})"
    return [first, second]


def report(runs: list[Run], args: argparse.Namespace) -> None:
    rows = []
    for run in runs:
        c50, c99 = percentiles(run.client_ms, 50, 99)
        s50, s99 = percentiles(run.server_ms, 50, 99)
        count = len(run.client_ms)
        rows.append(
            [
                run.name,
                f"{count:,}",
                f"{run.seconds:.1f}",
                f"{count / run.seconds:,.0f}",
                f"{c50:.1f}",
                f"{c99:.1f}",
                f"{s50:.1f}",
                f"{s99:.1f}",
                f"{run.commands:,}",
                str(run.errors),
                f"{100 * run.cpu / run.seconds:.0f}",
                f"{100 * run.client_cpu / run.seconds:.0f}",
            ]
        )
    rate = len(runs[0].client_ms) / runs[0].seconds
    p99 = percentiles(runs[1].client_ms, 99)[0]
    print_table(
        f"WSDM check-ins, {args.devices:,} devices ({environment()})",
        [
            "phase",
            "check-ins",
            "seconds",
            "per s",
            "p50 ms",
            "p99 ms",
            "server p50",
            "server p99",
            "commands",
            "errors",
            "server CPU %",
            "client CPU %",
        ],
        rows,
        [
            f"target >= 1,000 check-ins/s at full speed: {verdict(rate >= 1000)} ({rate:,.0f}/s)",
            f"target p99 < 100 ms at {args.rate:g}/s: {verdict(p99 < 100)} ({p99:.1f} ms)",
            "(client and service on the same machine; server CPU % 100 = one core busy)",
            *(f"first error, {run.name}: {run.first_error}" for run in runs if run.first_error),
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64, help="clients at full speed")
    parser.add_argument("--rate", type=float, default=500.0, help="check-ins/s when paced")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument(
        "--client",
        choices=("httpx", "raw"),
        default="httpx",
        help="the simulator's httpx pool, or bare HTTP/1.1 (bench.http1) to spend less client CPU",
    )
    args = parser.parse_args(argv)
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="emm-bench-") as work:
        config = init_service(Path(work) / "data")
        devices = seed(load_bootstrap(config).database.path, args.devices)
        with running_service(config, Path(work)) as server:
            runs = trio.run(drive, server.url("http"), devices, args, server.pid)
    report(runs, args)


if __name__ == "__main__":
    main()
