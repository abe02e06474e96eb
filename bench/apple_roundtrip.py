"""Apple MDM command round trips per second across many simulated devices.

What it measures
    ``emm init`` makes an installation in a temporary directory; before the service starts,
    its database is filled through the store: one organisation with an APNS certificate
    (uploaded by the domain operation, as the REST API does), and D enrolled Apple devices,
    each with its own identity issued by the service's CA (EC P-256 keys, so that making
    10,000 takes seconds; profiles carry RSA ones), bound to its enrolment as
    ``Authenticate`` would leave it. The devices get no push token, so no push is attempted
    (pushes have their own bench, ``bench.apns_push``); ``[apns]`` points at a closed
    loopback port anyway. ``emm serve`` then runs as a subprocess; a manager queues one
    bulk ``lock`` for every device (one REST call). The clock runs while C concurrent
    simulated devices (``bench.apple_sim``, one keep-alive HTTP/1.1 connection each, every
    message signed with ``Mdm-Signature``) each take devices off a shared list and do one
    *round trip* per device: ``Idle`` → ``DeviceLock`` → ``Acknowledged`` → empty answer.
    Afterwards the bench counts, on its own connection to the database, the acknowledged
    locks: they must be D. Reported beside the rate: the CPU of the service's process
    (per round trip: what its event loop can take is the ceiling) and of its offload
    worker process (where signed messages are checked and read), and the simulators' CPU,
    all sharing the same cores.

    C bounds how many round trips are in flight, so with few of them the rate is the
    latency's (C / p50) before it is the service's CPU: with 64 the service's event loop
    still has time to spare. A bulk command pushes every device at once (``bench.apns_push``:
    10,000 pushes in under 2 s), so a real fleet polls with hundreds in flight; run
    ``--concurrency 256`` for that case.

Why
    A fleet woken at once (a lost shipment locked, an inventory sweep) polls within
    seconds; every poll, command and acknowledgement goes through the device's session
    actor and the store's single writer.

Target
    At least 1,000 round trips per second.

Run: ``.venv/bin/python -m bench.apple_roundtrip [--devices 10000] [--concurrency 64]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from engine.apns_certificates import Upload, upload_organisation_certificate
from engine.apple_mdm import fingerprint
from engine.config import load_bootstrap
from engine.ids import new_id
from engine.organisations import NewOrganisation, create_organisation
from engine.pki import CertificateAuthority
from engine.service_settings import Deployment
from engine.store import open_sqlite_store
from engine.store.sqlite import connect
from engine.timestamps import format_time, now

from .apns_server import ApplePki
from .apple_sim import Enrolment, SimulatedDevice
from .common import (
    children_cpu_seconds,
    cpu_seconds,
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    running_service,
    verdict,
)
from .device_list import (
    MANAGER_LOGIN,
    MANAGER_PASSWORD,
    ORGANISATION,
    _insert_rows,
    _supervisor,
    manager_client,
)
from .healthz import init_service
from .http1 import KeepAliveClient

TARGET_PER_SECOND = 1000.0


@dataclass
class Seeded:
    organisation_id: str
    devices: list[SimulatedDevice]
    seconds: float


def _identities(
    ca: CertificateAuthority, count: int
) -> list[tuple[Any, ec.EllipticCurvePrivateKey]]:
    made = []
    for n in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate, _ = ca.issue_client_certificate(
            f"apple-mdm bench {n}", public_key=key.public_key()
        )
        made.append((certificate, key))
    return made


async def _seed(config: Path, count: int, pki: ApplePki) -> Seeded:
    started = time.perf_counter()
    bootstrap = load_bootstrap(config)
    ca = CertificateAuthority.load(bootstrap.tls.ca_certificate, bootstrap.tls.ca_private_key)
    identities = await trio.to_thread.run_sync(_identities, ca, count)
    server_url = bootstrap.public_url + "/mdm/server"
    check_in_url = bootstrap.public_url + "/mdm/checkin"
    async with open_sqlite_store(bootstrap.database.path) as store:
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
        org_id = organisation["id"]
        await upload_organisation_certificate(
            store,
            supervisor,
            Deployment(bootstrap.public_url),
            ORGANISATION,
            Upload(pem=pki.push_pem),
        )
        at = now()
        devices: list[SimulatedDevice] = []
        device_rows, identity_rows, enrolment_rows = [], [], []
        for certificate, key in identities:
            enrolment = Enrolment(
                server_url, check_in_url, pki.topic, certificate, key, ca.certificate, {}
            )
            device = SimulatedDevice(enrolment, "")
            devices.append(device)
            device_id = new_id()
            device_rows.append(
                {
                    "id": device_id,
                    "organisation_id": org_id,
                    "name": f"iPhone {len(devices):05d}",
                    "platform": "ios",
                    "protocol": "apple_mdm",
                    "state": "enrolled",
                    "udid": device.udid,
                    "enrolled_at": at,
                    "created_at": at,
                    "updated_at": at,
                }
            )
            identity_rows.append(
                {
                    "fingerprint": fingerprint(certificate),
                    "organisation_id": org_id,
                    "device_id": device_id,
                    "enrolment_id": device.udid,
                    "not_after": format_time(certificate.not_valid_after_utc),
                    "created_at": at,
                }
            )
            enrolment_rows.append(
                {
                    "id": device.udid,
                    "organisation_id": org_id,
                    "device_id": device_id,
                    "identity": fingerprint(certificate),
                    "topic": pki.topic,
                    "state": "enrolled",
                    "created_at": at,
                    "updated_at": at,
                }
            )
        for table, rows in (
            ("devices", device_rows),
            ("apple_mdm_identities", identity_rows),
            ("apple_mdm_enrolments", enrolment_rows),
        ):
            for start in range(0, len(rows), 5000):
                await store.write(_insert_rows, table, rows[start : start + 5000])
    return Seeded(org_id, devices, time.perf_counter() - started)


async def _round_trips(
    devices: list[SimulatedDevice], concurrency: int, base_url: str
) -> tuple[float, list[float]]:
    waiting = list(reversed(devices))
    latencies: list[float] = []

    async def worker() -> None:
        async with KeepAliveClient(base_url, timeout=60) as client:
            while waiting:
                device = waiting.pop()
                started = time.perf_counter()
                received = await device.poll(client)
                latencies.append(time.perf_counter() - started)
                if received != ["DeviceLock"]:
                    raise RuntimeError(f"{device.udid} received {received}")

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - started, latencies


def _acknowledged(database: Path, organisation_id: str) -> int:
    with contextlib.closing(connect(database, readonly=True)) as conn:
        conn.row_factory = sqlite3.Row
        return int(
            conn.execute(
                "SELECT count(*) FROM commands WHERE organisation_id = ? AND kind = 'lock'"
                " AND state = 'acknowledged'",
                (organisation_id,),
            ).fetchone()[0]
        )


def measure(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-apple-")))
        config = init_service(work / "data")
        text = config.read_text()
        # Never anything but loopback: a closed port stands in for Apple's push service.
        config.write_text(
            text.replace(
                'base_url = "https://api.push.apple.com"', 'base_url = "https://127.0.0.1:9"'
            )
        )
        pki = ApplePki.create(work / "apple")
        seeded = trio.run(_seed, config, args.devices, pki)
        server = stack.enter_context(running_service(config, work))
        base_url = server.url("http")
        for device in seeded.devices:
            device.base_url = base_url
        manager = stack.enter_context(contextlib.closing(manager_client(server)))
        all_ids = _device_ids(load_bootstrap(config).database.path, seeded.organisation_id)
        queued = manager.post(
            f"/api/v1/organisations/{ORGANISATION}/commands",
            json={"kind": "lock", "parameters": {}, "device_ids": all_ids},
        )
        if queued.status_code != 201:
            raise RuntimeError(f"bulk lock answered {queued.status_code}: {queued.text}")
        server_cpu, client_cpu = cpu_seconds(server.pid), cpu_seconds()
        workers_cpu = children_cpu_seconds(server.pid)
        seconds, latencies = trio.run(_round_trips, seeded.devices, args.concurrency, base_url)
        server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, cpu_seconds() - client_cpu
        workers_cpu = children_cpu_seconds(server.pid) - workers_cpu
        acknowledged = _acknowledged(load_bootstrap(config).database.path, seeded.organisation_id)
    rate = len(latencies) / seconds
    p50, p99 = percentiles([1000 * s for s in latencies], 50, 99)
    print_table(
        f"Apple MDM command round trips ({environment()})",
        ["devices", "concurrency", "seconds", "round trips/s", "p50 ms", "p99 ms", "acknowledged"],
        [
            [
                f"{args.devices}",
                f"{args.concurrency}",
                f"{seconds:.2f}",
                f"{rate:,.0f}",
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{acknowledged}",
            ]
        ],
        [
            "one round trip: Idle -> DeviceLock -> Acknowledged -> empty answer (2 signed PUTs)",
            f"seeding {args.devices} devices with their identities took {seeded.seconds:.1f} s",
            f"CPU while measuring: service {server_cpu:.1f} s ("
            f"{1000 * server_cpu / len(latencies):.2f} ms per round trip) plus "
            f"{workers_cpu:.1f} s in its offload workers; simulated devices "
            f"{client_cpu:.1f} s (all on the same {os.cpu_count()} CPUs)",
            f"target: {TARGET_PER_SECOND:,.0f} round trips/s: "
            f"{verdict(rate >= TARGET_PER_SECOND and acknowledged == args.devices)}",
        ],
    )


def _device_ids(database: Path, organisation_id: str) -> list[str]:
    with contextlib.closing(connect(database, readonly=True)) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT id FROM devices WHERE organisation_id = ? AND protocol = 'apple_mdm'",
                (organisation_id,),
            )
        ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    measure(args)


if __name__ == "__main__":
    main()
