"""Exchange ActiveSync folders of the owner's own: FolderCreate, FolderSync of a large
hierarchy, MoveItems, and what another device syncs after the moves.

What it measures
    The real service (``emm init`` + ``emm serve``, a subprocess on loopback) and two phones
    of one user (the tests' ActiveSync client). The phone makes ``--folders`` contact folders
    one FolderCreate at a time; the tablet then starts over with FolderSync (SyncKey 0) and
    gets the whole hierarchy. The phone adds ``--items`` contacts to the first folder, the
    tablet syncs it, and the phone moves every item to the second folder, ``--batch`` Moves
    per MoveItems. Last, the tablet syncs both folders (a Delete and an Add per item).
    Reported per step: count, seconds, per second, the server's CPU seconds.

Target
    None fixed: it shows the cost of the hierarchy (every Sync and Ping reads it) and of a
    move (two items written, both folders' change numbers advanced).

Run: ``.venv/bin/python -m bench.eas_folders [--folders 200] [--items 1000] [--batch 50]``
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import trio

from engine.config.bootstrap import load_bootstrap
from engine.ids import new_id
from engine.passwords import hash_password
from engine.timestamps import now

from .common import (
    MIB,
    cpu_seconds,
    environment,
    exit_on_sigterm,
    print_table,
    rss_bytes,
    running_service,
)
from .eas_client import EasClient, contact
from .healthz import init_service

PASSWORD = "bench password"
CONTACTS_FOLDER = 14


def populate(database: Path) -> None:
    organisation, account = new_id(), new_id()
    at = now()
    with sqlite3.connect(database, timeout=30) as conn:
        conn.execute(
            "INSERT INTO organisations (id, code, short_name, created_at, updated_at)"
            " VALUES (?, 'sim', 'Sim', ?, ?)",
            (organisation, at, at),
        )
        conn.execute(
            "INSERT INTO accounts (id, organisation_id, login, kind, password_hash, created_at,"
            " updated_at) VALUES (?, ?, 'alice', 'user', ?, ?, ?)",
            (account, organisation, hash_password(PASSWORD), at, at),
        )
        conn.executemany(
            "INSERT INTO devices (id, organisation_id, owner_id, name, platform, protocol,"
            " state, udid, created_at, updated_at) VALUES (?, ?, ?, ?, 'ios', 'eas',"
            " 'enrolled', ?, ?, ?)",
            [(new_id(), organisation, account, name, name, at, at) for name in ("PHONE", "TABLET")],
        )


async def run(args: argparse.Namespace, url: str, pid: int) -> None:
    rows: list[list[str]] = []

    async def step(name: str, count: int, work: Callable[[], Awaitable[None]]) -> None:
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        await work()
        seconds = time.perf_counter() - started
        rows.append(
            [
                name,
                f"{count:,}",
                f"{seconds:.2f}",
                f"{count / seconds:,.0f}",
                f"{cpu_seconds(pid) - cpu_before:.2f}",
            ]
        )

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        phone = EasClient(http, "sim\\alice", PASSWORD, "PHONE")
        tablet = EasClient(http, "sim\\alice", PASSWORD, "TABLET")
        for client in (phone, tablet):
            await client.provision()
            await client.folder_sync()
        made: list[str] = []

        async def create() -> None:
            for number in range(args.folders):
                status, server_id = await phone.folder_create(f"Folder {number}", CONTACTS_FOLDER)
                assert status == 1 and server_id is not None
                made.append(server_id)

        await step("FolderCreate", args.folders, create)

        async def hierarchy() -> None:
            tablet.folder_key = "0"
            tablet.folders.clear()
            await tablet.folder_sync()
            assert set(made) <= set(tablet.folders)

        await step("FolderSync from 0 (folders)", len(made) + 9, hierarchy)
        source, destination = made[0], made[1]
        for client in (phone, tablet):
            await client.sync_all(source)
            await client.sync_all(destination)
        for start in range(0, args.items, 100):
            adds = {f"c{n}": contact(f"Person{n}", "Moved") for n in range(start, start + 100)}
            await phone.sync(source, adds=adds)
        await tablet.sync_all(source, window=500)
        assert len(tablet.items[source]) == args.items

        async def move() -> None:
            held = list(phone.items[source])
            for start in range(0, len(held), args.batch):
                batch = [(item, source, destination) for item in held[start : start + args.batch]]
                answers = await phone.move_items(batch)
                assert all(status == 3 for _, status, _ in answers)

        await step(f"MoveItems ({args.batch} a request)", args.items, move)

        async def follow() -> None:
            await tablet.sync_all(source, window=500)
            await tablet.sync_all(destination, window=500)
            assert not tablet.items[source] and len(tablet.items[destination]) == args.items

        await step("other device's Sync (Delete + Add)", 2 * args.items, follow)

    print_table(
        f"ActiveSync folders of the owner's own — {environment()}",
        ["step", "count", "seconds", "per second", "server CPU s"],
        rows,
    )
    print(f"server RSS after: {rss_bytes(pid) / MIB:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", type=int, default=200)
    parser.add_argument("--items", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    exit_on_sigterm()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-")))
        config = init_service(work / "data")
        server = stack.enter_context(running_service(config, work))
        populate(load_bootstrap(config).database.path)
        trio.run(run, args, server.url("http"), server.pid)


if __name__ == "__main__":
    main()
