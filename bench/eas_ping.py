"""Exchange ActiveSync Pings held open by one service process, and how fast they answer.

What it measures
    The real service (``emm init`` + ``emm serve``, a subprocess on loopback). The bench
    writes an organisation with ``--accounts`` users and ``--pings`` inventory devices spread
    over them straight into the service's SQLite file (provisioning switched off for the
    organisation, so each device's first request is its Ping), then opens one plain TCP
    connection per device and sends a Ping watching Contacts with a long heartbeat; every
    Ping is parked in its device's session. Reported: the server's RSS before and with all
    Pings held, and per parked Ping (session actor, board entry, the HTTP connection and
    Hypercorn's task for it).
    Then, with all of them held, ``--changes`` times a writer device of one account adds a
    contact over ActiveSync (Sync), which wakes that account's parked Pings at once; and
    ``--polled`` times a change is written straight into the PIM store (as anything but
    ActiveSync and OMA DS, which tell the board at once, would), which the board's poll
    (twice a second) notices. Reported: the time from
    sending the change to each woken Ping's answer (p50, p99, max).

Target
    10,000 Pings held with under 1 GiB RSS, p99 under 1 s from a change to the answer.

Run: ``.venv/bin/python -m bench.eas_ping [--pings 10000] [--accounts 100] [--changes 20]``
"""

from __future__ import annotations

import argparse
import base64
import resource
import sqlite3
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import trio

from engine.config.bootstrap import load_bootstrap
from engine.ids import new_id
from engine.passwords import hash_password
from engine.protocols import activesync as eas
from engine.protocols.activesync import el
from engine.protocols.activesync_tables import AIRSYNC, CONTACTS, PING
from engine.timestamps import now

from .common import (
    MIB,
    environment,
    exit_on_sigterm,
    percentiles,
    print_table,
    rss_bytes,
    server_process,
    verdict,
)
from .healthz import init_service

PASSWORD = "bench password"
PATH = "/Microsoft-Server-ActiveSync"


def raise_file_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def populate(database: Path, accounts: int, devices: int) -> list[tuple[str, str]]:
    """An organisation, its users and devices; (user name, DeviceId) per device."""
    organisation = new_id()
    at = now()
    digest = hash_password(PASSWORD)
    pairs: list[tuple[str, str]] = []
    with sqlite3.connect(database, timeout=30) as conn:
        conn.execute(
            "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
            " VALUES (?, 'bench', 'Bench', ?, ?)",
            (organisation, at, at),
        )
        conn.execute(
            "INSERT INTO eas_settings (organisation_id, settings, revision, updated_at)"
            " VALUES (?, '{\"require_provisioning\": false}', 1, ?)",
            (organisation, at),
        )
        owners = []
        for number in range(accounts):
            account = new_id()
            owners.append((account, f"u{number:04d}"))
            conn.execute(
                "INSERT INTO accounts (id, organisation_id, login, kind, password_hash,"
                " created_at, updated_at) VALUES (?, ?, ?, 'user', ?, ?, ?)",
                (account, organisation, f"u{number:04d}", digest, at, at),
            )
        rows = []
        for number in range(devices + accounts):  # the last ``accounts`` are the writers
            account, login = owners[number % accounts]
            device = f"BENCH{number:06d}"
            rows.append((new_id(), organisation, account, device, device, at, at))
            pairs.append((f"bench\\{login}", device))
        conn.executemany(
            "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
            " state, udid, created_at, updated_at) VALUES (?, ?, ?, ?, 'ios', 'eas',"
            " 'enrolled', ?, ?, ?)",
            rows,
        )
    return pairs


