"""Exchange ActiveSync client simulator: the first sync of a large address book.

What it measures
    The real service (``emm init`` + ``emm serve``, a subprocess on loopback). The bench
    writes ``--contacts`` vCards into one user's Contacts (as OMA DS or an import would
    leave them) straight into the service's SQLite file, then ``--devices`` simulated phones
    of that user (the tests' ActiveSync client: WBXML over httpx, as phone clients behave)
    provision, FolderSync and Sync Contacts from SyncKey 0 with ``--window`` items per
    response until MoreAvailable ends, all at once. Then one phone sends ``--upload`` new
    contacts, ``--window`` Adds per Sync. Reported: items per second each way, responses,
    and the server's CPU time and RSS.

Target
    None fixed; the issue asks for the items per second of a first sync of 10,000 contacts.

Run: ``.venv/bin/python -m bench.eas_sim [--contacts 10000] [--window 100] [--devices 1]``
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import trio

from engine.config.bootstrap import load_bootstrap
from engine.ids import new_id
from engine.passwords import hash_password
from engine.pim import facts_of
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


def card(number: int) -> str:
    return (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Person {number:05d}\r\nN:{number:05d};Person;;;\r\n"
        f"TEL;TYPE=CELL:+44 7700 {number % 1000000:06d}\r\n"
        f"EMAIL;TYPE=INTERNET:person{number}@example.org\r\nORG:Example Ltd;Sales\r\n"
        "END:VCARD\r\n"
    )


def populate(database: Path, contacts: int, devices: int) -> None:
    organisation, account, collection = new_id(), new_id(), new_id()
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
            [
                (new_id(), organisation, account, f"SIM{n:04d}", f"SIM{n:04d}", at, at)
                for n in range(devices)
            ],
        )
        conn.execute(
            "INSERT INTO pim_collections (id, organisation_id, account_id, kind, version,"
            " created_at) VALUES (?, ?, ?, 'contacts', ?, ?)",
            (collection, organisation, account, contacts, at),
        )
        rows = []
        for number in range(contacts):
            text = card(number)
            facts = facts_of("contacts", text, None)
            rows.append(
                (
                    collection,
                    organisation,
                    number + 1,
                    facts.content_type,
                    text,
                    facts.uid,
                    facts.fingerprint,
                    at,
                    at,
                )
            )
        conn.executemany(
            "INSERT INTO pim_items (collection_id, organisation_id, version, content_type,"
            " data, uid, fingerprint, deleted, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            rows,
        )


async def run(args: argparse.Namespace, url: str, pid: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        phones = [
            EasClient(http, "sim\\alice", PASSWORD, f"SIM{n:04d}") for n in range(args.devices)
        ]
        for phone in phones:
            await phone.provision()
            await phone.folder_sync()
            await phone.sync("contacts")  # SyncKey 0
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        responses = [0] * len(phones)

        async def first_sync(index: int, phone: EasClient) -> None:
            while True:
                outcome = await phone.sync("contacts", window=args.window)
                responses[index] += 1
                if not outcome.more:
                    return

        async with trio.open_nursery() as nursery:
            for index, phone in enumerate(phones):
                nursery.start_soon(first_sync, index, phone)
        down = time.perf_counter() - started
        cpu_down = cpu_seconds(pid) - cpu_before
        received = sum(len(phone.items["contacts"]) for phone in phones)
        if received != args.contacts * args.devices:
            raise RuntimeError(
                f"received {received} contacts, expected {args.contacts * args.devices}"
            )

        phone = phones[0]
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        sent = 0
        while sent < args.upload:
            batch = {
                f"u{sent + n}": contact(f"Up{sent + n}", "Load")
                for n in range(min(args.window, args.upload - sent))
            }
            outcome = await phone.sync("contacts", adds=batch)
            assert all(
                r.tag != "Add" or r.find("Status").text == "1"  # type: ignore[union-attr]
                for r in outcome.responses
            )
            sent += len(batch)
        up = time.perf_counter() - started
        cpu_up = cpu_seconds(pid) - cpu_before

    print_table(
        f"ActiveSync first sync of {args.contacts:,} contacts — {environment()}",
        ["direction", "items", "seconds", "items/s", "responses", "server CPU s"],
        [
            [
                f"service to {args.devices} device(s)",
                f"{received:,}",
                f"{down:.2f}",
                f"{received / down:,.0f}",
                f"{sum(responses):,}",
                f"{cpu_down:.2f}",
            ],
            [
                "device to service",
                f"{args.upload:,}",
                f"{up:.2f}",
                f"{args.upload / up:,.0f}",
                f"{-(-args.upload // args.window):,}",
                f"{cpu_up:.2f}",
            ],
        ],
    )
    print(f"window {args.window} items per Sync; server RSS after: {rss_bytes(pid) / MIB:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--upload", type=int, default=2_000)
    args = parser.parse_args()
    exit_on_sigterm()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emm-bench-")))
        config = init_service(work / "data")
        server = stack.enter_context(running_service(config, work))
        populate(load_bootstrap(config).database.path, args.contacts, args.devices)
        trio.run(run, args, server.url("http"), server.pid)


if __name__ == "__main__":
    main()
