"""Queue a lock to 10,000 devices in one API call: by device ids, and by one device group.

What it measures
    ``emm init`` makes an installation in a temporary directory (``--dir``); before the
    service starts, its database is filled through the store (``open_sqlite_store``, as in
    ``bench.device_list``): one organisation with its manager, D enrolled devices, and one
    device group holding G of them. ``emm serve`` then runs as a subprocess on free loopback
    ports; signed in as the manager, the bench sends, one after the other,
    ``POST /api/v1/organisations/{organisation}/commands`` with ``{"kind": "lock",
    "device_ids": [G ids]}`` and with ``{"kind": "lock", "group_ids": [the group]}``, C
    calls each (after one small untimed call). After each call it counts, on its own
    read-only connection to the database, the commands with that ``batch_id`` (queued
    locks, each device once), which must equal the devices asked for.
    Reported per call: the time at the server (``Server-Timing: app;dur=``), the client's
    time (including encoding the JSON body), commands queued per second at the server, and
    the rows found in the database.

Why
    Locking or wiping a whole fleet (a lost shipment, a departing team) is one call; it
    must be quick and all-or-nothing. The whole batch is one write unit, so the call also
    shows how long it holds the store's single writer (every other write waits meanwhile).

Target
    Under 2 s at the server for 10,000 devices.

Run: ``.venv/bin/python -m bench.bulk_command [--devices 10000] [--calls 3] [--dir /tmp]``
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from engine.store.sqlite import connect

from .common import environment, exit_on_sigterm, percentiles, print_table, running_service, verdict
from .device_list import (
    ORGANISATION,
    Seeded,
    manager_client,
    seed_database,
    timed_request,
)
from .group_commit import filesystem_of
from .healthz import init_service

TARGET_MS = 2000.0
KIND = "lock"


@dataclass
class Call:
    mode: str
    number: int
    devices: int  # devices the call reaches
    queued: int  # as the answer says
    server_ms: float
    client_ms: float
    stored: int  # queued locks with the call's batch id, each device once

    @property
    def rate(self) -> float:
        return self.queued / (self.server_ms / 1000)


def stored_commands(database: Path, batch_id: str) -> int:
    """Queued locks of the batch in the database, each device counted once (or -1 if a
    device got two)."""
    conn = connect(database, readonly=True)
    try:
        rows, devices = conn.execute(
            "SELECT count(*), count(DISTINCT device_id) FROM commands"
            " WHERE batch_id = ? AND kind = ? AND state = 'queued'",
            (batch_id, KIND),
        ).fetchone()
    finally:
        conn.close()
    return rows if rows == devices else -1


def queue(
    client: httpx.Client, database: Path, mode: str, number: int, body: dict[str, Any], size: int
) -> Call:
    path = f"/api/v1/organisations/{ORGANISATION}/commands"
    timed = timed_request(client, "POST", path, json={"kind": KIND, **body})
    answer = timed.response.json()
    if timed.response.status_code != 201 or answer["queued"] != size or answer["skipped"]:
        raise RuntimeError(f"{mode}: expected {size} queued, none skipped; got {answer}")
    stored = stored_commands(database, answer["batch_id"])
    if stored != size:
        raise RuntimeError(f"{mode}: {size} queued but {stored} found in the database")
    return Call(mode, number, size, answer["queued"], timed.server_ms, timed.client_ms, stored)


def measure(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        work = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-", dir=args.dir))
        )
        config = init_service(work / "data")
        print(f"filling the database with {args.devices:,} devices...", file=sys.stderr)
        database, seeded = seed_database(
            config, devices=args.devices, group_size=args.group_size, mixed_states=False
        )
        server = stack.enter_context(running_service(config, work))
        client = manager_client(server)
        stack.callback(client.close)
        ids = seeded.device_ids[: args.group_size]
        queue(client, database, "warm-up", 0, {"device_ids": ids[:10]}, 10)
        calls = []
        for mode, body in (
            ("device_ids", {"device_ids": ids}),
            ("group_ids", {"group_ids": [seeded.group_id]}),
        ):
            for number in range(1, args.calls + 1):
                call = queue(client, database, mode, number, body, len(ids))
                print(f"{mode} #{number}: {call.server_ms:,.0f} ms at the server", file=sys.stderr)
                calls.append(call)
    # The service is stopped here (the ExitStack has closed), even when a step failed.
    report(calls, seeded, args, filesystem_of(Path(args.dir or tempfile.gettempdir())))


def report(calls: list[Call], seeded: Seeded, args: argparse.Namespace, fs: str) -> None:
    rows = [
        [
            call.mode,
            str(call.number),
            f"{call.devices:,}",
            f"{call.server_ms:,.0f}",
            f"{call.client_ms:,.0f}",
            f"{call.rate:,.0f}",
            f"{call.stored:,}",
            verdict(call.server_ms < TARGET_MS),
        ]
        for call in calls
    ]
    notes = []
    for mode in ("device_ids", "group_ids"):
        server = [c.server_ms for c in calls if c.mode == mode]
        client = [c.client_ms for c in calls if c.mode == mode]
        (s50,) = percentiles(server, 50)
        (c50,) = percentiles(client, 50)
        notes.append(
            f"{mode}: server p50 {s50:,.0f} ms, max {max(server):,.0f} ms; "
            f"client p50 {c50:,.0f} ms, max {max(client):,.0f} ms"
        )
    worst = max(c.server_ms for c in calls)
    notes += [
        f"target: every call under {TARGET_MS / 1000:.0f} s at the server: "
        f"{verdict(worst < TARGET_MS)} (slowest {worst:,.0f} ms)",
        f"organisation of {args.devices:,} devices, database filled in {seeded.seconds:.1f} s "
        f"on {fs} (synchronous=FULL: each call is one commit with one fsync)",
    ]
    print_table(
        f"POST /api/v1/organisations/{{organisation}}/commands, {KIND} to {args.group_size:,} "
        f"devices per call ({environment()})",
        ["mode", "call", "devices", "server ms", "client ms", "queued/s", "rows in db", "< 2 s"],
        rows,
        notes,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="devices in the organisation")
    parser.add_argument(
        "--group-size",
        type=int,
        default=10_000,
        help="devices per call: the group's size and the device ids sent",
    )
    parser.add_argument("--calls", type=int, default=3, help="timed calls per mode")
    parser.add_argument("--dir", help="where the temporary installation goes (a real disk)")
    args = parser.parse_args(argv)
    if not 10 <= args.group_size <= args.devices or not 1 <= args.calls <= 100:
        parser.error("need 10 <= --group-size <= --devices and 1 <= --calls <= 100")
    exit_on_sigterm()
    try:
        measure(args)
    except (RuntimeError, ValueError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