def request(host: str, user: str, device: str, command: str, body: bytes) -> bytes:
    token = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    return (
        f"POST {PATH}?Cmd={command}&User={user.replace(chr(92), '%5C')}&DeviceId={device}"
        f"&DeviceType=iPhone HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\n"
        f"MS-ASProtocolVersion: 14.1\r\nContent-Type: {eas.CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def read_response(stream: trio.SocketStream) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length: its status and body."""
    received = b""
    length: int | None = None
    while True:
        head, sep, body = received.partition(b"\r\n\r\n")
        if sep and length is None:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
        if sep and length is not None and len(body) >= length:
            return int(head.split(b" ", 2)[1]), body
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("the service closed the connection mid-answer")
        received += chunk


async def exchange(host: str, port: int, data: bytes) -> tuple[int, bytes]:
    """One request on its own connection; the status and body of the answer."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(data)
        return await read_response(stream)


def ping_body(heartbeat: int) -> bytes:
    return eas.encode(
        el(
            PING,
            "Ping",
            el(PING, "HeartbeatInterval", str(heartbeat)),
            el(
                PING,
                "Folders",
                el(PING, "Folder", el(PING, "Id", "contacts"), el(PING, "Class", "Contacts")),
            ),
        )
    )


def sync_body(key: str, adds: int = 0, number: int = 0) -> bytes:
    parts = [el(AIRSYNC, "SyncKey", key), el(AIRSYNC, "CollectionId", "contacts")]
    if adds:
        parts.append(
            el(
                AIRSYNC,
                "Commands",
                el(
                    AIRSYNC,
                    "Add",
                    el(AIRSYNC, "ClientId", "1"),
                    el(
                        AIRSYNC,
                        "ApplicationData",
                        el(CONTACTS, "FirstName", f"N{number}"),
                        el(CONTACTS, "LastName", "Bench"),
                    ),
                ),
            )
        )
    return eas.encode(
        el(AIRSYNC, "Sync", el(AIRSYNC, "Collections", el(AIRSYNC, "Collection", *parts)))
    )


async def run(
    args: argparse.Namespace, url: str, pid: int, database: Path, pairs: list[tuple[str, str]]
) -> None:
    host, port = url.removeprefix("http://").split(":")
    port_number = int(port)
    pingers, writers = pairs[: args.pings], pairs[args.pings :]
    answered: dict[str, float] = {}
    events = {device: trio.Event() for _, device in pingers}
    early = 0
    limiter = trio.CapacityLimiter(args.ramp)
    body = ping_body(args.heartbeat)

    # The writers first: one per account, its Contacts primed (SyncKey 0, then 1).
    for user, device in writers:
        await exchange(host, port_number, request(host, user, device, "Sync", sync_body("0")))
        await exchange(host, port_number, request(host, user, device, "Sync", sync_body("1")))
    rss_before = rss_bytes(pid)

    async def hold(user: str, device: str, task_status: trio.TaskStatus[None]) -> None:
        nonlocal early
        async with limiter:
            stream = await trio.open_tcp_stream(host, port_number)
            await stream.send_all(request(host, user, device, "Ping", body))
        task_status.started()
        async with stream:
            await read_response(stream)
        answered[device] = time.perf_counter()
        events[device].set()
        if not holding.is_set():
            early += 1

    holding = trio.Event()
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for user, device in pingers:
            await nursery.start(hold, user, device)
        # Every Ping sent; wait until the service's RSS settles (all parked).
        last = 0
        for _ in range(120):
            await trio.sleep(1)
            current = rss_bytes(pid)
            if abs(current - last) < 2 * MIB and len(answered) == early == 0:
                break
            last = current
        park_seconds = time.perf_counter() - started
        holding.set()
        rss_held = rss_bytes(pid)

        # Changes over ActiveSync from each account's writer: its Pings answer at once.
        per_account = args.pings // args.accounts
        pushed: list[float] = []
        keys: dict[str, str] = {}
        for number in range(args.changes):
            user, device = writers[number % len(writers)]
            watchers = [d for u, d in pingers if u == user]
            sent = time.perf_counter()
            key = keys.get(device, "2")  # primed: SyncKey 0 gave 1, the empty Sync gave 2
            status, _ = await exchange(
                host, port_number, request(host, user, device, "Sync", sync_body(key, 1, number))
            )
            if status != 200:
                raise RuntimeError(f"Sync answered {status}")
            keys[device] = str(int(key) + 1)
            with trio.move_on_after(5):
                for watcher in watchers:
                    await events[watcher].wait()
            pushed += [answered[d] - sent for d in watchers if d in answered]
        # Changes written straight into the store: the board's poll finds them.
        polled: list[float] = []
        remaining = [u for u, _ in writers[args.changes : args.changes + args.polled]]
        with sqlite3.connect(database, timeout=30) as conn:
            for user in remaining:
                login = user.split("\\", 1)[1]
                watchers = [d for u, d in pingers if u == user]
                sent = time.perf_counter()
                conn.execute(
                    "UPDATE pim_collections SET version = version + 1 WHERE kind = 'contacts'"
                    " AND account_id = (SELECT id FROM accounts WHERE login = ?)",
                    (login,),
                )
                conn.commit()
                with trio.move_on_after(5):
                    for watcher in watchers:
                        await events[watcher].wait()
                polled += [answered[d] - sent for d in watchers if d in answered]
        nursery.cancel_scope.cancel()

    held = args.pings - early
    grown = rss_held - rss_before
    rows = [
        ["Pings held", f"{held:,}", f"parked in {park_seconds:.1f} s"],
        ["service RSS before", f"{rss_before / MIB:,.0f} MiB", ""],
        [
            "service RSS, all held",
            f"{rss_held / MIB:,.0f} MiB",
            f"{grown / max(held, 1) / 1024:,.1f} KiB per parked Ping",
        ],
    ]
    for name, values in (
        ("change over ActiveSync", pushed),
        ("change in the store (poll)", polled),
    ):
        if values:
            p50, p99, top = percentiles(values, 50, 99, 100)
            rows.append(
                [
                    name,
                    f"{len(values)} answers",
                    f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {top * 1000:.0f} ms",
                ]
            )
    print_table(
        f"ActiveSync Pings held by one service process — {environment()}",
        ["measure", "value", "detail"],
        rows,
    )
    p99 = percentiles(pushed, 99)[0] if pushed else float("inf")
    print(
        f"target 10,000 held under 1 GiB: {verdict(held >= 10_000 and rss_held < 1024 * MIB)}"
        f"; change to answer p99 < 1 s: {verdict(p99 < 1.0)}"
        f" ({per_account} Pings per account woken per change)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--polled", type=int, default=10)
    parser.add_argument("--heartbeat", type=int, default=1800)
    parser.add_argument("--ramp", type=int, default=200, help="Pings being opened at once")
    args = parser.parse_args()
    exit_on_sigterm()
    limit = raise_file_limit()
    if args.pings + 200 > limit:
        sys.exit(f"open file limit {limit} is below {args.pings + 200}")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-")))
        config = init_service(work / "data")
        server = stack.enter_context(
            server_process(
                "service",
                [
                    sys.executable,
                    "-c",
                    "import resource; r = resource.RLIMIT_NOFILE; "
                    "resource.setrlimit(r, (resource.getrlimit(r)[1],) * 2); "
                    "import runpy, sys; sys.argv = ['web', 'serve', '--config', "
                    f"{str(config)!r}]; runpy.run_module('web', run_name='__main__')",
                ],
                ready_prefix="emm: listening on ",
                expect=2,
                log_dir=work,
            )
        )
        database = load_bootstrap(config).database.path
        pairs = populate(database, args.accounts, args.pings)
        trio.run(run, args, server.url("http"), server.pid, database, pairs)


if __name__ == "__main__":
    main()
